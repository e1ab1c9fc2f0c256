"""Hostile and unusual inputs (issues 13 and 14): a folder, a raster at the wrong value scale,
multi-file stacks whose files have different nodata values, and band names that differ.

The band-name option and the value-scale check are tested at the rasters.py level
(``open_input(..., band_names=..., normalization=...)``), which is what ``lulc-infer`` calls.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.windows import Window

from conftest import BANDS, infer_fails, synthetic_scene, write_raster
from lulc.runtime.cli import main
from lulc.runtime.core.bundle import Bundle
from lulc.runtime.core.errors import InputRasterError
from lulc.runtime.core.manifest import InputSpec
from lulc.runtime.io.bandstack import write_band_stack
from lulc.runtime.io.rasters import generic_names, input_nodata, open_input, open_raster, read_padded
from lulc.runtime.kernels import cpu as kernels

H, W = 40, 50


def digest(*paths: Path) -> list[str]:
    return [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths]


def infer_ok(bundle: Path, inputs: list[Path], out: Path) -> np.ndarray:
    """``lulc infer`` succeeds, leaves its inputs byte-identical; the class band of the map."""
    before = digest(*inputs)
    result = CliRunner().invoke(main, ["infer", str(bundle), *map(str, inputs), "-o", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert digest(*inputs) == before
    with rasterio.open(out) as dst:
        return dst.read(1)


# --- a folder given as the input -----------------------------------------------------------------

def test_folder_as_input_says_so(trained_bundle, tmp_path):
    folder = tmp_path / "scenes"
    folder.mkdir()
    line = infer_fails(trained_bundle, folder, "is a folder, not a raster")
    assert "corrupt" not in line


def test_folder_with_a_stack_points_at_it(tmp_path):
    (tmp_path / "stack.vrt").write_text("<VRTDataset/>")
    with pytest.raises(InputRasterError, match=r"is a folder, not a raster \(a time-series stack\? give .*stack.vrt\)"):
        open_raster(tmp_path, "input raster")


# --- value scale -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scene16() -> np.ndarray:
    return synthetic_scene(H, W, seed=4)[0]


def test_uint8_into_a_uint16_model_is_refused(trained_bundle, scene16, tmp_path):
    m = Bundle.load(trained_bundle).manifest
    assert m.input.dtype == "uint16" and max(m.normalization.p99) > 255
    path = write_raster(tmp_path / "u8.tif", np.clip(scene16 // 16, 1, 255).astype(np.uint8), descriptions=BANDS)
    with pytest.raises(InputRasterError) as err:
        open_input(path, m.input, normalization=m.normalization)
    message = str(err.value)
    assert "u8.tif is uint8" in message and "trained on uint16" in message and "\n" not in message
    before = digest(path)
    infer_fails(trained_bundle, path, "u8.tif is uint8 but the model was trained on uint16")
    assert digest(path) == before


@pytest.mark.parametrize("dtype", ["int16", "uint16", "int32", "float32", "float64"])
def test_dtypes_that_hold_the_training_values_are_accepted(trained_bundle, scene16, tmp_path, dtype):
    m = Bundle.load(trained_bundle).manifest
    path = write_raster(tmp_path / f"{dtype}.tif", scene16.astype(dtype), descriptions=BANDS)
    open_input(path, m.input, normalization=m.normalization).close()


def test_float_input_classifies_like_the_training_dtype(trained_bundle, scene16, tmp_path):
    """Float rasters holding the training values keep working end to end (lulc infer on the
    exported bundle): the same map as the uint16 original."""
    u16 = write_raster(tmp_path / "u16.tif", scene16, descriptions=BANDS)
    f32 = write_raster(tmp_path / "f32.tif", scene16.astype(np.float32), descriptions=BANDS)
    a = infer_ok(trained_bundle, [u16], tmp_path / "a.tif")
    b = infer_ok(trained_bundle, [f32], tmp_path / "b.tif")
    np.testing.assert_array_equal(a, b)
    assert (a < 3).all()


# --- per-file nodata in multi-file stacks ----------------------------------------------------------

@pytest.fixture
def mixed_nodata(scene16, tmp_path) -> list[Path]:
    """The scene's 4 bands split over 3 files, as training accepts them: int32 with nodata
    -99999, int16 with -32768, float32 without nodata. Each file also holds the other files'
    nodata values (and the bundle's, 0) as valid data, which must stay valid."""
    a = scene16[:2].astype(np.int32)
    a[0, :4, :6] = -99999
    a[1, 10, 10] = -32768  # valid in a
    b = scene16[2:3].astype(np.int16)
    b[0, 20:24, 30:33] = -32768
    b[0, 5, 40] = 0  # the bundle's nodata, valid in b
    c = scene16[3:].astype(np.float32)
    c[0, 30, :5] = np.nan
    c[0, 35, 45] = -99999  # a's nodata, but c has none: valid
    return [write_raster(tmp_path / "a.tif", a, nodata=-99999, descriptions=BANDS[:2]),
            write_raster(tmp_path / "b.tif", b, nodata=-32768, descriptions=BANDS[2:3]),
            write_raster(tmp_path / "c.tif", c, nodata=None, descriptions=BANDS[3:])]


def training_valid(paths: list[Path]) -> np.ndarray:
    from lulc.training.sources import RasterStack

    with RasterStack([str(p) for p in paths]) as stack:
        return stack.read(Window(0, 0, W, H))[1]


def test_stack_masks_exactly_what_training_masks(trained_bundle, mixed_nodata, tmp_path):
    expected = training_valid(mixed_nodata)
    assert (~expected).sum() == 4 * 6 + 4 * 3 + 5  # only each file's own nodata and NaN
    spec = Bundle.load(trained_bundle).manifest.input
    vrt = write_band_stack(mixed_nodata, tmp_path / "stack.vrt")
    with open_input(vrt, spec) as src:
        nodata = input_nodata(src, spec)
        block = read_padded(src, 0, 0, max(H, W))
    valid = np.empty(block.shape[1:], np.bool_)
    kernels.mask_nodata(block, np.nan if nodata is None else float(nodata), nodata is not None, valid)
    np.testing.assert_array_equal(valid[:H, :W], expected)


def test_lulc_infer_takes_files_with_different_nodata(trained_bundle, mixed_nodata, tmp_path):
    classes = infer_ok(trained_bundle, mixed_nodata, tmp_path / "map.tif")
    np.testing.assert_array_equal(classes == 255, ~training_valid(mixed_nodata))


def test_files_sharing_nodata_keep_their_dtype(scene16, tmp_path):
    paths = [write_raster(tmp_path / f"{i}.tif", scene16[i:i + 1], nodata=7) for i in range(2)]
    with rasterio.open(write_band_stack(paths, tmp_path / "s.vrt")) as src:
        assert src.dtypes == ("uint16", "uint16") and src.nodata == 7


# --- band names: strict | auto | ignore ------------------------------------------------------------

ACCEPT, REFUSE = True, False
NAMES = {
    "model's": (BANDS, ACCEPT, ACCEPT),
    "other case": ([b.lower() for b in BANDS], ACCEPT, ACCEPT),
    "unnamed": ([None] * 4, ACCEPT, ACCEPT),
    "B1..B4": (["B1", "B2", "B3", "B4"], REFUSE, ACCEPT),
    "band1..": (["band1", "band2", "band3", "band4"], REFUSE, ACCEPT),
    "Band 1..": (["Band 1", "Band 2", "Band 3", "Band 4"], REFUSE, ACCEPT),
    "stacked": (["r1_band1", "r1_band2", "r2_band1", "r2_band2"], REFUSE, ACCEPT),
    "swapped": (["B03", "B02", "B04", "B08"], REFUSE, REFUSE),
    "S2 B01..B04": (["B01", "B02", "B03", "B04"], REFUSE, REFUSE),
    "L8 B2..B5": (["B2", "B3", "B4", "B5"], REFUSE, REFUSE),
}


@pytest.mark.parametrize("case", NAMES)
@pytest.mark.parametrize("mode", ["strict", "auto", "ignore"])
def test_band_names_option(scene16, tmp_path, case, mode):
    names, strict_ok, auto_ok = NAMES[case]
    path = write_raster(tmp_path / "named.tif", scene16, descriptions=[n or "" for n in names])
    spec = InputSpec(bands=BANDS, dtype="uint16", nodata=0)
    accepted = {"strict": strict_ok, "auto": auto_ok, "ignore": ACCEPT}[mode]
    if accepted:
        open_input(path, spec, band_names=mode).close()
        return
    with pytest.raises(InputRasterError, match="differ from the model's") as err:
        open_input(path, spec, band_names=mode)
    assert "--band-names ignore" in str(err.value)


def test_auto_accepts_any_names_for_a_model_trained_on_unnamed_bands(scene16, tmp_path):
    path = write_raster(tmp_path / "named.tif", scene16, descriptions=["blue", "green", "red", "nir"])
    spec = InputSpec(bands=["band1", "band2", "band3", "band4"], dtype="uint16")
    open_input(path, spec, band_names="auto").close()
    with pytest.raises(InputRasterError, match="--band-names ignore"):
        open_input(path, spec, band_names="strict")


def test_ignore_still_checks_the_band_count(scene16, tmp_path):
    path = write_raster(tmp_path / "3b.tif", scene16[:3], descriptions=["x", "y", "z"])
    with pytest.raises(InputRasterError, match="has 3 bands but the model expects 4"):
        open_input(path, InputSpec(bands=BANDS, dtype="uint16"), band_names="ignore")


def test_unknown_band_names_mode(scene16, tmp_path):
    path = write_raster(tmp_path / "x.tif", scene16, descriptions=BANDS)
    with pytest.raises(InputRasterError, match="choose one of strict, auto, ignore"):
        open_input(path, InputSpec(bands=BANDS, dtype="uint16"), band_names="loose")


def test_generic_names_are_numbered_by_position():
    assert generic_names(["B1", "band2", "Band 3", "", "r2_band1"])
    assert not generic_names(["B2", "B1"])
    assert not generic_names(["B01"])
    assert not generic_names(["nir"])
