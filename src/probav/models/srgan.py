"""``srgan``: ``residual_multi`` trained adversarially (SRGAN-style), for comparison.

Generator: exactly the ``residual_multi`` network (K frames + QMs → upscaled median + learned
correction). Its loss is

    content + ``model.adversarial_weight`` · adversarial
    content      = the shift-aware, bias-corrected clear loss (``probav.losses``, ``train.loss``)
    adversarial  = −log D(SR): how far the discriminator is from calling the SR patch real

Discriminator (training only, not saved with the model): a small strided CNN on HR-sized
patches (``model.disc_filters``, doubled at each of 3 stride-2 stages, LeakyReLU, global average,
one logit). It sees an image the way the score does: centred by its mean over the clear pixels of
the patch's SM, zeroed under clouds, with the SM as a second channel (the same SM for the real HR
and the SR, so the mask carries no real/fake information and neither does the brightness, which
the score ignores). Trained with the usual binary cross-entropy (real HR → 1, SR → 0).

What this does to the score, honestly: the official metric is a PSNR, and the MSE-optimal
prediction is the conditional mean, which is smooth. An adversarial term pushes the generator
towards sharp, plausible texture that is not in the data: it raises perceptual sharpness but
almost always *lowers* PSNR (SRGAN/ESRGAN lose 1–3 dB to their PSNR-trained counterparts on
natural images), and the PROBA-V literature reports no gain from it. Mind the scales: the content
loss is in [0,1] image units (an L1 of about 4e-3 on the synthetic scenes), the adversarial BCE about 0.7, so
SRGAN's weight 1e-3 (the default) already makes the adversarial term some 15% of the generator
loss; a larger weight trades score for texture. On the synthetic data with the default short
training (one run each) it landed at 46.64 dB dev cPSNR against 46.40 and 46.60 for two seeds of
``residual_multi``: within run-to-run noise, no evidence of a gain. It is kept as an experiment
(``dvc exp run -S model.adversarial_weight=…``), not as the recommended model.

Validation (dev loss and dev cPSNR) uses the generator alone with the content loss.
"""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from probav.models.deep import LEAKY_SLOPE, DeepModel
from probav.models.registry import register
from probav.models.residual_multi import build_residual_multi

_PKG = "probav_srgan"


def _replicas() -> int:
    return tf.distribute.get_strategy().num_replicas_in_sync


@keras.saving.register_keras_serializable(package=_PKG)
class ScoreView(layers.Layer):
    """(image (B,H,W,1), sm (B,H,W,1)) → (B,H,W,2): (image minus its clear mean) × SM × scale; and SM."""

    def __init__(self, scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)

    def call(self, image, sm):
        n = tf.maximum(tf.reduce_sum(sm, axis=[1, 2, 3], keepdims=True), 1.0)
        mean = tf.reduce_sum(image * sm, axis=[1, 2, 3], keepdims=True) / n
        return tf.concat([(image - mean) * sm * self.scale, sm], axis=-1)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


def build_discriminator(filters: int = 16, std: float = 1.0, name: str = "discriminator") -> keras.Model:
    image = keras.Input((None, None, 1), name="image")
    sm = keras.Input((None, None, 1), name="sm")
    x = ScoreView(1.0 / std, name="score_view")(image, sm)
    for i in range(3):
        width = filters * 2 ** i
        x = layers.Conv2D(width, 3, padding="same", name=f"d{i}_conv")(x)
        x = layers.LeakyReLU(LEAKY_SLOPE, name=f"d{i}_act")(x)
        x = layers.Conv2D(width, 3, strides=2, padding="same", name=f"d{i}_down")(x)
        x = layers.LeakyReLU(LEAKY_SLOPE, name=f"d{i}_down_act")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    logit = layers.Dense(1, name="logit")(x)
    return keras.Model({"image": image, "sm": sm}, logit, name=name)


class GANTrainer(keras.Model):
    """The training model: ``call`` is the generator; ``train_step`` updates both networks.

    ``compile(optimizer=…, loss=content_loss, metrics=…)`` sets the generator's optimizer and
    content loss; ``d_optimizer`` the discriminator's. Logged: ``loss`` (content, comparable with
    ``val_loss``), ``adversarial_loss``, ``generator_loss`` (the total) and ``discriminator_loss``.
    """

    def __init__(self, generator: keras.Model, discriminator: keras.Model, adversarial_weight: float = 1e-3,
                 d_optimizer: keras.optimizers.Optimizer | None = None, **kwargs):
        super().__init__(**kwargs)
        self.generator = generator
        self.discriminator = discriminator
        self.adversarial_weight = float(adversarial_weight)
        self.d_optimizer = d_optimizer or keras.optimizers.Adam(1e-4, beta_1=0.5)
        self.bce = keras.losses.BinaryCrossentropy(from_logits=True)
        self.adv_tracker = keras.metrics.Mean(name="adversarial_loss")
        self.gen_tracker = keras.metrics.Mean(name="generator_loss")
        self.disc_tracker = keras.metrics.Mean(name="discriminator_loss")

    def call(self, inputs, training=False):
        return self.generator(inputs, training=training)

    def build_optimizers(self):
        if self.optimizer is not None and not self.optimizer.built:
            self.optimizer.build(self.generator.trainable_variables)
        if not self.d_optimizer.built:
            self.d_optimizer.build(self.discriminator.trainable_variables)

    def train_step(self, data):
        x, y = data[0], data[1]
        y = tf.cast(y, tf.float32)
        hr, sm = y[..., :1], y[..., 1:2]
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            sr = self.generator(x, training=True)
            real_logit = self.discriminator({"image": hr, "sm": sm}, training=True)
            fake_logit = self.discriminator({"image": sr, "sm": sm}, training=True)
            # Loss objects already divide by the number of replicas (Keras' distribution scaling).
            content = self._compute_loss(x=x, y=y, y_pred=sr, training=True)
            adversarial = self.bce(tf.ones_like(fake_logit), fake_logit)
            g_loss = content + self.adversarial_weight * adversarial
            d_loss = (self.bce(tf.ones_like(real_logit), real_logit)
                      + self.bce(tf.zeros_like(fake_logit), fake_logit))
        g_vars = self.generator.trainable_variables
        d_vars = self.discriminator.trainable_variables
        g_grads = g_tape.gradient(g_loss, g_vars)
        d_grads = d_tape.gradient(d_loss, d_vars)
        self.optimizer.apply_gradients(zip(g_grads, g_vars))
        # Under a distribution strategy each optimizer all-reduces its gradients: the second
        # all-reduce waits for the first update, so every replica issues them in the same order.
        with tf.control_dependencies([tf.identity(self.optimizer.iterations)]):
            d_grads = [tf.identity(g) for g in d_grads]
        self.d_optimizer.apply_gradients(zip(d_grads, d_vars))
        n = _replicas()
        batch = tf.shape(sr)[0]
        self._loss_tracker.update_state(content * n, sample_weight=batch)
        self.adv_tracker.update_state(adversarial * n, sample_weight=batch)
        self.gen_tracker.update_state(g_loss * n, sample_weight=batch)
        self.disc_tracker.update_state(d_loss * n, sample_weight=batch)
        return self.compute_metrics(x, y, sr)

    def test_step(self, data):
        # Validation: the generator with the content loss only (the default step), without the
        # adversarial trackers, which it does not update.
        logs = super().test_step(data)
        return {k: v for k, v in logs.items() if k not in self._GAN_LOGS}

    _GAN_LOGS = ("adversarial_loss", "generator_loss", "discriminator_loss")


@register("srgan")
class SRGAN(DeepModel):
    """Generator = ``residual_multi``; adversarial training via ``GANTrainer`` (see module docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._trainer = None

    def build_network(self, frames: int) -> keras.Model:
        return build_residual_multi(frames, int(self.hp("filters", 32)), int(self.hp("blocks", 4)),
                                    self.norm_mean, self.norm_std, float(self.hp("residual_scale", 1.0)),
                                    str(self.hp("upsampling", "spline")), name=self.name)

    def build(self) -> keras.Model:
        network = super().build()
        self._trainer = None
        return network

    def training_model(self) -> keras.Model:
        if self._trainer is None:
            discriminator = build_discriminator(int(self.hp("disc_filters", 16)), self.norm_std)
            self._trainer = GANTrainer(self.network, discriminator,
                                       float(self.hp("adversarial_weight", 1e-3)),
                                       keras.optimizers.Adam(float(self.hp("disc_learning_rate", 1e-4)),
                                                             beta_1=0.5),
                                       name="srgan_trainer")
        return self._trainer

    def build_optimizers(self, model: keras.Model) -> None:
        model.build_optimizers()

    def training_summary(self) -> dict:
        trainer = self.training_model()
        return {"discriminator_parameters": int(trainer.discriminator.count_params()),
                "adversarial_weight": trainer.adversarial_weight}
