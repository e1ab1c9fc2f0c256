"""Several model runs per tile, averaged: ensembles of bundles and test-time augmentation.

Both are sessions wrapping sessions, so every tile still goes through the same packing,
blending and finalising kernels as a single model's, and the map of an ensemble of a bundle
with itself, or of ``--tta`` on a model that does not care about orientation, is the single
model's map.

* **Ensemble** (``lulc-infer B1 B2 ... IMAGE``, or ``--ensemble B2``): the members' class
  probabilities are averaged. Members must read the same bands in the same order and give
  the same classes (one line otherwise). Tiles are packed with the first bundle's
  normalisation; a member trained with other statistics gets its own (an affine map per
  channel; padding and nodata pixels stay 0, as its own run would feed them).
Tiles reach every member in its own layout (channels last or first), converted where a
member's differs from the first's.

* **TTA** (``--tta flips|d4``): the model runs on the tile flipped (identity, left-right,
  up-down, both) or on all eight symmetries of the square (D4: rotations by 90° and their
  mirror images); each output is turned back and the probabilities are averaged.

Both run with host buffers (NumPy); a session that keeps its tiles on a GPU is refused.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np

from lulc.runtime.backends import Session, session_identity
from lulc.runtime.core.bundle import Bundle
from lulc.runtime.core.errors import BundleError, SettingError

TTA_MODES = ("flips", "d4")

Transform = tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]


#: (height axis, width axis) of a batch of tiles in each layout
SPATIAL = {"nhwc": (1, 2), "nchw": (2, 3)}


def _flip(axes: tuple[int, ...]) -> Transform:
    def there(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.flip(x, axes)) if axes else x

    return there, there  # a flip is its own inverse


def _rotate(k: int, then_flip: bool, h: int, w: int) -> Transform:
    """Rotate the tiles by k × 90°, then mirror left-right; back: undo in reverse."""
    def there(x: np.ndarray) -> np.ndarray:
        y = np.rot90(x, k, axes=(h, w))
        return np.ascontiguousarray(np.flip(y, w) if then_flip else y)

    def back(y: np.ndarray) -> np.ndarray:
        y = np.flip(y, w) if then_flip else y
        return np.ascontiguousarray(np.rot90(y, -k, axes=(h, w)))

    return there, back


def transforms(mode: str, layout: str = "nhwc") -> list[Transform]:
    """The tile transforms of ``--tta mode`` (the identity first) for tiles in ``layout``."""
    h, w = SPATIAL[layout]
    if mode == "flips":
        return [_flip(axes) for axes in ((), (w,), (h,), (h, w))]
    if mode == "d4":
        return [_rotate(k, mirror, h, w) for mirror in (False, True) for k in range(4)]
    raise SettingError("--tta", f"must be one of {', '.join(TTA_MODES)}, not {mode}")


def _relayout(frm: str, to: str) -> Transform:
    """Tiles (and probabilities) from layout ``frm`` to ``to`` and back (identity when equal)."""
    if frm == to:
        return _flip(())
    there = (0, 2, 3, 1) if frm == "nchw" else (0, 3, 1, 2)
    back = (0, 3, 1, 2) if frm == "nchw" else (0, 2, 3, 1)
    return (lambda x: np.ascontiguousarray(x.transpose(there)), lambda y: np.ascontiguousarray(y.transpose(back)))


class _Averaged:
    """Results of ``inner`` for groups of ``n`` jobs, each group turned back and averaged."""

    def __init__(self, results: Iterator, backs: list[Callable[[np.ndarray], np.ndarray]]):
        self.results, self.backs = results, backs

    def __iter__(self) -> _Averaged:
        return self

    def __next__(self) -> np.ndarray:
        total = None
        for back in self.backs:
            out = back(np.asarray(next(self.results), dtype=np.float32))
            total = out.astype(np.float64) if total is None else total + out
        assert total is not None
        return (total / len(self.backs)).astype(np.float32)

    def close(self) -> None:
        getattr(self.results, "close", lambda: None)()


class Combined(Session):
    """The mean of ``runs``: (session, forward transform of the tiles, inverse of its output)."""

    def __init__(self, runs: list[tuple[Session, Callable, Callable]], identity: dict, first: Session):
        if any(s.device_io for s, _, _ in runs):
            raise SettingError(None, "ensembles and --tta run with host buffers: add --device cpu")
        self.runs, self._identity = runs, identity
        self.name, self.device, self.precision, self.layout = first.name, first.device, first.precision, first.layout
        self.batch_size, self.context_px = first.batch_size, first.context_px

    def identity(self) -> dict:
        return self._identity

    def run(self, batch: np.ndarray) -> np.ndarray:
        return next(self.map([batch]))

    def map(self, batches: Iterable) -> Iterator:
        """All runs of all batches are queued at once (the sessions may run them concurrently),
        then averaged batch by batch, in order."""
        batches = list(batches)
        streams = {}
        for session in dict.fromkeys(s for s, _, _ in self.runs):  # each session once, its jobs in order
            jobs = [forward(b) for b in batches for s, forward, _ in self.runs if s is session]
            streams[id(session)] = session.map(jobs)
        ordered = (next(streams[id(s)]) for _ in batches for s, _, _ in self.runs)
        return _Averaged(iter(ordered), [back for _, _, back in self.runs])


def _renormalise(first: Bundle, member: Bundle, layout: str) -> Callable[[np.ndarray], np.ndarray]:
    """Tiles packed with ``first``'s statistics, as ``member`` would have packed them."""
    a_mean, a_std = (np.asarray(v, np.float64) for v in (first.manifest.normalization.mean, first.manifest.normalization.std))
    b_mean, b_std = (np.asarray(v, np.float64) for v in (member.manifest.normalization.mean, member.manifest.normalization.std))
    if np.array_equal(a_mean, b_mean) and np.array_equal(a_std, b_std):
        return lambda x: x
    axis = 1 if layout == "nchw" else -1
    shape = (1, -1, 1, 1) if axis == 1 else (-1,)
    scale = (a_std / b_std).astype(np.float32).reshape(shape)
    shift = ((a_mean - b_mean) / b_std).astype(np.float32).reshape(shape)

    def there(x: np.ndarray) -> np.ndarray:
        empty = (x == 0).all(axis=axis, keepdims=True)  # padding and nodata pixels: 0 for every model
        return np.where(empty, 0.0, x * scale + shift).astype(np.float32)

    return there


def check_members(first: Bundle, members: list[Bundle]) -> None:
    """Ensemble members must read the same bands and give the same classes as the first."""
    m = first.manifest
    for other in members:
        o = other.manifest
        if o.input.channels != m.input.channels or o.input.time_steps != m.input.time_steps:
            raise BundleError(f"ensemble member {other.root} reads {', '.join(o.input.channels)}, but {first.root} "
                                     f"reads {', '.join(m.input.channels)}: members must read the same bands in order")
        if [c.name for c in o.map_classes] != [c.name for c in m.map_classes] or \
                [c.id for c in o.map_classes] != [c.id for c in m.map_classes]:
            raise BundleError(f"ensemble member {other.root} has classes {', '.join(o.class_names)}, but "
                                     f"{first.root} has {', '.join(m.class_names)}: members must give the same classes")
        if o.task != m.task or m.tile.size % o.tile.divisor:
            raise BundleError(f"ensemble member {other.root} ({o.task}, tiles a multiple of {o.tile.divisor} px) "
                                     f"cannot run on {first.root}'s {m.tile.size} px {m.task} tiles")


def combine(first: Bundle, session: Session, members: list[tuple[Bundle, Session]], tta: str | None) -> Session:
    """``session`` alone, or averaged with the ensemble ``members`` and/or over ``tta``."""
    if not members and not tta:
        return session
    check_members(first, [b for b, _ in members])
    layout = session.layout  # the pipeline packs for the first model; other layouts are converted
    views = transforms(tta, layout) if tta else [_flip(())]
    runs = []
    for bundle, s in [(first, session), *members]:
        norm = _renormalise(first, bundle, layout)
        to_member, from_member = _relayout(layout, s.layout)
        runs += [(s, _chain(_chain(norm, forward), to_member), _chain(from_member, back)) for forward, back in views]
    identity = {"members": [session_identity(b, s) for b, s in [(first, session), *members]], "tta": tta}
    return Combined(runs, identity, session)


def _chain(first: Callable, second: Callable) -> Callable:
    return lambda x: second(first(x))
