"""What each post-processing option costs, against the plain run, and against the whole-image peer.

Every case is a ``lulc-infer`` (or ``lulc clean``) subprocess on the same synthetic raster, so
its wall time and peak RSS (``wait4``) are its own; ratios are to the plain run of this same
invocation. The peers are what other tools do: ``rasterio.features.sieve`` / ``shapes`` on
the whole map read into RAM. The ``--mmu`` map is checked pixel for pixel against that sieve
(with ``--dask local:2`` too when asked), and the polygons are counted against ``shapes``.

Usage: ``python benchmarks/postprocess_bench.py out/demo/bundle --size 4096 -o out/post-bench``
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import write_synthetic  # noqa: E402

BIN = Path(sys.executable).parent
#: the cases: label -> extra lulc-infer arguments (the map is OUT.tif)
CASES = {
    "plain": [],
    "mmu 0.5 ha (50 px)": ["--mmu", "0.5"],
    "uncertainty entropy": ["--uncertainty", "entropy"],
    "majority 2": ["--majority", "2"],
    "smooth bayes": ["--smooth", "bayes"],
    "vector": ["--vector", "{out}.gpkg"],
    "tta flips": ["--tta", "flips"],
    "ensemble of 2": ["--ensemble", "{bundle}"],
}

PEER = """
import sys, time, resource, numpy as np, rasterio
from rasterio.features import sieve, shapes
t0 = time.perf_counter()
with rasterio.open(sys.argv[1]) as src:
    band = src.read(1)
    profile = src.profile
if sys.argv[2] == "sieve":
    out = sieve(band, int(sys.argv[3]), mask=band != 255, connectivity=8)
    profile.update(driver="GTiff", count=1)
    with rasterio.open(sys.argv[4], "w", **profile) as dst:
        dst.write(out, 1)
    result = 0
else:
    result = sum(1 for _ in shapes(band, mask=band != 255, connectivity=4))
print(time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, result)
"""


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """(seconds, peak RSS MB, stdout) of a subprocess."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    out, err = proc.stdout.read(), proc.stderr.read()
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(cmd)} failed: {err[-2000:]}")
    return time.perf_counter() - t0, usage.ru_maxrss / 1024, out


def pixels_equal(a: Path, b: Path) -> bool:
    import numpy as np
    import rasterio

    with rasterio.open(a) as x, rasterio.open(b) as y:
        return all(np.array_equal(x.read(1, window=w), y.read(1, window=w)) for _, w in x.block_windows(1))


def polygon_count(path: Path) -> int:
    import fiona

    with fiona.open(path) as src:
        return len(src)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--dask", action="store_true", help="also --mmu on --dask local:2, checked against the sieve")
    parser.add_argument("-o", "--output", default="out/post-bench")
    args = parser.parse_args()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    raster = write_synthetic(out / f"synthetic_{args.size}.tif", args.size, args.bundle)
    rows = []
    try:
        for label in args.cases:
            target = out / f"map_{len(rows)}.tif"
            extra = [a.format(out=target, bundle=args.bundle) for a in CASES[label]]
            seconds, rss, _ = timed([str(BIN / "lulc-infer"), args.bundle, str(raster), "-o", str(target),
                                     "--no-progress", "--overwrite", *extra])
            rows.append({"case": label, "size": args.size, "seconds": round(seconds, 2), "peak_rss_mb": round(rss, 1),
                         "map": str(target), "vector": extra[1] if label == "vector" else None})
            print(f"{label:<24} {seconds:7.2f} s  {rss:8.1f} MB", flush=True)
        plain = rows[0]
        for row in rows:
            row["x_plain_time"] = round(row["seconds"] / plain["seconds"], 3)
            row["x_plain_rss"] = round(row["peak_rss_mb"] / plain["peak_rss_mb"], 3)
        peers = []
        mmu_row = next((r for r in rows if r["case"].startswith("mmu")), None)
        if mmu_row:
            sieved = out / "peer_sieve.tif"
            seconds, rss, _ = timed([sys.executable, "-c", PEER, plain["map"], "sieve", "50", str(sieved)])
            mmu_row["equals_whole_image_sieve"] = pixels_equal(Path(mmu_row["map"]), sieved)
            peers.append({"case": "rasterio sieve, whole map in RAM", "seconds": round(seconds, 2),
                          "peak_rss_mb": round(rss, 1)})
            if args.dask:
                dask_map = out / "map_dask.tif"
                seconds, rss, _ = timed([str(BIN / "lulc-infer"), args.bundle, str(raster), "-o", str(dask_map),
                                         "--no-progress", "--overwrite", "--mmu", "0.5", "--dask", "local:2"])
                mmu_row["dask_local2_equals_whole_image_sieve"] = pixels_equal(dask_map, sieved)
                mmu_row["dask_local2_seconds"] = round(seconds, 2)
        vec_row = next((r for r in rows if r["case"] == "vector"), None)
        if vec_row:
            seconds, rss, stdout = timed([sys.executable, "-c", PEER, vec_row["map"], "shapes"])
            vec_row["polygons"] = polygon_count(Path(vec_row["vector"]))
            vec_row["polygons_whole_image_shapes"] = int(stdout.split()[2])
            peers.append({"case": "rasterio shapes, whole map in RAM", "seconds": round(seconds, 2),
                          "peak_rss_mb": round(rss, 1)})
        (out / "postprocess.json").write_text(json.dumps({"rows": rows, "peers": peers}, indent=2))
        lines = ["| case | seconds | × plain | peak RSS MB | × plain RSS | check |", "|---|---:|---:|---:|---:|---|"]
        for r in rows:
            check = {k: v for k, v in r.items() if k.startswith(("equals", "dask", "polygons"))}
            lines.append(f"| {r['case']} | {r['seconds']} | {r['x_plain_time']} | {r['peak_rss_mb']} | "
                         f"{r['x_plain_rss']} | {json.dumps(check) if check else ''} |")
        for p in peers:
            lines.append(f"| peer: {p['case']} | {p['seconds']} | | {p['peak_rss_mb']} | | |")
        (out / "postprocess.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
    finally:
        raster.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
