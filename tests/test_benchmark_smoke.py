"""The benchmark at its smallest size, on the tiny test bundle: every case runs, outputs are written."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "infer_bench.py"


@pytest.mark.slow
def test_benchmark_smallest_size(trained_bundle, tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, str(BENCH), str(trained_bundle), "--sizes", "1024", "-o", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((out / "results.json").read_text())
    assert {r["case"] for r in rows} >= {"seed baseline (keras predict per tile)", "lulc-infer onnx CPU",
                                         "onnx backend limit"}
    for r in rows:
        assert r["size"] == 1024 and r["pixels"] == 1024 * 1024
        assert r["mpix_per_s"] > 0 and r["peak_rss_mb"] > 50
    table = (out / "results.md").read_text()
    assert table.count("\n| 1024 |") == len(rows)
    assert (out / "results.png").stat().st_size > 10_000
    assert not list(out.glob("synthetic_*.tif"))  # rasters are removed after their size


@pytest.mark.slow
def test_postprocess_benchmark_checks_its_maps(trained_bundle, tmp_path):
    """The post-processing benchmark at 1024²: every option runs, the --mmu map equals the
    whole-image sieve (single process and --dask local:2), the polygons match shapes' count."""
    bench = BENCH.with_name("postprocess_bench.py")
    out = tmp_path / "post"
    proc = subprocess.run([sys.executable, str(bench), str(trained_bundle), "--size", "1024", "--dask", "-o", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads((out / "postprocess.json").read_text())
    rows = {r["case"]: r for r in figures["rows"]}
    assert rows["plain"]["x_plain_time"] == 1.0 and all(r["seconds"] > 0 for r in rows.values())
    mmu = rows["mmu 0.5 ha (50 px)"]
    assert mmu["equals_whole_image_sieve"] and mmu["dask_local2_equals_whole_image_sieve"]
    assert rows["vector"]["polygons"] == rows["vector"]["polygons_whole_image_shapes"]
    assert len(figures["peers"]) == 2 and "| peer: rasterio sieve" in (out / "postprocess.md").read_text()
    assert not list(out.glob("synthetic_*.tif"))
