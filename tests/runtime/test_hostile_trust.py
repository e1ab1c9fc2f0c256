"""Trust, second pass: a full disk, a changed model or input between a kill and --resume, and a
kill between the renames of a run's outputs never give a wrong map with exit 0.

Real processes throughout: lulc-infer on a small tmpfs at many free-space levels, SIGKILL
mid-run, files hashed before and after.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import rasterio
from onnx import helper, numpy_helper

from conftest import BANDS, LULC_INFER, infer, listing, pixels, synthetic_scene, write_raster
from lulc.runtime.core.bundle import Bundle, sha256sum

SLOW = ("--block-px", "64", "--probabilities")


def one_line(result: subprocess.CompletedProcess, *needles: str) -> str:
    err = result.stderr.strip()
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def read_every_block(path: Path) -> None:
    """Every block of every band and overview decodes (a truncated COG raises here)."""
    with rasterio.open(path) as src:
        levels = len(src.overviews(1))
    for options in [{}, *({"OVERVIEW_LEVEL": n} for n in range(levels))]:
        with rasterio.open(path, **options) as src:
            for _, window in src.block_windows(1):
                src.read(window=window)


@pytest.fixture(scope="module")
def big(tmp_path_factory, trained_bundle) -> dict:
    root = tmp_path_factory.mktemp("trust")
    image, _ = synthetic_scene(448, 448, seed=9)
    image[:, 300:, :100] = 0
    path = write_raster(root / "in.tif", image, descriptions=BANDS)
    reference = root / "reference.tif"
    assert infer(trained_bundle, path, "-o", reference, *SLOW, "--quicklook", root / "reference.png").returncode == 0
    return {"root": root, "image": path, "reference": reference, "bundle": trained_bundle}


# ---- a nearly full disk ----------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs for the outputs (needs root and mount rights: CI and the dev machines have them)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3000k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root): the full-disk cases are not exercised")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def fill(folder: Path, leave: int) -> None:
    """Leave ``leave`` bytes free in ``folder`` with a filler file (not one of the run's outputs)."""
    fs = os.statvfs(folder)
    size = fs.f_bavail * fs.f_frsize - leave
    with open(folder / "filler.bin", "wb") as fh:
        fh.write(b"\0" * max(0, size))


@pytest.mark.slow
def test_a_nearly_full_disk_gives_a_whole_map_or_one_line_and_the_old_files(big, small_disk):
    """At every free-space level, from far too little to enough: exit 0 with a map that reads
    whole and equals the reference, or exit 1, one line naming the file system, the old map,
    sidecars and quicklook byte-identical and no temporary file left."""
    outcomes = []
    for leave_kb in (40, 300, 800, 1100, 1300, 1500, 1700, 2100):
        for p in small_disk.iterdir():
            p.unlink()
        out, png = small_disk / "map.tif", small_disk / "map.png"
        for name in ("map.tif", "map.tif.aux.xml", "map.qml", "map.png"):
            (small_disk / name).write_bytes(f"the user's old {name}".encode())
        fill(small_disk, leave_kb * 1024)
        before = snapshot(small_disk)
        result = infer(big["bundle"], big["image"], "-o", out, *SLOW, "--quicklook", png, "--overwrite")
        if result.returncode == 0:
            read_every_block(out)
            np.testing.assert_array_equal(pixels(out), pixels(big["reference"]))
            assert png.read_bytes() == (big["root"] / "reference.png").read_bytes()
            assert sorted(p.name for p in small_disk.iterdir()) == sorted(["filler.bin", *listing(maps=("map.tif",)),
                                                                           "map.png"])
        else:
            one_line(result, f"cannot write {small_disk}", "no space left on the tmpfs file system at", "needs up to")
            assert snapshot(small_disk) == before, leave_kb
        outcomes.append(result.returncode)
    assert 0 in outcomes and 1 in outcomes, outcomes  # the levels span both outcomes
    assert outcomes == sorted(outcomes, reverse=True)  # more room never turns a success into a failure


def test_gdal_errors_that_raise_nothing_are_captured(small_disk):
    """libtiff's full-disk messages (printed straight to stderr by libtiff's own handler) are
    recorded while a capture is open, whether or not GDAL raised."""
    from lulc.runtime.io.gdal_errors import captured

    fill(small_disk, 20 * 1024)
    profile = dict(driver="GTiff", width=512, height=512, count=1, dtype="uint8", crs="EPSG:32633",
                   transform=rasterio.transform.from_origin(0, 0, 10, 10), tiled=True)
    with captured() as errors:
        with pytest.raises(rasterio.errors.RasterioError):
            with rasterio.open(small_disk / "x.tif", "w", **profile) as dst:
                dst.write(np.random.default_rng(0).integers(0, 255, (1, 512, 512), dtype=np.uint8))
        failure, messages = errors.failed(), errors.messages()
    assert failure is not None and "No space left on device" in " ".join(messages), messages


# ---- what a resumed run continues --------------------------------------------------------------

def rows_recorded(out: Path) -> int:
    try:
        with np.load(out.with_name(f".{out.name}.resume.npz")) as data:
            return int(data["rows_done"])
    except (OSError, ValueError, KeyError):
        return 0


def killed_after_rows(args: tuple, out: Path, rows: int = 2) -> None:
    proc = subprocess.Popen([LULC_INFER, *map(str, args), "--no-progress"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    while rows_recorded(out) < rows:
        assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not out.exists() and rows_recorded(out) >= rows


def swapped_classes(src: Path, dst: Path) -> None:
    """An ONNX model that outputs ``src``'s probabilities with the classes rotated: another
    model with the same shapes, whose map differs from the original almost everywhere."""
    model = onnx.load(str(src))
    out = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [f"{out}_unrotated" if name == out else name for name in node.output]
    model.graph.initializer.append(numpy_helper.from_array(np.array([1, 2, 0], np.int64), "rotation"))
    model.graph.node.append(helper.make_node("Gather", [f"{out}_unrotated", "rotation"], [out], axis=3))
    onnx.save(model, str(dst))


def add_onnx_artifact(bundle: Path, name: str, file: str, precision: str) -> None:
    b = Bundle.load(bundle)
    swapped_classes(bundle / "model.onnx", bundle / f"staged-{file}")
    b.add_artifact(name, bundle / f"staged-{file}", "onnx", details={"precision": precision}, dest=file)


def replace_model(bundle: Path) -> None:
    swapped_classes(bundle / "model.onnx", bundle / "model.onnx")
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest["artifacts"]["onnx"]["sha256"] = sha256sum(bundle / "model.onnx")
    (bundle / "bundle.json").write_text(json.dumps(manifest))


def rewrite_input(image: Path) -> None:
    """Other pixels at the same path, with the same size and modification time."""
    st = image.stat()
    data, _ = synthetic_scene(448, 448, seed=21)
    write_raster(image, data, descriptions=BANDS)
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert image.stat().st_size == st.st_size


CHANGES = {
    "int8-exported": (lambda b, i: add_onnx_artifact(b, "onnx-int8", "model.int8.onnx", "int8"), ()),
    "precision-fp16": (lambda b, i: add_onnx_artifact(b, "onnx-fp16", "model.fp16.onnx", "fp16"), ("--precision", "fp16")),
    "model-replaced": (lambda b, i: replace_model(b), ()),
    "input-rewritten": (lambda b, i: rewrite_input(i), ()),
}


@pytest.mark.slow
@pytest.mark.parametrize("change", list(CHANGES))
def test_resume_after_a_change_starts_over_and_equals_a_clean_run(big, tmp_path, change):
    """Killed mid-run, then the model, precision or input changes and the run is resumed: the
    map equals a clean run of the new configuration, never rows of two models or inputs."""
    bundle = tmp_path / "bundle"
    subprocess.run(["cp", "-r", str(big["bundle"]), str(bundle)], check=True)
    image = tmp_path / "in.tif"
    image.write_bytes(big["image"].read_bytes())
    out = tmp_path / "map.tif"
    killed_after_rows((bundle, image, "-o", out, *SLOW), out)
    modify, extra = CHANGES[change]
    modify(bundle, image)
    clean = tmp_path / "clean.tif"
    assert infer(bundle, image, "-o", clean, *SLOW, *extra).returncode == 0
    assert (pixels(clean)[0] != pixels(big["reference"])[0]).mean() > 0.3  # the change matters
    resumed = infer(bundle, image, "-o", out, *SLOW, *extra, "--resume", "-v")
    assert resumed.returncode == 0, resumed.stderr
    assert "starting over" in resumed.stderr
    np.testing.assert_array_equal(pixels(out), pixels(clean))


# ---- a kill between the renames of a run's outputs ---------------------------------------------

KILL_AT_RENAME = """
import os, pathlib, signal, sys
from lulc.runtime.io import publish
# rename 0 puts the publication record in place; 1-4 the aux.xml, qml, quicklook and map
renames, stop_at = [0], int(os.environ["LULC_TEST_KILL_AT"])
real_replace, real_unlink = publish.replace_atomically, pathlib.Path.unlink
def dying_replace(staged, final):
    if renames[0] == stop_at:
        os.kill(os.getpid(), signal.SIGKILL)
    renames[0] += 1
    real_replace(staged, final)
def dying_unlink(path, missing_ok=False):  # stop_at 5: every file renamed, the record not yet removed
    if stop_at == 5 and path.name.endswith(".publish.json"):
        os.kill(os.getpid(), signal.SIGKILL)
    real_unlink(path, missing_ok)
publish.replace_atomically, pathlib.Path.unlink = dying_replace, dying_unlink
from lulc.runtime.cli import infer_main
sys.argv[0] = "lulc-infer"
infer_main()
"""


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", [0, 1, 2, 3, 4, 5])
def test_a_kill_while_the_outputs_are_published_is_finished_by_resume(big, tmp_path, kill_at):
    """SIGKILL just before the publication record is written (0), before the rename of the
    aux.xml, qml, quicklook or map (1-4), or after every rename (5): --resume completes the
    run, and its files equal a clean run's."""
    out, png = tmp_path / "map.tif", tmp_path / "map.png"
    args = [big["bundle"], big["image"], "-o", out, *SLOW, "--quicklook", png, "--no-progress"]
    killed = subprocess.run([sys.executable, "-c", KILL_AT_RENAME, *map(str, args)], capture_output=True, text=True,
                            env={**os.environ, "LULC_TEST_KILL_AT": str(kill_at)}, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (tmp_path / ".map.tif.publish.json").exists() == (kill_at > 0)
    resumed = infer(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    np.testing.assert_array_equal(pixels(out), pixels(big["reference"]))
    assert png.read_bytes() == (big["root"] / "reference.png").read_bytes()
    for sidecar in ("reference.tif.aux.xml", "reference.qml"):
        assert (tmp_path / sidecar.replace("reference", "map")).read_bytes() == (big["root"] / sidecar).read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*listing(maps=("map.tif",)), "map.png"])
