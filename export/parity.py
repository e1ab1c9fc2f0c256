"""Parity figures between a reference model's probabilities and an exported artefact's."""
from __future__ import annotations

import numpy as np

from lulc.runtime.errors import ParityError


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
