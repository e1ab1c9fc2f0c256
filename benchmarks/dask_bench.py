"""Benchmark the distributed path: one raster single-process vs ``--dask local:1`` / ``local:2``,
and ``lulc batch`` over several rasters in-process vs on ``local:2``.

Every case is the real command in its own subprocess; ``seconds`` is the command's wall
time including interpreter start-up and, for Dask, starting and closing the LocalCluster
(what a user waits for), ``run_s`` the run's own ``--json`` seconds where the command has
them. Maps of each distributed case are compared with the single-process map.

Usage: ``python benchmarks/dask_bench.py out/demo/bundle --size 4096 --maps 8 -o out/dask-bench``
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import write_synthetic  # noqa: E402

BIN = Path(sys.executable).parent


def timed(*args: str) -> tuple[float, dict | None]:
    t0 = time.perf_counter()
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"{' '.join(map(str, args))} failed:\n{done.stderr}")
    return seconds, json.loads(done.stdout) if done.stdout.strip().startswith("{") else None


def same_pixels(a: Path, b: Path) -> bool:
    with rasterio.open(a) as x, rasterio.open(b) as y:
        return bool(np.array_equal(x.read(), y.read()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--size", type=int, default=4096, help="side of the one-raster cases (px)")
    parser.add_argument("--maps", type=int, default=8, help="rasters in the lulc batch cases")
    parser.add_argument("--map-size", type=int, default=1024, help="side of each batch raster (px)")
    parser.add_argument("-o", "--out", default="out/dask-bench")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raster = write_synthetic(out / f"synthetic_{args.size}.tif", args.size, args.bundle)
    rows = []
    single = out / "single.tif"
    for name, extra in (("single process", ()), ("--dask local:1", ("--dask", "local:1")),
                        ("--dask local:2", ("--dask", "local:2"))):
        target = single if not extra else out / f"{extra[1].replace(':', '')}.tif"
        seconds, summary = timed(BIN / "lulc-infer", args.bundle, raster, "-o", target, "--overwrite", "--json",
                                 "--no-progress", *extra)
        rows.append({"case": f"lulc-infer {name}", "px": args.size**2, "seconds": round(seconds, 2),
                     "run_s": summary["seconds"], "mpix_s": round(args.size**2 / 1e6 / seconds, 3),
                     "identical": True if not extra else same_pixels(target, single)})
    maps = [write_synthetic(out / f"tile_{i}.tif", args.map_size, args.bundle, seed=i) for i in range(args.maps)]
    for name, extra in (("in-process", ()), ("--dask local:2", ("--dask", "local:2"))):
        folder = out / f"batch-{'dask' if extra else 'local'}"
        seconds, _ = timed(BIN / "lulc", "batch", args.bundle, *maps, "-o", folder, "--overwrite", "--no-progress", *extra)
        px = args.maps * args.map_size**2
        rows.append({"case": f"lulc batch {args.maps} maps {name}", "px": px, "seconds": round(seconds, 2), "run_s": None,
                     "mpix_s": round(px / 1e6 / seconds, 3), "identical": None})
    base = rows[0]["seconds"]
    for row in rows[:3]:
        row["x_single"] = round(row["seconds"] / base, 3)
    (out / "dask_results.json").write_text(json.dumps(rows, indent=2))
    lines = ["| case | MPix | seconds (wall) | run s | MPix/s | × single-process time | same map |", "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['px'] / 1e6:.1f} | {r['seconds']} | {r['run_s'] or ''} | {r['mpix_s']} | "
                     f"{r.get('x_single', '')} | {'' if r['identical'] is None else r['identical']} |")
    (out / "dask_results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    for p in [raster, *maps]:
        p.unlink()


if __name__ == "__main__":
    main()
