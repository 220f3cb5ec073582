"""Separable spline resampling of 2-D images: ``scipy.ndimage``'s translations and ×N zooms, per axis.

``scipy.ndimage.shift``, ``affine_transform`` with a diagonal matrix and ``zoom`` evaluate, at every
output pixel, a spline over (order + 1)² input coefficients, recomputing the spline weights as they go.
For a translation (and a zoom by a whole factor N) the sampling positions along an axis repeat with
period N, so the same result is two 1-D passes of (order + 1) taps with a handful of fixed weight sets:
several times fewer operations, done here with array slices. The functions below reproduce those
``scipy.ndimage`` calls — same spline prefilter on the same padded input, same boundary rules — up to
floating-point rounding (about 1e-15 relative), which ``tests/test_resample.py`` checks:

- ``shift(image, s, order, mode)``: ``ndi.shift(image, s, order=order, mode=mode)`` (``mode`` 'nearest',
  or 'constant' with ``cval`` 0 for order ≤ 1), with or without the prefilter;
- ``upscale(image, factor, offset, order)``: ``ndi.affine_transform(image, [1/factor]*2, offset=offset,
  output_shape=(factor·h, factor·w), order=order, mode='nearest')``;
- ``bicubic_upscale(image, factor)``: the official baseline's ×3 upscale
  (``skimage.transform.rescale(image, factor, order=3, mode='edge', anti_aliasing=False)``, which clips
  to the input's range).

Boundary rules reproduced: 'nearest' repeats the edge coefficient for taps beyond the edge (the sampling
position itself is not clamped); 'constant' gives 0 where the position lies outside [0, n − 1]. With the
prefilter, 'nearest' first pads the image with ``NPAD`` edge pixels, as ``scipy.ndimage`` does.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

NPAD = 12  # scipy.ndimage pads a 'nearest'-mode image by this many edge pixels before its spline prefilter
ORDERS = (1, 3)


def spline_weights(t: float, order: int) -> np.ndarray:
    """Weights of the order+1 taps ``floor(x) − order//2 …`` of a B-spline sampled at x, t = x − floor(x)."""
    if order == 1:
        return np.array([1.0 - t, t])
    if order == 3:
        s = 1.0 - t
        return np.array([s * s * s / 6.0, (3.0 * t * t * (t - 2.0) + 4.0) / 6.0,
                         (3.0 * s * s * (s - 2.0) + 4.0) / 6.0, t * t * t / 6.0])
    raise ValueError(f"spline order must be one of {ORDERS}, got {order}")


def _take(a: np.ndarray, axis: int, start: int, length: int) -> np.ndarray:
    index = [slice(None)] * a.ndim
    index[axis] = slice(start, start + length)
    return a[tuple(index)]


def _resample_axis(c: np.ndarray, axis: int, starts, n_out: int, order: int, mode: str) -> np.ndarray:
    """Resample ``c`` along ``axis``: output ``len(starts)·m + r`` is the spline of ``c`` at position
    ``m + starts[r]`` (m < n_out; positions in ``c``'s index space), boundary ``mode``."""
    n = c.shape[axis]
    phases = len(starts)
    taps = []
    for b in starts:
        first = np.floor(b)
        taps.append((int(first) - order // 2, spline_weights(float(b - first), order)))
    low = min(a for a, _ in taps)
    high = max(a for a, _ in taps) + order + n_out - 1
    pad_lo, pad_hi = max(0, -low), max(0, high - (n - 1))
    if pad_lo or pad_hi:
        # Edge ('nearest') or zero ('constant') padding: what the spline's taps see beyond the edge.
        c = np.take(c, np.clip(np.arange(-pad_lo, n + pad_hi), 0, n - 1), axis=axis)
        if mode == "constant":
            _take(c, axis, 0, pad_lo)[...] = 0.0
            _take(c, axis, pad_lo + n, pad_hi)[...] = 0.0
    shape = list(c.shape)
    shape[axis] = n_out * phases
    out = np.empty(shape)
    split = list(c.shape)
    split[axis: axis + 1] = [n_out, phases]
    view = out.reshape(split)
    for r, (a, w) in enumerate(taps):
        acc = w[0] * _take(c, axis, pad_lo + a, n_out)
        for j in range(1, order + 1):
            acc += w[j] * _take(c, axis, pad_lo + a + j, n_out)
        index = [slice(None)] * view.ndim
        index[axis + 1] = r
        view[tuple(index)] = acc
    if mode == "constant":
        # Positions outside [0, n − 1] get the constant (0), as scipy.ndimage's 'constant' mode does.
        positions = (np.arange(n_out)[:, None] + np.asarray(starts, np.float64)[None, :]).ravel()
        outside = (positions < 0) | (positions > n - 1)
        if outside.any():
            index = [slice(None)] * out.ndim
            index[axis] = outside
            out[tuple(index)] = 0.0
    return out


def _check(order: int, mode: str, prefilter: bool) -> None:
    if order not in ORDERS:
        raise ValueError(f"spline order must be one of {ORDERS}, got {order}")
    if mode not in ("nearest", "constant") or (mode == "constant" and order > 1):
        raise ValueError(f"mode must be 'nearest' (or 'constant' with order <= 1), got {mode!r} with order {order}")


def coefficients(image: np.ndarray, order: int = 3) -> tuple[np.ndarray, int]:
    """The spline coefficients scipy.ndimage interpolates in 'nearest' mode with its prefilter, and the
    padding they carry: ``NPAD`` edge pixels each side for order > 1 (none for order 1)."""
    image = np.asarray(image, np.float64)
    if order <= 1:
        return image, 0
    return ndi.spline_filter(np.pad(image, NPAD, mode="edge"), order, output=np.float64, mode="nearest"), NPAD


def shift(image: np.ndarray, shift, order: int = 3, mode: str = "nearest", prefilter: bool = True) -> np.ndarray:
    """``ndi.shift(image, shift, order=order, mode=mode, prefilter=prefilter)`` of a 2-D image, per axis:
    ``out(x) = image(x − shift)``. ``mode``: 'nearest', or 'constant' (cval 0) for order ≤ 1."""
    _check(order, mode, prefilter)
    image = np.asarray(image, np.float64)
    dy, dx = (float(v) for v in np.asarray(shift, np.float64))
    c, pad = coefficients(image, order) if prefilter else (image, 0)
    h, w = image.shape
    out = _resample_axis(c, 1, [pad - dx], w, order, mode)
    return _resample_axis(out, 0, [pad - dy], h, order, mode)


def upscale(image: np.ndarray, factor: int, offset, order: int = 3) -> np.ndarray:
    """``ndi.affine_transform(image, [1/factor, 1/factor], offset=offset, output_shape=(factor·h, factor·w),
    order=order, mode='nearest')`` of a 2-D image, per axis: output pixel p samples input position
    p / factor + offset."""
    _check(order, "nearest", True)
    image = np.asarray(image, np.float64)
    c, pad = coefficients(image, order)
    offset = np.broadcast_to(np.asarray(offset, np.float64), (2,))
    h, w = image.shape
    out = _resample_axis(c, 1, [r / factor + offset[1] + pad for r in range(factor)], w, order, "nearest")
    return _resample_axis(out, 0, [r / factor + offset[0] + pad for r in range(factor)], h, order, "nearest")


def bicubic_upscale(image: np.ndarray, factor: int = 3) -> np.ndarray:
    """``skimage.transform.rescale(image, factor, order=3, mode='edge', anti_aliasing=False)`` of a 2-D
    float image (the official baseline's upscale; ``probav.models.baseline.bicubic_upscale``), per axis.
    Like skimage, the result is clipped to the input's range."""
    image = np.asarray(image, np.float64)
    out = upscale(image, factor, -(factor - 1) / (2 * factor), order=3)
    return np.clip(out, image.min(), image.max(), out=out)
