"""CPU kernels against their NumPy definitions, on blocks with nodata, NaN and odd shapes."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import BANDS, run_without_tensorflow, synthetic_scene, write_raster
from lulc.runtime.io.mapformat import NODATA_CLASS
from lulc.runtime.kernels import cpu as kernels
from lulc.runtime.kernels import for_array, reference
from lulc.runtime.pipeline import batch_runs
from lulc.runtime.tiling import blend_weights


def random_block(rng, c=3, span=40):
    block = rng.uniform(1, 100, (c, span, span)).astype(np.float32)
    block[1, 3:9, 5:12] = 0.0  # nodata in one band only
    block[:, 30:, 30:] = np.nan  # outside the raster
    block[0, 0, 0] = np.nan
    return block


@pytest.mark.parametrize("use_nodata", [True, False])
def test_mask_matches_reference(use_nodata):
    block = random_block(np.random.default_rng(0))
    valid = np.empty(block.shape[1:], np.bool_)
    kernels.mask_nodata(block, 0.0, use_nodata, valid)
    np.testing.assert_array_equal(valid, reference.reference_mask(block, 0.0, use_nodata))
    assert valid[4, 6] != use_nodata and not valid[35, 35]


def test_pack_matches_reference_and_counts_valid_pixels():
    rng = np.random.default_rng(1)
    block = random_block(rng)
    valid = reference.reference_mask(block, 0.0, True)
    ys, xs = np.array([0, 0, 24, 24]), np.array([0, 24, 0, 24])
    mean, inv_std = rng.uniform(10, 20, 3).astype(np.float32), rng.uniform(0.1, 1, 3).astype(np.float32)
    out, counts = np.empty((4, 16, 16, 3), np.float32), np.empty(4, np.int64)
    kernels.pack_tiles(block, valid, ys, xs, mean, inv_std, out, counts)
    ref_out, ref_counts = reference.reference_pack(block, valid, ys, xs, 16, mean, inv_std)
    np.testing.assert_allclose(out, ref_out, rtol=1e-6)
    np.testing.assert_array_equal(counts, ref_counts)
    assert counts[3] < 16 * 16 and np.isfinite(out).all()  # NaN pixels are packed as 0


def test_blend_matches_reference_with_overlapping_tiles():
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.ones(4), (5, 16, 16)).astype(np.float32)
    ys, xs = np.array([0, 0, 12, 12, 6]), np.array([0, 12, 0, 12, 6])
    weight = blend_weights(16, 4)
    acc = np.zeros((5, 28, 28), np.float32)
    kernels.blend_accumulate(probs, ys, xs, weight, acc)
    np.testing.assert_allclose(acc, reference.reference_blend(probs, ys, xs, weight, acc.shape), rtol=1e-5, atol=1e-6)


def test_finalize_matches_reference_including_scaled_bands():
    rng = np.random.default_rng(3)
    acc = rng.uniform(0, 1, (4, 20, 24)).astype(np.float32)
    acc[-1] = acc[:-1].sum(0) * rng.uniform(1.0, 1.5, (20, 24)).astype(np.float32)
    acc[-1, :2, :2] = 0.0  # no tile covered these
    valid = rng.uniform(size=(20, 24)) > 0.1
    classes, probs, conf = np.empty((20, 24), np.uint8), np.empty((3, 20, 24), np.uint8), np.empty((20, 24), np.uint8)
    kernels.finalize(acc, valid, classes, probs, conf, True, True)
    ref = reference.reference_finalize(acc.astype(np.float64), valid)
    np.testing.assert_array_equal(classes, ref[0])
    assert np.abs(probs.astype(int) - ref[1]).max() <= 1 and np.abs(conf.astype(int) - ref[2]).max() <= 1
    assert (classes[:2, :2] == NODATA_CLASS).all() and (classes[~valid] == NODATA_CLASS).all()


def test_finalize_reads_owned_corner_of_a_larger_accumulator():
    acc = np.zeros((3, 10, 10), np.float32)
    acc[1], acc[2] = 1.0, 1.0
    valid = np.ones((10, 10), np.bool_)
    classes = np.empty((6, 7), np.uint8)
    kernels.finalize(acc, valid, classes, np.empty((1, 1, 1), np.uint8), np.empty((1, 1), np.uint8), False, False)
    assert (classes == 1).all()


def test_batch_runs_are_consecutive_and_bounded():
    live = np.array([0, 1, 2, 3, 4, 7, 8, 10])
    runs = list(batch_runs(live, 3))
    assert runs == [(0, 3), (3, 5), (7, 9), (10, 11)]
    assert sorted(i for a, b in runs for i in range(a, b)) == live.tolist()


def test_for_array_picks_cpu_kernels_for_numpy():
    assert for_array(np.zeros(3)) is kernels



def test_warm_up_loads_the_signatures_a_run_uses(trained_bundle, tmp_path):
    """The start-up warm-up is only worth its thread if a real run then compiles nothing new,
    in either tile layout (the bundle's channels-first twin runs; a stale twin would not)."""
    image, _ = synthetic_scene(60, 530, seed=5)  # wider than one COG tile: the run builds an overview
    path = write_raster(tmp_path / "in.tif", image, descriptions=BANDS)
    code = f"""
        from lulc.runtime import infer
        from lulc.runtime.kernels import cpu as kernels
        from lulc.runtime.kernels.warmup import warm_up
        used = (kernels.mask_nodata, kernels.pack_tiles_nchw, kernels.pack_tiles, kernels.blend_accumulate_nchw,
                kernels.blend_accumulate, kernels.finalize, kernels.mode_2x2)
        warm_up()
        before = [len(k.signatures) for k in used]
        infer.run_inference({str(trained_bundle)!r}, {str(path)!r}, {str(tmp_path / "map.tif")!r},
                            infer.InferOptions(backend="onnx", progress=False))
        print(before, [len(k.signatures) for k in used], [sum(k.stats.cache_hits.values()) + sum(k.stats.cache_misses.values())
                                                         for k in used])
        """
    proc = run_without_tensorflow(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    before, after, loads = proc.stdout.strip().splitlines()[-1].split("] [")
    assert before.strip("[") == after == "1, 1, 1, 1, 1, 1, 1"
    assert loads.strip("]") == "1, 1, 1, 1, 1, 1, 1"  # each loaded or compiled once, by the warm-up


def test_a_cold_cache_compiles_the_write_side_in_a_second_process(tmp_path, monkeypatch):
    """First run after install: another process compiles blend/finalize/mode and the
    channels-last kernels into the cache while this one compiles mask and the channels-first
    pack, and this one then loads those from the cache."""
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    code = """
        from lulc.runtime.kernels import cpu, warmup
        cold = warmup._cache_is_cold()
        warmup.warm_up()
        loaded = [sum(k.stats.cache_hits.values())
                  for k in (cpu.blend_accumulate_nchw, cpu.finalize, cpu.pack_tiles, cpu.blend_accumulate, cpu.mode_2x2)]
        compiled = [sum(k.stats.cache_misses.values()) for k in (cpu.mask_nodata, cpu.pack_tiles_nchw)]
        print(cold, warmup._cache_is_cold(), loaded, compiled)
        """
    proc = run_without_tensorflow(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[-2] == "True False [1, 1, 1, 1, 1] [1, 1]"
    names = {p.name.split("-")[0] for p in tmp_path.rglob("*.nbi")}
    kernels = ("mask_nodata", "pack_tiles_nchw", "pack_tiles", "blend_accumulate_nchw", "blend_accumulate", "finalize",
               "mode_2x2")
    assert {f"cpu.{k}" for k in kernels} <= names


@pytest.mark.parametrize("measure", ["entropy", "margin", "least"])
def test_uncertainty_matches_reference(measure):
    rng = np.random.default_rng(5)
    acc = rng.dirichlet(np.ones(4), (20, 24)).transpose(2, 0, 1).astype(np.float32)
    acc = np.concatenate([acc * 1.7, np.full((1, 20, 24), 1.7, np.float32)])  # weight 1.7 everywhere
    acc[-1, :2, :2] = 0.0
    valid = rng.uniform(size=(20, 24)) > 0.1
    out = np.empty((20, 24), np.uint8)
    kernels.uncertainty(acc, valid, out, kernels.MEASURES[measure], kernels.entropy_table(4))
    ref = reference.reference_uncertainty(acc.astype(np.float64), valid, measure)
    assert np.abs(out.astype(int) - ref).max() <= 1 and (out[~valid] == 255).all() and (out[:2, :2] == 255).all()


def test_channels_first_pack_and_blend_match_their_references():
    rng = np.random.default_rng(8)
    block = rng.normal(size=(3, 40, 44)).astype(np.float32)
    block[1, 5:9, 7:12] = np.nan  # nodata reads as NaN: packed as 0
    valid = reference.reference_mask(block, 0.0, False)
    ys, xs = np.array([0, 0, 20, 24]), np.array([0, 24, 8, 28])
    mean, inv_std = rng.normal(size=3).astype(np.float32), (rng.random(3) + 0.5).astype(np.float32)
    out, counts = np.empty((4, 3, 16, 16), np.float32), np.empty(4, np.int64)
    kernels.pack_tiles_nchw(block, valid, ys, xs, mean, inv_std, out, counts)
    ref_out, ref_counts = reference.reference_pack_nchw(block, valid, ys, xs, 16, mean, inv_std)
    np.testing.assert_allclose(out, ref_out, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(counts, ref_counts)
    probs = rng.dirichlet(np.ones(4), (4, 16, 16)).astype(np.float32).transpose(0, 3, 1, 2).copy()
    weight = blend_weights(16, 4)
    acc = np.zeros((5, 40, 44), np.float32)
    kernels.blend_accumulate_nchw(probs, ys, xs, weight, acc)
    np.testing.assert_allclose(acc, reference.reference_blend_nchw(probs, ys, xs, weight, acc.shape), rtol=1e-5,
                               atol=1e-6)
