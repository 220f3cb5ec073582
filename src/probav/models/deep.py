"""Trainable (deep) models: the ``DeepModel`` base class and the building blocks they share.

A deep model is a ``SRModel`` whose ``build_network(frames)`` returns a Keras network following
the training input contract (``docs/architecture.md``)::

    inputs  {"lr": (B,K,H,W) float32 in [0,1], "qm": (B,K,H,W) float32 0/1, "frame_mask": (B,K) float32}
            and optionally "reference": (B,K) float32, how likely each frame is the reference (the LR
            frame of the HR's pass; ``probav.reference``), and "prior": (B,3H,3W) float32 in [0,1] (a
            classical model's prediction on that reference)
    output  (B,3H,3W,1) float32 in [0,1] units

The frames come with the most likely reference first (``probav.data.pipeline.select_frames``), so
every network knows it; those that declare the ``reference`` input (``reference_input()``) also see
its weight per frame: one-hot in the ref track, the estimator's probabilities in the challenge track.

A network that declares the ``prior`` input (``prior_input()``) is trained on the priors stored in
the TFRecords (``tfrecords.prior``); ``probav.training`` records how they were made
(``settings["prior"]``: model name and ``classical`` params) and inference recomputes the prior of
each scene the same way (``prior_of``).

Networks are fully convolutional: they train on P×P patches (``input.patch_size``) and predict
whole 128×128 scenes. ``probav.training`` trains them; this module only builds, runs, saves and
loads them.

Normalisation: ``set_normalisation(mean, std)`` (the mean and standard deviation of the clear LR
values of the training data, measured by ``probav.training``) must be called before
``build()``; the values are baked into the network's layers and stored with the model.

Inference (``predict(scene)``): the reference weights are ``scene.reference_weights`` (set by the
track; else the hand-set estimator rule), the K = ``input.frames`` frames are chosen by the
pipeline's ``select_frames`` (mode ``top_k``, the one frame selection of the project), padded with
empty frames (frame_mask 0) when a scene has fewer. With ``model.self_ensemble`` = n > 1 the network
is run on n variants of the input (member 0 as is, the others with the real frames after the first
in a random, seeded order and one of the 8 flips/rotations of the image) and the outputs,
transformed back, are averaged.

Shared building blocks (all Keras-serialisable, so saved networks load without code changes):
``ClearMedian`` (QM- and frame_mask-aware per-pixel median of the frames), ``SplineUpsample``
(×3 cubic spline = the official baseline's interpolation; the default global residual path,
``model.upsampling: spline``), ``BicubicUpsample`` (×3 ``tf.image.resize`` bicubic,
``model.upsampling: bicubic``), ``DepthToSpace`` / ``SpaceToDepth`` (pixel shuffle and its
inverse), ``Affine`` (fixed normalisation), ``FramesToChannels`` (K frames → channels),
``residual_block`` (conv → LeakyReLU → conv + skip, no activation after the addition),
``residual_body``, ``subpixel_upsample`` (zero-initialised conv + depth_to_space) and
``contract_inputs``.

Saved state (``save(dir)`` / ``load(dir, params)``): ``network.keras`` (the Keras model, weights
included) and ``settings.json`` (model name, K, the ``model:`` hyper-parameters it was built
with, the normalisation). ``model.self_ensemble`` is read from the params given to ``load``: it
is an inference setting, changeable without retraining.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from probav.models.registry import SRModel
from probav.params import derive_seed
from probav.scene import SCALE, Scene, to_uint16

_PKG = "probav_deep"
NETWORK_FILE = "network.keras"
SETTINGS_FILE = "settings.json"
LEAKY_SLOPE = 0.2


# ----------------------------------------------------------------------------- layers

@keras.saving.register_keras_serializable(package=_PKG)
class ClearMedian(layers.Layer):
    """Per-pixel median over the clear, real frames: (B,K,H,W) lr, qm, (B,K) frame_mask → (B,H,W).

    Where no real frame is clear, the median of all real frames; where there is none at all, 0.
    An even count takes the mean of the two middle values (as ``numpy.nanmedian``).
    """

    def call(self, lr, qm, frame_mask):
        real = tf.broadcast_to(tf.cast(frame_mask, lr.dtype)[:, :, None, None], tf.shape(lr))
        clear = tf.cast(qm > 0.5, lr.dtype) * real
        has_clear = tf.reduce_max(clear, axis=1) > 0
        valid = tf.where(has_clear[:, None], clear, real)
        return masked_median(lr, valid)


def masked_median(values: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
    """Median along axis 1 of (B,K,H,W) over the entries where ``valid`` > 0 (0 where none)."""
    k = tf.shape(values)[1]
    big = tf.constant(3.0e38, values.dtype)
    ordered = tf.sort(tf.where(valid > 0, values, big), axis=1)
    n = tf.reduce_sum(tf.cast(valid > 0, tf.int32), axis=1)
    lo = tf.maximum((n - 1) // 2, 0)
    hi = tf.maximum(n // 2, 0)
    pick_lo = tf.one_hot(lo, k, axis=1, dtype=values.dtype)
    pick_hi = tf.one_hot(hi, k, axis=1, dtype=values.dtype)
    safe = tf.where(ordered < big, ordered, tf.zeros_like(ordered))
    median = 0.5 * (tf.reduce_sum(safe * pick_lo, axis=1) + tf.reduce_sum(safe * pick_hi, axis=1))
    return tf.where(n > 0, median, tf.zeros_like(median))


@keras.saving.register_keras_serializable(package=_PKG)
class BicubicUpsample(layers.Layer):
    """×``scale`` bicubic upsampling of (B,H,W,C) with ``tf.image.resize`` (Keys a = −0.5, half-pixel
    grid, edge-clamped): the global residual path. Not the official baseline's cubic spline (close)."""

    def __init__(self, scale: int = SCALE, **kwargs):
        super().__init__(**kwargs)
        self.scale = int(scale)

    def call(self, x):
        size = tf.shape(x)[1:3] * self.scale
        return tf.image.resize(x, size, method="bicubic", antialias=False)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (b, None if h is None else h * self.scale, None if w is None else w * self.scale, c)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


def _bspline3(t: np.ndarray) -> np.ndarray:
    t = np.abs(t)
    return np.where(t < 1, 2 / 3 - t ** 2 + t ** 3 / 2, np.where(t < 2, (2 - t) ** 3 / 6, 0.0))


def cubic_spline_taps(scale: int = SCALE, radius: int = 8) -> np.ndarray:
    """(scale, 2·radius+1) taps of ×``scale`` cubic-spline interpolation on the half-pixel grid.

    Row a gives HR sub-pixel a of an LR pixel i, at LR coordinate i + (a − (scale−1)/2)/scale,
    from LR pixels i−radius…i+radius: the cardinal cubic spline (B-spline with its prefilter
    c_k = √3·(√3−2)^|k|), truncated and renormalised. This is ``scipy.ndimage``'s order-3 spline,
    as in the official baseline (``skimage.transform.rescale(x, 3, order=3)``)."""
    k = np.arange(-40, 41)
    coeffs = np.sqrt(3.0) * (np.sqrt(3.0) - 2.0) ** np.abs(k)
    offsets = np.arange(-radius, radius + 1)
    taps = np.empty((scale, offsets.size))
    for a in range(scale):
        x = (a - (scale - 1) / 2) / scale - offsets
        taps[a] = (coeffs[None, :] * _bspline3(x[:, None] - k[None, :])).sum(axis=1)
    return taps / taps.sum(axis=1, keepdims=True)


@keras.saving.register_keras_serializable(package=_PKG)
class SplineUpsample(layers.Layer):
    """×``scale`` cubic-spline upsampling of (B,H,W,1), edge-replicated borders: the official
    baseline's interpolation (to about 1e-5), and on PROBA-V-like scenes about 0.2 dB better than
    ``tf.image.resize`` bicubic as a global residual path. A fixed (2r+1)² convolution to s²
    channels, then depth_to_space."""

    def __init__(self, scale: int = SCALE, radius: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.scale = int(scale)
        self.radius = int(radius)
        taps = cubic_spline_taps(self.scale, self.radius)
        kernel = np.einsum("ay,bx->yxab", taps, taps).reshape(taps.shape[1], taps.shape[1], 1, -1)
        self._kernel = kernel.astype(np.float32)

    def call(self, x):
        r = self.radius
        x = _edge_pad(x, r)
        sub = tf.nn.conv2d(x, tf.constant(self._kernel, x.dtype), strides=1, padding="VALID")
        return tf.nn.depth_to_space(sub, self.scale)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (b, None if h is None else h * self.scale, None if w is None else w * self.scale, c)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "radius": self.radius}


def _edge_pad(x: tf.Tensor, r: int) -> tf.Tensor:
    """Replicate the border pixels r times on each side of the spatial axes of (B,H,W,C)."""
    x = tf.concat([tf.repeat(x[:, :1], r, axis=1), x, tf.repeat(x[:, -1:], r, axis=1)], axis=1)
    return tf.concat([tf.repeat(x[:, :, :1], r, axis=2), x, tf.repeat(x[:, :, -1:], r, axis=2)], axis=2)


def upsampler(kind: str, name: str = "upsample_global"):
    """The global residual path's ×3 upsampling: ``spline`` (default) or ``bicubic`` (tf.image.resize)."""
    if kind == "spline":
        return SplineUpsample(SCALE, name=name)
    if kind == "bicubic":
        return BicubicUpsample(SCALE, name=name)
    raise ValueError(f"model.upsampling must be spline or bicubic, got {kind!r}")


@keras.saving.register_keras_serializable(package=_PKG)
class DepthToSpace(layers.Layer):
    """Sub-pixel upsampling (pixel shuffle): (B,H,W,C·s²) → (B,sH,sW,C)."""

    def __init__(self, block: int = SCALE, **kwargs):
        super().__init__(**kwargs)
        self.block = int(block)

    def call(self, x):
        return tf.nn.depth_to_space(x, self.block)

    def get_config(self):
        return {**super().get_config(), "block": self.block}


@keras.saving.register_keras_serializable(package=_PKG)
class SpaceToDepth(layers.Layer):
    """Inverse pixel shuffle: (B,sH,sW,C) → (B,H,W,C·s²); a lossless rearrangement."""

    def __init__(self, block: int = SCALE, **kwargs):
        super().__init__(**kwargs)
        self.block = int(block)

    def call(self, x):
        return tf.nn.space_to_depth(x, self.block)

    def get_config(self):
        return {**super().get_config(), "block": self.block}


@keras.saving.register_keras_serializable(package=_PKG)
class Affine(layers.Layer):
    """``x·scale + offset`` with fixed constants (normalisation and its inverse)."""

    def __init__(self, scale: float = 1.0, offset: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)
        self.offset = float(offset)

    def call(self, x):
        return x * self.scale + self.offset

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "offset": self.offset}


@keras.saving.register_keras_serializable(package=_PKG)
class ExpandChannel(layers.Layer):
    """(B,H,W) → (B,H,W,1)."""

    def call(self, x):
        return x[..., None]


def clear_deviations(lr, qm, frame_mask, median, mean: float, std: float):
    """The frames as the networks see them, from (B,K,H,W) lr/qm, (B,K) frame_mask, (B,H,W) median:

    ``deviations`` (lr_k − median)·c_k in [0,1] units (0 under clouds and for padding), ``centre``
    (median − mean)/std (B,1,H,W), ``clear`` c_k = qm_k·fm_k and ``real`` fm_k broadcast (B,K,H,W)."""
    real = tf.broadcast_to(tf.cast(frame_mask, lr.dtype)[:, :, None, None], tf.shape(lr))
    clear = tf.cast(qm > 0.5, lr.dtype) * real
    deviations = (lr - median[:, None]) * clear
    centre = ((median - mean) / std)[:, None]
    return deviations, centre, clear, real


@keras.saving.register_keras_serializable(package=_PKG)
class FramesToChannels(layers.Layer):
    """Multi-frame network input: (B,K,H,W) frames → (B,H,W,4K+1) channels.

    Channels: K clear deviations from the median ``(lr_k − median)/std · qm_k · fm_k`` (0 under
    clouds and for padding), the normalised median ``(median − mean)/std``, K clear masks
    ``qm_k · fm_k``, K frame-mask planes (``clear_deviations``) and K reference planes (the weight
    of frame k as the reference, constant over the image).
    """

    def __init__(self, mean: float = 0.0, std: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.mean = float(mean)
        self.std = float(std)

    def call(self, lr, qm, frame_mask, median, reference):
        deviations, centre, clear, real = clear_deviations(lr, qm, frame_mask, median, self.mean, self.std)
        planes = real * tf.cast(reference, lr.dtype)[:, :, None, None]
        stacked = tf.concat([deviations / self.std, centre, clear, real, planes], axis=1)  # (B,4K+1,H,W)
        return tf.transpose(stacked, [0, 2, 3, 1])

    def compute_output_shape(self, lr_shape, *_):
        b, k, h, w = lr_shape
        return (b, h, w, 4 * k + 1)

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std}


# ----------------------------------------------------------------------------- blocks

def conv(filters: int, name: str, kernel: int = 3, **kwargs) -> layers.Conv2D:
    return layers.Conv2D(filters, kernel, padding="same", name=name, **kwargs)


def residual_block(x, filters: int, name: str, scale: float = 1.0):
    """EDSR-style block: conv → LeakyReLU → conv (→ ×scale) + skip; no activation after the addition."""
    y = conv(filters, f"{name}_conv1")(x)
    y = layers.LeakyReLU(LEAKY_SLOPE, name=f"{name}_act")(y)
    y = conv(filters, f"{name}_conv2")(y)
    if scale != 1.0:
        y = Affine(scale, 0.0, name=f"{name}_scale")(y)
    return layers.Add(name=f"{name}_add")([x, y])


def residual_body(x, filters: int, blocks: int, name: str = "body", scale: float = 1.0):
    """Head conv, ``blocks`` residual blocks, a closing conv and a long skip connection: (B,H,W,F)."""
    x = conv(filters, f"{name}_head")(x)
    skip = x
    for i in range(blocks):
        x = residual_block(x, filters, f"{name}_block{i}", scale)
    x = conv(filters, f"{name}_tail")(x)
    return layers.Add(name=f"{name}_skip")([x, skip])


def subpixel_upsample(x, channels: int = 1, scale: int = SCALE, name: str = "upsample"):
    """Conv to channels·s² (zero-initialised: an untrained network adds nothing) → depth_to_space."""
    x = conv(channels * scale * scale, f"{name}_conv", kernel_initializer="zeros")(x)
    return DepthToSpace(scale, name=f"{name}_shuffle")(x)


def contract_inputs(frames: int):
    """The three Keras inputs of the contract, spatial size free (patches or whole scenes)."""
    return (keras.Input((frames, None, None), name="lr"),
            keras.Input((frames, None, None), name="qm"),
            keras.Input((frames,), name="frame_mask"))


def prior_input():
    """The optional input of the classical prior (B,3H,3W) in [0,1] (``tfrecords.prior``)."""
    return keras.Input((None, None), name="prior")


def reference_input(frames: int):
    """The optional input of the frames' reference weights (B,K)."""
    return keras.Input((frames,), name="reference")


# ----------------------------------------------------------------------------- the base class

def dihedral(x: np.ndarray, t: int) -> np.ndarray:
    """One of the 8 flips/rotations of the last two axes: flip (t ≥ 4), then rotate by 90°·(t mod 4)."""
    if t >= 4:
        x = x[..., ::-1]
    return np.rot90(x, t % 4, axes=(-2, -1))


def dihedral_inverse(x: np.ndarray, t: int) -> np.ndarray:
    x = np.rot90(x, -(t % 4), axes=(-2, -1))
    if t >= 4:
        x = x[..., ::-1]
    return x


class DeepModel(SRModel):
    """Base class of the trainable networks; subclasses implement ``build_network(frames)``.

    Hyper-parameters come from ``params["model"]`` (``hp(key, default)``), K from
    ``params["input"]["frames"]``. Subclasses may override ``training_model()`` (the Keras model
    that ``fit`` runs: by default the network itself; a GAN wraps it with its discriminator).
    """

    trainable = True
    uses_reference = True   # the reference comes first in the input, and the prior is made on it

    def __init__(self, params: dict | None = None, settings: dict | None = None,
                 network: keras.Model | None = None):
        super().__init__(params)
        if settings is None:
            settings = {
                "name": self.name,
                "frames": int(self.params.get("input", {}).get("frames", 9)),
                "model": dict(self.params.get("model", {}) or {}),
                "normalisation": None,
            }
        self.settings = settings
        self.network = network
        self._predict_fn = None

    # --- settings
    @property
    def frames(self) -> int:
        return int(self.settings["frames"])

    def hp(self, key: str, default=None):
        """A ``model:`` hyper-parameter as the network was (or will be) built with."""
        return self.settings["model"].get(key, default)

    @property
    def norm_mean(self) -> float:
        return float(self._normalisation()["mean"])

    @property
    def norm_std(self) -> float:
        return float(self._normalisation()["std"])

    def _normalisation(self) -> dict:
        if self.settings.get("normalisation") is None:
            raise RuntimeError(f"{self.name}: call set_normalisation(mean, std) before building the network")
        return self.settings["normalisation"]

    @property
    def input_names(self) -> list[str]:
        """Names of the network's inputs (a subset of the pipeline's: lr, qm, frame_mask, prior)."""
        if self.network is None:
            raise RuntimeError(f"{self.name}: the network is not built or loaded")
        return [t.name for t in self.network.inputs]

    @property
    def uses_prior(self) -> bool:
        return "prior" in self.input_names

    def set_prior(self, spec: dict | None) -> None:
        """How the training priors were made (``probav.data.tfrecords.prior_spec``); needed by
        ``uses_prior`` networks."""
        self.settings["prior"] = spec

    def prior_of(self, scene: Scene) -> np.ndarray:
        """The (384,384) prior of a scene in [0,1] units, on its reference weights: the one read with it
        from the TFRecords (``extra["prior"]``), else recomputed with the model and settings it was
        trained on."""
        from probav.data.tfrecords import prior_image

        image = scene.extra.get("prior")
        if image is None:
            spec = self.settings.get("prior")
            if not spec:
                raise ValueError(f"{self.name}: the network takes a prior but was saved without the settings "
                                 f"that make it (retrain it on TFRecords built with tfrecords.prior set)")
            image = prior_image(scene, spec)
        return np.asarray(image, np.float32) / 65535.0

    def set_normalisation(self, mean: float, std: float) -> None:
        """Mean and standard deviation of the clear LR values of the training data ([0,1] units)."""
        mean, std = float(mean), float(std)
        if not (np.isfinite(mean) and np.isfinite(std) and std > 0):
            raise ValueError(f"normalisation needs a finite mean and a positive std, got {mean}, {std}")
        self.settings["normalisation"] = {"mean": mean, "std": std}

    @property
    def self_ensemble(self) -> int:
        return int(self.params.get("model", {}).get("self_ensemble", self.hp("self_ensemble", 0)) or 0)

    # --- building and training hooks
    def build_network(self, frames: int) -> keras.Model:
        """The Keras network for K = ``frames`` (inputs/outputs of the training input contract)."""
        raise NotImplementedError

    def build(self) -> keras.Model:
        """Build the network (call ``set_normalisation`` first; inside a strategy scope to distribute)."""
        self.network = self.build_network(self.frames)
        self._predict_fn = None
        return self.network

    def training_model(self) -> keras.Model:
        """The model ``probav.training`` compiles and fits; its ``call`` must return the SR output."""
        return self.network

    def compile_training_model(self, optimizer, loss, metrics) -> keras.Model:
        """Compile ``training_model()`` (subclasses with several optimizers override this)."""
        model = self.training_model()
        model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=False)
        # Optimizer variables now (inside the caller's strategy scope), not inside the first
        # traced step: that would make tf.function trace the step twice.
        self.build_optimizers(model)
        return model

    def build_optimizers(self, model: keras.Model) -> None:
        """Create the optimizer variables (before loading a checkpoint that holds them)."""
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)

    def count_params(self) -> int:
        """Parameters of the saved (inference) network."""
        return int(self.network.count_params())

    def training_summary(self) -> dict:
        """Extra entries for ``training.json`` (e.g. the parameters of training-only parts)."""
        return {}

    # --- inference
    def select(self, scene: Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Network inputs of one scene: lr (K,H,W) float32 [0,1], qm (K,H,W) float32, frame_mask (K,),
        reference (K,) (the scene's reference weights, else the hand-set estimator rule's)."""
        from probav.data.pipeline import select_frames
        from probav.reference import ReferenceEstimator

        weights = scene.reference_weights
        if weights is None:
            weights = scene.reference_weights = ReferenceEstimator.rule().probabilities(scene)
        return _as_inputs(select_frames(scene.lr, scene.qm, self.frames, "top_k", reference=weights), self.frames)

    @property
    def uses_reference_input(self) -> bool:
        return "reference" in self.input_names

    def predict_arrays(self, lr: np.ndarray, qm: np.ndarray, frame_mask: np.ndarray,
                       prior: np.ndarray | None = None, reference: np.ndarray | None = None) -> np.ndarray:
        """SR image (3H,3W) float in [0,1] units of one input (K,H,W) (and its (3H,3W) prior and (K,)
        reference weights when the network takes them), with the self-ensemble if set."""
        n = max(int(self.self_ensemble), 1)
        members = [(np.arange(self.frames), 0)]
        if n > 1:
            rng = np.random.default_rng(derive_seed(self.params, "self_ensemble", self.name))
            real = int(np.count_nonzero(frame_mask))
            for i in range(1, n):
                # The reference stays first, as in training.
                order = np.concatenate([[0], 1 + rng.permutation(max(real - 1, 0)), np.arange(max(real, 1), self.frames)])
                members.append((order, i % 8))
        batch = {
            "lr": np.stack([dihedral(lr[o], t) for o, t in members]).astype(np.float32),
            "qm": np.stack([dihedral(qm[o], t) for o, t in members]).astype(np.float32),
            "frame_mask": np.stack([frame_mask[o] for o, _ in members]).astype(np.float32),
        }
        if self.uses_reference_input:
            reference = np.zeros(self.frames, np.float32) if reference is None else np.asarray(reference)
            batch["reference"] = np.stack([reference[o] for o, _ in members]).astype(np.float32)
        if self.uses_prior:
            if prior is None:
                raise ValueError(f"{self.name}: the network needs the scene's prior")
            batch["prior"] = np.stack([dihedral(prior, t) for _, t in members]).astype(np.float32)
        out = np.asarray(self._predict(batch))[..., 0]
        return np.mean([dihedral_inverse(out[i], t) for i, (_, t) in enumerate(members)], axis=0)

    def _predict(self, batch: dict) -> np.ndarray:
        if self._predict_fn is None:
            network = self.network

            @tf.function(reduce_retracing=True)
            def run(inputs):
                return network(inputs, training=False)

            self._predict_fn = run
        return self._predict_fn({k: tf.constant(v) for k, v in batch.items()}).numpy()

    def predict(self, scene: Scene) -> np.ndarray:
        if self.network is None:
            raise RuntimeError(f"{self.name}: the network is not built or loaded")
        lr, qm, frame_mask, reference = self.select(scene)
        prior = self.prior_of(scene) if self.uses_prior else None
        return to_uint16(self.predict_arrays(lr, qm, frame_mask, prior, reference))

    # --- persistence
    def save(self, model_dir: os.PathLike | str) -> None:
        """``network.keras`` + ``settings.json`` into ``model_dir`` (created)."""
        model_dir = Path(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        self.network.save(model_dir / NETWORK_FILE)
        settings = {**self.settings, "name": self.name, "keras": keras.__version__,
                    "parameters": self.count_params()}
        (model_dir / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")

    @classmethod
    def load(cls, model_dir: os.PathLike | str | None, params: dict | None = None) -> "DeepModel":
        model_dir = Path(model_dir)
        for file in (NETWORK_FILE, SETTINGS_FILE):
            if not (model_dir / file).is_file():
                raise FileNotFoundError(f"{model_dir / file}: not a saved {cls.name} model (missing {file})")
        settings = json.loads((model_dir / SETTINGS_FILE).read_text())
        if settings.get("name") != cls.name:
            raise ValueError(f"{model_dir}: holds a {settings.get('name')!r} model, not {cls.name!r}")
        network = keras.saving.load_model(model_dir / NETWORK_FILE, compile=False)
        return cls(params, settings=settings, network=network)


def _as_inputs(chosen, frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``select_frames``' (lr, qm, frame_mask, reference) tensors as float32 NumPy arrays, checked."""
    lr, qm, fm, ref = (np.asarray(v, np.float32) for v in chosen)
    if lr.shape[0] != frames or qm.shape != lr.shape or fm.shape != (frames,) or ref.shape != (frames,):
        raise ValueError(f"select_frames returned shapes {lr.shape}, {qm.shape}, {fm.shape}, {ref.shape} "
                         f"for K = {frames}")
    return lr, qm, fm, ref
