"""``misr_net``: a RAMS-like multi-frame network (3D features, feature and temporal attention),
sized for CPU training.

Inputs follow the training input contract (``docs/architecture.md``): ``lr`` and ``qm``
(B,K,H,W) float32 in [0,1] / {0,1}, ``frame_mask`` (B,K); output (B,3H,3W,1) in [0,1] units.
Fully convolutional: any H, W (32×32 patches in training, 128×128 scenes at inference).
F = ``model.filters``, N = ``model.blocks``, F3 = ``model.misr_filters_3d``,
N3 = ``model.misr_blocks_3d``, t = ``model.misr_temporal_kernel``; mean/std: the training data's
clear LR statistics (``DeepModel.set_normalisation``)::

    median       clear median M of the K frames (``deep.ClearMedian``: QM and frame_mask aware)
    frames       per frame k: [ (x_k−M)/std·c_k, (M−mean)/std, c_k ]  c_k = qm_k·fm_k    (B,K,H,W,3)
    stem         Conv3D F3, kernel (t,3,3) — frames are the depth axis                    (B,K,H,W,F3)
    3D RFAB ×N3  Conv3D (t,3,3) → ReLU → Conv3D (t,3,3) + Dense(mean over real frames)
                 → channel attention (squeeze-excitation, reduction r) → + skip
    temporal     1×1×1 Conv3D scores + β·qm_k, padded frames excluded, softmax over K:
    attention      • feature-wise (F3 scores) → fused features                           (B,H,W,F3)
                   • image (1 score) → fused deviation D = Σ_k w_k·(x_k−M)·c_k              (B,H,W)
    2D body      Conv2D F → N × RFAB2D (Conv-ReLU-Conv-SE + skip) → Conv2D + long skip
    upsampling   zero-initialised Conv2D 9 → depth_to_space(3) (sub-pixel ×3), × std = residual
    global path  ×3 cubic-spline upscale (exactly the official baseline's skimage order-3
                 rescale, edge mode) of M + g·D, g a trainable gate starting at 0
    output       upscale(M + g·D) + residual                                             (B,3H,3W,1)

With the default t = 1 the frames interact only through means over the real frames and the
attention softmax: the network is exactly invariant to frame order (the permutations of a
self-ensemble change nothing; flips still do) and the same weights work for any K. t = 3 gives
RAMS' 3D temporal convolutions (order dependent; pair it with frame-permutation augmentation).
Padded frames (frame_mask 0) enter as zeros and get zero attention weight, so their content has
no effect. Clouded pixels enter as zero deviations and get little weight (β starts at
``model.misr_qm_bias``). Untrained (g = 0, last conv 0), the network is the ``median`` model.
Temporal convolutions with t = 1 run as one Conv2D over the B·K frames (the same maths as a
Conv3D of kernel (1,3,3), about twice as fast on CPU).
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from probav.models.deep import Affine, ClearMedian, DeepModel, contract_inputs, subpixel_upsample
from probav.models.registry import register
from probav.scene import SCALE

_PKG = "probav_misr"
UPSAMPLE_RADIUS = 8  # LR taps each side of the fixed cubic-spline ×3 upscale

DEFAULTS = {
    "blocks": 4,                    # 2D residual feature attention blocks after the fusion
    "filters": 32,                  # 2D body width
    "misr_filters_3d": 16,          # width of the per-frame (3D) features
    "misr_blocks_3d": 1,            # 3D residual feature attention blocks before the fusion
    "misr_temporal_kernel": 1,      # 1: frame-order invariant | 3: RAMS-like temporal convolutions
    "misr_attention_reduction": 8,  # channel attention (squeeze-excitation) reduction ratio
    "misr_qm_bias": 4.0,            # initial attention logit bonus of a clear pixel over a clouded one
}


# ----------------------------------------------------------------------------- fixed upscale

def _bspline3(t: np.ndarray) -> np.ndarray:
    t = np.abs(t)
    return np.where(t < 1, 2 / 3 - t ** 2 + t ** 3 / 2, np.where(t < 2, (2 - t) ** 3 / 6, 0.0))


def _cardinal_cubic_spline(x: np.ndarray, terms: int = 30) -> np.ndarray:
    """Impulse response of cubic-spline interpolation (B-spline with its prefilter c_k = √3 (√3−2)^|k|)."""
    k = np.arange(-terms, terms + 1)
    coeffs = np.sqrt(3.0) * (np.sqrt(3.0) - 2.0) ** np.abs(k)
    return (coeffs[None, :] * _bspline3(np.asarray(x, float)[:, None] - k[None, :])).sum(axis=1)


def spline3_kernel(radius: int = UPSAMPLE_RADIUS) -> np.ndarray:
    """(2r+1,2r+1,1,9) kernel: channel 3a+b is HR sub-pixel (a,b) of the ×3 cubic-spline upscale.

    Matches the official baseline's ``skimage.transform.rescale(x, 3, order=3, mode='edge')``
    (half-pixel grid, HR pixel a ↔ LR offset (a−1)/3) to about 1e-5 with edge-replicated input,
    except that skimage also clips to the input's range."""
    offsets = np.arange(-radius, radius + 1)
    taps = np.stack([_cardinal_cubic_spline(offsets - (a - 1) / 3.0) for a in range(SCALE)])
    taps /= taps.sum(axis=1, keepdims=True)
    kernel = np.zeros((2 * radius + 1, 2 * radius + 1, 1, SCALE * SCALE), np.float32)
    for a in range(SCALE):
        for b in range(SCALE):
            kernel[:, :, 0, SCALE * a + b] = np.outer(taps[a], taps[b])
    return kernel


# ----------------------------------------------------------------------------- layers

@keras.saving.register_keras_serializable(package=_PKG)
class PrepareFrames(layers.Layer):
    """Per-frame network input (B,K,H,W,3): [(x_k−M)/std·c_k, (M−mean)/std·fm_k, c_k], c_k = qm_k·fm_k.

    Also returns the clear deviations (x_k−M)·c_k (B,K,H,W,1) in [0,1] units (for the image
    fusion) and c_k (B,K,H,W) (for the attention)."""

    def __init__(self, mean: float = 0.0, std: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.mean = float(mean)
        self.std = float(std)

    def call(self, lr, qm, frame_mask, median):
        fm = tf.broadcast_to(tf.cast(frame_mask, lr.dtype)[:, :, None, None], tf.shape(lr))
        clear = tf.cast(qm > 0.5, lr.dtype) * fm
        deviation = (lr - median[:, None]) * clear
        centre = (median[:, None] - self.mean) / self.std * fm
        frames = tf.stack([deviation / self.std, centre, clear], axis=-1)
        return frames, deviation[..., None], clear

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std}


@keras.saving.register_keras_serializable(package=_PKG)
class FrameConv(layers.Layer):
    """A Conv3D of kernel (1,k,k) on (B,K,H,W,C), computed as one Conv2D over the B·K frames."""

    def __init__(self, filters: int, kernel_size: int = 3, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.activation = keras.activations.get(activation)
        self.conv = layers.Conv2D(self.filters, self.kernel_size, padding="same", activation=self.activation,
                                  name="conv")

    def build(self, input_shape):
        self.conv.build((None, None, None, int(input_shape[-1])))

    def call(self, x):
        shape = tf.shape(x)
        y = self.conv(tf.reshape(x, tf.concat([[-1], shape[2:]], 0)))
        return tf.reshape(y, tf.concat([shape[:2], tf.shape(y)[1:]], 0))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "activation": keras.activations.serialize(self.activation)}


@keras.saving.register_keras_serializable(package=_PKG)
class MaskedFrameMean(layers.Layer):
    """Mean over the real frames of (B,K,H,W,C) features, broadcast back to every frame."""

    def call(self, features, frame_mask):
        fm = tf.cast(frame_mask, features.dtype)[:, :, None, None, None]
        mean = tf.reduce_sum(features * fm, axis=1, keepdims=True) / tf.maximum(
            tf.reduce_sum(fm, axis=1, keepdims=True), 1.0)
        return tf.broadcast_to(mean, tf.shape(features))


@keras.saving.register_keras_serializable(package=_PKG)
class ChannelAttention(layers.Layer):
    """Squeeze-excitation: mean over all but the channel axis → C/r → ReLU → C → sigmoid gate."""

    def __init__(self, reduction: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.reduction = int(reduction)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        hidden = max(channels // self.reduction, 2)
        self.squeeze = layers.Dense(hidden, activation="relu", name="squeeze")
        self.excite = layers.Dense(channels, activation="sigmoid", name="excite")
        self.squeeze.build((None, channels))
        self.excite.build((None, hidden))

    def call(self, x):
        axes = list(range(1, len(x.shape) - 1))
        gate = self.excite(self.squeeze(tf.reduce_mean(x, axis=axes)))
        shape = tf.concat([tf.shape(gate)[:1], tf.ones([len(axes)], tf.int32), tf.shape(gate)[1:]], 0)
        return x * tf.reshape(gate, shape)

    def get_config(self):
        return {**super().get_config(), "reduction": self.reduction}


@keras.saving.register_keras_serializable(package=_PKG)
class TemporalAttention(layers.Layer):
    """Softmax over the K frames of ``scores + β·clear`` (padded frames excluded); weighted sum of ``values``.

    scores (B,K,H,W,S), values (B,K,H,W,C) with S = C or 1, clear (B,K,H,W), frame_mask (B,K)
    → (B,H,W,C). β is trainable and starts at ``qm_bias``: clouded pixels count less."""

    def __init__(self, qm_bias: float = 4.0, **kwargs):
        super().__init__(**kwargs)
        self.qm_bias = float(qm_bias)

    def build(self, *shapes):
        self.beta = self.add_weight(name="beta", shape=(), initializer=keras.initializers.Constant(self.qm_bias))

    def call(self, scores, values, clear, frame_mask):
        fm = tf.cast(frame_mask, scores.dtype)[:, :, None, None, None]
        logits = scores + self.beta * clear[..., None]
        logits = tf.where(fm > 0, logits, tf.fill(tf.shape(logits), tf.constant(-1e9, logits.dtype)))
        weights = tf.nn.softmax(logits, axis=1) * fm
        return tf.reduce_sum(weights * values, axis=1)

    def get_config(self):
        return {**super().get_config(), "qm_bias": self.qm_bias}


@keras.saving.register_keras_serializable(package=_PKG)
class GatedAnchor(layers.Layer):
    """``median + g·deviation`` → (B,H,W,1); g trainable, starting at 0 (the output starts at the median)."""

    def build(self, *shapes):
        self.gate = self.add_weight(name="gate", shape=(), initializer="zeros")

    def call(self, median, deviation):
        return median[..., None] + self.gate * deviation


@keras.saving.register_keras_serializable(package=_PKG)
class SplineUpsample3(layers.Layer):
    """Fixed ×3 cubic-spline upscale of (B,H,W,1): the official baseline's (edge mode, no clipping)."""

    def build(self, input_shape):
        self.kernel = tf.constant(spline3_kernel())

    def call(self, x):
        r = UPSAMPLE_RADIUS
        x = tf.concat([tf.repeat(x[:, :1], r, axis=1), x, tf.repeat(x[:, -1:], r, axis=1)], axis=1)
        x = tf.concat([tf.repeat(x[:, :, :1], r, axis=2), x, tf.repeat(x[:, :, -1:], r, axis=2)], axis=2)
        return tf.nn.depth_to_space(tf.nn.conv2d(x, self.kernel, strides=1, padding="VALID"), SCALE)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (b, None if h is None else h * SCALE, None if w is None else w * SCALE, c)


# ----------------------------------------------------------------------------- blocks

def _conv3d(filters: int, t: int, name: str, **kwargs):
    """3D convolution over (frames, rows, cols), kernel (t,3,3)."""
    if t == 1:
        return FrameConv(filters, 3, name=name, **kwargs)
    return layers.Conv3D(filters, (t, 3, 3), padding="same", name=name, **kwargs)


def _rfab3d(x, frame_mask, filters: int, t: int, reduction: int, name: str):
    """3D residual feature attention block; frames exchange information through their mean."""
    y = _conv3d(filters, t, f"{name}_conv1", activation="relu")(x)
    y = _conv3d(filters, t, f"{name}_conv2")(y)
    context = layers.Dense(filters, use_bias=False, name=f"{name}_context")(
        MaskedFrameMean(name=f"{name}_mean")(y, frame_mask))
    y = layers.Add(name=f"{name}_mix")([y, context])
    y = ChannelAttention(reduction, name=f"{name}_ca")(y)
    return layers.Add(name=f"{name}_add")([x, y])


def _rfab2d(x, filters: int, reduction: int, name: str):
    """2D residual feature attention block: conv → ReLU → conv → channel attention + skip."""
    y = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"{name}_conv1")(x)
    y = layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv2")(y)
    y = ChannelAttention(reduction, name=f"{name}_ca")(y)
    return layers.Add(name=f"{name}_add")([x, y])


def build_misr_net(frames: int = 9, blocks: int = DEFAULTS["blocks"], filters: int = DEFAULTS["filters"], *,
                   mean: float = 0.0, std: float = 1.0,
                   filters_3d: int = DEFAULTS["misr_filters_3d"], blocks_3d: int = DEFAULTS["misr_blocks_3d"],
                   temporal_kernel: int = DEFAULTS["misr_temporal_kernel"],
                   attention_reduction: int = DEFAULTS["misr_attention_reduction"],
                   qm_bias: float = DEFAULTS["misr_qm_bias"], name: str = "misr_net") -> keras.Model:
    """The network: inputs ``lr``/``qm`` (B,K,H,W), ``frame_mask`` (B,K); output (B,3H,3W,1) in [0,1].

    ``mean``/``std``: the clear LR statistics of the training data ([0,1] units)."""
    if int(temporal_kernel) not in (1, 3):
        raise ValueError(f"model.misr_temporal_kernel must be 1 (frame-order invariant) or 3 (RAMS-like), "
                         f"got {temporal_kernel}")
    if not std > 0:
        raise ValueError(f"std must be positive, got {std}")
    t = int(temporal_kernel)
    lr, qm, fm = contract_inputs(frames)
    median = ClearMedian(name="median")(lr, qm, fm)
    frames_in, deviation, clear = PrepareFrames(mean, std, name="prepare")(lr, qm, fm, median)

    # 3D feature extraction: the frames are the depth axis.
    h = _conv3d(filters_3d, t, "stem3d")(frames_in)
    for i in range(int(blocks_3d)):
        h = _rfab3d(h, fm, filters_3d, t, attention_reduction, f"rfab3d_{i}")

    # Temporal attention: fuse the features, and the frames' clear deviations from the median.
    feat_scores = layers.Conv3D(filters_3d, 1, kernel_initializer="zeros", name="feat_scores")(h)
    fused = TemporalAttention(qm_bias, name="feat_attention")(feat_scores, h, clear, fm)
    img_scores = layers.Conv3D(1, 1, kernel_initializer="zeros", name="img_scores")(h)
    fused_dev = TemporalAttention(qm_bias, name="img_attention")(img_scores, deviation, clear, fm)

    # 2D body on the fused features, sub-pixel ×3 residual.
    x = layers.Conv2D(filters, 3, padding="same", name="body_head")(fused)
    skip = x
    for i in range(int(blocks)):
        x = _rfab2d(x, filters, attention_reduction, f"rfab2d_{i}")
    x = layers.Conv2D(filters, 3, padding="same", name="body_tail")(x)
    x = layers.Add(name="body_skip")([x, skip])
    residual = Affine(std, 0.0, name="denormalise")(subpixel_upsample(x, 1, SCALE, "upsample"))

    # Global path: the median corrected by the fused deviations, cubic-spline ×3.
    base = SplineUpsample3(name="spline_upsample")(GatedAnchor(name="anchor")(median, fused_dev))
    out = layers.Add(name="sr")([base, residual])
    return keras.Model({"lr": lr, "qm": qm, "frame_mask": fm}, out, name=name)


@register("misr_net")
class MisrNet(DeepModel):
    """RAMS-like multi-frame network; hyper-parameters from ``model:`` (see ``DEFAULTS``)."""

    def _hp(self, key: str):
        return self.hp(key, DEFAULTS[key])

    def build_network(self, frames: int) -> keras.Model:
        return build_misr_net(
            frames, int(self._hp("blocks")), int(self._hp("filters")),
            mean=self.norm_mean, std=self.norm_std,
            filters_3d=int(self._hp("misr_filters_3d")), blocks_3d=int(self._hp("misr_blocks_3d")),
            temporal_kernel=int(self._hp("misr_temporal_kernel")),
            attention_reduction=int(self._hp("misr_attention_reduction")),
            qm_bias=float(self._hp("misr_qm_bias")), name=self.name)
