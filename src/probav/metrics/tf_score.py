"""The official shifted cPSNR (``probav.metrics.score``) on TensorFlow tensors, for training.

Same definition as the NumPy score, on batches of any size (not only 384×384): the SR image is
cropped by ``border`` (3) pixels on every side, and compared with each of the (2·border+1)² = 49
HR windows of the same size whose upper-left corner is (u, v), u, v ∈ {0…2·border}. On the clear
pixels of the SM window the brightness bias b = mean(HR − SR) is removed, cMSE = mean((HR − SR − b)²),
and the best (smallest) of the 49 gives cPSNR = −10·log10(cMSE). Images are in [0, 1] units.

Computed directly, one window at a time (``tf.map_fn``: one loop body in graphs), with the two-pass
formula (bias first, then the squared deviations): in float32 this matches the NumPy score to about
1e-5 dB on 384×384 scenes, in float64 to rounding. It is differentiable (the gradient flows through
the best window), which is what ``probav.losses`` builds on.

``window_stats`` is the shared machinery; ``shifted_cmse`` / ``shifted_cpsnr`` the score;
``CPSNR`` the Keras metric (mean cPSNR per image; on full 128×128-LR dev scenes it is the dev cPSNR).
"""
from __future__ import annotations

import keras
import tensorflow as tf

BORDER = 3
SHIFTS = 2 * BORDER + 1
# cMSE floor for the cPSNR of a (numerically) perfect prediction: 1e-12 → 120 dB, not +inf,
# so that a mean over images stays finite.
CMSE_FLOOR = 1e-12


def _squeeze_channel(x: tf.Tensor) -> tf.Tensor:
    """(B,H,W) or (B,H,W,1) → (B,H,W)."""
    if x.shape.rank == 4:
        return x[..., 0]
    if x.shape.rank != 3:
        raise ValueError(f"expected a (B,H,W) or (B,H,W,1) tensor, got shape {x.shape}")
    return x


def split_target(y_true: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Training target (B,H,W,2) → HR (B,H,W) and SM (B,H,W), per the training input contract."""
    return y_true[..., 0], y_true[..., 1]


def window_stats(sr: tf.Tensor, hr: tf.Tensor, sm: tf.Tensor, border: int = BORDER,
                 kind: str = "mse") -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Bias-corrected clear-pixel error of every shift: three (B, S²) tensors, S = 2·border+1.

    ``sr``, ``hr``: (B,H,W) or (B,H,W,1) in [0,1]; ``sm``: same shape, 1 = clear (bool or 0/1).
    Returns (error, bias, count) per window, windows ordered u·S + v. ``kind`` ``"mse"`` gives the
    official cMSE = mean over clear pixels of (HR_w − SR_c − b)²; ``"l1"`` the mean of |HR_w − SR_c − b|
    (b is the mean difference in both). A window without clear pixels gets error +inf and bias 0.
    The computation is in ``sr``'s dtype.
    """
    if kind not in ("mse", "l1"):
        raise ValueError(f"kind must be 'mse' or 'l1', got {kind!r}")
    sr = _squeeze_channel(tf.convert_to_tensor(sr))
    dtype = sr.dtype if sr.dtype.is_floating else tf.float32
    sr = tf.cast(sr, dtype)
    hr = tf.cast(_squeeze_channel(tf.convert_to_tensor(hr)), dtype)
    sm = tf.cast(tf.cast(_squeeze_channel(tf.convert_to_tensor(sm)), tf.bool), dtype)
    shifts = 2 * border + 1
    shape = tf.shape(sr)
    batch, height, width = shape[0], shape[1], shape[2]
    crop_h, crop_w = height - 2 * border, width - 2 * border
    sr_c = sr[:, border:height - border, border:width - border]
    inf = tf.constant(float("inf"), dtype)

    def one_window(k):
        u, v = k // shifts, k % shifts
        begin, size = tf.stack([0, u, v]), tf.stack([batch, crop_h, crop_w])
        hr_w = tf.slice(hr, begin, size)
        sm_w = tf.slice(sm, begin, size)
        n = tf.reduce_sum(sm_w, axis=[1, 2])
        safe = tf.maximum(n, 1.0)
        diff = (hr_w - sr_c) * sm_w
        bias = tf.reduce_sum(diff, axis=[1, 2]) / safe
        dev = (diff - bias[:, None, None]) * sm_w
        if kind == "mse":
            err = tf.reduce_sum(tf.square(dev), axis=[1, 2]) / safe
        else:
            err = tf.reduce_sum(tf.abs(dev), axis=[1, 2]) / safe
        return tf.where(n > 0, err, inf), bias, n

    # One loop body for the 49 windows (a while loop in graphs): a compact graph that compiles
    # fast and needs memory for one window at a time, whatever the image size.
    errors, biases, counts = tf.map_fn(one_window, tf.range(shifts * shifts),
                                       fn_output_signature=(dtype, dtype, dtype), parallel_iterations=4)
    return tf.transpose(errors), tf.transpose(biases), tf.transpose(counts)


def shifted_cmse(sr: tf.Tensor, hr: tf.Tensor, sm: tf.Tensor, border: int = BORDER) -> tf.Tensor:
    """Best (smallest) bias-corrected clear cMSE over the shifts, per image: (B,)."""
    cmse, _, _ = window_stats(sr, hr, sm, border, "mse")
    return tf.reduce_min(cmse, axis=1)


def shifted_cpsnr(sr: tf.Tensor, hr: tf.Tensor, sm: tf.Tensor, border: int = BORDER,
                  floor: float = CMSE_FLOOR) -> tf.Tensor:
    """Official cPSNR (dB) per image, (B,); a cMSE below ``floor`` counts as ``floor``."""
    cmse = shifted_cmse(sr, hr, sm, border)
    cmse = tf.maximum(cmse, tf.cast(floor, cmse.dtype))
    return -10.0 * tf.math.log(cmse) / tf.math.log(tf.constant(10.0, cmse.dtype))


@keras.saving.register_keras_serializable(package="probav")
class CPSNR(keras.metrics.Metric):
    """Mean shifted cPSNR (dB) per image, from ``y_true`` (B,H,W,2) [HR, SM] and ``y_pred`` (B,H,W,1).

    Used as the validation metric: on the dev set's full scenes (128×128 LR → 384×384) it is the
    official cPSNR, averaged over dev scenes. On training patches it is a patch-level cPSNR.
    """

    def __init__(self, name: str = "cpsnr", border: int = BORDER, **kwargs):
        super().__init__(name=name, **kwargs)
        self.border = int(border)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total", dtype="float64")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count", dtype="float64")

    def update_state(self, y_true, y_pred, sample_weight=None):
        hr, sm = split_target(tf.cast(y_true, tf.float32))
        values = tf.cast(shifted_cpsnr(tf.cast(y_pred, tf.float32), hr, sm, self.border), tf.float64)
        if sample_weight is not None:
            weight = tf.reshape(tf.cast(sample_weight, tf.float64), [-1])
            self.total.assign_add(tf.reduce_sum(values * weight))
            self.count.assign_add(tf.reduce_sum(weight))
        else:
            self.total.assign_add(tf.reduce_sum(values))
            self.count.assign_add(tf.cast(tf.shape(values)[0], tf.float64))

    def result(self):
        return tf.cast(tf.math.divide_no_nan(self.total, self.count), tf.float32)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "border": self.border}
