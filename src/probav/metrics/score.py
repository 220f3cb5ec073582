"""The official PROBA-V score: shifted, brightness-bias-corrected, clear-pixel cPSNR.

For an SR image, the 378×378 centre (3-pixel border cropped) is compared with each of the 49
378×378 windows of HR whose upper-left corner is (u, v), u, v ∈ {0…6}; on the clear pixels of SM
the brightness bias b = mean(HR − SR) is removed and cMSE = mean((HR − SR − b)²). The scene's
cPSNR is the best of the 49, −10·log10(cMSE), on images scaled to [0, 1] by 65535. Its score is
norm / cPSNR (lower is better; the official baseline scores 1).

Here all 49 windows are computed at once: the clear-pixel count and sums of HR are box sums
(integral images), the three terms that pair SR with a shifted window are cross-correlations
done by FFT (only their 7×7 valid outputs are evaluated). The winning shift is then recomputed
exactly (in integers when the images are uint16), so a perfect prediction gets cMSE exactly 0.

Decision for cMSE = 0 (SR = HR plus a constant on the clear pixels): cPSNR is +inf and the score
is 0, which is what the official formula gives.
"""
from __future__ import annotations

import numpy as np
import scipy.fft

from probav.scene import HR_SIZE

BORDER = 3
SHIFTS = 2 * BORDER + 1  # 7 positions per axis, 49 in all
CROP = HR_SIZE - 2 * BORDER  # 378
PEAK = 65535.0


def _as_unit(image: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype == np.uint16:
        return image.astype(np.float64) / PEAK
    if image.dtype.kind == "f":
        return image.astype(np.float64, copy=False)
    raise TypeError(f"{name} must be uint16 (raw PROBA-V values) or float in [0, 1], got {image.dtype}")


def _check(sr: np.ndarray, hr: np.ndarray, sm: np.ndarray, batched: bool) -> None:
    ndim = 3 if batched else 2
    what = "(N, 384, 384)" if batched else "(384, 384)"
    for name, image in (("sr", sr), ("hr", hr), ("sm", sm)):
        if image.ndim != ndim or image.shape[-2:] != (HR_SIZE, HR_SIZE):
            raise ValueError(f"{name} must have shape {what}, got {image.shape}")
    if not (sr.shape == hr.shape == sm.shape):
        raise ValueError(f"sr, hr and sm shapes differ: {sr.shape}, {hr.shape}, {sm.shape}")
    if sm.dtype != bool:
        raise TypeError(f"sm must be a bool mask (true = clear), got {sm.dtype}")
    if np.issubdtype(sr.dtype, np.floating) and not np.isfinite(sr).all():
        raise ValueError("sr contains NaN or infinite values")


def _box_sums(images: np.ndarray) -> np.ndarray:
    """Sum of every CROP×CROP window at offsets (u, v) ∈ 7×7, for a stack (..., 384, 384)."""
    integral = np.zeros(images.shape[:-2] + (HR_SIZE + 1, HR_SIZE + 1))
    np.cumsum(np.cumsum(images, axis=-2), axis=-1, out=integral[..., 1:, 1:])
    return (integral[..., CROP:, CROP:] - integral[..., :SHIFTS, CROP:]
            - integral[..., CROP:, :SHIFTS] + integral[..., :SHIFTS, :SHIFTS])


def _valid_correlations(images: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """out[..., u, v] = Σ_ij images[..., u+i, v+j] · kernels[..., i, j] for the 7×7 valid offsets.

    Circular correlation of size 384 equals the linear one at offsets 0…6, since u + i ≤ 383.
    The inverse transform is evaluated at those 49 points only, as two small DFT matrix products.
    """
    spectrum = scipy.fft.rfft2(images, workers=-1) * np.conj(scipy.fft.rfft2(kernels, s=(HR_SIZE, HR_SIZE),
                                                                              workers=-1))
    n = HR_SIZE
    k = np.arange(n)
    rows = np.exp(2j * np.pi * np.outer(np.arange(SHIFTS), k) / n)  # (7, 384)
    half = spectrum.shape[-1]
    weights = np.full(half, 2.0)
    weights[0] = 1.0
    if n % 2 == 0:
        weights[-1] = 1.0
    cols = np.exp(2j * np.pi * np.outer(np.arange(half), np.arange(SHIFTS)) / n) * weights[:, None]  # (193, 7)
    return (rows @ spectrum @ cols).real / (n * n)


def shift_cmse(sr: np.ndarray, hr: np.ndarray, sm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cMSE, bias and clear-pixel count for all 49 shifts of a batch: three (N, 7, 7) arrays.

    ``sr``, ``hr``: (N, 384, 384) uint16 or float in [0, 1]; ``sm``: (N, 384, 384) bool.
    Windows with no clear pixel get cMSE = +inf. Values are FFT-accurate (about 1e-13 relative);
    ``shifted_cpsnr`` recomputes the winner exactly.
    """
    _check(np.asarray(sr), np.asarray(hr), np.asarray(sm), batched=True)
    mask = np.asarray(sm, np.float64)
    hr_f = _as_unit(hr, "hr")
    sr_c = _as_unit(sr, "sr")[:, BORDER:-BORDER, BORDER:-BORDER]
    # Centring both images leaves cMSE unchanged (the bias absorbs constants) and keeps the
    # FFT's rounding small next to the differences that matter.
    count_all = np.maximum(mask.sum(axis=(-2, -1), keepdims=True), 1)
    hr_f = hr_f - (hr_f * mask).sum(axis=(-2, -1), keepdims=True) / count_all
    sr_c = sr_c - sr_c.mean(axis=(-2, -1), keepdims=True)
    masked_hr = mask * hr_f
    boxes = _box_sums(np.stack([mask, masked_hr, masked_hr * hr_f], axis=1))
    count, sum_h, sum_h2 = boxes[:, 0], boxes[:, 1], boxes[:, 2]
    corr = _valid_correlations(np.stack([mask, mask, masked_hr], axis=1),
                               np.stack([sr_c, sr_c * sr_c, sr_c], axis=1))
    sum_s, sum_s2, sum_hs = corr[:, 0], corr[:, 1], corr[:, 2]
    count = np.rint(count)
    safe = np.maximum(count, 1)
    bias = (sum_h - sum_s) / safe
    cmse = (sum_h2 - 2 * sum_hs + sum_s2) / safe - bias * bias
    cmse = np.where(count > 0, np.maximum(cmse, 0.0), np.inf)
    return cmse, bias, count


def _exact_window_cmse(sr: np.ndarray, hr: np.ndarray, sm: np.ndarray, u: int, v: int) -> float:
    """cMSE of one window, exact in integer arithmetic for uint16 images."""
    window = (slice(u, u + CROP), slice(v, v + CROP))
    centre = (slice(BORDER, BORDER + CROP), slice(BORDER, BORDER + CROP))
    clear = sm[window]
    n = int(clear.sum())
    if sr.dtype == np.uint16 and hr.dtype == np.uint16:
        diff = hr[window][clear].astype(np.int64) - sr[centre][clear].astype(np.int64)
        s1, s2 = int(diff.sum()), int((diff * diff).sum())
        # n·Σd² − (Σd)² is an exact integer (Python ints do not overflow).
        return (n * s2 - s1 * s1) / (n * n) / (PEAK * PEAK)
    diff = _as_unit(hr, "hr")[window][clear] - _as_unit(sr, "sr")[centre][clear]
    return float(np.mean((diff - diff.mean()) ** 2))


def cmse_to_cpsnr(cmse: np.ndarray | float) -> np.ndarray | float:
    with np.errstate(divide="ignore"):
        return -10.0 * np.log10(cmse)


def shifted_cpsnr_batch(sr: np.ndarray, hr: np.ndarray, sm: np.ndarray,
                        return_shift: bool = False):
    """Official cPSNR (dB) of each scene of a batch, shape (N,); optionally the best (u, v) too."""
    sr, hr, sm = np.asarray(sr), np.asarray(hr), np.asarray(sm)
    cmse, _, count = shift_cmse(sr, hr, sm)
    empty = (count == 0).all(axis=(-2, -1))
    if empty.any():
        raise ValueError(f"SM has no clear pixel in any of the 49 windows for scene(s) {np.flatnonzero(empty).tolist()}:"
                         " the score is undefined")
    cpsnr = np.empty(len(sr))
    shifts = []
    for i in range(len(sr)):
        u, v = np.unravel_index(np.argmin(cmse[i]), cmse[i].shape)
        cpsnr[i] = cmse_to_cpsnr(_exact_window_cmse(sr[i], hr[i], sm[i], int(u), int(v)))
        shifts.append((int(u) - BORDER, int(v) - BORDER))
    return (cpsnr, shifts) if return_shift else cpsnr


def shifted_cpsnr(sr: np.ndarray, hr: np.ndarray, sm: np.ndarray) -> float:
    """Official cPSNR (dB) of one SR image (384×384, uint16 or float in [0, 1]) against HR and SM."""
    sr, hr, sm = np.asarray(sr), np.asarray(hr), np.asarray(sm)
    _check(sr, hr, sm, batched=False)
    return float(shifted_cpsnr_batch(sr[None], hr[None], sm[None])[0])


def score(cpsnr: float | np.ndarray, norm: float | np.ndarray) -> float | np.ndarray:
    """Score of a scene: its norm (the baseline's cPSNR) over its cPSNR; lower is better, 0 if cPSNR is inf."""
    cpsnr = np.asarray(cpsnr, np.float64)
    norm = np.asarray(norm, np.float64)
    if np.any(~np.isfinite(norm)) or np.any(norm <= 0):
        raise ValueError(f"norm must be a positive finite cPSNR, got {norm}")
    out = norm / cpsnr
    return float(out) if out.ndim == 0 else out
