"""lulc-infer as a hostile-but-realistic user drives it: real processes, real signals, files
checked byte for byte afterwards. Nothing the user did not name as this run's output may
change; an interrupted, killed or concurrent run gives the uninterrupted run's pixels or
fails with one line."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import BANDS, LULC_INFER, infer, listing, pixels, synthetic_scene, write_raster

#: a run of many block rows (64 px blocks on 448 px), slow enough to be hit mid-way
SLOW = ("--block-px", "64", "--probabilities")


def start(*args) -> subprocess.Popen:
    return subprocess.Popen([LULC_INFER, *map(str, args), "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def assert_one_line_error(result, *needles: str) -> None:
    err = result.stderr.strip()
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (links as their target text), to prove nothing changed."""
    return {str(p.relative_to(folder)): (os.readlink(p).encode() if p.is_symlink() else p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file() or p.is_symlink()}


@pytest.fixture
def work(tmp_path, trained_bundle) -> dict:
    image, _ = synthetic_scene(120, 150, seed=5)
    image[:, :20, :30] = 0
    path = write_raster(tmp_path / "in.tif", image, descriptions=BANDS)
    (tmp_path / "notes.txt").write_text("field notes\n")
    return {"dir": tmp_path, "image": path, "bundle": trained_bundle}


@pytest.fixture(scope="module")
def big(tmp_path_factory, trained_bundle) -> dict:
    """A 448 x 448 raster and its uninterrupted map (class + probability bands)."""
    root = tmp_path_factory.mktemp("big")
    image, _ = synthetic_scene(448, 448, seed=9)
    image[:, 300:, :100] = 0
    path = write_raster(root / "in.tif", image, descriptions=BANDS)
    reference = root / "reference.tif"
    assert infer(trained_bundle, path, "-o", reference, *SLOW).returncode == 0
    return {"image": path, "reference": reference, "bundle": trained_bundle}


# ---- outputs that would destroy something -------------------------------------------------

@pytest.mark.parametrize("case", ["quicklook-is-input", "quicklook-is-map", "output-is-input", "output-links-to-input",
                                  "output-is-second-input", "output-in-bundle", "output-is-bundle"])
def test_outputs_that_name_an_input_or_the_bundle_are_refused(work, case, tmp_path):
    d, image, bundle = work["dir"], work["image"], work["bundle"]
    (d / "link.tif").symlink_to(image)
    second = write_raster(d / "second.tif", synthetic_scene(120, 150, seed=6)[0][2:], descriptions=BANDS[2:])
    first = write_raster(d / "first.tif", synthetic_scene(120, 150, seed=6)[0][:2], descriptions=BANDS[:2])
    args = {
        "quicklook-is-input": (bundle, image, "-o", d / "m.tif", "--quicklook", image),
        "quicklook-is-map": (bundle, image, "-o", d / "m.tif", "--quicklook", d / "m.tif"),
        "output-is-input": (bundle, image, "-o", image, "--overwrite"),
        "output-links-to-input": (bundle, d / "link.tif", "-o", image, "--overwrite"),
        "output-is-second-input": (bundle, first, second, "-o", d / "x" / ".." / "second.tif", "--overwrite"),
        "output-in-bundle": (bundle, image, "-o", Path(bundle) / "map.tif"),
        "output-is-bundle": (bundle, image, "-o", bundle, "--overwrite"),
    }[case]
    (d / "x").mkdir()
    before, bundle_before = snapshot(d), snapshot(Path(bundle))
    result = infer(*args)
    assert_one_line_error(result)
    assert snapshot(d) == before and snapshot(Path(bundle)) == bundle_before


def test_device_node_is_never_replaced(work):
    if not os.path.exists("/dev/null"):
        pytest.skip("no /dev/null on this OS")
    result = infer(work["bundle"], work["image"], "-o", "/dev/null", "--overwrite")
    assert_one_line_error(result, "not a regular file")
    assert Path("/dev/null").is_char_device()


def test_existing_quicklook_needs_overwrite_and_is_checked_before_the_map(work):
    d = work["dir"]
    (d / "q.png").write_bytes(b"my own picture")
    before = snapshot(d)
    assert_one_line_error(infer(work["bundle"], work["image"], "-o", d / "m.tif", "--quicklook", d / "q.png"),
                          "already exists")
    assert snapshot(d) == before  # no map either: every output is checked before any work
    assert_one_line_error(infer(work["bundle"], work["image"], "-o", d / "m.tif", "--quicklook", d / "nope" / "q.png"),
                          "does not exist")
    assert snapshot(d) == before


def test_resume_never_replaces_a_finished_map(work):
    d = work["dir"]
    assert infer(work["bundle"], work["image"], "-o", d / "m.tif").returncode == 0
    before = snapshot(d)
    assert_one_line_error(infer(work["bundle"], work["image"], "-o", d / "m.tif", "--resume"), "already exists")
    assert snapshot(d) == before


def test_all_nodata_and_all_nan_inputs_are_refused(work):
    d = work["dir"]
    zeros = write_raster(d / "zeros.tif", np.zeros((4, 40, 50), np.uint16), descriptions=BANDS)
    nans = write_raster(d / "nans.tif", np.full((4, 40, 50), np.nan, np.float32), descriptions=BANDS, nodata=None)
    for path in (zeros, nans):
        assert_one_line_error(infer(work["bundle"], path, "-o", d / "m.tif"), "no valid pixel")
        assert not [p for p in d.iterdir() if p.name.startswith((".m.", "m."))]


def test_huge_tile_is_clamped_and_tile_zero_is_a_usage_error(work):
    d = work["dir"]
    assert infer(work["bundle"], work["image"], "-o", d / "huge.tif", "--tile", 4_000_000).returncode == 0
    assert infer(work["bundle"], work["image"], "-o", d / "ref.tif", "--tile", 192, "--overlap", 0).returncode == 0
    assert (pixels(d / "huge.tif") == pixels(d / "ref.tif")).mean() > 0.999  # one tile over the raster either way
    result = infer(work["bundle"], work["image"], "-o", d / "zero.tif", "--tile", 0)
    assert result.returncode == 2 and "--tile" in result.stderr and not (d / "zero.tif").exists()


@pytest.fixture
def full_disk(tmp_path):
    """A 256 KiB tmpfs (needs root and mount rights: CI and the dev machines have them)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root): the full-disk case is not exercised")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_disk_full_names_the_cause_and_leaves_nothing(work, full_disk):
    big_image = write_raster(work["dir"] / "big.tif", synthetic_scene(600, 600, seed=3)[0], descriptions=BANDS)
    result = infer(work["bundle"], big_image, "-o", full_disk / "m.tif", "--probabilities")
    assert_one_line_error(result, "Error: cannot write", "no space left on the tmpfs file system", "needs up to")
    assert list(full_disk.iterdir()) == []  # nothing half-written, not even hidden files


def test_verbose_shows_the_backend(work):
    result = infer(work["bundle"], work["image"], "-o", work["dir"] / "m.tif", "-v")
    assert result.returncode == 0 and "onnxruntime providers" in result.stderr


# ---- interrupted, killed and concurrent runs ----------------------------------------------

def rows_recorded(out: Path) -> int:
    state = out.with_name(f".{out.name}.resume.npz")
    try:
        with np.load(state) as data:
            return int(data["rows_done"])
    except (OSError, ValueError, KeyError):
        return 0


def stop_after(args: tuple, out: Path, rows: int, sig: int = signal.SIGKILL) -> subprocess.Popen:
    """Start ``lulc-infer ARGS`` and send ``sig`` once ``rows`` block rows are recorded
    (0: as soon as the partial map exists); returns the ended process."""
    proc = start(*args)
    partial = out.with_name(f".{out.name}.partial.tif")
    wait_until((lambda: partial.exists()) if rows == 0 else (lambda: rows_recorded(out) >= rows), proc)
    proc.send_signal(sig)
    proc.wait(timeout=120)
    return proc


def wait_until(condition, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"run ended before the point to stop it at: {proc.communicate()}"
        assert time.monotonic() < deadline
        time.sleep(0.005)


@pytest.mark.slow
@pytest.mark.parametrize("rows", [0, 1, 4])
def test_sigkill_then_resume_gives_the_uninterrupted_pixels(big, tmp_path, rows):
    """Killed with SIGKILL after ``rows`` recorded block rows (0: as soon as the partial map
    exists), then resumed (and killed once more mid-way for rows > 0): same pixels."""
    out = tmp_path / "map.tif"
    args = (big["bundle"], big["image"], "-o", out, *SLOW)
    stop_after(args, out, rows)
    assert not out.exists()
    if rows:
        stop_after((*args, "--resume"), out, rows + 2)
    result = infer(*args, "--resume")
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(pixels(out), pixels(big["reference"]))
    assert sorted(p.name for p in tmp_path.iterdir()) == listing(maps=("map.tif",))


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_resumes(big, tmp_path):
    out = tmp_path / "map.tif"
    args = (big["bundle"], big["image"], "-o", out, *SLOW)
    proc = stop_after(args, out, 2, signal.SIGTERM)
    err = proc.stderr.read()
    assert proc.returncode == 1 and "Traceback" not in err and "rerun with --resume" in err.strip().splitlines()[-1]
    assert not out.exists()
    assert infer(*args, "--resume").returncode == 0
    np.testing.assert_array_equal(pixels(out), pixels(big["reference"]))


@pytest.mark.slow
def test_a_damaged_partial_map_is_never_resumed(big, tmp_path):
    out = tmp_path / "map.tif"
    args = (big["bundle"], big["image"], "-o", out, *SLOW)
    stop_after(args, out, 3)
    partial = out.with_name(".map.tif.partial.tif")
    data = bytearray(partial.read_bytes())
    data[-4096:] = bytes(4096)  # lose the last written blocks, as a crash of the disk cache would
    partial.write_bytes(bytes(data))
    result = infer(*args, "--resume", "-v")
    assert result.returncode == 0 and ("starting over" in result.stderr or "resuming" in result.stderr)
    np.testing.assert_array_equal(pixels(out), pixels(big["reference"]))


def holds_lock(pid: int, lock: Path) -> bool:
    """Whether process ``pid`` holds the flock on ``lock``, read from /proc/locks: taking the
    lock ourselves to probe it could make the run we watch fail to take it."""
    try:
        inode = str(lock.stat().st_ino)
    except FileNotFoundError:
        return False
    return any(f[1] == "FLOCK" and f[4] == str(pid) and f[5].rsplit(":", 1)[-1] == inode
               for f in (line.split() for line in Path("/proc/locks").read_text().splitlines()) if len(f) > 5)


@pytest.mark.slow
def test_a_second_run_on_the_same_output_is_refused(big, tmp_path):
    out = tmp_path / "map.tif"
    first = start(big["bundle"], big["image"], "-o", out, *SLOW)
    wait_until(lambda: holds_lock(first.pid, out.with_name(".map.tif.lock")), first)
    # stopped while it holds the lock: a fast machine finished the first run before the
    # second one had started, and a run after it is not concurrent
    first.send_signal(signal.SIGSTOP)
    try:
        second = infer(big["bundle"], big["image"], "-o", out, *SLOW, "--overwrite")
    finally:
        first.send_signal(signal.SIGCONT)
    assert_one_line_error(second, "another run is writing")
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    np.testing.assert_array_equal(pixels(out), pixels(big["reference"]))
