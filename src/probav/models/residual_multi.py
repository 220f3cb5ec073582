"""``residual_multi``: the residual CNN of ``residual_single`` fed all K frames.

    median      per-pixel median of the clear values of the K frames                      (B,H,W)
    input       ``FramesToChannels``: K clear deviations from the median (lr_k − median)/std
                (0 under clouds and for padded frames), the normalised median, K clear masks
                qm_k·fm_k, K frame-mask planes and K reference planes (each frame's weight as the
                reference); and the normalised upscaled median rearranged onto the LR grid
                (space_to_depth(3), 9 channels), so the network sees exactly what it
                corrects                                                          (B,H,W,4K+10)
    body        head conv, ``model.blocks`` residual blocks of ``model.filters`` (LeakyReLU,
                no activation after the addition), tail conv, long skip — at LR resolution
    upsampling  zero-initialised conv to 9 channels → depth_to_space(3) (sub-pixel ×3), × std
    global      ×3 of the median, added to the correction: cubic spline (``model.upsampling:
                spline``, the official baseline's interpolation) or ``bicubic`` (tf.image.resize)

The median anchors the output (and its brightness); the network learns what the frames add to
it: the reference frame's own content (marked by its reference plane, and first), the aliasing
that the sub-pixel shifts between frames reveal, and which frame deviations to trust. Frame order
carries information (``select_frames`` puts the reference first, then the clearest); the training
pipeline permutes the frames after the first as augmentation, and ``model.self_ensemble`` averages
over such orders and flips at inference. Untrained, it outputs the upscaled median
(with the spline, the ``median`` model of K frames).
"""
from __future__ import annotations

import keras
from keras import layers

from probav.models.deep import (Affine, ClearMedian, DeepModel, ExpandChannel, FramesToChannels, SpaceToDepth,
                                contract_inputs, reference_input, residual_body, subpixel_upsample, upsampler)
from probav.models.registry import register
from probav.scene import SCALE


def build_residual_multi(frames: int, filters: int, blocks: int, mean: float, std: float,
                         residual_scale: float = 1.0, upsampling: str = "spline",
                         name: str = "residual_multi") -> keras.Model:
    """The network (shared with ``srgan``'s generator)."""
    lr, qm, fm = contract_inputs(frames)
    reference = reference_input(frames)
    median = ClearMedian(name="median")(lr, qm, fm)
    base = upsampler(upsampling, "global_upsample")(ExpandChannel(name="expand")(median))
    frames_in = FramesToChannels(mean, std, name="frames_to_channels")(lr, qm, fm, median, reference)
    base_in = SpaceToDepth(SCALE, name="to_lr_grid")(Affine(1.0 / std, -mean / std, name="normalise")(base))
    x = layers.Concatenate(name="inputs")([frames_in, base_in])
    x = residual_body(x, filters, blocks, "body", residual_scale)
    correction = Affine(std, 0.0, name="denormalise")(subpixel_upsample(x, 1, SCALE))
    out = layers.Add(name="sr")([base, correction])
    return keras.Model({"lr": lr, "qm": qm, "frame_mask": fm, "reference": reference}, out, name=name)


@register("residual_multi")
class ResidualMulti(DeepModel):
    def build_network(self, frames: int) -> keras.Model:
        return build_residual_multi(frames, int(self.hp("filters", 32)), int(self.hp("blocks", 4)),
                                    self.norm_mean, self.norm_std, float(self.hp("residual_scale", 1.0)),
                                    str(self.hp("upsampling", "spline")), name=self.name)
