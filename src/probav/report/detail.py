"""What the full-size comparisons cannot show: every model's prediction on a small window at a size where
pixels are visible, with its error map, and the power spectrum of each prediction against the HR's above the
LR Nyquist frequency (recovered detail or invented detail?).

Both use the predictions the comparisons section has already made (nothing is predicted again) and compare
them with the HR at the metric's best shift, brightness bias removed, on the HR's clear pixels only.
"""
from __future__ import annotations

import numpy as np

from probav.scene import SCALE

ZOOM = 48          # HR pixels on a side of the zoomed window
SPECTRUM_RINGS = 36


def aligned(sr: np.ndarray, hr: np.ndarray, sm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(SR, HR, SM) on the metric's 378×378 window at its best of the 49 shifts, SR's bias removed on the
    clear pixels: the two images the official score compares, as float64 DN."""
    from probav.metrics.score import BORDER, shifted_cpsnr_batch

    _, shifts = shifted_cpsnr_batch(sr[None], hr[None], sm[None], return_shift=True, workers=1)
    du, dv = (int(s) for s in shifts[0])
    n = sr.shape[0] - 2 * BORDER
    crop = sr[BORDER:BORDER + n, BORDER:BORDER + n].astype(np.float64)
    h = hr[BORDER + du:BORDER + du + n, BORDER + dv:BORDER + dv + n].astype(np.float64)
    m = np.asarray(sm[BORDER + du:BORDER + du + n, BORDER + dv:BORDER + dv + n], bool)
    if m.any():
        crop = crop - (crop[m] - h[m]).mean()
    return crop, h, m


def radial_power(image: np.ndarray, mask: np.ndarray | None = None,
                 rings: int = SPECTRUM_RINGS) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of ``image``: (frequency in cycles per pixel at each ring's centre,
    mean power in DN² per ring), from 0 to the Nyquist frequency 0.5. The masked-out pixels are set to the
    clear mean (they add no power), the mean is removed and a Hann window tapers the edges."""
    img = np.asarray(image, np.float64)
    mask = np.ones(img.shape, bool) if mask is None else np.asarray(mask, bool)
    mean = img[mask].mean() if mask.any() else 0.0
    img = np.where(mask, img - mean, 0.0)
    window = np.outer(np.hanning(img.shape[0]), np.hanning(img.shape[1]))
    power = np.abs(np.fft.fft2(img * window)) ** 2 / (window ** 2).sum()
    radius = np.hypot(np.fft.fftfreq(img.shape[0])[:, None], np.fft.fftfreq(img.shape[1])[None, :])
    ring = np.minimum((radius / 0.5 * rings).astype(int), rings).ravel()
    sums = np.bincount(ring, power.ravel(), rings + 1)[:rings]
    counts = np.maximum(np.bincount(ring, minlength=rings + 1)[:rings], 1)
    return (np.arange(rings) + 0.5) * 0.5 / rings, sums / counts


def spectra(predictions: dict[str, np.ndarray | None], hr: np.ndarray, sm: np.ndarray) -> dict[str, dict]:
    """Per model: its SR's power spectrum and that of its error (SR − HR), both on the HR's clear pixels at the
    metric's best shift, and the HR's own (the same for every model up to the shift), in cycles per LR pixel."""
    out = {}
    for name, sr in predictions.items():
        if sr is None:
            continue
        s, h, m = aligned(np.asarray(sr), hr, sm)
        freq, p_sr = radial_power(s, m)
        _, p_hr = radial_power(h, m)
        _, p_err = radial_power(s - h, m)
        out[name] = {"freq": freq * SCALE, "sr": p_sr, "hr": p_hr, "error": p_err}
    return out


def above_nyquist(spectrum: dict) -> dict[str, float]:
    """Summed power above the LR Nyquist frequency (0.5 cycles per LR pixel) as ratios to the HR's: the SR's
    (1 = as much detail as the HR) and the error's (below 1: more of that detail recovered than missed)."""
    high = spectrum["freq"] > 0.5
    hr = float(spectrum["hr"][high].sum())
    return {"sr_over_hr": float(spectrum["sr"][high].sum()) / hr,
            "error_over_hr": float(spectrum["error"][high].sum()) / hr}


def zoom_window(hr: np.ndarray, sm: np.ndarray, size: int = ZOOM, margin: int = 8) -> tuple[int, int]:
    """(y, x) of the fully clear ``size``×``size`` HR window with the most variance, away from the border."""
    best, where = -1.0, (margin, margin)
    step = max(size // 4, 1)
    for y in range(margin, hr.shape[0] - size - margin + 1, step):
        for x in range(margin, hr.shape[1] - size - margin + 1, step):
            if not sm[y:y + size, x:x + size].all():
                continue
            v = float(hr[y:y + size, x:x + size].astype(np.float64).std())
            if v > best:
                best, where = v, (y, x)
    return where


def residual_misalignment(sr: np.ndarray, hr: np.ndarray, sm: np.ndarray) -> np.ndarray | None:
    """(dy, dx) in HR pixels that the SR is still off the HR after the metric's best integer shift, measured by
    registering the two on the HR's clear pixels (None where the registration fails its checks). The metric
    only tries whole HR pixels, so a fraction of a pixel left here costs cPSNR at every edge."""
    from probav.registration import register

    s, h, m = aligned(np.asarray(sr), hr, sm)
    result = register(h, s, m, m)
    return np.asarray(result.shift, np.float64) if result.ok else None
