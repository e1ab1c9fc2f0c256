"""Faults and guarantees of the streaming runner: skipped nodata tiles, COG validity, resume
after an interrupt, nothing at the final path after Ctrl-C, corrupt blocks reported by window."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio

from conftest import BANDS, listing, synthetic_scene, write_raster
from lulc.runtime import session as session_module
from lulc.runtime.backends import Session
from lulc.runtime.core.errors import InputRasterError, Interrupted
from lulc.runtime.infer import InferOptions, run_inference
from lulc.runtime.io.mapformat import NODATA_CLASS

OPTS = dict(tile=16, overlap=4, block_px=24, progress=False)


@pytest.fixture
def raster(tmp_path):
    image, _ = synthetic_scene(80, 90, seed=11)
    image[:, :40, :] = 0  # the top half is nodata: whole tiles there must never reach the model
    return write_raster(tmp_path / "in.tif", image, descriptions=BANDS), image


def test_all_nodata_tiles_skip_the_model(bundle_copy, raster, session, tmp_path):
    path, image = raster
    summary = run_inference(bundle_copy, path, tmp_path / "out.tif", InferOptions(**OPTS))
    assert summary.tiles_skipped > 0 and session.tiles == summary.tiles_run
    # tiles entirely above row 40 are the skipped ones: origins 0, 12, 24 (24 + 16 <= 40)
    assert summary.tiles_skipped == 3 * 8
    with rasterio.open(tmp_path / "out.tif") as dst:
        classes = dst.read(1)
    assert (classes[:40] == NODATA_CLASS).all() and (classes[40:] < 3).all()


@pytest.mark.parametrize("probabilities", [False, True])
def test_output_is_a_valid_cog(bundle_copy, raster, session, tmp_path, probabilities):
    from rio_cogeo.cogeo import cog_validate

    path, _ = raster
    out = tmp_path / "out.tif"
    run_inference(bundle_copy, path, out, InferOptions(**OPTS, probabilities=probabilities))
    valid, errors, _ = cog_validate(str(out), strict=True)
    assert valid, errors
    with rasterio.open(out) as dst:
        layout = dst.tags(ns="IMAGE_STRUCTURE")
    # differencing helps smooth probability bands only; class ids compress better without it
    assert layout["COMPRESSION"] == "DEFLATE" and layout.get("PREDICTOR", "1") == ("2" if probabilities else "1")


class Interrupt(Session):
    """Raise KeyboardInterrupt on the n-th model call, like Ctrl-C in the middle of a run."""

    def __init__(self, session, after: int):
        self.session, self.after, self.calls = session, after, 0
        self.precision = session.precision

    def run(self, batch):
        self.calls += 1
        if self.calls == self.after:
            raise KeyboardInterrupt
        return self.session.run(batch)


def test_interrupt_leaves_nothing_then_resume_finishes_identically(bundle_copy, raster, session, tmp_path,
                                                                    monkeypatch):
    path, _ = raster
    reference = tmp_path / "reference.tif"
    run_inference(bundle_copy, path, reference, InferOptions(**OPTS, confidence=True))
    calls_whole = session.calls

    out = tmp_path / "out.tif"
    session.name, session.device = "pixel", "numpy"
    broken = Interrupt(session, after=calls_whole * 3 // 4)
    broken.name, broken.device = session.name, session.device
    monkeypatch.setattr(session_module, "prepare", lambda bundle, *options, **kw: broken)
    with pytest.raises(Interrupted, match="rerun with --resume"):
        run_inference(bundle_copy, path, out, InferOptions(**OPTS, confidence=True))
    assert not out.exists()  # Ctrl-C: nothing at the final path, only the resume state beside it
    assert {p.name for p in tmp_path.iterdir() if p.name.startswith(".out")} == {
        ".out.tif.partial.tif", ".out.tif.resume.npz"}

    monkeypatch.setattr(session_module, "prepare", lambda bundle, *options, **kw: session)
    before = session.calls
    run_inference(bundle_copy, path, out, InferOptions(**OPTS, confidence=True, resume=True))
    assert 0 < session.calls - before < calls_whole  # finished block rows were not recomputed
    with rasterio.open(out) as a, rasterio.open(reference) as b:
        np.testing.assert_array_equal(a.read(), b.read())
    assert sorted(p.name for p in tmp_path.iterdir()) == listing(("bundle", "in.tif"), ("out.tif", "reference.tif"))


def test_interrupt_without_resume_cleans_up(bundle_copy, raster, session, tmp_path, monkeypatch):
    path, _ = raster
    broken = Interrupt(session, after=2)
    broken.name, broken.device = "pixel", "numpy"
    monkeypatch.setattr(session_module, "prepare", lambda bundle, *options, **kw: broken)
    with pytest.raises(Interrupted, match="interrupted; "):
        run_inference(bundle_copy, path, tmp_path / "out.tif", InferOptions(**OPTS))
    monkeypatch.setattr(session_module, "prepare", lambda bundle, *options, **kw: session)
    run_inference(bundle_copy, path, tmp_path / "out.tif", InferOptions(**OPTS, overwrite=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == listing(("bundle", "in.tif"), ("out.tif",))


def test_corrupt_block_reports_its_window(bundle_copy, session, tmp_path):
    image, _ = synthetic_scene(64, 64, seed=4)
    path = tmp_path / "corrupt.tif"
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=4, dtype="uint16", crs="EPSG:32633",
                       transform=rasterio.transform.from_origin(0, 0, 10, 10), tiled=True, blockxsize=16,
                       blockysize=16, compress="deflate", nodata=0) as dst:
        dst.write(image)
    with rasterio.open(path) as src:
        offset = int(src.get_tag_item("BLOCK_OFFSET_3_2", "TIFF", bidx=1))  # block row 3, col 2
    data = bytearray(path.read_bytes())
    data[offset : offset + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    out = tmp_path / "out.tif"
    with pytest.raises(InputRasterError, match=r"at window col \d+ row \d+"):
        run_inference(bundle_copy, path, out, InferOptions(**OPTS))
    # stopped cleanly: no map at the final path; finished block rows stay resumable (hidden files)
    assert not out.exists()
    assert {p.name for p in tmp_path.iterdir() if p.name.startswith(".out")} <= {
        ".out.tif.partial.tif", ".out.tif.resume.npz"}
