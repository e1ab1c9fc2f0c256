"""Closing summary of `make demo`: where the outputs are and how good the model is."""
from __future__ import annotations

import sys
from pathlib import Path

from lulc.runtime.bundle import Bundle


def summary(bundle_dir: str, *outputs: str) -> str:
    """One short block of text naming the outputs and the held-out test accuracy."""
    bundle = Bundle.load(bundle_dir)
    test = bundle.manifest.provenance["metrics"]["test"]
    onnx = bundle.manifest.artifacts.get("onnx")
    lines = [f"bundle:        {Path(bundle_dir).resolve()}"]
    lines += [f"output:        {Path(p).resolve()}" for p in outputs]
    lines.append(f"test accuracy: {test['overall_accuracy']:.3f} (kappa {test['kappa']:.3f}, "
                 f"macro F1 {test['macro_f1']:.3f}, {test['pixels']} held-out pixels)")
    if onnx is not None:
        lines.append(f"onnx parity:   max |ORT - Keras| = {onnx.parity['max_abs_diff']:.2e}")
    lines.append(f"browser demo:  .venv/bin/lulc serve {bundle_dir}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary(*sys.argv[1:]))
