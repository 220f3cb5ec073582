"""``residual_single``: a single-image refinement of the reference frame.

    reference   the first frame (the track's reference: the labelled one, or the estimator's most
                likely), its clouds filled by the clear-pixel median of the K frames
                (``ReferenceImage``)                                                   (B,H,W)
    base        ×3 of it: cubic spline (``model.upsampling: spline``, the official
                baseline's interpolation) or ``bicubic`` (tf.image.resize)                 (B,3H,3W,1)
    body        space_to_depth(3) of the normalised base (a lossless rearrangement to
                (B,H,W,9), so every conv runs at LR resolution: 9× cheaper than at HR),
                head conv, ``model.blocks`` residual blocks of ``model.filters``, tail conv,
                long skip
    correction  zero-initialised conv → depth_to_space(3), × std                       (B,3H,3W,1)
    output      base + correction

Single-image super-resolution of the frame taken with the HR (PROBA-V-REF's single-image setting):
the other frames only fill its clouds. It is the yardstick for ``residual_multi`` (same CNN, K
frames as input). Untrained, it outputs the upscaled reference.
"""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from probav.models.deep import (Affine, ClearMedian, DeepModel, ExpandChannel, SpaceToDepth, contract_inputs,
                                residual_body, subpixel_upsample, upsampler)
from probav.models.registry import register
from probav.scene import SCALE


@keras.saving.register_keras_serializable(package="probav_single")
class ReferenceImage(layers.Layer):
    """The first frame of (B,K,H,W) where it is clear, the median (B,H,W) elsewhere → (B,H,W)."""

    def call(self, lr, qm, median):
        return tf.where(qm[:, 0] > 0.5, lr[:, 0], median)


@register("residual_single")
class ResidualSingle(DeepModel):
    def build_network(self, frames: int) -> keras.Model:
        filters, blocks = int(self.hp("filters", 32)), int(self.hp("blocks", 4))
        mean, std = self.norm_mean, self.norm_std
        lr, qm, fm = contract_inputs(frames)
        median = ClearMedian(name="median")(lr, qm, fm)
        reference = ReferenceImage(name="reference_image")(lr, qm, median)
        base = upsampler(str(self.hp("upsampling", "spline")), "global_upsample")(ExpandChannel(name="expand")(reference))
        x = Affine(1.0 / std, -mean / std, name="normalise")(base)
        x = SpaceToDepth(SCALE, name="to_lr_grid")(x)
        x = residual_body(x, filters, blocks, "body", float(self.hp("residual_scale", 1.0)))
        correction = Affine(std, 0.0, name="denormalise")(subpixel_upsample(x, 1, SCALE))
        out = layers.Add(name="sr")([base, correction])
        return keras.Model({"lr": lr, "qm": qm, "frame_mask": fm}, out, name=self.name)
