"""The model a run uses, as its options ask: one bundle's, or averaged with ensemble members
and over ``--tta`` (:mod:`lulc.runtime.backends.combined`). Shared by the single-process run
and the Dask workers, so both open exactly the same model."""
from __future__ import annotations

from lulc.runtime.backends import Session, prepare
from lulc.runtime.backends.combined import check_members, combine
from lulc.runtime.core.bundle import Bundle
from lulc.runtime.options import InferOptions


def open_session(bundle: Bundle, opts: InferOptions, cores: int | None) -> Session:
    """The bundle's model on ``opts``' backend, device and precision, with ``cores`` CPU
    threads, combined with the ``--ensemble`` members and ``--tta``."""
    def one(b: Bundle) -> Session:
        return prepare(b, opts.backend, opts.device, opts.precision, cores=cores, scene_stride=opts.scene_stride,
                       channels_first=True)  # the block pipeline packs either layout

    members = [Bundle.load(path) for path in opts.ensemble]
    check_members(bundle, members)
    return combine(bundle, one(bundle), [(b, one(b)) for b in members], opts.tta)
