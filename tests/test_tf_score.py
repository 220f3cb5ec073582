"""The TensorFlow score and losses against the NumPy official score (probav.metrics.score) and the
49-window oracle (probav.metrics.reference)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

tf = pytest.importorskip("tensorflow")

from probav.losses import ShiftBiasLoss, make_loss, shift_bias_errors, shift_bias_loss  # noqa: E402
from probav.metrics.reference import window_cmse_naive  # noqa: E402
from probav.metrics.score import shift_cmse, shifted_cpsnr_batch  # noqa: E402
from probav.metrics.tf_score import CPSNR, CMSE_FLOOR, shifted_cmse, shifted_cpsnr, window_stats  # noqa: E402


def scene_batch(rng, n=2, size=384, cloudy=True, shift=(1, -2), offset=0.01, noise=0.004):
    """HR (smooth, [0,1]), a noisy shifted and biased SR, and an SM with a cloud."""
    hr = np.stack([ndimage.gaussian_filter(rng.normal(size=(size, size)), 2.0) for _ in range(n)])
    hr = 0.15 + 0.05 * hr / hr.std()
    sr = np.roll(hr, shift, axis=(1, 2)) + offset + rng.normal(0, noise, hr.shape)
    sm = np.ones(hr.shape, bool)
    if cloudy:
        sm[0, size // 4:size // 2, size // 3:size // 2 + 7] = False
        sm[-1, :, : size // 5] = False
    return sr, hr, sm


def naive_window_errors(sr, hr, sm, kind):
    """(49,) bias-corrected error of each window, by the plain loop (any square size)."""
    b, crop = 3, hr.shape[0] - 6
    sr_c = sr[b:-b, b:-b]
    out = []
    for u in range(7):
        for v in range(7):
            clear = sm[u:u + crop, v:v + crop]
            d = hr[u:u + crop, v:v + crop][clear] - sr_c[clear]
            d = d - d.mean()
            out.append(np.mean(d ** 2) if kind == "mse" else np.mean(np.abs(d)))
    return np.array(out)


# --- the score ----------------------------------------------------------------------------------

def test_cpsnr_matches_numpy_score_float64_and_float32():
    rng = np.random.default_rng(0)
    sr, hr, sm = scene_batch(rng)
    expected = shifted_cpsnr_batch(sr, hr, sm)
    got64 = shifted_cpsnr(sr, hr, sm).numpy()
    got32 = shifted_cpsnr(sr.astype(np.float32), hr.astype(np.float32), sm).numpy()
    np.testing.assert_allclose(got64, expected, rtol=0, atol=1e-8)
    np.testing.assert_allclose(got32, expected, rtol=0, atol=1e-4)


def test_uint16_images_scaled_like_the_official_score():
    rng = np.random.default_rng(1)
    sr, hr, sm = scene_batch(rng, n=1, cloudy=False)
    sr16 = np.clip(np.rint(sr * 65535), 0, 65535).astype(np.uint16)
    hr16 = np.clip(np.rint(hr * 65535), 0, 65535).astype(np.uint16)
    expected = shifted_cpsnr_batch(sr16, hr16, sm)
    got = shifted_cpsnr(sr16 / 65535.0, hr16 / 65535.0, sm).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-8)


def test_window_stats_on_small_patches_and_channel_axis():
    rng = np.random.default_rng(2)
    sr, hr, sm = scene_batch(rng, n=2, size=48)
    cmse, bias, count = window_stats(sr[..., None], hr[..., None], sm[..., None])
    assert cmse.shape == bias.shape == count.shape == (2, 49)
    for i in range(2):
        np.testing.assert_allclose(cmse.numpy()[i], window_cmse_naive(sr[i], hr[i], sm[i]).ravel(), rtol=1e-10)
        np.testing.assert_allclose(count.numpy()[i], [sm[i, u:u + 42, v:v + 42].sum()
                                                      for u in range(7) for v in range(7)])
    # The bias of the best window is the SR's offset (0.01) plus the noise's mean.
    best = tf.argmin(cmse, axis=1).numpy()
    np.testing.assert_allclose(-bias.numpy()[np.arange(2), best], 0.01, atol=2e-3)


def test_window_without_clear_pixel_is_infinite():
    rng = np.random.default_rng(3)
    sr, hr, sm = scene_batch(rng, n=1, size=24, cloudy=False)
    sm[:] = False
    sm[0, 0, 0] = True  # only window (0, 0) sees a clear pixel
    cmse, _, count = window_stats(sr, hr, sm)
    assert cmse.numpy()[0, 0] == 0 and np.isinf(cmse.numpy()[0, 1:]).all()
    assert count.numpy()[0, 0] == 1 and (count.numpy()[0, 1:] == 0).all()
    sm[0, 2, 2] = True  # seen by the windows u, v ≤ 2
    cmse, _, _ = window_stats(sr, hr, sm)
    assert np.isfinite(cmse.numpy().reshape(7, 7)[:3, :3]).all() and np.isinf(cmse.numpy()).sum() == 40


def test_keras_metric_averages_images_and_floors_perfect_predictions():
    rng = np.random.default_rng(4)
    sr, hr, sm = scene_batch(rng, n=3, size=36)
    y_true = np.stack([hr, sm], -1).astype(np.float32)
    metric = CPSNR()
    metric.update_state(y_true[:2], sr[:2, ..., None].astype(np.float32))
    metric.update_state(y_true[2:], sr[2:, ..., None].astype(np.float32))
    expected = np.mean([-10 * np.log10(window_cmse_naive(sr[i], hr[i], sm[i]).min()) for i in range(3)])
    assert float(metric.result()) == pytest.approx(expected, abs=1e-3)
    metric.reset_state()
    metric.update_state(y_true, (hr + 0.02)[..., None].astype(np.float32))  # perfect up to a constant
    assert float(metric.result()) == pytest.approx(-10 * np.log10(CMSE_FLOOR), abs=1e-3)


def test_shifted_cmse_float64_agrees_with_numpy_shift_cmse():
    rng = np.random.default_rng(5)
    sr, hr, sm = scene_batch(rng)
    got = shifted_cmse(sr, hr, sm).numpy()
    # shift_cmse gives fast float32 estimates (error about 1e-6 of the image variance) ...
    expected = shift_cmse(sr, hr, sm)[0].reshape(2, -1).min(axis=1)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6 * hr.var())
    # ... the 49-window loop the exact values.
    exact = [window_cmse_naive(sr[i], hr[i], sm[i]).min() for i in range(2)]
    np.testing.assert_allclose(got, exact, rtol=1e-10)


# --- the losses ---------------------------------------------------------------------------------

def test_mse_loss_is_the_best_cmse_of_the_numpy_score():
    rng = np.random.default_rng(6)
    sr, hr, sm = scene_batch(rng)
    y_true = np.stack([hr, sm.astype(float)], -1)
    per_image = shift_bias_errors(y_true, sr[..., None], "mse").numpy()
    cmse, _, _ = shift_cmse(sr, hr, sm)
    np.testing.assert_allclose(per_image, cmse.reshape(2, -1).min(axis=1), rtol=0, atol=1e-6 * hr.var())
    np.testing.assert_allclose(per_image, [window_cmse_naive(sr[i], hr[i], sm[i]).min() for i in range(2)],
                               rtol=1e-10)
    loss = make_loss("mse")(y_true, sr[..., None])
    assert float(loss) == pytest.approx(per_image.mean(), rel=1e-9)
    assert float(tf.reduce_mean(shift_bias_loss(y_true, sr[..., None]))) == pytest.approx(per_image.mean(), rel=1e-9)


@pytest.mark.parametrize("kind", ["l1", "mse"])
def test_loss_matches_the_window_loop_on_patches(kind):
    rng = np.random.default_rng(7)
    sr, hr, sm = scene_batch(rng, n=2, size=30, shift=(2, 1))
    y_true = np.stack([hr, sm.astype(float)], -1).astype(np.float32)
    got = shift_bias_errors(y_true, sr[..., None].astype(np.float32), kind).numpy()
    expected = [naive_window_errors(sr[i], hr[i], sm[i], kind).min() for i in range(2)]
    np.testing.assert_allclose(got, expected, rtol=2e-4)


@pytest.mark.parametrize("kind", ["l1", "mse"])
def test_loss_forgives_shift_brightness_and_clouds(kind):
    rng = np.random.default_rng(8)
    _, hr, sm = scene_batch(rng, n=2, size=30)
    sr = np.roll(hr, (-2, 3), axis=(1, 2)) - 0.03  # within ±3 px and a brightness offset
    sr[0, 10:14, 10:14] = 1.0  # but not wrong pixels where the SM is clear
    hr_cloud = hr.copy()
    y_clear = np.stack([hr, np.ones_like(hr)], -1)
    loss = ShiftBiasLoss(kind)
    per_image = shift_bias_errors(y_clear, sr[..., None], kind).numpy()  # float64: exact
    assert per_image[1] < 1e-12 and per_image[0] > 1e-4
    # Hide the wrong pixels (and their neighbourhood, for every shift) under a cloud: forgiven.
    sm_cloud = np.ones_like(hr)
    sm_cloud[0, 4:24, 4:24] = 0
    hr_cloud[0, 4:24, 4:24] = 0.9  # HR under clouds does not matter either
    y_cloud = np.stack([hr_cloud, sm_cloud], -1)
    assert float(loss(y_cloud, sr[..., None])) < 1e-7  # the Keras loss works in float32


def test_loss_has_finite_gradients():
    rng = np.random.default_rng(9)
    sr, hr, sm = scene_batch(rng, n=2, size=24)
    y_true = tf.constant(np.stack([hr, sm], -1), tf.float32)
    pred = tf.Variable(sr[..., None].astype(np.float32))
    for kind in ("l1", "mse"):
        with tf.GradientTape() as tape:
            value = make_loss(kind)(y_true, pred)
        grad = tape.gradient(value, pred).numpy()
        assert np.isfinite(grad).all() and np.abs(grad).sum() > 0
        assert np.abs(grad[:, :3]).max() == 0  # the cropped border gets no gradient


def test_loss_rejects_unknown_kind():
    with pytest.raises(ValueError, match="train.loss"):
        ShiftBiasLoss("huber")
