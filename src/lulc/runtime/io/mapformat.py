"""The class-map format every run writes: band 1 the class, then optional uint8 bands.

Kept apart from the kernels that fill it and the writer that stores it, since both (and the
quicklook, the change tool and the tests) must agree on these values.
"""
from __future__ import annotations

from lulc.runtime.core.manifest import ClassInfo

#: class-band value for pixels without a valid prediction
NODATA_CLASS = 255
#: probability bands are scaled to 0..PROB_SCALE so that 255 stays free for nodata
PROB_SCALE = 254


def band_layout(classes: list[ClassInfo], probabilities: bool, confidence: bool,
                uncertainty: str | None = None) -> list[str]:
    """Band descriptions in output order: class, then per-class probabilities, then confidence,
    then the uncertainty of ``--uncertainty MEASURE`` (named ``uncertainty_MEASURE``)."""
    names = ["class"]
    if probabilities:
        names += [f"prob_{c.name}" for c in classes]
    if confidence:
        names.append("confidence")
    if uncertainty:
        names.append(f"uncertainty_{uncertainty}")
    return names
