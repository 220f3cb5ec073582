"""Sub-pixel registration of LR frames to a reference frame, with cloud masks.

Convention (the one of ``skimage.registration.phase_cross_correlation``): the shift ``s = (dy, dx)``
of a moving frame is the translation that registers it onto the reference,
``shift_image(moving, s) ≈ reference``; equivalently ``moving(y) ≈ reference(y + s)``.
Shifts are in LR pixels.

Two steps:
1. ``coarse_shift``: masked normalised cross-correlation (integer pixels, clouds ignored), then
   FFT-upsampled phase correlation on cloud-filled images for a first sub-pixel estimate.
2. ``refine_shift``: Lucas–Kanade style Gauss–Newton on the clear pixels of both frames, jointly with a
   brightness gain and offset (``moving ≈ offset + gain · reference(y + s)``), with iteratively
   reweighted least squares so that undetected clouds or land changes do not pull the estimate.

``register`` chains them and validates the result (plausible size, converged, enough common
clear pixels, plausible gain, good correlation after registration); a rejected registration says why.

``Alignment`` holds a scene's frames registered to one of them (shift, gain, offset each) and
re-expresses them exactly relative to another (``rebase``), another contrast (``rescaled``) or output
grid (``recentred``); ``stack`` resamples the frames onto that grid. The reference estimator and
``shift_and_add`` share one registration of every frame this way.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

DEFAULTS = {
    "max_shift": 3.0,        # LR pixels: larger shifts are implausible for PROBA-V (almost always < 2)
    "smooth_sigma": 0.7,     # Gaussian pre-smoothing (LR px) against aliasing and noise
    "iterations": 10,        # Gauss-Newton iterations (at most)
    "erode": 1,              # erosion of the clear masks (LR px): cloud edges are often missed by the QM
    "min_overlap": 0.25,     # minimum fraction of pixels clear in both frames
    "min_correlation": 0.5,  # minimum correlation of the registered frames (clear pixels)
    "gain_range": [0.5, 2.0],
}


@dataclass
class Registration:
    """Result of registering one frame: shift (dy, dx) in LR pixels, brightness model, quality."""

    shift: np.ndarray
    gain: float = 1.0
    offset: float = 0.0
    correlation: float = float("nan")
    residual: float = float("nan")   # robust RMS of moving − (offset + gain · reference) after registration
    overlap: float = 0.0
    ok: bool = True
    reason: str = ""


def shift_image(image: np.ndarray, shift, order: int = 3, mode: str = "nearest") -> np.ndarray:
    """Translate an image by ``shift`` (dy, dx) pixels: ``out(x) = image(x − shift)``."""
    shift = np.asarray(shift, np.float64)
    if not shift.any():
        return np.asarray(image, np.float64).copy()
    return ndi.shift(np.asarray(image, np.float64), shift, order=order, mode=mode, prefilter=order > 1)


def shift_mask(mask: np.ndarray, shift) -> np.ndarray:
    """Translate a clear mask conservatively: a pixel stays clear only if all its sources are clear."""
    shift = np.asarray(shift, np.float64)
    if not shift.any():
        return np.asarray(mask, bool).copy()
    moved = ndi.shift(np.asarray(mask, np.float64), shift, order=1, mode="constant", cval=0.0, prefilter=False)
    return moved > 0.999


def _fill(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Image with its masked-out pixels replaced by the mean of its clear pixels."""
    out = np.asarray(image, np.float64).copy()
    if mask.any() and not mask.all():
        out[~mask] = out[mask].mean()
    return out


def _erode(mask: np.ndarray, iterations: int) -> np.ndarray:
    if iterations <= 0:
        return mask
    eroded = ndi.binary_erosion(mask, iterations=iterations, border_value=1)
    # Never erode a mask to nothing: a frame that is mostly cloud keeps its own mask.
    return eroded if eroded.sum() >= 0.5 * mask.sum() else mask


def coarse_shift(reference: np.ndarray, moving: np.ndarray, ref_mask: np.ndarray | None = None,
                 mov_mask: np.ndarray | None = None, upsample_factor: int = 4) -> np.ndarray:
    """First estimate of the shift: masked cross-correlation (integer), then upsampled phase correlation.

    The sub-pixel step runs on cloud-filled images and is kept only when it stays within one pixel
    of the masked integer estimate (phase correlation is easily fooled by clouds).
    """
    from skimage.registration import phase_cross_correlation

    reference = np.asarray(reference, np.float64)
    moving = np.asarray(moving, np.float64)
    ref_mask = np.ones(reference.shape, bool) if ref_mask is None else np.asarray(ref_mask, bool)
    mov_mask = np.ones(moving.shape, bool) if mov_mask is None else np.asarray(mov_mask, bool)
    if ref_mask.all() and mov_mask.all():
        integer = None
    else:
        integer, _, _ = phase_cross_correlation(reference, moving, reference_mask=ref_mask,
                                                moving_mask=mov_mask, overlap_ratio=0.5)
        integer = np.asarray(integer, np.float64)
    fine, _, _ = phase_cross_correlation(_fill(reference, ref_mask), _fill(moving, mov_mask),
                                         upsample_factor=upsample_factor, normalization=None)
    fine = np.asarray(fine, np.float64)
    if integer is None or np.all(np.abs(fine - integer) <= 1.0):
        return fine
    return integer


def refine_shift(reference: np.ndarray, moving: np.ndarray, ref_mask: np.ndarray, mov_mask: np.ndarray,
                 initial, iterations: int = 10, smooth_sigma: float = 0.7, max_shift: float = 3.0,
                 tolerance: float = 5e-3) -> Registration:
    """Gauss–Newton estimate of (shift, gain, offset) minimising the robustly weighted squared
    difference ``moving(y) − offset − gain · reference(y + shift)`` over commonly clear pixels."""
    reference = np.asarray(reference, np.float64)
    moving = np.asarray(moving, np.float64)
    ref_s = ndi.gaussian_filter(_fill(reference, ref_mask), smooth_sigma) if smooth_sigma > 0 else _fill(reference, ref_mask)
    mov_s = ndi.gaussian_filter(_fill(moving, mov_mask), smooth_sigma) if smooth_sigma > 0 else _fill(moving, mov_mask)
    # Smoothing spreads cloud values into their neighbours: shrink the masks accordingly.
    grow = int(np.ceil(2 * smooth_sigma))
    ref_valid = _erode(ref_mask, grow) if not ref_mask.all() else ref_mask
    mov_valid = _erode(mov_mask, grow) if not mov_mask.all() else mov_mask
    border = int(np.ceil(max_shift)) + 2
    inner = np.zeros(reference.shape, bool)
    inner[border:-border, border:-border] = True

    coeffs = ndi.spline_filter(ref_s, order=3, mode="nearest")  # prefilter once, shift many times

    def warp(s):  # reference(y + s), cubic B-spline
        return ndi.shift(coeffs, -s, order=3, mode="nearest", prefilter=False)

    shift = np.asarray(initial, np.float64).copy()
    weights = None
    converged = False
    params = np.array([0.0, 1.0, 0.0, 0.0])
    for _ in range(iterations):
        warped = warp(shift)
        valid = inner & mov_valid & shift_mask(ref_valid, -shift)
        if valid.sum() < 64:
            return Registration(shift, ok=False, reason="too few commonly clear pixels", overlap=float(valid.mean()))
        gy, gx = np.gradient(warped)
        design = np.stack([np.ones(valid.sum()), warped[valid], gy[valid], gx[valid]], axis=1)
        target = mov_s[valid]
        w = np.ones(len(target)) if weights is None else weights[valid]
        normal = design.T @ (design * w[:, None])
        try:
            params = np.linalg.solve(normal, design.T @ (w * target))
        except np.linalg.LinAlgError:
            return Registration(shift, ok=False, reason="registration is ill-conditioned (flat image?)")
        offset, gain = params[0], params[1]
        if not np.isfinite(params).all() or abs(gain) < 1e-6:
            return Registration(shift, ok=False, reason="registration diverged")
        step = params[2:] / gain
        shift = shift + np.clip(step, -1.0, 1.0)
        # Robust (Tukey-like) reweighting from the residual of the current model.
        residual = mov_s - offset - gain * warped
        scale = 1.4826 * np.median(np.abs(residual[valid] - np.median(residual[valid]))) + 1e-12
        weights = np.clip(1 - (residual / (4.685 * scale)) ** 2, 0, None) ** 2
        if np.abs(step).max() < tolerance:
            converged = True
            break
        if np.abs(shift).max() > max_shift + 1:
            break
    warped = warp(shift)
    valid = inner & mov_valid & shift_mask(ref_valid, -shift)
    if valid.sum() < 64:
        return Registration(shift, ok=False, reason="too few commonly clear pixels", overlap=float(valid.mean()))
    a, b = warped[valid], mov_s[valid]
    correlation = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0
    design = np.stack([np.ones(valid.sum()), a], axis=1)
    (offset, gain), *_ = np.linalg.lstsq(design, b, rcond=None)
    residual = b - offset - gain * a
    rms = float(1.4826 * np.median(np.abs(residual - np.median(residual))))
    return Registration(shift, gain=float(gain), offset=float(offset), correlation=correlation, residual=rms,
                        overlap=float((mov_mask & ref_mask).mean()), ok=True,
                        reason="" if converged else "not converged")


def register(reference: np.ndarray, moving: np.ndarray, ref_mask: np.ndarray | None = None,
             mov_mask: np.ndarray | None = None, settings: dict | None = None) -> Registration:
    """Register ``moving`` onto ``reference`` (shift, gain, offset) and validate the result.

    ``settings`` overrides ``DEFAULTS``. A registration that fails validation has ``ok = False`` and
    a ``reason``; its shift is then not to be trusted.
    """
    cfg = {**DEFAULTS, **(settings or {})}
    reference = np.asarray(reference, np.float64)
    moving = np.asarray(moving, np.float64)
    ref_mask = np.ones(reference.shape, bool) if ref_mask is None else np.asarray(ref_mask, bool)
    mov_mask = np.ones(moving.shape, bool) if mov_mask is None else np.asarray(mov_mask, bool)
    ref_m = _erode(ref_mask, int(cfg["erode"]))
    mov_m = _erode(mov_mask, int(cfg["erode"]))
    overlap = float((ref_m & mov_m).mean())
    if overlap < cfg["min_overlap"]:
        return Registration(np.zeros(2), ok=False, overlap=overlap,
                            reason=f"only {overlap:.0%} of pixels clear in both frames")
    initial = coarse_shift(reference, moving, ref_m, mov_m)
    if np.abs(initial).max() > cfg["max_shift"]:
        initial = np.zeros(2)
    result = refine_shift(reference, moving, ref_m, mov_m, initial, iterations=int(cfg["iterations"]),
                          smooth_sigma=float(cfg["smooth_sigma"]), max_shift=float(cfg["max_shift"]))
    if not result.ok:
        return result
    low, high = cfg["gain_range"]
    if np.abs(result.shift).max() > cfg["max_shift"]:
        result.ok, result.reason = False, f"implausible shift {np.round(result.shift, 2).tolist()} LR px"
    elif not low <= result.gain <= high:
        result.ok, result.reason = False, f"implausible brightness gain {result.gain:.2f}"
    elif result.correlation < cfg["min_correlation"]:
        result.ok, result.reason = False, f"poor correlation {result.correlation:.2f} after registration"
    elif result.reason == "not converged":
        result.reason = ""  # a few hundredths of a pixel of wobble is harmless; the shift is plausible
    return result


# --------------------------------------------------------------------------- registered stacks

def bias_corrected_mse(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Mean squared difference of ``a`` and ``b`` on ``mask`` after removing their mean difference
    (inf when fewer than 16 pixels are left)."""
    if mask.sum() < 16:
        return float("inf")
    d = a[mask] - b[mask]
    return float(np.mean((d - d.mean()) ** 2))


def clear_median(stack: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per-pixel median of the clear values of a (T, H, W) stack (NaN where none is clear)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels stay NaN
        return np.nanmedian(np.where(masks, stack, np.nan), axis=0)


class Alignment:
    """Accepted frames with their registration (shift, gain, offset) relative to one reference frame."""

    def __init__(self, ref: int, results: dict[int, Registration]):
        self.ref = ref
        self.results = results
        self.frames = [k for k, r in results.items() if r.ok]

    @classmethod
    def to(cls, lr: np.ndarray, qm: np.ndarray, ref: int, frames, reg_settings: dict | None = None) -> "Alignment":
        """Register every frame of ``frames`` to frame ``ref``."""
        results = {}
        for k in frames:
            k = int(k)
            if k == ref:
                results[k] = Registration(np.zeros(2), correlation=1.0, residual=0.0, overlap=float(qm[k].mean()))
            else:
                results[k] = register(lr[ref], lr[k], qm[ref], qm[k], reg_settings)
        return cls(ref, results)

    def rebase(self, ref: int) -> "Alignment":
        """The same registrations relative to another accepted frame ``ref`` (exact composition).

        With ``frame_k(y) ≈ o_k + g_k · R(y + s_k)`` for the old reference R, the new reference is
        ``N(y) ≈ o_r + g_r · R(y + s_r)``, so ``frame_k(y) ≈ o + g · N(y + s_k − s_r)`` with
        ``g = g_k / g_r`` and ``o = o_k − g · o_r``.
        """
        if ref == self.ref:
            return self
        base = self.results[ref]
        results = {}
        for k, r in self.results.items():
            if not r.ok:
                results[k] = r
                continue
            gain = r.gain / base.gain
            results[k] = Registration(r.shift - base.shift, gain=gain, offset=r.offset - gain * base.offset,
                                      correlation=r.correlation, residual=r.residual, overlap=r.overlap)
        return Alignment(ref, results)

    def rescaled(self, factor: float) -> "Alignment":
        """The same alignment with the target contrast multiplied by ``factor`` (all gains divided by it)."""
        results = {k: (Registration(r.shift, gain=r.gain / factor, offset=r.offset, correlation=r.correlation,
                                    residual=r.residual, overlap=r.overlap) if r.ok else r)
                   for k, r in self.results.items()}
        return Alignment(self.ref, results)

    def recentred(self, centre) -> "Alignment":
        """The same alignment with the output grid moved by ``centre`` (dy, dx) LR pixels."""
        centre = np.asarray(centre, np.float64)
        results = {k: (Registration(r.shift - centre, gain=r.gain, offset=r.offset, correlation=r.correlation,
                                    residual=r.residual, overlap=r.overlap) if r.ok else r)
                   for k, r in self.results.items()}
        return Alignment(self.ref, results)

    def normalised(self, lr: np.ndarray, k: int) -> np.ndarray:
        """Frame k brightness-matched to the reference: (frame − offset) / gain."""
        r = self.results[k]
        return (lr[k] - r.offset) / r.gain

    def stack(self, lr: np.ndarray, qm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Accepted frames brightness-matched and resampled onto the reference's LR grid, with masks."""
        images, masks = [], []
        for k in self.frames:
            shift = self.results[k].shift
            filled = self.normalised(lr, k)
            if not qm[k].all() and qm[k].any():
                filled = np.where(qm[k], filled, filled[qm[k]].mean())  # keep clouds out of the spline
            images.append(shift_image(filled, shift))
            masks.append(shift_mask(qm[k], shift))
        return np.array(images), np.array(masks)
