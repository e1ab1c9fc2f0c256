"""Inference backends: one module each, GPU-only imports inside their own module.

A backend ``prepare(bundle, backend, device)`` returns a :class:`Session` whose ``run`` maps a
normalised NHWC float32 batch to class probabilities. ``auto`` picks the fastest one available
on the requested ``device``; every session checks its model's input and output shapes against
the manifest before the first tile runs, so a model that does not belong to its manifest is a
one-line error instead of a wrong map.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from lulc.runtime.core.bundle import Bundle
from lulc.runtime.core.errors import BundleError

logger = logging.getLogger(__name__)

class Session:
    """A model opened by a backend: ``run`` maps a normalised NHWC float32 batch to class
    probabilities. Backends subclass it; the defaults describe a host-memory session that
    runs one batch at a time."""

    name: str = ""
    #: what really runs (e.g. the execution provider), for logs and --json summaries
    device: str = "cpu"
    #: fp32, fp16 or int8: the precision of the artefact that runs
    precision: str = "fp32"
    #: the bundle artefact that runs (its name in ``bundle.json``): with its checksum, what
    #: a resumed run must share with the run it continues
    artifact: str = ""
    #: True: ``run`` takes and returns CUDA device arrays, so the block pipeline keeps its buffers on the GPU
    device_io: bool = False
    #: the tiles ``run`` takes and the probabilities it returns: "nhwc", or "nchw" (channels first)
    layout: str = "nhwc"
    #: tiles per model call the session wants (None: the runtime's default for the tile size)
    batch_size: int | None = None
    #: px from a tile edge within which the model sees the tile's zero padding instead of the
    #: raster (a --scene-stride model's windows); the tile blend gives those px no weight
    context_px: int = 0

    def run(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def map(self, batches: Iterable) -> Iterator:
        """``run`` over ``batches``, results in order; a session may run them concurrently and
        return an iterator with a ``close`` that drops the calls not yet started."""
        return map(self.run, batches)


def session_identity(bundle: Bundle, session: Session) -> dict:
    """What decides the session's outputs: the engine, device and precision that run, and the
    checksum of the artefact they run."""
    combined = getattr(session, "identity", None)
    if combined is not None:  # an ensemble or --tta: what each member ran
        return combined()
    art = bundle.manifest.artifacts.get(session.artifact)
    return {"backend": session.name, "device": session.device, "precision": session.precision,
            "artifact": session.artifact, "sha256": art.sha256 if art else None}


def run_all(session: Session, batches: Iterable) -> Iterator:
    """The session's outputs for ``batches`` in order, concurrently where the session can."""
    return session.map(batches)


def prepare(bundle: Bundle, backend: str = "auto", device: str = "auto", precision: str = "auto",
            cores: int | None = None, scene_stride: int | None = None, channels_first: bool = False) -> Session:
    """Open the bundle's model as :func:`~lulc.runtime.backends.plan.resolve` plans it for
    ``backend``, ``device`` (cpu, cuda or auto) and ``precision``.

    ``device='cpu'`` leaves out the GPU engines and ``device='cuda'`` makes a backend that
    cannot reach a GPU an error, never a CPU run; the session's ``precision`` and ``artifact``
    are the plan's. ``cores``: the CPU threads the model may use (default: all this process may
    run on; a Dask worker gives its own share). ``scene_stride``: a scene bundle's model at one
    class per N px (its exported ONNX, fp32). ``channels_first``: the caller feeds either
    layout, so a channels-first twin may run (the session's ``layout`` says which).
    """
    from lulc.runtime.backends.plan import resolve

    plan = resolve(bundle, backend, device, precision, scene_stride, channels_first=channels_first)
    if backend == "auto":
        logger.info("backend auto -> %s (device %s)", plan.backend, device)
    if plan.backend == "keras":
        from lulc.runtime.backends.keras_backend import KerasSession

        session: Session = KerasSession(bundle, device=device)
    elif plan.backend == "trt":
        from lulc.runtime.backends.trt import open_bundle_engine

        session = open_bundle_engine(bundle, device)
    else:
        from lulc.runtime.backends import ort

        session = ort.OrtSession(bundle, artifact=plan.artifact, device=device, cores=cores, precision=plan.precision)
        session.context_px = plan.context_px
    session.artifact = plan.artifact
    logger.info("backend %s runs on %s at %s (device %s requested)", session.name, session.device, session.precision, device)
    return session


def check_model_shapes(bundle: Bundle, model: str, inputs: Sequence, outputs: Sequence, layout: str = "nhwc") -> None:
    """Refuse a model whose declared shapes do not fit the manifest: NHWC (or, for a
    channels-first twin, NCHW) input with one channel per manifest channel, and output with
    one channel per class.

    Dimensions the model leaves open (None, -1 or a symbolic name) are not judged here.
    """
    m = bundle.manifest
    want_in, want_out = len(m.input.channels), len(m.classes)
    for role, shape in (("input", inputs), ("output", outputs)):
        if len(shape) != 4:
            raise BundleError(
                f"{model} in {bundle.root} has a rank-{len(shape)} {role} {_show(shape)}; lulc-infer needs rank 4 "
                "(tiles, height, width, channels): export a per-pixel model from this bundle")
    axis = 1 if layout == "nchw" else -1
    got_in, got_out = inputs[axis], outputs[axis]
    if _known(got_in) and got_in != want_in:
        raise BundleError(f"{model} takes {got_in} input channels but {bundle.root}'s manifest lists {want_in} "
                          f"({', '.join(m.input.channels)}); the model and its bundle.json do not belong together")
    if _known(got_out) and got_out != want_out:
        raise BundleError(f"{model} outputs {got_out} classes but {bundle.root}'s manifest lists {want_out} "
                          f"({', '.join(m.class_names)}); the model and its bundle.json do not belong together")


def _known(dim: object) -> bool:
    return isinstance(dim, int) and dim >= 0


def _show(shape: Sequence) -> str:
    return "(" + ", ".join(str(d) if _known(d) else "?" for d in shape) + ")"
