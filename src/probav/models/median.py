"""``median``: per-pixel median of the clear LR values across frames, then bicubic ×3.

Where no frame is clear at a pixel, the median of all frames there is used; if that is not
finite either (it always is for real data), the official baseline's value. No registration:
this is the simplest robust multi-frame fusion, a yardstick for ``shift_and_add``.
"""
from __future__ import annotations

import warnings

import numpy as np

from probav.models.baseline import bicubic_upscale, clearest_frames
from probav.models.registry import SRModel, register
from probav.scene import Scene, to_uint16


def clear_median(lr: np.ndarray, qm: np.ndarray) -> np.ndarray:
    """Per-pixel median of the clear values (T,H,W floats, T,H,W bool) → (H,W); all frames where none is clear."""
    lr = np.asarray(lr, np.float64)
    qm = np.asarray(qm, bool)
    masked = np.where(qm, lr, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices are handled below
        median = np.nanmedian(masked, axis=0)
    none_clear = ~qm.any(axis=0)
    if none_clear.any():
        median[none_clear] = np.median(lr[:, none_clear], axis=0)
    return median


def median_sr(lr: np.ndarray, qm: np.ndarray) -> np.ndarray:
    """Median fusion of raw LR frames (uint16) → float HR image in [0, 1]."""
    lr_unit = np.asarray(lr, np.float64) / 65535.0
    median = clear_median(lr_unit, qm)
    bad = ~np.isfinite(median)
    if bad.any():  # defensive: fall back to the mean of the clearest frames
        median[bad] = lr_unit[clearest_frames(qm)].mean(axis=0)[bad]
    return bicubic_upscale(median)


@register("median")
class Median(SRModel):
    def predict(self, scene: Scene) -> np.ndarray:
        return to_uint16(median_sr(scene.lr, scene.qm))
