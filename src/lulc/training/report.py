"""Closing summary of `make demo`: where the outputs are and how good the model is."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from lulc.runtime.core.bundle import Bundle


def _figures(m: dict) -> str:
    return f"{m['overall_accuracy']:.3f} (kappa {m['kappa']:.3f}, macro F1 {m['macro_f1']:.3f}"


def summary(bundle_dir: str, *outputs: str) -> str:
    """One short block of text naming the outputs and the held-out test accuracy, with the
    random-forest baseline when the bundle's latest evaluation has one (`lulc evaluate
    --baseline rf`)."""
    bundle = Bundle.load(bundle_dir)
    test = json.loads(bundle.artifact_path("metrics").read_text())
    onnx = bundle.manifest.artifacts.get("onnx")
    lines = [f"bundle:        {Path(bundle_dir).resolve()}"]
    lines += [f"output:        {Path(p).resolve()}" for p in outputs]
    blocks = f" in {test['blocks']} blocks" if test.get("blocks") is not None else ""
    lines.append(f"{test['split']} accuracy: {_figures(test)}, {test['pixels']} held-out pixels{blocks})")
    if "baseline" in test:
        lines.append(f"random forest: {_figures(test['baseline'])}, same pixels)")
    if onnx is not None:
        lines.append(f"onnx parity:   max |ORT - Keras| = {onnx.parity['max_abs_diff']:.2e}")
    lines.append(f"browser demo:  .venv/bin/lulc serve {bundle_dir}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary(*sys.argv[1:]))
