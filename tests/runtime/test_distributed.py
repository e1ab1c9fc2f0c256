"""`lulc-infer --dask`: the distributed map is the single-process map, pixel for pixel, also
when a worker dies mid-run; an unreachable scheduler is one line (CI: 2 cores, local:2)."""
from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
import rasterio

from conftest import BANDS, LULC_INFER, listing, pixels, synthetic_scene, write_raster

distributed = pytest.importorskip("distributed", reason="the [dask] extra is not installed")

#: small blocks, so a 300 x 260 raster has several block rows and thus several parts
ARGS = ("--block-px", "64", "--probabilities", "--confidence", "--no-progress")


def infer(*args) -> subprocess.CompletedProcess:
    return subprocess.run([LULC_INFER, *map(str, args)], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def case(tmp_path_factory, trained_bundle) -> dict:
    """A raster that is no multiple of the tile or block size, with nodata, and its
    single-process map."""
    root = tmp_path_factory.mktemp("dask")
    image, _ = synthetic_scene(300, 260, seed=2)
    image[:, 200:, :50] = 0
    image[:, 10:30, 100:140] = 0
    path = write_raster(root / "in.tif", image, descriptions=BANDS)
    reference = root / "single.tif"
    result = infer(trained_bundle, path, "-o", reference, *ARGS)
    assert result.returncode == 0, result.stderr
    return {"image": path, "reference": reference, "bundle": trained_bundle}


@pytest.mark.slow
def test_local_cluster_map_equals_single_process(case, tmp_path):
    from rio_cogeo.cogeo import cog_validate

    out = tmp_path / "dask.tif"
    result = infer(case["bundle"], case["image"], "-o", out, *ARGS, "--dask", "local:2", "--json")
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(pixels(out), pixels(case["reference"]))
    valid, errors, _ = cog_validate(str(out), strict=True)
    assert valid, errors
    with rasterio.open(out) as a, rasterio.open(case["reference"]) as b:
        assert a.profile == b.profile and a.descriptions == b.descriptions
        assert a.tags(1) == b.tags(1) and a.overviews(1) == b.overviews(1)
    assert '"device": "dask: ' in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == listing(maps=("dask.tif",))  # parts folder removed


class KillOnce(distributed.WorkerPlugin):
    """A worker plugin that kills its worker process shortly after a lulc part starts, once."""

    def __init__(self, marker: str):
        self.marker = marker

    def transition(self, key, start, finish, **kwargs):
        if finish == "executing" and str(key).startswith("lulc-part") and not os.path.exists(self.marker):
            Path(self.marker).touch()
            threading.Timer(0.2, os._exit, args=(1,)).start()


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_the_map_is_identical(case, tmp_path, monkeypatch):
    from distributed import Client, LocalCluster

    here = Path(__file__).parent  # the workers unpickle the plugin from this module, which imports conftest
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(here), str(here.parent), os.environ.get("PYTHONPATH", "")]))
    marker = tmp_path / "killed"
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, Client(cluster) as client:
        client.register_plugin(KillOnce(str(marker)))
        out = tmp_path / "dask.tif"
        result = infer(case["bundle"], case["image"], "-o", out, *ARGS, "--dask", cluster.scheduler_address)
    assert result.returncode == 0, result.stderr
    assert marker.exists()  # a worker really died mid-run
    np.testing.assert_array_equal(pixels(out), pixels(case["reference"]))


def test_unreachable_scheduler_is_one_line(case, tmp_path):
    result = infer(case["bundle"], case["image"], "-o", tmp_path / "m.tif", "--dask", "tcp://127.0.0.1:9")
    err = result.stderr.strip()
    assert result.returncode == 1 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "cannot reach the Dask scheduler" in err and not list(tmp_path.iterdir())


def test_parts_cover_every_block_row_once():
    from lulc.runtime.distributed import part_rows
    from lulc.runtime.tiling import make_grid

    for height, workers in [(300, 1), (300, 2), (5000, 3), (64, 4)]:
        grid = make_grid(height, 100, 64, 16, 64)
        plan = part_rows(grid, workers)
        assert [r for r0, r1 in plan for r in range(r0, r1)] == list(range(grid.shape[0]))
        assert len(plan) <= max(1, workers * 2)
