"""The official baseline: mean of the bicubic ×3 upscales of the clearest LR frames."""
from __future__ import annotations

import numpy as np
from skimage.transform import rescale

from probav.models.registry import SRModel, register
from probav.scene import SCALE, Scene, to_uint16


def bicubic_upscale(image: np.ndarray) -> np.ndarray:
    """×3 bicubic upscale as in the official baseline (float in, float out)."""
    return rescale(image, SCALE, order=3, mode="edge", anti_aliasing=False)


def clearest_frames(qm: np.ndarray) -> np.ndarray:
    """Indices of all frames tied at the largest number of clear pixels."""
    counts = qm.reshape(len(qm), -1).sum(axis=1)
    return np.flatnonzero(counts == counts.max())


def baseline_sr(lr: np.ndarray, qm: np.ndarray) -> np.ndarray:
    """Official baseline on raw LR frames (T,128,128 uint16) and QMs; returns float in [0, 1]."""
    chosen = clearest_frames(qm)
    return np.mean([bicubic_upscale(lr[i].astype(np.float64) / 65535.0) for i in chosen], axis=0)


@register("baseline")
class Baseline(SRModel):
    def predict(self, scene: Scene) -> np.ndarray:
        return to_uint16(baseline_sr(scene.lr, scene.qm))
