"""Backends beyond the CPU default: onnxruntime IO binding, Keras on JAX, `auto`'s choice, and
the zero-copy device hand-off (the last only on a real GPU with JAX and CuPy)."""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import rasterio

from conftest import BANDS, run_without_tensorflow, synthetic_scene, write_raster
from lulc.runtime import backends
from lulc.runtime.backends import device_arrays, keras_backend, ort, trt
from lulc.runtime.backends.plan import resolve
from lulc.runtime.core.bundle import Bundle
from lulc.runtime.core.errors import LulcError


def _tiles(bundle: Bundle, n: int = 3) -> np.ndarray:
    size = bundle.manifest.tile.size
    rng = np.random.default_rng(0)
    return rng.normal(0, 1, (n, size, size, len(bundle.manifest.input.bands))).astype(np.float32)


def test_ort_bound_run_equals_plain_run(trained_bundle):
    """The IO-binding path (raw pointer in, onnxruntime-allocated output) that the CUDA provider
    uses, exercised on the CPU device: same probabilities as a plain run."""
    bundle = Bundle.load(trained_bundle)
    session = ort.OrtSession(bundle, providers=["CPUExecutionProvider"])
    assert not session.device_io
    tiles = _tiles(bundle)
    bound = session.run_bound(tiles, "cpu", tiles.ctypes.data)
    np.testing.assert_array_equal(bound.numpy(), session.run(tiles))
    assert bound.device_name() == "cpu"


class _Cai:
    def __init__(self, shape, strides):
        self.__cuda_array_interface__ = {"shape": shape, "strides": strides, "typestr": "<f4",
                                         "data": (4096, False), "version": 3}


def test_cuda_pointer_takes_only_contiguous_arrays():
    assert device_arrays.cuda_pointer(_Cai((2, 3), None)) == 4096
    assert device_arrays.cuda_pointer(_Cai((2, 3), (12, 4))) == 4096
    with pytest.raises(ValueError, match="C-contiguous"):
        device_arrays.cuda_pointer(_Cai((2, 3), (4, 8)))


@pytest.mark.slow
def test_keras_backend_on_jax_without_tensorflow(trained_bundle, tmp_path):
    """`--backend keras` where TensorFlow cannot be imported: Keras is put on JAX (jitted), and
    the map equals the ONNX backend's."""
    pytest.importorskip("jax")
    image, _ = synthetic_scene(70, 90, seed=3)
    src = write_raster(tmp_path / "in.tif", image, descriptions=BANDS)
    outs = {name: tmp_path / f"{name}.tif" for name in ("keras", "onnx")}
    proc = run_without_tensorflow(f"""
        import os
        os.environ.pop("KERAS_BACKEND", None)
        from lulc.runtime.infer import InferOptions, run_inference
        s = run_inference({str(trained_bundle)!r}, {str(src)!r}, {str(outs['keras'])!r},
                          InferOptions(backend="keras", progress=False))
        assert s.device == "keras/jax", s.device
        assert not any(m.startswith("tensorflow") for m in sys.modules)
        print("ran on", s.device)
        """)
    assert proc.returncode == 0, proc.stderr
    assert "ran on keras/jax" in proc.stdout
    from lulc.runtime.infer import InferOptions, run_inference

    run_inference(trained_bundle, src, outs["onnx"], InferOptions(backend="onnx", progress=False))
    with rasterio.open(outs["keras"]) as a, rasterio.open(outs["onnx"]) as b:
        agree = (a.read(1) == b.read(1)).mean()
    assert agree >= 0.999


def test_auto_prefers_gpu_engines(trained_bundle, monkeypatch):
    """auto: a usable TensorRT engine, then ONNX on CUDA, then Keras on a JAX GPU, then ONNX on CPU."""
    bundle = Bundle.load(trained_bundle)
    monkeypatch.setattr(trt, "usable", lambda b: False)
    monkeypatch.setattr(ort, "available_providers", lambda: ["CPUExecutionProvider"])
    monkeypatch.setattr(keras_backend, "on_jax_gpu", lambda: False)
    assert resolve(bundle).backend == "onnx"
    monkeypatch.setattr(keras_backend, "on_jax_gpu", lambda: True)
    assert resolve(bundle).backend == "keras"
    monkeypatch.setattr(ort, "available_providers", lambda: [ort.CUDA, "CPUExecutionProvider"])
    assert resolve(bundle).backend == "onnx"
    monkeypatch.setattr(trt, "usable", lambda b: True)
    assert resolve(bundle).backend == "trt"


def test_jax_gpu_check_does_not_import_jax_without_a_cuda_plugin():
    proc = run_without_tensorflow("""
        from lulc.runtime.backends.keras_backend import jax_cuda_plugin_installed, jax_gpu_available
        has_plugin = jax_cuda_plugin_installed()
        print(jax_gpu_available(), has_plugin, "jax" in sys.modules)
        """)
    assert proc.returncode == 0, proc.stderr
    available, has_plugin, imported = proc.stdout.split()
    if has_plugin == "False":
        assert (available, imported) == ("False", "False")


def _real_gpu() -> str | None:
    """Why the device hand-off cannot run here, or None where it can."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM"):
        return "Numba's CUDA simulator has no device memory to hand over"
    try:
        import cupy  # noqa: F401
        from numba import cuda
    except ImportError:
        return "needs CuPy and numba.cuda (the lent GPU machine has both)"
    if not cuda.is_available():
        return "needs a CUDA GPU (run on the lent GPU machine)"
    if not keras_backend.jax_gpu_available():
        return "needs JAX with its CUDA plugin"
    return None


@pytest.mark.skipif(_real_gpu() is not None, reason=str(_real_gpu()))
def test_device_arrays_cross_to_jax_and_back_without_copies():
    """Numba device tiles reach JAX as the same device memory, and a JAX result comes back
    as a Numba view that our blend kernels can take."""
    import jax
    from numba import cuda

    tiles = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype(np.float32)
    on_device = cuda.to_device(tiles)
    x = jax.dlpack.from_dlpack(device_arrays.to_dlpack(on_device))
    assert x.unsafe_buffer_pointer() == device_arrays.cuda_pointer(on_device)
    y = jax.jit(lambda a: jax.nn.softmax(a * 2.0, axis=-1))(x)
    back = device_arrays.from_dlpack(y.block_until_ready())
    assert device_arrays.cuda_pointer(back) == y.unsafe_buffer_pointer()
    expect = np.exp(tiles * 2.0) / np.exp(tiles * 2.0).sum(-1, keepdims=True)
    np.testing.assert_allclose(back.copy_to_host(), expect, rtol=1e-5, atol=1e-6)


def test_cpu_split_keeps_every_core_busy(monkeypatch):
    monkeypatch.delattr(ort.os, "sched_getaffinity")  # macOS and Windows
    assert ort.usable_cores() == (os.cpu_count() or 1)
    assert ort.cpu_split(1) == (1, 1)
    assert ort.cpu_split(2) == (2, 1)
    assert ort.cpu_split(16) == (ort.MAX_CALLERS, 16 // ort.MAX_CALLERS)


def test_concurrent_calls_return_results_in_order(trained_bundle, monkeypatch):
    """`run_all` on a CPU session with several callers gives each batch its own output, in order."""
    monkeypatch.setattr(ort, "usable_cores", lambda: 3)
    bundle = Bundle.load(trained_bundle)
    session = ort.OrtSession(bundle, providers=["CPUExecutionProvider"])
    batches = [_tiles(bundle, n) * (i + 1) for i, n in enumerate((1, 3, 2, 1, 2, 3))]
    outs = list(backends.run_all(session, batches))
    assert [len(o) for o in outs] == [1, 3, 2, 1, 2, 3]
    for batch, out in zip(batches, outs):
        np.testing.assert_array_equal(out, session.run(batch))


def test_closing_queued_calls_drops_those_not_started():
    """A failed block must not leave the next block's batches running on the model."""
    gate, started = threading.Event(), []

    def call(i):
        started.append(i)
        gate.wait(10)
        return i

    with ThreadPoolExecutor(1) as pool:
        queued = ort.InOrder([pool.submit(call, i) for i in range(4)])
        while not started:  # call 0 runs; 1-3 wait in the queue
            time.sleep(0.001)
        queued.close()
        gate.set()
    assert started == [0]
    assert list(queued) == []


CPU = "CPUExecutionProvider"


@pytest.fixture
def cuda_offered(monkeypatch):
    """onnxruntime-gpu as seen from a CPU box: CUDA listed, every session recorded (and run on the
    CPU, the only provider this onnxruntime really has)."""
    asked = []
    real = ort.ort.InferenceSession

    def spy(path, sess_options=None, providers=None):
        asked.append(list(providers))
        return real(path, sess_options=sess_options, providers=[CPU])

    monkeypatch.setattr(ort, "available_providers", lambda: [ort.CUDA, CPU])
    monkeypatch.setattr(ort.ort, "InferenceSession", spy)
    return asked


def test_device_cpu_keeps_onnxruntime_off_cuda(trained_bundle, cuda_offered, monkeypatch, caplog):
    bundle = Bundle.load(trained_bundle)
    caplog.set_level("INFO", logger="lulc.runtime.backends")
    session = backends.prepare(bundle, "onnx", device="cpu")
    assert cuda_offered == [[CPU]] and session.device == CPU and not session.device_io
    assert "backend onnx runs on CPUExecutionProvider at fp32 (device cpu requested)" in caplog.text
    backends.prepare(bundle, "onnx", device="auto")  # today's behaviour: CUDA preferred where offered
    assert cuda_offered[-1] == [ort.CUDA, CPU]
    # auto on the CPU leaves out every GPU engine, even where they would be usable
    monkeypatch.setattr(trt, "usable", lambda b: True)
    monkeypatch.setattr(keras_backend, "on_jax_gpu", lambda: True)
    assert resolve(bundle, device="cpu").backend == "onnx" and resolve(bundle, device="auto").backend == "trt"
    assert backends.prepare(bundle, "auto", device="cpu").name == "onnx"
    assert cuda_offered[-1] == [CPU]
    assert "backend auto -> onnx (device cpu)" in caplog.text


def test_device_cuda_never_falls_back_to_the_cpu(trained_bundle, cuda_offered, monkeypatch):
    bundle = Bundle.load(trained_bundle)
    with pytest.raises(LulcError, match="could not start its CUDA provider"):  # offered, but fell back
        backends.prepare(bundle, "onnx", device="cuda")
    assert cuda_offered == [[ort.CUDA, CPU]]
    monkeypatch.setattr(ort, "available_providers", lambda: [CPU])
    with pytest.raises(LulcError, match="this onnxruntime has no CUDA provider"):
        backends.prepare(bundle, "onnx", device="cuda")
    with pytest.raises(LulcError, match="runs only on an NVIDIA GPU"):
        backends.prepare(bundle, "trt", device="cpu")
    with pytest.raises(LulcError, match="unknown device 'gpu'; choose one of auto, cpu, cuda"):
        backends.prepare(bundle, "onnx", device="gpu")


@pytest.mark.slow
def test_keras_device_cpu_on_jax(trained_bundle):
    """`--device cpu` with Keras on JAX: weights committed to the CPU, same probabilities as ONNX;
    `--device cuda` without a JAX GPU is one line."""
    pytest.importorskip("jax")
    proc = run_without_tensorflow(f"""
        import os
        import numpy as np
        os.environ.pop("KERAS_BACKEND", None)
        from lulc.runtime import backends
        from lulc.runtime.backends.keras_backend import jax_gpu_available
        from lulc.runtime.core.bundle import Bundle
        from lulc.runtime.core.errors import BackendUnavailable

        bundle = Bundle.load({str(trained_bundle)!r})
        tiles = np.random.default_rng(0).normal(size=(2, 64, 64, 4)).astype(np.float32)
        session = backends.prepare(bundle, "keras", device="cpu")
        assert session.device == "keras/jax/cpu" and not session.device_io, session.device
        ref = backends.prepare(bundle, "onnx", device="cpu").run(tiles)
        np.testing.assert_allclose(session.run(tiles), ref, atol=1e-4)
        if not jax_gpu_available():
            try:
                backends.prepare(bundle, "keras", device="cuda")
                raise AssertionError("cuda accepted without a GPU")
            except BackendUnavailable as exc:
                assert "sees no GPU" in str(exc), exc
        print("ok")
        """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def _unavailable(backend: str, device: str) -> str | None:
    """Why ``backend`` cannot run on ``device`` here (the skip reason), or None where it can."""
    if backend == "trt":
        return "needs TensorRT and an NVIDIA GPU (not installable from the registries reachable here)"
    if device == "cuda" and backend == "onnx" and ort.CUDA not in ort.available_providers():
        return "needs onnxruntime-gpu on a machine with an NVIDIA GPU"
    if device == "cuda" and backend == "keras" and not keras_backend.jax_gpu_available():
        return "needs JAX with its CUDA plugin and a GPU"
    return None


@pytest.mark.parametrize("backend", ["onnx", "keras", "trt"])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_every_backend_and_device_gives_the_same_probabilities(trained_bundle, backend, device):
    """The ONNX backend API's matrix: each (backend, device) that exists here runs the
    bundle's samples and agrees with the CPU onnxruntime session; the others skip, saying why."""
    reason = _unavailable(backend, device)
    if reason:
        pytest.skip(reason)
    bundle = Bundle.load(trained_bundle)
    samples = bundle.load_samples()[:2]
    reference = backends.prepare(bundle, "onnx", "cpu").run(samples)
    session = backends.prepare(bundle, backend, device)
    probs = session.run(samples)
    probs = probs.copy_to_host() if session.device_io else np.asarray(probs)
    assert session.name == backend and session.precision == "fp32"
    np.testing.assert_allclose(probs, reference, atol=1e-4)  # the export parity tolerance
