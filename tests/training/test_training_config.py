"""Training settings: typed and closed configs, defaults < file < flags, one line per mistake."""
from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from lulc.runtime.cli import main
from lulc.runtime.core.errors import SettingError
from lulc.training.config import TemporalConfig, TrainConfig, build_config


def test_config_file_with_a_wrongly_typed_or_unknown_key_is_one_line_naming_it(tmp_path):
    config = tmp_path / "run.yaml"
    for text, expected in (
        ('epochs: "ten"\n', f"epochs in {config} should be a valid integer, not 'ten'"),
        ('epochs: "10"\n', f"epochs in {config} should be a valid integer, not '10'"),  # quoted: text, not a number
        ("epochz: 3\n", f"epochz in {config} is not a setting (valid: align, aoi, arch,"),
        ("arch: mtlcc\nstack: s\nfitlers: 4\n",
         f"fitlers in {config} is not a setting (valid: arch, batch_size, cell,"),
    ):
        config.write_text(text)
        with pytest.raises(SettingError) as caught:
            build_config(str(config), {"output": "out"})
        assert expected in str(caught.value) and len(str(caught.value).splitlines()) == 1, caught.value


def test_flags_override_the_file_and_the_record_says_which_came_from_where(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("image: data/image.tif\nepochs: 3\nlr: 0.01\nindices: ndvi,NDWI\n")
    cfg, record = build_config(str(config), {"epochs": 1, "labels": "labels.tif"})
    assert isinstance(cfg, TrainConfig) and (cfg.epochs, cfg.learning_rate, cfg.indices) == (1, 0.01, ["ndvi", "ndwi"])
    assert cfg.image == [str(tmp_path / "data" / "image.tif")]  # relative to the file
    assert cfg.labels == os.path.abspath("labels.tif")  # relative to the working directory
    assert record["from_file"] == ["image", "indices", "learning_rate"] and record["from_flags"] == ["epochs", "labels"]
    assert record["file"] == str(config.resolve()) and len(record["sha256"]) == 64


def test_numbers_no_run_can_use_name_their_flag():
    for settings, expected in (({"epochs": 0}, "--epochs should be greater than or equal to 1, not 0"),
                               ({"learning_rate": 0.0}, "--lr should be greater than 0, not 0.0"),
                               ({"brightness": 1.5}, "--brightness should be less than 1, not 1.5"),
                               ({"epochs": True}, "--epochs should be a valid integer, not True")):
        with pytest.raises(SettingError, match=expected):
            build_config(None, settings)


def test_temporal_config_shares_the_base_and_its_options_go_to_the_builder():
    cfg, _ = build_config(None, {"stack": "s", "units": 8, "num_layers": 1})
    assert isinstance(cfg, TemporalConfig) and cfg.arch == "mtlcc" and (cfg.tile, cfg.batch_size) == (24, 4)
    assert cfg.model_options == {"units": 8, "num_layers": 1}
    # the fingerprint (--resume) ignores how long and where to, not what is trained
    a, b = TrainConfig(epochs=1, output="a"), TrainConfig(epochs=5, output="b")
    assert a.fingerprint() == b.fingerprint() != TrainConfig(seed=1).fingerprint()
    assert TrainConfig.from_record({"epochs": 2, "from_a_newer_lulc": 1}).epochs == 2


def test_lulc_train_reports_setting_mistakes_as_option_errors(tmp_path):
    """Exit code 2 and click's usage lines, then one error line naming the flag or the file's key."""
    config = tmp_path / "run.yaml"
    out = tmp_path / "out"
    bad = "Error: Invalid value for"
    cases = (
        ([config], 'epochs: "ten"\n', f"{bad} epochs in {config}: should be a valid integer, not 'ten'"),
        ([config], "epochz: 3\n", f"{bad} epochz in {config}: is not a setting (valid: align, aoi,"),
        ([config, "--epochs", "0"], "epochs: 3\n", f"{bad} --epochs: should be greater than or equal to 1"),
        (["--split-block", "16"], "", f"{bad} --split-block: must be at least the tile size 64, not 16"),
        (["--arch", "unet", "--stack", "s"], "", "Error: --stack does not apply to --arch unet"),
    )
    for args, text, expected in cases:
        config.write_text(text)
        result = CliRunner().invoke(main, ["train", *map(str, args), "-o", str(out)])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        (line,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert line.startswith(expected), line
    assert not out.exists()
