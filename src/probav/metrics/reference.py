"""The official score written as the straightforward loop over the 49 windows.

Slow (about 20 ms per scene) but obviously right: it is the oracle the fast scorer
(``probav.metrics.score``) is tested against, and the benchmark's point of comparison. It
shares no code with that scorer.
"""
from __future__ import annotations

import numpy as np

BORDER = 3  # SR is cropped by 3 pixels on every side
SHIFTS = 2 * BORDER + 1  # HR windows start at u, v ∈ {0…6}: 49 of them
PEAK = 65535.0  # uint16 / 65535 gives the [0, 1] scale of the score


def _unit(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype == np.uint16:
        return image.astype(np.float64) / PEAK
    if image.dtype.kind == "f":
        return image.astype(np.float64, copy=False)
    raise TypeError(f"images must be uint16 or float in [0, 1], got {image.dtype}")


def window_cmse_naive(sr: np.ndarray, hr: np.ndarray, sm: np.ndarray) -> np.ndarray:
    """cMSE of each of the 49 windows, (7, 7) indexed by the window's corner (u, v); +inf where
    the window has no clear pixel."""
    crop = hr.shape[0] - 2 * BORDER
    sr_c = _unit(sr)[BORDER:-BORDER, BORDER:-BORDER]
    hr = _unit(hr)
    out = np.full((SHIFTS, SHIFTS), np.inf)
    for u in range(SHIFTS):
        for v in range(SHIFTS):
            clear = sm[u:u + crop, v:v + crop]
            if clear.any():
                diff = hr[u:u + crop, v:v + crop][clear] - sr_c[clear]
                out[u, v] = np.mean((diff - diff.mean()) ** 2)
    return out


def shifted_cpsnr_naive(sr: np.ndarray, hr: np.ndarray, sm: np.ndarray) -> float:
    """Official cPSNR (dB) of one SR image: the best of the 49 windows, bias removed, clear pixels only."""
    crop = hr.shape[0] - 2 * BORDER
    sr_c = _unit(sr)[BORDER:-BORDER, BORDER:-BORDER]
    hr = _unit(hr)
    best = -np.inf
    for u in range(SHIFTS):
        for v in range(SHIFTS):
            clear = sm[u:u + crop, v:v + crop]
            if not clear.any():
                continue
            diff = hr[u:u + crop, v:v + crop][clear] - sr_c[clear]
            bias = diff.mean()
            cmse = np.mean((diff - bias) ** 2)
            with np.errstate(divide="ignore"):
                best = max(best, -10.0 * np.log10(cmse))
    if best == -np.inf:
        raise ValueError("SM has no clear pixel: the score is undefined")
    return float(best)
