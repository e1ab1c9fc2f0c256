"""Zero-copy hand-off of CUDA buffers between our Numba kernels and the model engines.

The block pipeline keeps its buffers as Numba device arrays; onnxruntime wants a raw device
pointer and JAX a DLPack tensor. Every function here shares memory instead of copying, so a
block still crosses PCIe once each way (raw bands in, class bands out). CuPy is the DLPack
bridge because Numba device arrays speak only the CUDA array interface.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from lulc.runtime.core.errors import BackendUnavailable

#: a GPU array with no static type: Numba device arrays, CuPy arrays, JAX arrays (DLPack)
DeviceArray = Any


def cuda_pointer(array: DeviceArray) -> int:
    """Device pointer of a C-contiguous array exposing ``__cuda_array_interface__``."""
    cai = array.__cuda_array_interface__
    strides = cai.get("strides")
    if strides is not None and tuple(strides) != _c_strides(cai["shape"], np.dtype(cai["typestr"]).itemsize):
        raise ValueError("device hand-off needs a C-contiguous array")
    return int(cai["data"][0])


def _c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    strides, step = [], itemsize
    for dim in reversed(shape):
        strides.append(step)
        step *= dim
    return tuple(reversed(strides))


def wrap_pointer(pointer: int, shape: tuple[int, ...], dtype: npt.DTypeLike, owner: object) -> DeviceArray:
    """A Numba device array over memory another engine allocated; ``owner`` keeps it alive."""
    from numba import cuda

    cai = {"shape": tuple(shape), "typestr": np.dtype(dtype).str, "data": (pointer, False),
           "strides": None, "version": 3, "stream": None}
    return cuda.from_cuda_array_interface(cai, owner=owner, sync=False)


def synchronize() -> None:
    """Wait for our queued kernels: engines run on their own CUDA streams, not Numba's."""
    from numba import cuda

    cuda.synchronize()


def _cupy() -> Any:
    try:
        import cupy
    except ImportError as exc:
        raise BackendUnavailable("handing device arrays to JAX needs CuPy: pip install cupy-cuda13x") from exc
    return cupy


def to_dlpack(array: DeviceArray) -> DeviceArray:
    """A DLPack-exporting view of a Numba device array, for ``jax.dlpack.from_dlpack``."""
    synchronize()
    return _cupy().asarray(array)


def from_dlpack(array: DeviceArray) -> DeviceArray:
    """A Numba device view of a DLPack-exporting GPU array (a JAX result)."""
    from numba import cuda

    return cuda.as_cuda_array(_cupy().from_dlpack(array))
