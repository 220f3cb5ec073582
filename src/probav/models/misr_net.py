"""``misr_net``: a RAMS-like multi-frame network (3D features, feature and temporal attention)
refining a classical registered fusion, sized for CPU training.

Inputs follow the training input contract (``docs/architecture.md``): ``lr`` and ``qm``
(B,K,H,W) float32 in [0,1] / {0,1}, ``frame_mask`` (B,K), and with the default
``model.misr_base: prior`` the ``prior`` (B,3H,3W): the prediction of the classical model named by
``tfrecords.prior`` (``shift_and_add``), stored in the TFRecords and recomputed at inference.
Output (B,3H,3W,1) in [0,1] units. Fully convolutional: any H, W (32×32 patches in training,
128×128 scenes at inference). F = ``model.filters``, N = ``model.blocks``, F3 =
``model.misr_filters_3d``, N3 = ``model.misr_blocks_3d``, t = ``model.misr_temporal_kernel``;
mean/std: the training data's clear LR statistics (``DeepModel.set_normalisation``)::

    median       clear median M of the K frames (``deep.ClearMedian``: QM and frame_mask aware)
    frames       per frame k: [ (x_k−M)/std·c_k, (M−mean)/std, c_k, r_k ]  c_k = qm_k·fm_k,
                 r_k the frame's weight as the reference (one-hot given, else estimated)   (B,K,H,W,4)
    stem         Conv3D F3, kernel (t,3,3) — frames are the depth axis                    (B,K,H,W,F3)
    3D RFAB ×N3  Conv3D (t,3,3) → ReLU → Conv3D (t,3,3) + Dense(mean over real frames)
                 → channel attention (squeeze-excitation, reduction r) → + skip
    temporal     1×1×1 Conv3D scores + β·qm_k + γ·r_k, padded frames excluded, softmax over K
    attention    → fused features                                                        (B,H,W,F3)
    prior        (prior−mean)/std, its 3×3 HR blocks as 9 channels on the LR grid, joined
                 to the fused features                                                   (B,H,W,F3+9)
    2D body      Conv2D F → N × RFAB2D (Conv-ReLU-Conv-SE + skip) → Conv2D + long skip
    upsampling   zero-initialised Conv2D 9 → depth_to_space(3) (sub-pixel ×3), × std = residual
    output       prior + residual                                                        (B,3H,3W,1)

Why a classical prior as the global path: RAMS adds its residual to a 2-D fusion of the frames and
learns registration implicitly from 1,000+ scenes and days of GPU training; with 72 training scenes
and a few minutes of CPU, a network starting from the median (the RAMS-like ``misr_base:
median`` below) plateaued about 0.4 dB under ``shift_and_add``, whose explicit sub-pixel
registration and robust fusion it could not learn in that budget. Starting from the registered
fusion (as DeepSUM and HighRes-net start from registered or reference frames), the network learns
what that fusion gets wrong: residual aliasing, blur, cloud and land-change artefacts, using the
attention-fused frames. Untrained (last conv 0) it outputs the prior exactly.

``model.misr_base: median`` is the RAMS-like global path instead, with no prior input: the
median corrected by an image-wise temporal attention over the frames' clear deviations
(D = Σ_k w_k·(x_k−M)·c_k), ×3 cubic spline (the official baseline's interpolation):
``upscale(M + g·D) + residual``, g a trainable gate starting at 0; untrained, the ``median`` model.

With the default t = 1 the frames interact only through means over the real frames and the
attention softmax: the network is exactly invariant to frame order (the permutations of a
self-ensemble change nothing; flips still do) and the same weights work for any K. t = 3 gives
RAMS' 3D temporal convolutions (order dependent; pair it with frame-permutation augmentation).
Padded frames (frame_mask 0) enter as zeros and get zero attention weight, so their content has
no effect. Clouded pixels enter as zero deviations and get little weight (β starts at
``model.misr_qm_bias``); the reference frame gets more (γ starts at ``model.misr_reference_bias``),
and its prior is the classical fusion built on it (``shift_and_add``). Temporal convolutions with t = 1 run as one Conv2D over the B·K frames
(the same maths as a Conv3D of kernel (1,3,3), about twice as fast on CPU).
"""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from probav.models.deep import (Affine, ClearMedian, DeepModel, ExpandChannel, SpaceToDepth, SplineUpsample,
                                clear_deviations, contract_inputs, prior_input, reference_input, subpixel_upsample)
from probav.models.registry import register
from probav.scene import SCALE

_PKG = "probav_misr"

DEFAULTS = {
    "blocks": 4,                    # 2D residual feature attention blocks after the fusion
    "filters": 32,                  # 2D body width
    "misr_filters_3d": 16,          # width of the per-frame (3D) features
    "misr_blocks_3d": 1,            # 3D residual feature attention blocks before the fusion
    "misr_temporal_kernel": 1,      # 1: frame-order invariant | 3: RAMS-like temporal convolutions
    "misr_attention_reduction": 8,  # channel attention (squeeze-excitation) reduction ratio
    "misr_qm_bias": 4.0,            # initial attention logit bonus of a clear pixel over a clouded one
    "misr_reference_bias": 2.0,     # initial attention logit bonus of the reference frame (× its weight)
    "misr_base": "prior",           # global path: prior (the TFRecords' classical prior) | median (RAMS-like)
}
BASES = ("prior", "median")


# ----------------------------------------------------------------------------- layers

@keras.saving.register_keras_serializable(package=_PKG)
class PrepareFrames(layers.Layer):
    """Per-frame network input (B,K,H,W,4): [(x_k−M)/std·c_k, (M−mean)/std·fm_k, c_k, r_k·fm_k],
    c_k = qm_k·fm_k, r_k the frame's reference weight (B,K).

    Also returns the clear deviations (x_k−M)·c_k (B,K,H,W,1) in [0,1] units (for the image
    fusion), c_k (B,K,H,W) and r_k·fm_k (B,K,H,W) (for the attention)."""

    def __init__(self, mean: float = 0.0, std: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.mean = float(mean)
        self.std = float(std)

    def call(self, lr, qm, frame_mask, median, reference):
        deviation, centre, clear, real = clear_deviations(lr, qm, frame_mask, median, self.mean, self.std)
        marked = real * tf.cast(reference, lr.dtype)[:, :, None, None]
        frames = tf.stack([deviation / self.std, centre * real, clear, marked], axis=-1)
        return frames, deviation[..., None], clear, marked

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
    """Softmax over the K frames of ``scores + β·clear + γ·marked`` (padded frames excluded); weighted
    sum of ``values``.

    scores (B,K,H,W,S), values (B,K,H,W,C) with S = C or 1, clear and marked (B,K,H,W), frame_mask
    (B,K) → (B,H,W,C). β and γ are trainable and start at ``qm_bias`` (clouded pixels count less) and
    ``reference_bias`` (the reference counts more)."""

    def __init__(self, qm_bias: float = 4.0, reference_bias: float = 2.0, **kwargs):
        super().__init__(**kwargs)
        self.qm_bias = float(qm_bias)
        self.reference_bias = float(reference_bias)

    def build(self, *shapes):
        self.beta = self.add_weight(name="beta", shape=(), initializer=keras.initializers.Constant(self.qm_bias))
        self.gamma = self.add_weight(name="gamma", shape=(),
                                     initializer=keras.initializers.Constant(self.reference_bias))

    def call(self, scores, values, clear, marked, frame_mask):
        fm = tf.cast(frame_mask, scores.dtype)[:, :, None, None, None]
        logits = scores + self.beta * clear[..., None] + self.gamma * marked[..., None]
        logits = tf.where(fm > 0, logits, tf.fill(tf.shape(logits), tf.constant(-1e9, logits.dtype)))
        weights = tf.nn.softmax(logits, axis=1) * fm
        return tf.reduce_sum(weights * values, axis=1)

    def get_config(self):
        return {**super().get_config(), "qm_bias": self.qm_bias, "reference_bias": self.reference_bias}


@keras.saving.register_keras_serializable(package=_PKG)
class GatedAnchor(layers.Layer):
    """``median + g·deviation`` → (B,H,W,1); g trainable, starting at 0 (the output starts at the median)."""

    def build(self, *shapes):
        self.gate = self.add_weight(name="gate", shape=(), initializer="zeros")

    def call(self, median, deviation):
        return median[..., None] + self.gate * deviation


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
                   qm_bias: float = DEFAULTS["misr_qm_bias"], base: str = DEFAULTS["misr_base"],
                   reference_bias: float = DEFAULTS["misr_reference_bias"],
                   name: str = "misr_net") -> keras.Model:
    """The network: inputs ``lr``/``qm`` (B,K,H,W), ``frame_mask`` and ``reference`` (B,K) (and
    ``prior`` (B,3H,3W) with ``base="prior"``); output (B,3H,3W,1) in [0,1].

    ``mean``/``std``: the clear LR statistics of the training data ([0,1] units)."""
    if int(temporal_kernel) not in (1, 3):
        raise ValueError(f"model.misr_temporal_kernel must be 1 (frame-order invariant) or 3 (RAMS-like), "
                         f"got {temporal_kernel}")
    if base not in BASES:
        raise ValueError(f"model.misr_base must be one of {', '.join(BASES)}, got {base!r}")
    if not std > 0:
        raise ValueError(f"std must be positive, got {std}")
    t = int(temporal_kernel)
    lr, qm, fm = contract_inputs(frames)
    reference = reference_input(frames)
    inputs = {"lr": lr, "qm": qm, "frame_mask": fm, "reference": reference}
    median = ClearMedian(name="median")(lr, qm, fm)
    frames_in, deviation, clear, marked = PrepareFrames(mean, std, name="prepare")(lr, qm, fm, median, reference)

    # 3D feature extraction: the frames are the depth axis.
    h = _conv3d(filters_3d, t, "stem3d")(frames_in)
    for i in range(int(blocks_3d)):
        h = _rfab3d(h, fm, filters_3d, t, attention_reduction, f"rfab3d_{i}")

    # Temporal attention: fuse the features (and, for the median base, the frames' clear deviations).
    feat_scores = layers.Conv3D(filters_3d, 1, kernel_initializer="zeros", name="feat_scores")(h)
    fused = TemporalAttention(qm_bias, reference_bias, name="feat_attention")(feat_scores, h, clear, marked, fm)

    if base == "prior":
        # The classical fusion is the starting point; the body sees it, rearranged onto the LR grid
        # (3×3 HR pixels → 9 channels), beside the fused frame features, and learns its correction.
        inputs["prior"] = prior_input()
        prior = ExpandChannel(name="prior_channel")(inputs["prior"])
        prior_lr = SpaceToDepth(SCALE, name="prior_to_lr")(Affine(1.0 / std, -mean / std, name="prior_norm")(prior))
        fused = layers.Concatenate(name="with_prior")([fused, prior_lr])
        global_path = prior
    else:
        # The median corrected by the attention-fused deviations, cubic-spline ×3.
        img_scores = layers.Conv3D(1, 1, kernel_initializer="zeros", name="img_scores")(h)
        fused_dev = TemporalAttention(qm_bias, reference_bias, name="img_attention")(img_scores, deviation, clear,
                                                                                     marked, fm)
        global_path = SplineUpsample(SCALE, name="spline_upsample")(GatedAnchor(name="anchor")(median, fused_dev))

    # 2D body on the fused features, sub-pixel ×3 residual.
    x = layers.Conv2D(filters, 3, padding="same", name="body_head")(fused)
    skip = x
    for i in range(int(blocks)):
        x = _rfab2d(x, filters, attention_reduction, f"rfab2d_{i}")
    x = layers.Conv2D(filters, 3, padding="same", name="body_tail")(x)
    x = layers.Add(name="body_skip")([x, skip])
    residual = Affine(std, 0.0, name="denormalise")(subpixel_upsample(x, 1, SCALE, "upsample"))
    out = layers.Add(name="sr")([global_path, residual])
    return keras.Model(inputs, out, name=name)


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
            qm_bias=float(self._hp("misr_qm_bias")), base=str(self._hp("misr_base")),
            reference_bias=float(self._hp("misr_reference_bias")), name=self.name)
