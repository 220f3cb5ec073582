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

Speed: registering a scene's frames is most of the time a classical model spends on it. What depends
only on the reference frame (its cloud-filled spectrum, the spectra of the masked correlation, its
smoothed spline coefficients and valid mask) is computed once per reference (``PreparedReference``), not
once per registered frame; the masked correlation runs on real FFTs; translations (``shift_image``,
``shift_mask`` and the Gauss–Newton warps) are separable 1-D spline passes (``probav.resample``) equal to
``scipy.ndimage.shift`` up to rounding. The masked correlation and the upsampled phase correlation are
``skimage.registration.phase_cross_correlation``'s algorithms, recomputed here with those savings.
The Gauss–Newton iterations and the masked correlation's normalisation run as compiled loops (numba,
below ``refine_shift``'s helpers), each pixel's arithmetic that of the numpy expressions they replaced,
and the robust scale's medians come from ``probav.order_statistics``; ``shift_and_add``'s predictions
stay the same (``tests/test_classical.py`` keeps the numpy loop as the oracle; ``make bench`` times the
model against its version before these changes).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numba
import numpy as np
from scipy import fft as sfft
from scipy import ndimage as ndi

from probav import resample
from probav.order_statistics import median, median_inplace

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
    if order in resample.ORDERS and (mode == "nearest" or (mode == "constant" and order <= 1)):
        return resample.shift(image, shift, order=order, mode=mode, prefilter=order > 1)  # = ndi.shift, faster
    return ndi.shift(np.asarray(image, np.float64), shift, order=order, mode=mode, prefilter=order > 1)


def shift_mask(mask: np.ndarray, shift) -> np.ndarray:
    """Translate a clear mask conservatively: a pixel stays clear only if all its sources are clear."""
    shift = np.asarray(shift, np.float64)
    if not shift.any():
        return np.asarray(mask, bool).copy()
    moved = resample.shift(np.asarray(mask, np.float64), shift, order=1, mode="constant", prefilter=False)
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


class PreparedReference:
    """A reference frame with what registering any frame to it needs from it, computed once.

    ``mask`` is the reference's clear mask as the registration uses it (``register`` erodes the QM
    first). The cached quantities are exactly those ``coarse_shift`` and ``refine_shift`` would compute
    from the reference for every registered frame."""

    def __init__(self, image: np.ndarray, mask: np.ndarray | None = None):
        self.image = np.asarray(image, np.float64)
        self.mask = np.ones(self.image.shape, bool) if mask is None else np.asarray(mask, bool)
        self._cache: dict = {}

    def _get(self, key, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def spectrum(self) -> np.ndarray:
        """FFT of the cloud-filled reference (the upsampled phase correlation's)."""
        return self._get("spectrum", lambda: sfft.fft2(_fill(self.image, self.mask)))

    def masked_spectra(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Real FFTs (size ``shape``) of the flipped masked reference, its mask and its square (the masked
        normalised cross-correlation's reference side)."""
        def make():
            image = np.where(self.mask, self.image, 0.0)[::-1, ::-1]
            mask = self.mask[::-1, ::-1].astype(np.float64)
            return tuple(sfft.rfft2(a, s=shape) for a in (image, mask, np.square(image)))
        return self._get(("masked", shape), make)

    def smoothed(self, smooth_sigma: float) -> tuple[np.ndarray, np.ndarray]:
        """Cubic-spline coefficients of the smoothed, cloud-filled reference and where it stays valid."""
        def make():
            filled = _fill(self.image, self.mask)
            smooth = ndi.gaussian_filter(filled, smooth_sigma) if smooth_sigma > 0 else filled
            # Smoothing spreads cloud values into their neighbours: shrink the mask accordingly.
            valid = _erode(self.mask, int(np.ceil(2 * smooth_sigma))) if not self.mask.all() else self.mask
            return ndi.spline_filter(smooth, order=3, mode="nearest"), valid
        return self._get(("smoothed", float(smooth_sigma)), make)


def _masked_integer_shift(ref: PreparedReference, moving: np.ndarray, mov_mask: np.ndarray,
                          overlap_ratio: float) -> np.ndarray:
    """Integer shift by masked normalised cross-correlation: the algorithm of
    ``skimage.registration.phase_cross_correlation(reference, moving, reference_mask=, moving_mask=)``
    (Padfield 2012), with real FFTs and the reference's spectra computed once."""
    shape = moving.shape
    final = tuple(2 * n - 1 for n in shape)
    fast = tuple(sfft.next_fast_len(n) for n in final)
    rot, rot_mask, rot_sq = ref.masked_spectra(fast)
    fixed = np.where(mov_mask, moving, 0.0)
    fixed_fft = sfft.rfft2(fixed, s=fast)
    fixed_mask = sfft.rfft2(mov_mask.astype(np.float64), s=fast)
    fixed_sq = sfft.rfft2(np.square(fixed), s=fast)

    def ifft(x):
        return sfft.irfft2(x, s=fast)[: final[0], : final[1]]

    # Each product transformed as soon as it is made: faster here than batching them (cache).
    centre = _ncc_peak(ifft(rot_mask * fixed_mask), ifft(rot_mask * fixed_fft), ifft(fixed_mask * rot),
                       ifft(rot * fixed_fft), ifft(rot_mask * fixed_sq), ifft(fixed_mask * rot_sq), overlap_ratio)
    return -(centre - np.array(shape) + 1)


def _upsampled_shift(ref: PreparedReference, moving_filled: np.ndarray, upsample_factor: int) -> np.ndarray:
    """Sub-pixel shift by upsampled cross-correlation (Guizar-Sicairos 2008, no normalisation): the
    algorithm of ``skimage.registration.phase_cross_correlation(..., upsample_factor=,
    normalization=None)``, with the reference's spectrum computed once."""
    src = ref.spectrum()
    product = src * sfft.fft2(moving_filled).conj()
    correlation = sfft.ifft2(product)
    shape = np.array(product.shape)
    shift = np.array(np.unravel_index(np.argmax(np.abs(correlation)), product.shape), np.float64)
    midpoint = np.trunc(shape / 2)
    shift[shift > midpoint] -= shape[shift > midpoint]
    if upsample_factor <= 1:
        return shift
    factor = float(upsample_factor)
    shift = np.round(shift * factor) / factor
    region = np.ceil(factor * 1.5)
    dftshift = np.trunc(region / 2.0)
    offsets = dftshift - shift * factor
    # The DFT of the conjugate product on a region × region grid of 1/factor-pixel steps around the
    # estimate, last axis first (einsum rather than BLAS: on a busy machine, threaded BLAS makes this
    # small product slow).
    kernels = [np.exp(-(2j * np.pi) * ((np.arange(region) - off)[:, None] * sfft.fftfreq(n, factor)))
               for n, off in zip(product.shape, offsets)]
    rows = np.einsum("aj,ij->ai", kernels[1], product.conj())
    upsampled = np.einsum("bi,ai->ba", kernels[0], rows).conj()
    maxima = np.array(np.unravel_index(np.argmax(np.abs(upsampled)), upsampled.shape), np.float64)
    return shift + (maxima - dftshift) / factor


def coarse_shift(reference: np.ndarray, moving: np.ndarray, ref_mask: np.ndarray | None = None,
                 mov_mask: np.ndarray | None = None, upsample_factor: int = 4,
                 prepared: PreparedReference | None = None) -> np.ndarray:
    """First estimate of the shift: masked cross-correlation (integer), then upsampled phase correlation.

    The sub-pixel step runs on cloud-filled images and is kept only when it stays within one pixel
    of the masked integer estimate (phase correlation is easily fooled by clouds). ``prepared``: the
    reference (with ``ref_mask``) prepared once for many frames.
    """
    ref = prepared if prepared is not None else PreparedReference(reference, ref_mask)
    moving = np.asarray(moving, np.float64)
    mov_mask = np.ones(moving.shape, bool) if mov_mask is None else np.asarray(mov_mask, bool)
    if ref.mask.all() and mov_mask.all():
        integer = None
    else:
        integer = _masked_integer_shift(ref, moving, mov_mask, overlap_ratio=0.5)
    fine = _upsampled_shift(ref, _fill(moving, mov_mask), upsample_factor)
    if integer is None or np.all(np.abs(fine - integer) <= 1.0):
        return fine
    return integer


# --------------------------------------------------------------------------- compiled loops
# One Gauss–Newton iteration is a handful of whole-image passes (warp, mask shift, gradient, normal
# equations, residual, two medians); as numpy calls each allocates and the boolean indexing copies,
# which made the refinement about half of the registration's time. These loops do the same arithmetic
# in the same order per pixel (no fastmath), so the warp, the mask and the weights equal the numpy
# expressions they replace to the bit; only the normal equations' sums run in another order than
# BLAS's (a few units in the last place). The same goes for the masked correlation's normalisation.

_JIT = {"nogil": True, "cache": True}


@numba.njit(**_JIT)
def _ncc_peak(overlap_raw, corr_fixed, corr_rot, cross, fixed_sq, rot_sq, overlap_ratio):
    """Where the masked normalised cross-correlation peaks (the mean position of its maxima), from
    the six correlations of ``_masked_integer_shift`` (masks, image × mask both ways, images, squares
    × mask both ways): skimage's normalisation, thresholds and peak, element by element as it is."""
    h, w = overlap_raw.shape
    eps = np.finfo(np.float64).eps
    overlap = np.empty((h, w))
    numerator = np.empty((h, w))
    denom = np.empty((h, w))
    most_denom = most_overlap = 0.0
    for y in range(h):
        for x in range(w):
            o = max(np.rint(overlap_raw[y, x]), eps)
            cf, cr = corr_fixed[y, x], corr_rot[y, x]
            numerator[y, x] = cross[y, x] - cf * cr / o
            fixed_denom = max(fixed_sq[y, x] - cf * cf / o, 0.0)
            moving_denom = max(rot_sq[y, x] - cr * cr / o, 0.0)
            d = np.sqrt(fixed_denom * moving_denom)
            overlap[y, x], denom[y, x] = o, d
            most_denom, most_overlap = max(most_denom, d), max(most_overlap, o)
    tol = 1e3 * eps * most_denom
    low_overlap = overlap_ratio * most_overlap
    out = numerator  # overwritten in place: the normalised correlation
    peak = -np.inf
    for y in range(h):
        for x in range(w):
            v = 0.0
            if denom[y, x] > tol:
                v = min(max(numerator[y, x] / denom[y, x], -1.0), 1.0)
            if overlap[y, x] < low_overlap:
                v = 0.0
            out[y, x] = v
            peak = max(peak, v)
    count, sum_y, sum_x = 0, 0.0, 0.0
    for y in range(h):
        for x in range(w):
            if out[y, x] == peak:
                count += 1
                sum_y += y
                sum_x += x
    return np.array([sum_y / count, sum_x / count])


@numba.njit(**_JIT)
def _cubic_taps(start):
    """First tap and the four weights of a cubic B-spline sampled at ``start`` (``resample.spline_weights``)."""
    first = np.floor(start)
    t = start - first
    s = 1.0 - t
    return (int(first) - 1, s * s * s / 6.0, (3.0 * t * t * (t - 2.0) + 4.0) / 6.0,
            (3.0 * s * s * (s - 2.0) + 4.0) / 6.0, t * t * t / 6.0)


@numba.njit(**_JIT)
def _clamped_cubic(c, i, w0, w1, w2, w3):
    """The cubic spline of the line c from taps i … i + 3, those beyond either end repeating it."""
    n = len(c)
    return (w0 * c[min(max(i, 0), n - 1)] + w1 * c[min(max(i + 1, 0), n - 1)]
            + w2 * c[min(max(i + 2, 0), n - 1)] + w3 * c[min(max(i + 3, 0), n - 1)])


@numba.njit(**_JIT)
def _warp(coeffs, shift):
    """reference(y + shift) from its cubic spline coefficients: ``resample.shift(coeffs, −shift,
    order=3, mode='nearest', prefilter=False)`` (taps beyond the edge repeat the edge coefficient),
    rows then columns, each output the same sum in the same order."""
    h, w = coeffs.shape
    a, w0, w1, w2, w3 = _cubic_taps(shift[1])
    rows = np.empty((h, w))
    lo, hi = min(max(-a, 0), w), max(min(w - 3 - a, w), 0)  # taps all inside the row for lo <= x < hi
    for y in range(h):
        c = coeffs[y]
        for x in range(lo, hi):
            rows[y, x] = w0 * c[x + a] + w1 * c[x + a + 1] + w2 * c[x + a + 2] + w3 * c[x + a + 3]
        for x in range(0, lo):  # the edges: taps clamped
            rows[y, x] = _clamped_cubic(c, x + a, w0, w1, w2, w3)
        for x in range(max(hi, lo), w):
            rows[y, x] = _clamped_cubic(c, x + a, w0, w1, w2, w3)
    a, w0, w1, w2, w3 = _cubic_taps(shift[0])
    out = np.empty((h, w))
    for y in range(h):
        r0, r1 = rows[min(max(y + a, 0), h - 1)], rows[min(max(y + a + 1, 0), h - 1)]
        r2, r3 = rows[min(max(y + a + 2, 0), h - 1)], rows[min(max(y + a + 3, 0), h - 1)]
        for x in range(w):
            out[y, x] = w0 * r0[x] + w1 * r1[x] + w2 * r2[x] + w3 * r3[x]
    return out


@numba.njit(**_JIT)
def _common_valid(base, ref_valid, shift):
    """``base & shift_mask(ref_valid, −shift)``: where both frames stay clear after the shift (the
    mask's linear, zero-padded shift above 0.999, computed as ``resample.shift`` does)."""
    h, w = ref_valid.shape
    mask = ref_valid.astype(np.float64)
    first = np.floor(shift[1])
    a, t = int(first), shift[1] - first
    rows = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            position = x + shift[1]
            if 0 <= position <= w - 1:
                left = mask[y, x + a] if 0 <= x + a < w else 0.0
                right = mask[y, x + a + 1] if 0 <= x + a + 1 < w else 0.0
                rows[y, x] = (1.0 - t) * left + t * right
    first = np.floor(shift[0])
    a, t = int(first), shift[0] - first
    out = np.zeros((h, w), np.bool_)
    for y in range(h):
        position = y + shift[0]
        if not 0 <= position <= h - 1:
            continue
        for x in range(w):
            top = rows[y + a, x] if 0 <= y + a < h else 0.0
            bottom = rows[y + a + 1, x] if 0 <= y + a + 1 < h else 0.0
            out[y, x] = base[y, x] and (1.0 - t) * top + t * bottom > 0.999
    return out


@numba.njit(nogil=True, cache=True, fastmath={"reassoc"})  # reassociation lets the sums vectorise
def _normal_equations(warped, valid, target, weights):
    """The weighted normal equations of ``target ≈ offset + gain·warped + gy·gy' + gx·gx'`` on
    ``valid`` (gy, gx: ``np.gradient(warped)``, central differences): the 4×4 matrix and right side
    of ``design.T @ (design · w)`` and ``design.T @ (w · target)``, design = [1, warped, gy, gx].
    Pixels on the image's edge are left out (``refine_shift``'s border keeps them out of ``valid``)."""
    h, w = warped.shape
    s_w = s_a = s_y = s_x = s_aa = s_ay = s_ax = s_yy = s_yx = s_xx = 0.0
    t_1 = t_a = t_y = t_x = 0.0
    for y in range(1, h - 1):
        for x in range(1, w - 1):
            keep = valid[y, x]
            wk = weights[y, x] if keep else 0.0
            a = warped[y, x] if keep else 0.0
            gy = (warped[y + 1, x] - warped[y - 1, x]) / 2.0 if keep else 0.0
            gx = (warped[y, x + 1] - warped[y, x - 1]) / 2.0 if keep else 0.0
            tw = wk * target[y, x] if keep else 0.0
            aw, yw, xw = a * wk, gy * wk, gx * wk
            s_w += wk
            s_a += aw
            s_y += yw
            s_x += xw
            s_aa += a * aw
            s_ay += a * yw
            s_ax += a * xw
            s_yy += gy * yw
            s_yx += gy * xw
            s_xx += gx * xw
            t_1 += tw
            t_a += a * tw
            t_y += gy * tw
            t_x += gx * tw
    normal = np.array([[s_w, s_a, s_y, s_x], [s_a, s_aa, s_ay, s_ax], [s_y, s_ay, s_yy, s_yx],
                       [s_x, s_ax, s_yx, s_xx]])
    return normal, np.array([t_1, t_a, t_y, t_x])


@numba.njit(**_JIT)
def _tukey_weights(target, warped, valid, offset, gain):
    """Robust (Tukey biweight) weights of the residual ``target − offset − gain·warped``, its scale
    1.4826·MAD over ``valid`` at 4.685 scale units."""
    h, w = target.shape
    residual = np.empty((h, w))
    values = np.empty(h * w)
    n = 0
    for y in range(h):
        for x in range(w):
            r = (target[y, x] - offset) - gain * warped[y, x]
            residual[y, x] = r
            if valid[y, x]:
                values[n] = r
                n += 1
    scratch = np.empty(n)
    centre = median_inplace(values[:n].copy(), n, scratch)
    for i in range(n):
        values[i] = abs(values[i] - centre)
    limit = 4.685 * (1.4826 * median_inplace(values, n, scratch) + 1e-12)
    out = np.empty((h, w))
    for y in range(h):
        for x in range(w):
            q = residual[y, x] / limit
            v = max(1.0 - q * q, 0.0)
            out[y, x] = v * v
    return out


def refine_shift(reference: np.ndarray, moving: np.ndarray, ref_mask: np.ndarray, mov_mask: np.ndarray,
                 initial, iterations: int = 10, smooth_sigma: float = 0.7, max_shift: float = 3.0,
                 tolerance: float = 5e-3, prepared: PreparedReference | None = None) -> Registration:
    """Gauss–Newton estimate of (shift, gain, offset) minimising the robustly weighted squared
    difference ``moving(y) − offset − gain · reference(y + shift)`` over commonly clear pixels.
    ``prepared``: the reference (with ``ref_mask``) prepared once for many frames."""
    ref = prepared if prepared is not None else PreparedReference(reference, ref_mask)
    moving = np.asarray(moving, np.float64)
    mov_mask = np.asarray(mov_mask, bool)
    coeffs, ref_valid = ref.smoothed(smooth_sigma)  # prefiltered once, shifted many times
    mov_s = ndi.gaussian_filter(_fill(moving, mov_mask), smooth_sigma) if smooth_sigma > 0 else _fill(moving, mov_mask)
    # Smoothing spreads cloud values into their neighbours: shrink the masks accordingly.
    grow = int(np.ceil(2 * smooth_sigma))
    mov_valid = _erode(mov_mask, grow) if not mov_mask.all() else mov_mask
    border = int(np.ceil(max_shift)) + 2
    inner = np.zeros(moving.shape, bool)
    inner[border:-border, border:-border] = True

    base = inner & mov_valid
    shift = np.asarray(initial, np.float64).copy()
    weights = np.ones(moving.shape)
    converged = False
    params = np.array([0.0, 1.0, 0.0, 0.0])
    for _ in range(iterations):
        warped = _warp(coeffs, shift)
        valid = _common_valid(base, ref_valid, shift)
        if valid.sum() < 64:
            return Registration(shift, ok=False, reason="too few commonly clear pixels", overlap=float(valid.mean()))
        normal, rhs = _normal_equations(warped, valid, mov_s, weights)
        try:
            params = np.linalg.solve(normal, rhs)
        except np.linalg.LinAlgError:
            return Registration(shift, ok=False, reason="registration is ill-conditioned (flat image?)")
        offset, gain = params[0], params[1]
        if not np.isfinite(params).all() or abs(gain) < 1e-6:
            return Registration(shift, ok=False, reason="registration diverged")
        step = params[2:] / gain
        shift = shift + np.clip(step, -1.0, 1.0)
        # Robust (Tukey-like) reweighting from the residual of the current model.
        weights = _tukey_weights(mov_s, warped, valid, offset, gain)
        if np.abs(step).max() < tolerance:
            converged = True
            break
        if np.abs(shift).max() > max_shift + 1:
            break
    warped = _warp(coeffs, shift)
    valid = _common_valid(base, ref_valid, shift)
    if valid.sum() < 64:
        return Registration(shift, ok=False, reason="too few commonly clear pixels", overlap=float(valid.mean()))
    a, b = warped[valid], mov_s[valid]
    correlation = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0
    design = np.stack([np.ones(valid.sum()), a], axis=1)
    (offset, gain), *_ = np.linalg.lstsq(design, b, rcond=None)
    residual = b - offset - gain * a
    rms = 1.4826 * median(np.abs(residual - median(residual)))
    return Registration(shift, gain=float(gain), offset=float(offset), correlation=correlation, residual=rms,
                        overlap=float((mov_mask & ref.mask).mean()), ok=True,
                        reason="" if converged else "not converged")


def prepare_reference(reference: np.ndarray, ref_mask: np.ndarray | None = None,
                      settings: dict | None = None) -> PreparedReference:
    """The reference frame prepared once for ``register``-ing many frames to it (its QM eroded as
    ``register`` does with ``settings``)."""
    cfg = {**DEFAULTS, **(settings or {})}
    reference = np.asarray(reference, np.float64)
    ref_mask = np.ones(reference.shape, bool) if ref_mask is None else np.asarray(ref_mask, bool)
    return PreparedReference(reference, _erode(ref_mask, int(cfg["erode"])))


def register(reference: np.ndarray, moving: np.ndarray, ref_mask: np.ndarray | None = None,
             mov_mask: np.ndarray | None = None, settings: dict | None = None,
             prepared: PreparedReference | None = None) -> Registration:
    """Register ``moving`` onto ``reference`` (shift, gain, offset) and validate the result.

    ``settings`` overrides ``DEFAULTS``. A registration that fails validation has ``ok = False`` and
    a ``reason``; its shift is then not to be trusted. ``prepared``: ``prepare_reference(reference,
    ref_mask, settings)``, made once when many frames are registered to the same reference (the
    result is the same).
    """
    cfg = {**DEFAULTS, **(settings or {})}
    ref = prepared if prepared is not None else prepare_reference(reference, ref_mask, settings)
    moving = np.asarray(moving, np.float64)
    mov_mask = np.ones(moving.shape, bool) if mov_mask is None else np.asarray(mov_mask, bool)
    mov_m = _erode(mov_mask, int(cfg["erode"]))
    overlap = float((ref.mask & mov_m).mean())
    if overlap < cfg["min_overlap"]:
        return Registration(np.zeros(2), ok=False, overlap=overlap,
                            reason=f"only {overlap:.0%} of pixels clear in both frames")
    initial = coarse_shift(ref.image, moving, ref.mask, mov_m, prepared=ref)
    if np.abs(initial).max() > cfg["max_shift"]:
        initial = np.zeros(2)
    result = refine_shift(ref.image, moving, ref.mask, mov_m, initial, iterations=int(cfg["iterations"]),
                          smooth_sigma=float(cfg["smooth_sigma"]), max_shift=float(cfg["max_shift"]),
                          prepared=ref)
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
    """Per-pixel median of the clear values of a (T, H, W) stack (NaN where none is clear).

    The same values as ``np.nanmedian(np.where(masks, stack, np.nan), axis=0)`` (the mean of the two
    middle clear values, or the middle one), a few times faster: one sort of each pixel's values."""
    stack = np.asarray(stack, np.float64)
    masks = np.asarray(masks, bool) & ~np.isnan(stack)
    t = len(stack)
    if t == 0:
        return np.full(stack.shape[1:], np.nan)
    values = np.where(masks, stack, np.nan).reshape(t, -1).T.copy()
    values.sort(axis=1)  # the clear values first (NaN sorts last)
    count = masks.reshape(t, -1).sum(axis=0)
    pixels = np.arange(values.shape[0])
    median = (values[pixels, np.maximum(count - 1, 0) // 2] + values[pixels, np.minimum(count // 2, t - 1)]) / 2
    median[count == 0] = np.nan
    return median.reshape(stack.shape[1:])


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
        prepared = prepare_reference(lr[ref], qm[ref], reg_settings)  # once for all the frames
        for k in frames:
            k = int(k)
            if k == ref:
                results[k] = Registration(np.zeros(2), correlation=1.0, residual=0.0, overlap=float(qm[k].mean()))
            else:
                results[k] = register(lr[ref], lr[k], qm[ref], qm[k], reg_settings, prepared=prepared)
        return cls(ref, results)

    def with_shifts(self, positions: np.ndarray) -> "Alignment":
        """The same registrations with shifts from ``positions`` (T, 2), each frame's position in LR pixels
        (a feature at ``p`` of the ground appears at ``p + position``): frame k samples the reference at
        ``y + position[ref] − position[k]``. For ablations (the simulator knows the true positions)."""
        results = {k: replace(r, shift=positions[self.ref] - positions[k]) if r.ok else r
                   for k, r in self.results.items()}
        return Alignment(self.ref, results)

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
