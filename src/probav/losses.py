"""Training losses shaped like the official score: shift-aware, brightness-bias-corrected, clear pixels only.

For each image of a batch, the prediction (cropped by 3 pixels) is compared with each of the 49
HR windows (``probav.metrics.tf_score.window_stats``); on the clear pixels of the SM window the mean
difference (the brightness bias) is removed, and the error is the mean absolute (``l1``) or squared
(``mse``) deviation. The loss of an image is the smallest of the 49; the batch loss their mean.

So the network is not penalised for a sub-pixel registration offset of the whole patch (the
score forgives it), nor for a global brightness offset (the score removes it), nor for anything
under clouds (the score ignores it). With ``mse`` the loss of an image is exactly the official
cMSE of its best shift (``probav.metrics.score.shift_cmse``'s minimum), i.e. −10·log10(loss) is
the patch's cPSNR. L1 is what RAMS and the WDSR variants train with (gentler on outliers).

``y_true``: (B,3P,3P,2) [HR, SM] (the training input contract), ``y_pred``: (B,3P,3P,1), [0,1] units.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from probav.metrics.tf_score import BORDER, split_target, window_stats

KINDS = ("l1", "mse")


def shift_bias_errors(y_true: tf.Tensor, y_pred: tf.Tensor, kind: str = "l1", border: int = BORDER) -> tf.Tensor:
    """Per-image loss (B,): min over the shifts of the bias-corrected clear error."""
    hr, sm = split_target(y_true)
    errors, _, _ = window_stats(y_pred, hr, sm, border, kind)
    # An image whose SM windows are all empty has no clear pixel: it contributes 0 (no gradient).
    best = tf.reduce_min(errors, axis=1)
    return tf.where(tf.math.is_finite(best), best, tf.zeros_like(best))


@keras.saving.register_keras_serializable(package="probav")
class ShiftBiasLoss(keras.losses.Loss):
    """Keras loss: mean over the batch of the per-image shift-aware bias-corrected clear error."""

    def __init__(self, kind: str = "l1", border: int = BORDER, name: str | None = None,
                 reduction: str = "sum_over_batch_size", **kwargs):
        if kind not in KINDS:
            raise ValueError(f"train.loss must be one of {KINDS}, got {kind!r}")
        super().__init__(name=name or f"shift_bias_{kind}", reduction=reduction, **kwargs)
        self.kind = kind
        self.border = int(border)

    def call(self, y_true, y_pred):
        y_true = tf.cast(y_true, y_pred.dtype)
        return shift_bias_errors(y_true, y_pred, self.kind, self.border)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "border": self.border}


def make_loss(kind: str = "l1", border: int = BORDER) -> ShiftBiasLoss:
    """The loss named by ``train.loss`` (``l1`` or ``mse``)."""
    return ShiftBiasLoss(kind, border)


def shift_bias_loss(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Function form, MSE variant: per-image best-shift cMSE (B,) (Keras averages it)."""
    return shift_bias_errors(tf.cast(y_true, y_pred.dtype), y_pred, "mse")


def shift_bias_l1(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Function form, L1 variant: per-image best-shift bias-corrected clear L1 (B,)."""
    return shift_bias_errors(tf.cast(y_true, y_pred.dtype), y_pred, "l1")
