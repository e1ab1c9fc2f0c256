"""TF.js export: Keras 3 → SavedModel → TF.js graph model, gated by a run in Node.

Why a graph model: the converter's Keras-3 *layers* topology is rejected by
``tf.loadLayersModel`` in tfjs 4.22, while the SavedModel route keeps dynamic N/H/W and
matches Keras to ~1e-7 (shared STACK notes). The parity run uses ``@tensorflow/tfjs``'s pure
JS CPU backend in Node, the same kernels a browser without WebGL falls back to.
"""
from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
import tempfile
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from lulc.export.parity import keras_reference, staging, verify_and_record
from lulc.runtime.core.bundle import Bundle
from lulc.runtime.core.errors import BackendUnavailable, ParityError
from lulc.runtime.tools.webpage import TFJS_NODE_LIB, libs_hint, tfjs_parity_script, web_root

#: same bar as fp32 ONNX: tfjs runs the same float32 graph, so only rounding may differ
TOLERANCE = 1e-4
INSTALL_HINT = "run `make venv` (it installs the TF.js converter with --no-deps; see README, 'TF.js')"


@contextmanager
def _converter_import_shims() -> Iterator[None]:
    """Let ``tensorflowjs`` 4.22 import without TensorFlow Decision Forests and JAX.

    Its package ``__init__`` imports both unconditionally although the SavedModel path
    never uses them, and installing them replaces TensorFlow, numpy and protobuf. Empty
    stand-ins satisfy those imports for the duration of the import only; the real ``jax``
    is never faked because Keras 3 probes it to pick a backend.
    """
    jax_conversion = types.ModuleType("tensorflowjs.converters.jax_conversion")

    def convert_jax(*_args, **_kwargs):
        raise BackendUnavailable("lulc installs the TF.js converter without its JAX converter")

    jax_conversion.convert_jax = convert_jax
    shims = {"tensorflow_decision_forests": types.ModuleType("tensorflow_decision_forests"),
             jax_conversion.__name__: jax_conversion}
    added = [name for name in shims if name not in sys.modules]
    sys.modules.update({name: shims[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            sys.modules.pop(name, None)


def _saved_model_converter():
    try:
        with _converter_import_shims():
            from tensorflowjs.converters import tf_saved_model_conversion_v2
    except ImportError as exc:
        raise BackendUnavailable(f"the TF.js converter is not installed ({exc.name or exc}): {INSTALL_HINT}") from exc
    return tf_saved_model_conversion_v2


def convert(model, out_dir: Path) -> None:
    """Write ``model`` as a TF.js graph model (``model.json`` + weight shards) in ``out_dir``."""
    converter = _saved_model_converter()
    with tempfile.TemporaryDirectory(prefix="lulc-savedmodel-") as tmp:
        saved = Path(tmp) / "saved_model"
        model.export(str(saved), format="tf_saved_model", verbose=False)
        converter.convert_tf_saved_model(str(saved), str(out_dir), signature_def="serving_default",
                                         saved_model_tags="serve")


def graph_details(model_dir: Path) -> dict[str, str]:
    """The converter's version and the graph's input name, from ``model.json``, for the manifest.

    The page needs nothing else next to ``model.json``: it reads bands, normalisation, tile
    and classes from ``bundle.json``, as every other stage does.
    """
    model_json = json.loads((model_dir / "model.json").read_text())
    inputs = model_json["signature"]["inputs"]
    return {"converted_by": model_json["convertedBy"], "input_name": next(iter(inputs.values()))["name"]}


def run_node(model_dir: Path, x: np.ndarray) -> np.ndarray:
    """Class probabilities of the TF.js model at ``model_dir`` on ``x``, computed by Node.

    Node runs the page's own copy of TF.js (:data:`~lulc.runtime.tools.webpage.TFJS_NODE_LIB`
    in the web folder), so the gate checks the library the browser will load.
    """
    root = web_root()
    if not (root / TFJS_NODE_LIB).is_file():
        raise BackendUnavailable(f"the TF.js parity check needs {root / TFJS_NODE_LIB}: {libs_hint(root)}")
    node = shutil.which("node")
    if node is None:
        raise BackendUnavailable("the TF.js parity check runs the model in Node.js: install it so `node` is on PATH")
    with tempfile.TemporaryDirectory(prefix="lulc-tfjs-") as tmp:
        src, dst = Path(tmp) / "x.f32", Path(tmp) / "y.f32"
        np.ascontiguousarray(x, dtype="<f4").tofile(src)
        proc = subprocess.run(
            [node, str(tfjs_parity_script(root)), str(model_dir), str(src), ",".join(map(str, x.shape)), str(dst)],
            capture_output=True, text=True, timeout=1800,
        )
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines() or ["no output"]
            error = next((line for line in lines if "Error" in line), lines[-1])
            raise ParityError(f"TF.js export refused: the model does not run in @tensorflow/tfjs: {error.strip()}")
        summary = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("{")))
        return np.fromfile(dst, dtype="<f4").reshape(summary["shape"])


def export_tfjs(bundle: Bundle) -> dict[str, dict]:
    """Convert, run in Node on the bundle's sample tiles, gate, then record the ``tfjs/`` folder."""
    model, samples, reference = keras_reference(bundle)
    with staging(bundle.root / ".tfjs.partial") as staged:
        shutil.rmtree(staged, ignore_errors=True)  # a crashed earlier run
        convert(model, staged)
        figures = verify_and_record(
            bundle, "tfjs", staged, reference, functools.partial(run_node, x=samples), "TF.js", fmt="tfjs-graph-model",
            dest="tfjs", max_abs_diff=TOLERANCE,
            details={"model_format": "graph-model", **graph_details(staged),
                     "parity_backend": "node @tensorflow/tfjs cpu"})
    return {"tfjs": figures}
