"""Benchmark lulc-infer against the seed-style baseline and the backend's own limit.

For each raster size (synthetic, bands and model from a bundle) every case runs in its own
subprocess, so its peak RSS (``getrusage`` in that process) is its own. Throughput is MPix of *output* per
second of the case's timed work (model load + read + inference + write; interpreter start-up
and imports excluded, so TensorFlow's import time does not penalise the baseline):

* ``baseline``: what the source projects did, a Python loop calling Keras ``model.predict``
  on each tile of the size the model was trained on (64 px for the sample U-Net; the seeds
  predicted on their 32/64 px training tiles), no overlap, stitched with numpy, written as GTiff;
* ``infer``: the ``lulc-infer`` command itself (``--json`` summary seconds), at ``--precision
  fp32`` and, where the bundle has ``model.int8.onnx``, ``int8``; and at fp32 with 512 px tiles
  (same overlap) beside the bundle's tile size, which shows what the overlap costs;
* ``limit``: the same backend session (same precision) on the same number of tiles of the same
  grid (tile, overlap, batch), pre-packed in memory: no I/O, no blending, no writing. Each
  ``infer`` row is compared with the ``limit`` row of its group (backend, precision, tile).

Usage: ``python benchmarks/infer_bench.py out/bundle --sizes 1024 4096 -o out/bench``
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import write_synthetic  # noqa: E402

DEFAULT_SIZES = (1024, 4096, 16384)
#: the larger tile of the tile-size rows (same overlap as the bundle's): fewer overlapping px
WIDE_TILE = 512
#: groups compared with the default fp32 rows (bundle tile size) in the "× fp32" column
COMPARED = ("onnx int8", f"onnx fp32 {WIDE_TILE}")


# ---- cases (each runs inside its own subprocess) -------------------------------------------

def case_baseline(bundle_dir: str, raster: str, out: str) -> dict:
    """Seed style: whole-tile ``model.predict`` calls, no overlap, numpy stitching."""
    import rasterio
    from rasterio.windows import Window

    from lulc.runtime.backends.keras_backend import load_keras_model
    from lulc.runtime.core.bundle import Bundle

    t0 = time.perf_counter()
    bundle = Bundle.load(bundle_dir)
    m = bundle.manifest
    model = load_keras_model(bundle)
    mean = np.asarray(m.normalization.mean, np.float32)
    std = np.asarray(m.normalization.std, np.float32)
    # the seeds predicted on their training tile size; bundles record it in their provenance
    t = m.provenance.get("config", {}).get("tile") or m.tile.size
    with rasterio.open(raster) as src:
        classes = np.zeros((src.height, src.width), np.uint8)
        for y in range(0, src.height, t):
            for x in range(0, src.width, t):
                h, w = min(t, src.height - y), min(t, src.width - x)
                tile = np.zeros((t, t, src.count), np.float32)
                tile[:h, :w] = src.read(window=Window(x, y, w, h)).transpose(1, 2, 0)
                probs = model.predict(((tile - mean) / std)[None], verbose=0)[0]
                classes[y : y + h, x : x + w] = probs[:h, :w].argmax(-1)
        profile = {"driver": "GTiff", "width": src.width, "height": src.height, "count": 1, "dtype": "uint8",
                   "crs": src.crs, "transform": src.transform}
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(classes, 1)
    return {"seconds": time.perf_counter() - t0, "pixels": int(classes.size), "device": "keras.predict"}


def case_infer(bundle_dir: str, raster: str, out: str, backend: str, precision: str, tile: int | None) -> dict:
    """The real command line, in this subprocess (so wait4 sees its memory)."""
    from click.testing import CliRunner

    from lulc.runtime.cli import main

    argv = ["infer", bundle_dir, raster, "-o", out, "--backend", backend, "--precision", precision, "--overwrite",
            "--json", "--no-progress", *(["--tile", str(tile)] if tile else [])]
    res = CliRunner().invoke(main, argv, catch_exceptions=False)
    if res.exit_code:
        raise SystemExit(res.output)
    summary = json.loads(res.stdout[res.stdout.index("{"):])
    return {"seconds": summary["seconds"], "pixels": summary["pixels"], "device": summary["device"],
            "precision": summary["precision"]}


def case_limit(bundle_dir: str, raster: str, backend: str, precision: str, tile: int | None) -> dict:
    """The backend alone: the grid's tile count through ``session.run`` on pre-packed tiles."""
    import rasterio

    from lulc.runtime.backends import prepare, run_all
    from lulc.runtime.core.bundle import Bundle
    from lulc.runtime.io.rasters import input_nodata
    from lulc.runtime.options import InferOptions, tile_geometry
    from lulc.runtime.pipeline import BlockRunner
    from lulc.runtime.tiling import make_grid

    bundle = Bundle.load(bundle_dir)
    m = bundle.manifest
    opts = InferOptions(backend=backend, precision=precision, tile=tile)
    with rasterio.open(raster) as src:
        grid = make_grid(src.height, src.width, *tile_geometry(bundle, opts, src.height, src.width), opts.block_px)
        total = sum(len(b.tile_ys) for b in grid.blocks())
        session = prepare(bundle, backend, precision=precision, channels_first=True)  # the artefact lulc-infer runs
        runner = BlockRunner(bundle, session, grid, opts, input_nodata(src, m.input), src.count)
        first = grid.block(0, 0)
        slot = runner.prepare(src, first, runner.slots[0])
        if runner.on_device:  # device sessions pack on the GPU, on the model thread
            runner.pack(first, slot)
        pool = slot.packed[: len(first.tile_ys)]
        pixels = src.width * src.height
    batch = runner.batch
    batches = [pool[i : i + batch] for i in range(0, len(pool), batch)]
    list(run_all(session, batches))  # warm-up: lulc-infer pays its first calls (and JAX its compiles) inside a longer run
    timed, done = [], 0
    while done < total:  # the grid's tile count, in the session's batches, as lulc-infer calls it
        timed.append(batches[len(timed) % len(batches)][: total - done])
        done += len(timed[-1])
    t0 = time.perf_counter()
    for _ in run_all(session, timed):
        pass
    return {"seconds": time.perf_counter() - t0, "pixels": pixels, "device": session.device,
            "precision": session.precision}


# ---- driver ---------------------------------------------------------------------------------

def cases_here(bundle: str) -> list[tuple[str, str, dict]]:
    """(label, case, extra args/env): the CPU cases plus every GPU backend this machine really
    has. ``group`` pairs each lulc-infer row with the limit of the same session and grid."""
    import onnxruntime as ort

    from lulc.runtime.backends.keras_backend import jax_gpu_available
    from lulc.runtime.core.bundle import Bundle

    fp32 = {"backend": "onnx", "precision": "fp32", "group": "onnx fp32"}
    big = {**fp32, "tile": WIDE_TILE, "group": f"onnx fp32 {WIDE_TILE}"}
    cases = [("seed baseline (keras predict per tile)", "baseline", {}),
             ("lulc-infer onnx CPU", "infer", fp32), ("onnx backend limit", "limit", fp32),
             (f"lulc-infer onnx CPU, {WIDE_TILE} px tiles", "infer", big), (f"onnx limit, {WIDE_TILE} px tiles", "limit", big)]
    if Bundle.load(bundle).has("onnx-int8"):
        int8 = {"backend": "onnx", "precision": "int8", "group": "onnx int8"}
        cases += [("lulc-infer onnx CPU int8", "infer", int8), ("onnx int8 backend limit", "limit", int8)]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        cuda = {"backend": "onnx", "precision": "auto", "group": "onnx cuda"}
        cases += [("lulc-infer onnx CUDA", "infer", cuda), ("onnx CUDA limit", "limit", cuda)]
    if jax_gpu_available():
        jax = {"backend": "keras", "precision": "fp32", "group": "keras jax", "env": {"KERAS_BACKEND": "jax"}}
        cases += [("lulc-infer keras/jax GPU", "infer", jax), ("keras/jax GPU limit", "limit", jax)]
    return cases


def run_case(case: str, bundle: str, raster: Path, work: Path, extra: dict) -> dict:
    """Run one case in a fresh interpreter, which reports its own timing and peak RSS."""
    argv = [sys.executable, __file__, "--case", case, bundle, "--raster", str(raster), "-o", str(work)]
    for flag in ("backend", "precision", "tile"):
        if extra.get(flag):
            argv += [f"--{flag}", str(extra[flag])]
    env = {**os.environ, **extra.get("env", {})}
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, env=env, text=True)
    if proc.returncode:
        raise RuntimeError(f"case {case} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = round(time.perf_counter() - t0, 2)
    result["peak_rss_mb"] = round(result.pop("peak_rss_kb") / 1024, 1)
    result["group"], result["kind"] = extra.get("group", ""), case
    return result


def run_bench(bundle: str, sizes: list[int], out: Path, baseline_max: int, repeat: int = 1) -> list[dict]:
    """Each case per size; with ``repeat`` > 1 the fast cases run interleaved that many times and
    the fastest run counts (peak RSS: the largest), since a shared VM drifts by 10-20 % over minutes."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in sizes:
        raster = out / f"synthetic_{size}.tif"
        if not raster.exists():
            write_synthetic(raster, size, bundle)
            os.sync()  # its write-back would otherwise land inside the first timed runs
        best: dict[str, dict] = {}
        for rep in range(repeat):
            for label, case, extra in cases_here(bundle):
                if case == "baseline" and (size > baseline_max or rep > 0):
                    continue  # the slow baseline runs once: repeating it cannot change a 10x ratio
                r = run_case(case, bundle, raster, out / f"{case}_{size}.tif", extra)
                prev = best.get(label, r)
                peak = max(r["peak_rss_mb"], prev["peak_rss_mb"])
                best[label] = r if r["seconds"] <= prev["seconds"] else prev
                best[label]["peak_rss_mb"] = peak
        for label, r in best.items():
            r.update(size=size, case=label, runs=repeat if r["kind"] != "baseline" else 1,
                     mpix_per_s=round(r["pixels"] / 1e6 / r["seconds"], 3), seconds=round(r["seconds"], 2))
            rows.append(r)
            print(f"{size:>6} px  {label:<40} {r['mpix_per_s']:7.2f} MPix/s  {r['peak_rss_mb']:7.0f} MB", flush=True)
        raster.unlink()
    return rows


def markdown(rows: list[dict]) -> str:
    """The table; ``× limit``: an lulc-infer row against the limit of its group, ``× fp32``:
    an int8 or wide-tile row against the fp32 row at the bundle's tile size of the same kind."""
    lines = ["| size (px²) | case | seconds | MPix/s | peak RSS (MB) | × limit | × fp32 | × baseline |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        same = [o for o in rows if o["size"] == r["size"]]
        limit = next((o for o in same if o["kind"] == "limit" and o["group"] == r["group"]), None)
        default = next((o for o in same if o["kind"] == r["kind"] and o["group"] == "onnx fp32"), None)
        base = next((o for o in same if o["kind"] == "baseline"), None)
        vs_limit = f"{r['mpix_per_s'] / limit['mpix_per_s']:.2f}" if limit and r["kind"] == "infer" else ""
        vs_fp32 = f"{r['mpix_per_s'] / default['mpix_per_s']:.2f}" if default and r["group"] in COMPARED else ""
        vs_base = f"{r['mpix_per_s'] / base['mpix_per_s']:.1f}" if base and r is not base else ""
        lines.append(f"| {r['size']} | {r['case']} | {r['seconds']} | {r['mpix_per_s']:.2f} | {r['peak_rss_mb']:.0f} "
                     f"| {vs_limit} | {vs_fp32} | {vs_base} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for label in dict.fromkeys(r["case"] for r in rows):
        mine = [r for r in rows if r["case"] == label]
        sizes = [r["size"] for r in mine]
        ax1.plot(sizes, [r["mpix_per_s"] for r in mine], "o-", label=label)
        ax2.plot(sizes, [r["peak_rss_mb"] for r in mine], "o-", label=label)
    for ax, title in ((ax1, "throughput (MPix/s of output)"), (ax2, "peak RSS (MB)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("raster side (px)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle")
    p.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    p.add_argument("-o", "--output", default="out/bench")
    p.add_argument("--baseline-max", type=int, default=4096,
                   help="Skip the (slow, whole-map-in-RAM) baseline above this size.")
    p.add_argument("--repeat", type=int, default=1,
                   help="Run the fast cases this many times, interleaved, and keep the fastest.")
    p.add_argument("--case", choices=["baseline", "infer", "limit"], help=argparse.SUPPRESS)
    p.add_argument("--raster", help=argparse.SUPPRESS)
    p.add_argument("--backend", default="onnx", help=argparse.SUPPRESS)
    p.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    p.add_argument("--tile", type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.case:  # inside a case subprocess
        import resource

        result = {"baseline": lambda: case_baseline(a.bundle, a.raster, a.output),
                  "infer": lambda: case_infer(a.bundle, a.raster, a.output, a.backend, a.precision, a.tile),
                  "limit": lambda: case_limit(a.bundle, a.raster, a.backend, a.precision, a.tile)}[a.case]()
        result["peak_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps(result))
        return
    out = Path(a.output)
    rows = run_bench(a.bundle, sorted(a.sizes), out, a.baseline_max, a.repeat)
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    (out / "results.md").write_text(markdown(rows))
    plot(rows, out / "results.png")
    print(markdown(rows))


if __name__ == "__main__":
    main()
