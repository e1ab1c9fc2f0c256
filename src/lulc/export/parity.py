"""Parity figures between a reference model's probabilities and an exported artefact's."""
from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from lulc.runtime.core.bundle import Bundle
from lulc.runtime.core.errors import ParityError

logger = logging.getLogger(__name__)


def keras_reference(bundle: Bundle):
    """The bundle's Keras model, its stored sample tiles and its probabilities on them."""
    from lulc.runtime.backends.keras_backend import load_keras_model

    model = load_keras_model(bundle)
    samples = bundle.load_samples()
    return model, samples, predict(model, samples)


def predict(model, x: np.ndarray) -> np.ndarray:
    return np.asarray(model(x, training=False), dtype=np.float32)


def compare(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Max/mean abs probability difference and argmax agreement over all pixels."""
    if reference.shape != candidate.shape:
        raise ParityError(f"exported model output shape {candidate.shape} differs from Keras {reference.shape}")
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    agree = (reference.argmax(-1) == candidate.argmax(-1)).mean()
    return {
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "argmax_agreement": float(agree),
        "samples": int(reference.shape[0]),
    }


def gate(figures: dict, target: str, max_abs_diff: float | None = None, min_agreement: float | None = None) -> None:
    """Raise ParityError (the artefact is not written) when a tolerance is exceeded."""
    if max_abs_diff is not None and not figures["max_abs_diff"] <= max_abs_diff:
        raise ParityError(
            f"{target} export refused: max abs probability difference {figures['max_abs_diff']:.3g} "
            f"exceeds {max_abs_diff:g} (argmax agreement {figures['argmax_agreement']:.4%})"
        )
    if min_agreement is not None and not figures["argmax_agreement"] >= min_agreement:
        raise ParityError(
            f"{target} export refused: argmax agreement {figures['argmax_agreement']:.4%} below {min_agreement:.2%}"
        )


@contextmanager
def staging(path: Path) -> Iterator[Path]:
    """A temporary name inside the bundle for an artefact in the making, removed on exit.

    Staging next to the final name keeps the final move an atomic rename on one file system;
    removing it on every exit path means a refused or crashed export leaves nothing behind.
    """
    try:
        yield path
    finally:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def verify_and_record(
    bundle: Bundle,
    name: str,
    staged: Path,
    reference: np.ndarray,
    run: Callable[[Path], np.ndarray],
    target: str,
    *,
    fmt: str,
    dest: str,
    details: dict,
    max_abs_diff: float | None = None,
    min_agreement: float | None = None,
) -> dict:
    """Run the staged artefact, gate it against ``reference`` and only then move it into the bundle."""
    figures = compare(reference, run(staged))
    gate(figures, target, max_abs_diff=max_abs_diff, min_agreement=min_agreement)
    figures.update({k: v for k, v in (("tolerance", max_abs_diff), ("min_agreement", min_agreement)) if v is not None})
    bundle.add_artifact(name, staged, fmt, parity=figures, details=details, dest=dest)
    logger.info("%s parity: %s", target, figures)
    return figures


def probabilities(path: Path, x: np.ndarray, batch: int = 16) -> np.ndarray:
    """An ONNX model's outputs on ``x`` (any layout or strides), batch by batch on the CPU."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: np.ascontiguousarray(x[i : i + batch], dtype=np.float32)})[0]
                           for i in range(0, len(x), batch)])
