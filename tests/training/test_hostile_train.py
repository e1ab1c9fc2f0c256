"""`lulc train` and `lulc evaluate` against hostile-but-realistic use: an output that is or holds
the user's data, `-o .`, bad numbers, single-class labels, failed runs and `--resume` on a
finished bundle. Each refusal is one line without a traceback, exit code 1 (2 for a number no
run can use: an option mistake, reported as click reports one), and leaves every file around
the output byte-identical and nothing at or beside it."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import write_raster
from lulc.runtime.cli import main
from lulc.runtime.core.bundle import Bundle

TINY = ["--tile", "32", "--stride", "16", "--split-block", "32", "--depth", "2", "--width", "4",
        "--batch-size", "8", "--epochs", "1"]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` with the checksum of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def refused(result, *expected: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    for text in expected:
        assert text in result.output, result.output


def bad_option(result, flag: str) -> None:
    """Exit code 2 and click's usage lines, then one error line pointing at ``flag``."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    (error,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert error.startswith(f"Error: Invalid value for {flag}: "), result.output


@pytest.fixture
def workspace(scene, tmp_path) -> Path:
    """A user's folder: image, labels, classes and notes, plus an unrelated folder of notes."""
    data = tmp_path / "data"
    data.mkdir()
    for name in ("image", "labels", "classes"):
        shutil.copy(scene[name], data)
    (data / "notes.txt").write_text("field notes, not a bundle")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    return tmp_path


def train_args(ws: Path, output, *extra):
    data = ws / "data"
    return ["train", "--image", data / "image.tif", "--labels", data / "labels.tif", "--classes", data / "classes.json",
            "-o", output, *TINY, *extra]


def test_output_that_is_or_holds_user_data_is_refused(workspace, monkeypatch):
    before = snapshot(workspace)
    data = workspace / "data"
    (workspace / "link").symlink_to(workspace / "notes")
    cases = {
        "contains the input": [data, "--overwrite"],  # the folder holding image, labels and notes
        "is not a lulc bundle": [workspace / "notes", "--overwrite"],
        "already exists": [workspace / "notes"],
        "exists and is not a folder": [data / "image.tif", "--overwrite"],
        "lies inside the input": [data / "classes.json" / "b"],
        "symbolic link": [workspace / "link", "--overwrite"],
    }
    for expected, (output, *flags) in cases.items():
        refused(cli(*train_args(workspace, output, *flags)), expected)
    monkeypatch.chdir(data)
    refused(cli(*train_args(workspace, ".", "--overwrite")), "current folder")
    refused(cli(*train_args(workspace, "..", "--overwrite")), "current folder")
    monkeypatch.chdir(workspace)
    assert snapshot(workspace) == {**before, "link": "dir"}
    assert not list(workspace.rglob(".*partial*"))


def test_numbers_no_run_can_use_and_single_class_labels(workspace):
    before = snapshot(workspace)
    out = workspace / "out"
    for flag, value in (("--epochs", 0), ("--tile", 0), ("--tile", -5), ("--batch-size", 0), ("--split-block", 0),
                        ("--stride", -1), ("--lr", 0), ("--brightness", 1.5),
                        ("--split-block", 16),  # smaller than the tile
                        ("--tile", 30)):  # found once the model is built: not a multiple of its stride 4
        bad_option(cli(*train_args(workspace, out, flag, value)), flag)
    single = np.full((128, 192), 255, np.uint8)
    single[:, 40:] = 1
    write_raster(workspace / "single.tif", single, nodata=255)
    result = cli("train", "--image", workspace / "data" / "image.tif", "--labels", workspace / "single.tif",
                 "-o", out, *TINY)
    refused(result, "single class")
    assert not out.exists() and not (workspace / ".out.partial").exists()
    assert snapshot(workspace) == {**before, "single.tif": snapshot(workspace)["single.tif"]}


def test_failed_runs_leave_nothing_unless_resumable(workspace, monkeypatch):
    out = workspace / "out"
    classes = workspace / "two.json"
    classes.write_text('[{"name": "a"}, {"name": "b"}]')
    refused(cli(*train_args(workspace, out, "--classes", classes)), "not in the class list")
    assert not out.exists() and not (workspace / ".out.partial").exists()

    import lulc.training.fit as fit

    def crash(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(fit, "fit", crash)  # fails after the samples were staged, before any checkpoint
    result = cli(*train_args(workspace, out))
    assert result.exit_code == 1 and isinstance(result.exception, RuntimeError)
    assert not out.exists() and not (workspace / ".out.partial").exists()
    refused(cli(*train_args(workspace, out, "--resume")), "nothing to resume")
    assert not (workspace / ".out.partial").exists()


def test_resume_never_replaces_a_finished_bundle(trained_bundle, workspace):
    bundle = workspace / "bundle"
    shutil.copytree(trained_bundle, bundle)
    before = snapshot(bundle)
    for flags in (["--resume"], ["--resume", "--overwrite"]):
        refused(cli(*train_args(workspace, bundle, *flags)), "finished bundle")
    assert snapshot(bundle) == before


@pytest.mark.slow
def test_overwrite_replaces_a_bundle_quietly_and_evaluate_runs_anywhere(trained_bundle, workspace, monkeypatch):
    """A real process: --overwrite on a bundle replaces it, TensorFlow's E0000 line is gone,
    and relative paths given at training still resolve from another working directory."""
    shutil.copytree(trained_bundle, workspace / "bundle")
    lulc = Path(sys.executable).with_name("lulc")
    args = ["train", "--image", "data/image.tif", "--labels", "data/labels.tif", "--classes", "data/classes.json",
            "-o", "bundle", "--overwrite", *TINY, "--seed", "1"]
    run = subprocess.run([str(lulc), *args], cwd=workspace, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"})
    assert run.returncode == 0, run.stderr
    assert "use_unbounded_threadpool" not in run.stderr and "E0000" not in run.stderr
    m = Bundle.load(workspace / "bundle").manifest
    assert m.provenance["config"]["seed"] == 1
    assert sorted(p.name for p in workspace.iterdir() if p.name.startswith(".")) == []
    elsewhere = workspace / "notes"
    monkeypatch.chdir(elsewhere)
    result = cli("evaluate", workspace / "bundle", "-o", workspace / "eval")
    assert result.exit_code == 0, result.output
    assert (workspace / "eval" / "metrics.json").is_file()


def test_a_second_run_on_the_same_output_is_refused(workspace):
    from lulc.runtime.io.outputs import locked

    out = workspace / "out"
    with locked(out):  # what a first `lulc train -o out` holds for its whole run
        refused(cli(*train_args(workspace, out)), "another run is writing")
    assert not out.exists() and not (workspace / ".out.partial").exists()


# ---- the smaller trust items of the second pass -------------------------------------------------

def test_an_all_nan_image_is_named_as_such(workspace):
    nan = write_raster(workspace / "nan.tif", np.full((4, 128, 192), np.nan, np.float32), nodata=None)
    result = cli("train", "--image", nan, "--labels", workspace / "data" / "labels.tif",
                 "--classes", workspace / "data" / "classes.json", "-o", workspace / "out", *TINY)
    refused(result, "every pixel of", "nan.tif is NaN")
    assert not (workspace / "out").exists() and not (workspace / ".out.partial").exists()


@pytest.mark.parametrize("entry, expected", [
    ('{"id": 1, "name": "gra\\u0007ss", "color": [1, 2, 3]}', "holds the control character '\\x07'"),
    ('{"id": 1, "name": "grass", "color": [120, 200, 999]}', "colour [120, 200, 999]: each component must be 0..255"),
])
def test_class_names_and_colours_that_no_map_can_carry_are_refused(workspace, entry, expected):
    classes = workspace / "bad.json"
    classes.write_text(f'[{{"id": 0, "name": "crop"}}, {entry}, {{"id": 2, "name": "water"}}]')
    refused(cli(*train_args(workspace, workspace / "out", "--classes", classes)), expected)
    assert not (workspace / "out").exists() and not (workspace / ".out.partial").exists()


def test_evaluate_takes_align_for_labels_on_another_grid(trained_bundle, scene, tmp_path):
    """Labels at 20 m over the 10 m image: refused without --align (the hint names the option
    evaluate really has), evaluated with it."""
    import rasterio
    from rasterio.transform import from_origin

    with rasterio.open(scene["labels"]) as src:
        labels = src.read(1)[::2, ::2]
    coarse = write_raster(tmp_path / "labels20.tif", labels, nodata=255, transform=from_origin(500000, 5800000, 20, 20))
    args = ["evaluate", trained_bundle, "--image", scene["image"], "--labels", coarse, "--split", "all",
            "-o", tmp_path / "eval"]
    refused(cli(*args), "pass --align")
    result = cli(*args, "--align")
    assert result.exit_code == 0, result.output
    assert "overall accuracy" in result.output.lower() and (tmp_path / "eval" / "metrics.json").is_file()
