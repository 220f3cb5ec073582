"""The official score written as the straightforward loop over the 49 windows.

Slow (tens of ms per scene) but obviously right: it is the oracle the vectorised scorer is
tested against, and the benchmark's point of comparison.
"""
from __future__ import annotations

import numpy as np

from probav.metrics.score import BORDER, CROP, SHIFTS, _as_unit


def shifted_cpsnr_naive(sr: np.ndarray, hr: np.ndarray, sm: np.ndarray) -> float:
    sr_c = _as_unit(sr, "sr")[BORDER:-BORDER, BORDER:-BORDER]
    hr = _as_unit(hr, "hr")
    best = -np.inf
    for u in range(SHIFTS):
        for v in range(SHIFTS):
            clear = sm[u:u + CROP, v:v + CROP]
            if not clear.any():
                continue
            diff = hr[u:u + CROP, v:v + CROP][clear] - sr_c[clear]
            bias = diff.mean()
            cmse = np.mean((diff - bias) ** 2)
            with np.errstate(divide="ignore"):
                best = max(best, -10.0 * np.log10(cmse))
    if best == -np.inf:
        raise ValueError("SM has no clear pixel: the score is undefined")
    return float(best)
