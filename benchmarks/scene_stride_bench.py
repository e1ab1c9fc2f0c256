"""Benchmark ``lulc-infer --scene-stride N`` against the seed's per-pixel window loop.

The seed way is CNN-Sentinel's ``classify_image``: for every image row, cut the patch
window around each pixel and call Keras ``model.predict(row_windows, batch_size=1024)``.
It takes hours on a scene, so it is timed on a crop (``--crop-rows`` rows of
``--crop-cols`` windows) and extrapolated per window to the raster's pixels; the same loop
on onnxruntime (the bundle's own ``model.onnx``) shows how much of the gap is the engine
and how much the algorithm. ``lulc-infer`` runs on the whole raster, once per stride, in
its own process (``--json`` seconds: model load to COG renamed). The class agreement of
the stride-1 map with the seed's classes on the crop is printed too: the seed cuts each
window out alone (zero padding at its border) while the stride model sees the window's
surroundings, so they differ where the model leans on context.

Usage: ``python benchmarks/scene_stride_bench.py out/scene16 data/sample/image.tif -o out/bench-scene``
(after ``lulc export --target onnx --scene-stride 1 --scene-stride 4 out/scene16``).
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
from rasterio.windows import Window

from lulc.runtime.core.bundle import Bundle


def crop_windows(bundle: Bundle, raster: str, rows: int, cols: int) -> tuple[np.ndarray, int, int]:
    """The normalised crop (rows + patch, cols + patch, C) from the raster's centre, and its
    origin: the windows of ``rows`` x ``cols`` pixels, placed like the stride-1 model's."""
    m, patch = bundle.manifest, bundle.manifest.tile.divisor
    with rasterio.open(raster) as src:
        y0, x0 = (src.height - rows) // 2, (src.width - cols) // 2
        shift = (patch - 1) // 2
        data = src.read(window=Window(x0 - shift, y0 - shift, cols + patch, rows + patch)).astype(np.float32)
    mean, std = (np.asarray(v, np.float32)[:, None, None] for v in (m.normalization.mean, m.normalization.std))
    return ((data - mean) / std).transpose(1, 2, 0), y0, x0


def seed_loop(predict, image: np.ndarray, rows: int, cols: int, patch: int) -> tuple[float, np.ndarray]:
    """classify_image's loop: per row, all windows into one array, one predict call. Returns
    the seconds per window and the classes."""
    row = np.zeros((cols, patch, patch, image.shape[-1]), np.float32)
    predict(row[:8])  # build / warm the model outside the timing, as a long run amortises it
    classes = np.zeros((rows, cols), np.uint8)
    t0 = time.perf_counter()
    for y in range(rows):
        for x in range(cols):
            row[x] = image[y : y + patch, x : x + patch]
        classes[y] = predict(row)[:, 0, 0].argmax(-1)  # a scene model repeats its class over the cell
    return (time.perf_counter() - t0) / (rows * cols), classes


def keras_predict(bundle: Bundle):
    from lulc.runtime.backends.keras_backend import load_keras_model

    model = load_keras_model(bundle)

    def predict(x: np.ndarray) -> np.ndarray:
        return model.predict(x, batch_size=1024, verbose=0)

    return predict


def onnx_predict(bundle: Bundle):
    from lulc.runtime.backends.ort import OrtSession

    session = OrtSession(bundle, artifact="onnx", device="cpu")

    def predict(x: np.ndarray) -> np.ndarray:
        return session.run(x)

    return predict


def lulc_infer(bundle: str, raster: str, out: Path, stride: int) -> dict:
    cmd = [str(Path(sys.executable).parent / "lulc-infer"), bundle, raster, "-o", str(out), "--scene-stride",
           str(stride), "--backend", "onnx", "--overwrite", "--json", "--no-progress"]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode:
        raise SystemExit(res.stderr.strip().splitlines()[-1])
    return json.loads(res.stdout[res.stdout.index("{"):])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle")
    p.add_argument("raster")
    p.add_argument("--strides", type=int, nargs="+", default=[1, 4])
    p.add_argument("--crop-rows", type=int, default=16)
    p.add_argument("--crop-cols", type=int, default=512)
    p.add_argument("-o", "--output", default="out/bench-scene")
    a = p.parse_args(argv)
    bundle = Bundle.load(a.bundle)
    out = Path(a.output)
    out.mkdir(parents=True, exist_ok=True)
    patch = bundle.manifest.tile.divisor
    with rasterio.open(a.raster) as src:
        pixels = src.width * src.height
    image, y0, x0 = crop_windows(bundle, a.raster, a.crop_rows, a.crop_cols)
    rows, seed_classes = [], None
    for name, make in (("seed loop, Keras predict (CNN-Sentinel)", keras_predict),
                       ("seed loop on onnxruntime", onnx_predict)):
        per_window, classes = seed_loop(make(bundle), image, a.crop_rows, a.crop_cols, patch)
        seed_classes = classes if seed_classes is None else seed_classes
        rows.append({"case": name, "stride": 1, "seconds": per_window * pixels, "extrapolated": True,
                     "per_window_us": per_window * 1e6})
        print(f"{name}: {per_window * 1e6:.1f} us per window", flush=True)
    for stride in [*a.strides, patch]:
        summary = lulc_infer(a.bundle, a.raster, out / f"stride{stride}.tif", stride)
        rows.append({"case": f"lulc-infer --scene-stride {stride}", "stride": stride, "seconds": summary["seconds"],
                     "extrapolated": False})
        print(f"stride {stride}: {summary['seconds']:.2f} s", flush=True)
    agreement = None
    if 1 in a.strides:
        with rasterio.open(out / "stride1.tif") as src:
            mine = src.read(1, window=Window(x0, y0, a.crop_cols, a.crop_rows))
        codes = np.array([c.id for c in bundle.manifest.map_classes], np.uint8)
        agreement = float((mine == codes[seed_classes]).mean())
    for r in rows:
        r["mpix_per_s"] = pixels / 1e6 / r["seconds"]
        r["x_seed_keras"] = rows[0]["seconds"] / r["seconds"]
        r["x_seed_onnx"] = rows[1]["seconds"] / r["seconds"]
    result = {"raster": a.raster, "pixels": pixels, "patch": patch, "crop": [a.crop_rows, a.crop_cols],
              "stride1_agreement_with_seed_windows": agreement, "rows": rows}
    (out / "scene_stride.json").write_text(json.dumps(result, indent=2))
    table = markdown(result)
    (out / "scene_stride.md").write_text(table)
    print(table)


def markdown(result: dict) -> str:
    lines = [f"{result['pixels'] / 1e6:.2f} MPix, {result['patch']} px patches; seed rows timed on "
             f"{result['crop'][0]} x {result['crop'][1]} windows and extrapolated (*)", "",
             "| case | class per | seconds | MPix/s | × seed (Keras) | × seed on onnxruntime |", "|---|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        star = " *" if r["extrapolated"] else ""
        lines.append(f"| {r['case']} | {r['stride']} px | {r['seconds']:.2f}{star} | {r['mpix_per_s']:.3f} | "
                     f"{r['x_seed_keras']:.1f} | {r['x_seed_onnx']:.1f} |")
    if result["stride1_agreement_with_seed_windows"] is not None:
        lines += ["", f"stride-1 classes equal to the seed's (windows cut out alone) on the crop: "
                      f"{result['stride1_agreement_with_seed_windows']:.2%}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
