"""The CUDA twins equal the CPU kernels, run on Numba's CUDA simulator (no GPU needed).

The simulator must be chosen before ``numba.cuda`` is first imported; numba itself may
already be loaded by other test modules, so its config is re-read here. Only ``numba.cuda``
looks at the flag: the CPU ``@njit`` kernels used by other tests are unaffected. On a real
GPU machine set ``LULC_TEST_REAL_CUDA=1`` to run the same comparisons on the device.
"""
from __future__ import annotations

import os
import sys

if not os.environ.get("LULC_TEST_REAL_CUDA") and "numba.cuda" not in sys.modules:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    from numba.core import config

    config.reload_config()
    from numba import cuda  # noqa: E402  (bound to the simulator from here on)

    del os.environ["NUMBA_ENABLE_CUDASIM"]  # keep subprocesses of later tests on the real driver

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import rasterio  # noqa: E402
from numba import cuda  # noqa: E402, F811

from conftest import BANDS, synthetic_scene, write_raster  # noqa: E402
from lulc.runtime import session as session_module  # noqa: E402
from lulc.runtime.backends import Session  # noqa: E402
from lulc.runtime.infer import InferOptions, run_inference  # noqa: E402
from lulc.runtime.io.mapformat import NODATA_CLASS
from lulc.runtime.kernels import cpu as kernels
from lulc.runtime.kernels import cuda as cuda_kernels
from lulc.runtime.kernels import for_array
from lulc.runtime.tiling import blend_weights  # noqa: E402

pytestmark = pytest.mark.skipif(bool(os.environ.get("LULC_TEST_REAL_CUDA")) and not cuda.is_available(),
                                reason="LULC_TEST_REAL_CUDA set but no CUDA device")


@pytest.fixture
def block():
    rng = np.random.default_rng(0)
    b = rng.uniform(1, 100, (3, 22, 22)).astype(np.float32)
    b[1, 2:5, 3:7] = 0.0
    b[:, 18:, 18:] = np.nan
    return b


def test_dispatch_follows_the_array():
    assert for_array(cuda.device_array(3)) is cuda_kernels
    assert for_array(np.zeros(3)) is kernels


def test_mask_and_pack_equal_cpu(block):
    valid_d = cuda.device_array(block.shape[1:], np.bool_)
    raw_d = cuda.to_device(block)
    cuda_kernels.mask_nodata(raw_d, 0.0, True, valid_d)
    valid = np.empty(block.shape[1:], np.bool_)
    kernels.mask_nodata(block, 0.0, True, valid)
    np.testing.assert_array_equal(valid_d.copy_to_host(), valid)

    ys, xs = np.array([0, 0, 12, 12]), np.array([0, 12, 0, 12])
    mean, inv_std = np.float32([10, 20, 30]), np.float32([0.5, 0.1, 2.0])
    out_d, counts_d = cuda.device_array((4, 10, 10, 3), np.float32), cuda.device_array(4, np.int64)
    cuda_kernels.pack_tiles(raw_d, valid_d, ys, xs, mean, inv_std, out_d, counts_d)
    out, counts = np.empty((4, 10, 10, 3), np.float32), np.empty(4, np.int64)
    kernels.pack_tiles(block, valid, ys, xs, mean, inv_std, out, counts)
    np.testing.assert_allclose(out_d.copy_to_host(), out, rtol=1e-6)
    np.testing.assert_array_equal(counts_d.copy_to_host(), counts)


def test_blend_and_finalize_equal_cpu():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(3), (3, 8, 8)).astype(np.float32)
    ys, xs = np.array([0, 0, 6]), np.array([0, 6, 3])
    weight = blend_weights(8, 2)
    acc = np.zeros((4, 14, 14), np.float32)
    kernels.blend_accumulate(probs, ys, xs, weight, acc)
    acc_d = cuda.to_device(np.zeros_like(acc))
    cuda_kernels.blend_accumulate(cuda.to_device(probs), ys, xs, weight, acc_d)
    np.testing.assert_allclose(acc_d.copy_to_host(), acc, rtol=1e-5, atol=1e-6)

    valid = rng.uniform(size=(14, 14)) > 0.2
    outs = [np.empty((12, 13), np.uint8), np.empty((3, 12, 13), np.uint8), np.empty((12, 13), np.uint8)]
    kernels.finalize(acc, valid, *outs, True, True)
    outs_d = [cuda.device_array(o.shape, np.uint8) for o in outs]
    cuda_kernels.finalize(acc_d, cuda.to_device(valid), *outs_d, True, True)
    for o, d in zip(outs, outs_d):
        np.testing.assert_array_equal(d.copy_to_host(), o)


def test_buffer_helpers_on_views():
    a = np.arange(2 * 5 * 6, dtype=np.float32).reshape(2, 5, 6)
    a[1, 0, :] = np.nan  # garbage in a fresh buffer must not survive zero()
    d = cuda.to_device(a)
    s = cuda.to_device(np.ones((2, 5, 2), np.float32))
    cuda_kernels.add_into(d[:, :, 1:3], s)
    cuda_kernels.copy_into(d[:, :, 4:6], s)
    cuda_kernels.zero(d[:, :1, :])
    expect = a.copy()
    expect[:, :, 1:3] += 1
    expect[:, :, 4:6] = 1
    expect[:, :1, :] = 0
    np.testing.assert_array_equal(d.copy_to_host(), expect)


class DeviceSession(Session):
    """A session that takes and returns device arrays, like ORT CUDA IO binding or Keras/JAX."""

    name = "pixel-device"
    device = "cuda"
    device_io = True
    precision = "fp32"

    def __init__(self):
        from conftest import PixelSession

        self.host = PixelSession()

    def run(self, batch):
        assert for_array(batch) is cuda_kernels, "the model must receive device arrays"
        return cuda.to_device(self.host.predict(batch.copy_to_host()))


@pytest.mark.slow
def test_device_resident_pipeline_equals_cpu_pipeline(bundle_copy, tmp_path, monkeypatch):
    """The whole block runner on device buffers (pack, blend, carried strips, finalize)
    writes the same map as the CPU path."""
    from conftest import PixelSession

    image, _ = synthetic_scene(30, 37, seed=2)
    image[:, :4, :6] = 0
    path = write_raster(tmp_path / "in.tif", image, descriptions=BANDS)
    maps = []
    for session in (PixelSession(), DeviceSession()):
        monkeypatch.setattr(session_module, "prepare", lambda bundle, *options, s=session, **kw: s)
        out = tmp_path / f"{session.name}.tif"
        run_inference(bundle_copy, path, out, InferOptions(tile=16, overlap=4, block_px=12, confidence=True,
                                                           progress=False))
        with rasterio.open(out) as dst:
            maps.append(dst.read())
    np.testing.assert_array_equal(maps[0], maps[1])
    assert (maps[1][0, :4, :6] == NODATA_CLASS).all()


def test_uncertainty_equals_cpu():
    rng = np.random.default_rng(4)
    acc = rng.uniform(0, 1, (4, 12, 13)).astype(np.float32)
    acc[-1] = acc[:-1].sum(0)
    valid = rng.uniform(size=(12, 13)) > 0.2
    table = kernels.entropy_table(3)
    for measure in kernels.MEASURES.values():
        out = np.empty((12, 13), np.uint8)
        kernels.uncertainty(acc, valid, out, measure, table)
        out_d = cuda.device_array(out.shape, np.uint8)
        cuda_kernels.uncertainty(cuda.to_device(acc), cuda.to_device(valid), out_d, measure, cuda.to_device(table))
        np.testing.assert_array_equal(out_d.copy_to_host(), out)


def test_channels_first_pack_and_blend_equal_cpu():
    rng = np.random.default_rng(6)
    block = rng.normal(size=(3, 30, 30)).astype(np.float32)
    valid = rng.uniform(size=(30, 30)) > 0.1
    ys, xs = np.array([0, 14]), np.array([0, 14])
    mean, inv_std = np.zeros(3, np.float32), np.ones(3, np.float32)
    out, counts = np.empty((2, 3, 16, 16), np.float32), np.empty(2, np.int64)
    kernels.pack_tiles_nchw(block, valid, ys, xs, mean, inv_std, out, counts)
    out_d, counts_d = cuda.device_array(out.shape, np.float32), cuda.device_array(2, np.int64)
    cuda_kernels.pack_tiles_nchw(cuda.to_device(block), cuda.to_device(valid), ys, xs, mean, inv_std, out_d, counts_d)
    np.testing.assert_allclose(out_d.copy_to_host(), out, rtol=1e-6)
    np.testing.assert_array_equal(counts_d.copy_to_host(), counts)
    probs = rng.dirichlet(np.ones(3), (2, 16, 16)).astype(np.float32).transpose(0, 3, 1, 2).copy()
    weight = blend_weights(16, 2)
    acc = np.zeros((4, 30, 30), np.float32)
    kernels.blend_accumulate_nchw(probs, ys, xs, weight, acc)
    acc_d = cuda.to_device(np.zeros_like(acc))
    cuda_kernels.blend_accumulate_nchw(cuda.to_device(probs), ys, xs, weight, acc_d)
    np.testing.assert_allclose(acc_d.copy_to_host(), acc, rtol=1e-5, atol=1e-6)
