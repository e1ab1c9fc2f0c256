"""Pieces of the temporal path: per-date runtime kernels, random sequences, NDWI masking, --init-from."""
from __future__ import annotations

import numpy as np

from lulc.runtime.kernels import block_ops
from lulc.runtime.kernels.temporal import reference_mask_dates


def _block():
    """4 dates x 2 bands on 3 x 3 px: pixel (0,0) misses every date, (1,1) one band of date 2."""
    rng = np.random.default_rng(0)
    block = rng.uniform(100, 200, (8, 3, 3)).astype(np.float32)
    block[:, 0, 0] = -9999
    block[5, 1, 1] = -9999
    block[0:2, 2, 2] = np.nan
    return block


def test_temporal_kernels_match_reference(trained_bundle):
    from lulc.runtime.core.bundle import Bundle

    m = Bundle.load(trained_bundle).manifest
    m.input.bands, m.input.time_steps = [f"b{i}" for i in range(8)], 4  # 4 dates x 2 bands
    ops = block_ops(False, m, -9999.0)
    block = _block()
    valid = np.empty((3, 3), bool)
    ops.mask(block, valid)
    ref, ref_valid = reference_mask_dates(block, -9999.0, 2)
    assert (valid == ref_valid).all() and not valid[0, 0] and valid[1, 1] and valid[2, 2]
    mean, inv_std = np.full(8, 150, np.float32), np.full(8, 0.1, np.float32)
    out, counts = np.empty((1, 3, 3, 8), np.float32), np.empty(1, np.int64)
    ops.pack(block, valid, np.array([0]), np.array([0]), mean, inv_std, out, counts)
    expect = ((ref - mean[:, None, None]) * inv_std[:, None, None]).transpose(1, 2, 0)
    expect[0, 0] = np.nan
    np.testing.assert_allclose(out[0], expect, rtol=1e-6)
    assert counts[0] == 8
    assert np.isnan(out[0, 1, 1, 4:6]).all() and not np.isnan(out[0, 1, 1, :4]).any()  # only date 2 missing


def test_block_ops_mask_per_date_only_for_series(trained_bundle):
    from lulc.runtime.core.bundle import Bundle

    m = Bundle.load(trained_bundle).manifest
    assert block_ops(False, m, 0).bands_per_date is None
    m.input.time_steps = 2
    assert block_ops(False, m, 0).bands_per_date == len(m.input.channels) // 2


def test_random_dates_keeps_length():
    import tensorflow as tf

    from lulc.training.timeseries import random_dates

    x = np.ones((2, 4, 4, 6 * 2), np.float32)
    ds = random_dates(tf.data.Dataset.from_tensors((x, np.zeros((2, 4, 4)), np.ones((2, 4, 4)))), 6, 2, 3)
    xb, _, _ = next(iter(ds))
    kept = ~np.isnan(xb.numpy()[0, 0, 0].reshape(6, 2)).any(axis=1)
    assert kept.sum() == 3


def test_unstable_water():
    from lulc.training.series import unstable_water

    x = np.full((1, 1, 2, 3 * 2), np.nan, np.float32)
    x[0, 0, 0] = [0.3, 0.1, 0.1, 0.3, np.nan, np.nan]  # water, then land: unstable
    x[0, 0, 1] = [0.3, 0.1, 0.3, 0.1, 0.2, 0.1]  # water throughout
    assert unstable_water(x, ["green", "nir"], ["green", "nir"], 0.0).tolist() == [[[True, False]]]


def test_init_encoder_from_unet():
    from lulc.training.models.fcn_convlstm import build_fcn_convlstm, init_encoder_from
    from lulc.training.models.unet import build_unet

    unet = build_unet(3, 4, depth=2, width=4)
    model = build_fcn_convlstm(9, 4, 3, depth=2, width=4)
    copied = init_encoder_from(model, unet)
    assert "enc0_conv1" in copied and "enc1_bn2" in copied
    np.testing.assert_array_equal(model.get_layer("enc1_conv2").get_weights()[0], unet.get_layer("enc1_conv2").get_weights()[0])
