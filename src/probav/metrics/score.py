"""The official PROBA-V score: shifted, brightness-bias-corrected, clear-pixel cPSNR.

For an SR image, the 378×378 centre (3-pixel border cropped) is compared with each of the 49
378×378 windows of HR whose upper-left corner is (u, v), u, v ∈ {0…6}; on the clear pixels of SM
the brightness bias b = mean(HR − SR) is removed and cMSE = mean((HR − SR − b)²). The scene's
cPSNR is the best of the 49, −10·log10(cMSE), on images scaled to [0, 1] by 65535. Its score is
norm / cPSNR (lower is better; the official baseline scores 1).

How it is computed fast (see ``probav.bench.scoring`` for timings against the 49-window loop of
``probav.metrics.reference``), in two stages:

1. Estimate all 49 cMSEs at once. With h = HR − h0 and s = SR_crop − s0 (constants removed: cMSE
   ignores them, and centring keeps rounding small), each window needs n = Σ M, Σ M·h, Σ M·h²,
   Σ M·s, Σ M·s² and Σ M·h·s, where M is the window of SM. The first three are window sums
   (the totals minus the few rows and columns a window leaves out). Σ M·h·s is a
   cross-correlation, done with float32 real FFTs and evaluated only at its 7×7 valid offsets
   (two small matrix products with cached DFT matrices instead of a full inverse FFT).
   Σ M·s and Σ M·s² are Σ s and Σ s² minus the cloudy pixels' share: that share is one masked
   sum for one window, and moving to a neighbouring window changes it only along the edges of
   the clouds, so the other 48 cost a few reads per edge pixel (nothing at all for a clear SM).
   A fragmented, salt-and-pepper SM gets two more FFT correlations instead. For a uint16 image
   h0 and s0 are whole numbers, so h and s are exact in float32 (values below 2**24).
2. Make it exact. Each estimate comes with a bound on its float32 error (a normwise bound for
   FFT correlations with a wide safety factor). The windows are recomputed exactly in order of
   their lower bound (estimate − bound) until the next lower bound exceeds the best exact value:
   no window left can then win. For uint16 images the recompute is in integers (float64 sums of
   integer values below 2**53, then Python integers), so a perfect prediction gets cMSE exactly
   0 (the differences are formed in float32, where they are exact, rather than by a slower
   mixed uint16 → float64 subtraction); for float images it is the float64 formula. Usually one
   window is recomputed.

The result equals the 49-window loop to rounding (well below 1e-9 dB): the FFT stage only has to
rank the windows, and a near-tie that it cannot separate is settled by the exact recompute.

Each scene goes through three stages: ``_prepare`` (centring, masking, sums of squares),
``_fourier`` (the FFTs and the correlation spectrum) and ``_finish`` (window sums, cloud edges,
estimates and bounds), then the exact recompute. With more than one thread they run as a
pipeline: a worker thread runs ``_fourier`` of the next scene (one long call that releases the
GIL, on workers − 1 FFT threads) while the calling thread prepares and finishes the others. The
FFTs are about half of the work and the rest is many short numpy calls, which contend for the
GIL when several threads run them (blocks of scenes on a thread pool scaled worse). Large BLAS
calls are avoided: OpenBLAS's own threads stall for milliseconds when the other cores are busy,
as they are on a shared machine.

Decision for cMSE = 0 (SR = HR plus a constant on the clear pixels): cPSNR is +inf and the score
is 0, which is what the official formula gives.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.fft

from probav.scene import HR_SIZE

BORDER = 3
SHIFTS = 2 * BORDER + 1  # 7 positions per axis, 49 in all
CROP = HR_SIZE - 2 * BORDER  # 378
PEAK = 65535.0

# Scenes per block of work: bounds memory (about 5 MB per scene), keeps a block's buffers in
# cache, and is the unit of the pipeline (1 measured as fast as 2 and faster than 4: the
# first and last blocks do not overlap, and a scene's buffers stay closer to the core).
_BLOCK = 1
# A scene whose cloud edges would take more reads than this (42 per horizontal edge pixel, 6 per
# vertical one) gets Σ M·s and Σ M·s² from two extra FFT correlations instead: past this point
# (a fragmented, salt-and-pepper mask) the FFTs are cheaper.
_MAX_EDGE_READS = 200_000
# Safety factor of the float32 error bound. A normwise analysis of the FFT correlation (forward
# FFTs, product, 193-term float32 contraction, float32 row sums) gives about 600·eps; observed
# errors are a few eps. A larger factor only costs extra exact recomputes.
_BOUND = 1024 * float(np.finfo(np.float32).eps)


def _check(sr: np.ndarray, hr: np.ndarray, sm: np.ndarray, batched: bool) -> None:
    ndim = 3 if batched else 2
    what = "(N, 384, 384)" if batched else "(384, 384)"
    for name, image in (("sr", sr), ("hr", hr), ("sm", sm)):
        if image.ndim != ndim or image.shape[-2:] != (HR_SIZE, HR_SIZE):
            raise ValueError(f"{name} must have shape {what}, got {image.shape}")
    if not (sr.shape == hr.shape == sm.shape):
        raise ValueError(f"sr, hr and sm shapes differ: {sr.shape}, {hr.shape}, {sm.shape}")
    for name, image in (("sr", sr), ("hr", hr)):
        if image.dtype != np.uint16 and image.dtype.kind != "f":
            raise TypeError(f"{name} must be uint16 (raw PROBA-V values) or float in [0, 1], got {image.dtype}")
        if image.dtype.kind == "f" and not np.isfinite(image).all():
            raise ValueError(f"{name} contains NaN or infinite values")
    if sm.dtype != bool:
        raise TypeError(f"sm must be a bool mask (true = clear), got {sm.dtype}")


# --- The 7×7 valid offsets of an FFT correlation, as two small matrix products -----------------
# For a half spectrum P (384×193) of a real correlation c, c[u, v] = Re(E1 · P · E2)[u, v] / 384²,
# with E1[u, k] = e^{2πi·u·k/384} and E2[l, v] = w_l·e^{2πi·v·l/384} (w = 2 for the columns whose
# mirror image is missing from the half spectrum, else 1). Built once, in real arithmetic:
# P viewed as interleaved float32 (re, im) pairs times _E2 gives [Re(P·E2) | Im(P·E2)].
def _dft_matrices() -> tuple[np.ndarray, np.ndarray]:
    n, half = HR_SIZE, HR_SIZE // 2 + 1
    weights = np.full(half, 2.0)
    weights[0] = weights[-1] = 1.0
    e2 = np.exp(2j * np.pi * np.outer(np.arange(half), np.arange(SHIFTS)) / n) * weights[:, None]
    right = np.empty((2 * half, 2 * SHIFTS), np.float32)
    right[0::2, :SHIFTS], right[1::2, :SHIFTS] = e2.real, -e2.imag
    right[0::2, SHIFTS:], right[1::2, SHIFTS:] = e2.imag, e2.real
    e1 = np.exp(2j * np.pi * np.outer(np.arange(SHIFTS), np.arange(n)) / n) / (n * n)
    left = np.concatenate([e1.real, -e1.imag], axis=1)  # (7, 768) float64
    return right, left


_E2, _E1 = _dft_matrices()


def _valid_offsets(spectra: np.ndarray) -> np.ndarray:
    """(k, 384, 193) complex64 correlation spectra -> their (k, 7, 7) values at offsets 0…6."""
    k = len(spectra)
    # In slices of 48 rows: OpenBLAS runs products below 2**18 multiply-adds on one thread, and
    # its threads stall for milliseconds when the other cores are busy (shared machines).
    rows = spectra.view(np.float32).reshape(k, HR_SIZE // 48, 48, -1)
    g = rows @ _E2  # (k, 8, 48, 14): Re | Im of P·E2
    g = g.reshape(k, HR_SIZE, 2, SHIFTS).transpose(0, 2, 1, 3).reshape(k, 2 * HR_SIZE, SHIFTS)
    return _E1 @ g.astype(np.float64)


# _BEFORE[u, r] = 1 where row r < u (of the first 6) is left out of window u; _AFTER[u, r] = 1
# where row 378 + r of the last 6 is (r ≥ u). The same holds for columns and v. _LEFT_OUT joins
# them over the 12 edge lines (rows or columns) _EDGE_LINES that some window leaves out.
_BEFORE = np.tril(np.ones((SHIFTS, SHIFTS - 1)), -1)
_AFTER = np.triu(np.ones((SHIFTS, SHIFTS - 1)))
_LEFT_OUT = np.hstack([_BEFORE, _AFTER])  # (7, 12)
_EDGE_LINES = np.r_[0:SHIFTS - 1, CROP:HR_SIZE]


def _box_sums(total: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Sums of the 49 CROP×CROP windows of images (…, 384, 384), from their totals (…), their
    edge rows (…, 12, 384) and their edge columns (…, 384, 12) (the first and last 6): (…, 7, 7).

    Window (u, v) is everything but the rows and columns it leaves out, whose corners were
    taken out twice (inclusion–exclusion), so only the image's edges are read.
    """
    out_rows = rows.sum(-1) @ _LEFT_OUT.T  # (…, 7): by u
    out_cols = cols.sum(-2) @ _LEFT_OUT.T  # (…, 7): by v
    corners = _LEFT_OUT @ rows[..., _EDGE_LINES] @ _LEFT_OUT.T
    return total[..., None, None] - out_rows[..., :, None] - out_cols[..., None, :] + corners


def _cloud_edges(clear: np.ndarray) -> tuple[np.ndarray, ...]:
    """Edges of the cloudy region Q = ~clear of one SM, as flat positions and signs, and Q.

    Horizontal: Q[r, c] − Q[r, c+1] (+1 at the last pixel of a cloudy run, −1 just before its
    first). Vertical: Q[r+1, c] − Q[r, c] (+1 just above a cloudy run down a column, −1 at its
    last pixel). Positions are r·384 + c, with r or c = −1 where the edge lies off the image.
    Q is returned too, padded by one pixel (386×386).
    """
    wide = HR_SIZE + 2
    cloudy = np.zeros((wide, wide), bool)
    np.logical_not(clear, out=cloudy[1:-1, 1:-1])
    # Compared along the flat padded image (faster than 2-D slices): a pair that spans two rows
    # or lies in the padding is two clear pixels, never an edge.
    flat = cloudy.ravel()
    at = np.flatnonzero(flat[:-1] != flat[1:])  # left pixel of each pair
    h_sign = np.where(flat[at], 1.0, -1.0)  # +1 where the left pixel is cloudy
    row, col = np.divmod(at, wide)
    at = np.flatnonzero(flat[:-wide] != flat[wide:])  # upper pixel of each pair
    v_sign = np.where(flat[at], -1.0, 1.0)  # +1 where the lower pixel is cloudy
    v_row, v_col = np.divmod(at, wide)
    # Padded (row, col) to r·384 + c of the image, r and c from −1
    return ((row - 1) * HR_SIZE + col - 1, h_sign, (v_row - 1) * HR_SIZE + v_col - 1, v_sign, cloudy)


def _cloud_sums(edges: tuple[np.ndarray, ...], padded_s: np.ndarray) -> np.ndarray:
    """Σ s and Σ s² over the cloudy pixels of each window: (2, 7, 7), float64.

    C(u, v) = Σ_{(r, c) cloudy} s[r−u, c−v] (s is 0 off its 378×378). C(0, 6) is one masked sum;
    moving from u to u+1 (at v = 6) changes it only along vertical cloud edges, and from v+1 to
    v only along horizontal ones, so the other 48 windows cost a few reads per edge pixel.
    ``padded_s`` is the FFT buffer (384×384, s then zeros): read through flat indices (negative
    ones count from the end, as in Python), every read off s lands on one of its zeros.
    """
    h_pos, h_sign, v_pos, v_sign, cloudy = edges
    flat = padded_s.ravel()
    out = np.empty((2, SHIFTS, SHIFTS))
    # s under the cloudy pixels of window (0, 6): HR rows 0…377, columns 6…383 (Q is padded by 1)
    under = cloudy[1:CROP + 1, 2 * BORDER + 1:HR_SIZE + 1]
    met = padded_s[:CROP, :CROP][under].astype(np.float64)
    out[:, 0, -1] = met.sum(), np.einsum("i,i->", met, met)
    # C(u+1, 6) − C(u, 6) = Σ_edges sign · s[r − u, c − 6], u = 0…5
    values = np.take(flat, _DOWN_READS[:, None] + v_pos).astype(np.float64)
    out[:, 1:, -1] = _signed_sums(v_sign, values)
    np.cumsum(out[:, :, -1], axis=1, out=out[:, :, -1])
    # C(u, v) − C(u, v+1) = Σ_edges sign · s[r − u, c − v], u = 0…6, v = 0…5
    values = np.take(flat, _ACROSS_READS[:, None] + h_pos).astype(np.float64)
    steps = _signed_sums(h_sign, values).reshape(2, SHIFTS, SHIFTS - 1)
    out[:, :, :-1] = out[:, :, -1:] + np.cumsum(steps[..., ::-1], axis=-1)[..., ::-1]
    return out


# Flat offsets of the reads of s per edge pixel (see _cloud_sums)
_DOWN_READS = -np.arange(SHIFTS - 1) * HR_SIZE - 2 * BORDER
_ACROSS_READS = (-np.arange(SHIFTS)[:, None] * HR_SIZE - np.arange(SHIFTS - 1)).ravel()


def _signed_sums(sign: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Σ_e sign_e·values[k, e] and Σ_e sign_e·values[k, e]², (2, K). The values are laid out
    (K, E) so that both sums run along contiguous memory (numpy's sums along the first axis of a
    narrow array are several times slower); no @: a threaded BLAS call stalls when the other cores
    are busy."""
    signed = values * sign
    return np.stack([signed.sum(-1), np.einsum("ke,ke->k", signed, values)])


def _centre(image: np.ndarray, constant: np.ndarray, unit: float, out: np.ndarray) -> None:
    """out = (image − constant) · unit in float32, per scene. A uint16 image is converted first
    (exact) and the whole-number constant taken off in float32 (exact too): two fast passes
    instead of one slow mixed-type one. A float image is centred in its own precision, then
    rounded, so the rounding stays relative to the centred values."""
    if image.dtype == np.uint16:
        np.copyto(out, image)
        out -= constant[:, None, None]
    else:
        np.subtract(image, constant[:, None, None], out=out)
    if unit != 1.0:
        out *= unit


@dataclass
class _Spectra:
    """A block's state between the stages of its estimate (``_prepare``, ``_fourier``, ``_finish``)."""
    scale: float  # 65535 for a uint16 pair, else 1
    offset: np.ndarray  # h0 − s0 in working units, (N,)
    buffer: np.ndarray  # (N, 2, 384, 384) float32: M·h, then s zero-padded
    spectra: np.ndarray | None  # (N, 2, 384, 193) complex64: spectrum of M·h·s correlation, conj(FFT s)
    total: np.ndarray  # (N, 3): Σ M, Σ M·h, Σ M·h²
    sum_s: np.ndarray | None  # (N,) Σ s
    sum_s2: np.ndarray | None  # (N,) Σ s²
    cloudy: np.ndarray  # indices of the scenes whose SM is not all clear


def _prepare(sr: np.ndarray, hr: np.ndarray, sm: np.ndarray) -> _Spectra:
    """First stage of the estimate of a block: the FFT input (centred, masked images) and the
    sums of squares."""
    integer = sr.dtype == np.uint16 and hr.dtype == np.uint16
    # Multipliers into working units: raw values for a uint16 pair, [0, 1] otherwise.
    hr_unit = 1.0 if integer or hr.dtype != np.uint16 else 1.0 / PEAK
    sr_unit = 1.0 if integer or sr.dtype != np.uint16 else 1.0 / PEAK
    n = len(sr)
    crop = (slice(None), slice(BORDER, -BORDER), slice(BORDER, -BORDER))
    # Centring constants from a sparse sample: any constant is exact, these keep values small.
    # Whole numbers for a uint16 image, so that image − constant is exact in float32 (< 2**24).
    sub_h, sub_m = hr[:, ::7, ::7], sm[:, ::7, ::7]
    picked = np.maximum(sub_m.sum((1, 2)), 1)
    h0 = np.where(sub_m, sub_h, 0).sum((1, 2), dtype=np.float64) / picked
    s0 = sr[crop][:, ::7, ::7].mean((1, 2), dtype=np.float64)
    h0 = (np.rint(h0) if hr.dtype == np.uint16 else h0).astype(np.float32)
    s0 = (np.rint(s0) if sr.dtype == np.uint16 else s0).astype(np.float32)
    offset = h0.astype(np.float64) * hr_unit - s0.astype(np.float64) * sr_unit

    # buffer[:, 0] = M·h, buffer[:, 1] = s zero-padded to 384×384 (the FFT size)
    buffer = np.empty((n, 2, HR_SIZE, HR_SIZE), np.float32)
    buffer[:, 1, CROP:] = 0
    buffer[:, 1, :CROP, CROP:] = 0
    mh, s = buffer[:, 0], buffer[:, 1, :CROP, :CROP]
    _centre(hr, h0, hr_unit, mh)
    _centre(sr[crop], s0, sr_unit, s)
    total = np.empty((n, 3))  # Σ M, Σ M·h, Σ M·h² over the whole HR
    total[:, 0] = [np.count_nonzero(m) for m in sm]
    cloudy = np.flatnonzero(total[:, 0] < HR_SIZE * HR_SIZE)
    for i in cloudy:
        np.multiply(mh[i], sm[i], out=mh[i])
    total[:, 2] = np.einsum("nij,nij->ni", mh, mh).sum(-1, dtype=np.float64)
    sum_s2 = np.einsum("nij,nij->ni", s, s).sum(-1, dtype=np.float64)
    return _Spectra(PEAK if integer else 1.0, offset, buffer, None, total, None, sum_s2, cloudy)


def _fourier(t: _Spectra, workers: int = 1) -> _Spectra:
    """Second stage: the FFTs and the spectrum of the correlation, in place in ``t``: a few long
    calls that release the GIL, so that a worker thread can run them while the main thread
    works on other blocks. (Only those: short calls on the worker would contend for the GIL.)"""
    t.spectra = spectra = scipy.fft.rfft2(t.buffer, workers=workers)
    # The spectra's first terms are the plain sums Σ M·h and Σ s (no pass over the images).
    t.total[:, 1] = spectra[:, 0, 0, 0].real
    t.sum_s = spectra[:, 1, 0, 0].real.astype(np.float64)
    np.conjugate(spectra[:, 1], out=spectra[:, 1])
    np.multiply(spectra[:, 0], spectra[:, 1], out=spectra[:, 0])
    return t


def _finish(sm: np.ndarray, t: _Spectra, workers: int = 1):
    """Third stage of the estimate: the window sums and the 49 estimates with their bounds.
    Many small numpy calls (they hold the GIL most of the time): the main thread's share."""
    n = len(sm)
    mh, s = t.buffer[:, 0], t.buffer[:, 1, :CROP, :CROP]
    # Window sums of M, M·h and M·h²: totals, then what each window leaves out (edge lines).
    rows = np.empty((n, 3, 2 * (SHIFTS - 1), HR_SIZE))
    rows[:, 0], rows[:, 1] = sm[:, _EDGE_LINES], mh[:, _EDGE_LINES]
    cols = np.empty((n, 3, HR_SIZE, 2 * (SHIFTS - 1)))
    cols[:, 0], cols[:, 1] = sm[:, :, _EDGE_LINES], mh[:, :, _EDGE_LINES]
    np.square(rows[:, 1], out=rows[:, 2])
    np.square(cols[:, 1], out=cols[:, 2])
    boxes = _box_sums(t.total, rows, cols)
    count, sum_h, sum_h2 = np.rint(boxes[:, 0]), boxes[:, 1], boxes[:, 2]
    cross = _valid_offsets(t.spectra[:, 0])  # Σ M·h·s

    # Σ M·s and Σ M·s²: everything minus the cloudy pixels' share, or FFTs for fragmented masks.
    sum_ms = np.repeat(t.sum_s, SHIFTS * SHIFTS).reshape(n, SHIFTS, SHIFTS)
    sum_ms2 = np.repeat(t.sum_s2, SHIFTS * SHIFTS).reshape(n, SHIFTS, SHIFTS)
    fragmented = []
    for i in t.cloudy:
        edges = _cloud_edges(sm[i])
        if (len(edges[0]) * SHIFTS + len(edges[2])) * (SHIFTS - 1) > _MAX_EDGE_READS:
            fragmented.append(i)
            continue
        cloudy_sums = _cloud_sums(edges, t.buffer[i, 1])
        sum_ms[i] -= cloudy_sums[0]
        sum_ms2[i] -= cloudy_sums[1]
    sq_norm_s2 = np.zeros(n)  # ‖s²‖² where Σ M·s² comes from an FFT
    if fragmented:
        extra = np.zeros((len(fragmented), 2, HR_SIZE, HR_SIZE), np.float32)
        extra[:, 0] = sm[fragmented]
        np.square(s[fragmented], out=extra[:, 1, :CROP, :CROP])
        sq_norm_s2[fragmented] = np.einsum("nij,nij->n", extra[:, 1], extra[:, 1], dtype=np.float64)
        extra = scipy.fft.rfft2(extra, workers=workers)
        np.conjugate(extra[:, 1], out=extra[:, 1])
        sum_ms[fragmented] = _valid_offsets(extra[:, 0] * t.spectra[fragmented, 1])
        sum_ms2[fragmented] = _valid_offsets(extra[:, 0] * extra[:, 1])

    safe = np.maximum(count, 1)
    lin = sum_h - sum_ms
    cmse = (sum_h2 - 2 * cross + sum_ms2) / safe - (lin / safe) ** 2
    cmse = np.where(count > 0, cmse, np.inf)

    # Error bound, from the norms of what was rounded, summed or correlated in float32.
    norm_mh = np.sqrt(t.total[:, 2])[:, None, None]
    norm_s = np.sqrt(t.sum_s2)[:, None, None]
    norm_m = np.sqrt(t.total[:, 0])[:, None, None]
    err_num = _BOUND * (norm_mh ** 2 + 2 * norm_mh * norm_s + norm_s ** 2
                        + norm_m * np.sqrt(sq_norm_s2)[:, None, None])
    # (Σ M·h and Σ s come from the FFT: their error grows with 384·‖x‖ rather than ‖M‖·‖x‖.)
    err_lin = _BOUND * (norm_m + HR_SIZE) * (norm_mh + norm_s)
    bound = err_num / safe + 2 * np.abs(lin) / safe * err_lin / safe + (err_lin / safe) ** 2
    return cmse, lin, count, bound, t.scale, t.offset


def _estimate(sr: np.ndarray, hr: np.ndarray, sm: np.ndarray, workers: int = 1):
    """Float32-FFT estimates of the 49 windows of a block of scenes, in working units.

    Returns cmse, lin = Σ M·(h − s), count, bound (each (N, 7, 7)), the unit scale (65535 for a
    uint16 pair, else 1) and the offset h0 − s0 (N,), so that the bias in [0, 1] units is
    (lin / count + offset) / scale. |cmse − exact| ≤ bound for every window with count > 0.
    """
    return _finish(sm, _fourier(_prepare(sr, hr, sm), workers), workers)


def shift_cmse(sr: np.ndarray, hr: np.ndarray, sm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cMSE, bias and clear-pixel count for all 49 shifts of a batch: three (N, 7, 7) arrays.

    ``sr``, ``hr``: (N, 384, 384) uint16 or float in [0, 1]; ``sm``: (N, 384, 384) bool.
    Windows with no clear pixel get cMSE = +inf and bias NaN. These are the fast float32
    estimates (error about 1e-6 of the images' variance, never more than the bound used
    internally); ``shifted_cpsnr_batch`` settles the winner exactly.
    """
    sr, hr, sm = np.asarray(sr), np.asarray(hr), np.asarray(sm)
    _check(sr, hr, sm, batched=True)
    cmse, lin, count, _, scale, offset = _estimate(sr, hr, sm)
    with np.errstate(invalid="ignore", divide="ignore"):
        bias = np.where(count > 0, lin / np.maximum(count, 1) + offset[:, None, None], np.nan) / scale
    return np.maximum(cmse, 0.0) / scale ** 2, bias, count


def _exact_window_cmse(sr: np.ndarray, hr: np.ndarray, sm: np.ndarray, u: int, v: int) -> float:
    """cMSE of one window (one scene), exact in integer arithmetic for a uint16 pair."""
    window = (slice(u, u + CROP), slice(v, v + CROP))
    centre = (slice(BORDER, BORDER + CROP), slice(BORDER, BORDER + CROP))
    clear = sm[window]
    n = int(np.count_nonzero(clear))
    partial = n < CROP * CROP
    if sr.dtype == np.uint16 and hr.dtype == np.uint16:
        # Differences are integers below 2**16 in magnitude, exact in float32 (formed there: a
        # mixed uint16 → float64 subtraction is several times slower), and Σd² < 378²·2**32 <
        # 2**53, so the float64 sums are exact in any order; n·Σd² − (Σd)² is then formed with
        # Python integers.
        diff = hr[window].astype(np.float32)
        diff -= sr[centre].astype(np.float32)
        if partial:
            np.multiply(diff, clear, out=diff)
        diff = diff.astype(np.float64).ravel()
        # einsum, not np.dot: a threaded BLAS dot stalls when the other cores are busy.
        s1, s2 = int(diff.sum()), int(np.einsum("i,i->", diff, diff))
        return (n * s2 - s1 * s1) / (n * n) / (PEAK * PEAK)
    hr_w, sr_c = hr[window], sr[centre]
    hr_w = hr_w / PEAK if hr.dtype == np.uint16 else hr_w.astype(np.float64, copy=False)
    sr_c = sr_c / PEAK if sr.dtype == np.uint16 else sr_c.astype(np.float64, copy=False)
    diff = hr_w - sr_c
    if partial:
        diff = diff[clear]
    diff = diff.ravel()
    diff = diff - diff.mean()
    return float(np.einsum("i,i->", diff, diff)) / n


def cmse_to_cpsnr(cmse: np.ndarray | float) -> np.ndarray | float:
    with np.errstate(divide="ignore"):
        return -10.0 * np.log10(cmse)


def _best_windows(sr: np.ndarray, hr: np.ndarray, sm: np.ndarray, t: _Spectra,
                  workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Exact best cMSE and its window index (0…48) for each scene of a block, from the first two
    stages of its estimate."""
    cmse, _, count, bound, _, _ = _finish(sm, t, workers)
    with np.errstate(invalid="ignore"):
        lower = (cmse - bound).reshape(len(sr), -1)
    # A window whose estimate is not finite (values too large for float32) is checked exactly.
    lower[~np.isfinite(lower) & (count.reshape(len(sr), -1) > 0)] = -np.inf
    best = np.empty(len(sr))
    where = np.empty(len(sr), np.intp)
    for i in range(len(sr)):
        best[i], where[i] = np.inf, -1
        for k in np.argsort(lower[i], kind="stable"):
            # Every window left has exact cMSE ≥ its lower bound ≥ this one: none can win.
            if lower[i, k] > best[i] or best[i] == 0.0:
                break
            exact = _exact_window_cmse(sr[i], hr[i], sm[i], *divmod(int(k), SHIFTS))
            if exact < best[i]:
                best[i], where[i] = exact, k
    return best, where


def shifted_cpsnr_batch(sr: np.ndarray, hr: np.ndarray, sm: np.ndarray,
                        return_shift: bool = False, workers: int | None = None):
    """Official cPSNR (dB) of each scene of a batch, shape (N,); optionally the best shifts too.

    A shift (du, dv) ∈ {−3…3}² means SR[y, x] matches HR[y + du, x + dv]. ``workers``: threads
    (default: all cores): a worker thread runs the FFT stage of the next block (on workers − 1
    FFT threads) while this one finishes the current block (numpy and FFTs release the GIL).
    """
    sr, hr, sm = np.asarray(sr), np.asarray(hr), np.asarray(sm)
    _check(sr, hr, sm, batched=True)
    # Every HR pixel lies in some window, so only an SM without any clear pixel leaves all 49 empty.
    empty = ~sm.any(axis=(1, 2))
    if empty.any():
        raise ValueError(f"SM has no clear pixel for scene(s) {np.flatnonzero(empty).tolist()}: "
                         "the score is undefined")
    blocks = [slice(i, i + _BLOCK) for i in range(0, len(sr), _BLOCK)]
    workers = (os.cpu_count() or 1) if workers is None else max(int(workers), 1)
    results = []
    if workers > 1 and len(blocks) > 1:
        # A pipeline rather than blocks on a pool: the FFT stage is a few long GIL-free calls, the
        # others many short ones; run side by side they overlap instead of contending for the GIL.
        def prepare(b: slice) -> _Spectra:
            return _prepare(sr[b], hr[b], sm[b])

        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(_fourier, prepare(blocks[0]), workers - 1)
            for b, following in zip(blocks, blocks[1:] + [None]):
                ready = None if following is None else prepare(following)  # while b's FFTs run
                t = pending.result()
                if ready is not None:
                    pending = pool.submit(_fourier, ready, workers - 1)
                results.append(_best_windows(sr[b], hr[b], sm[b], t))
    else:  # one block (or one thread): let the FFTs use the cores instead
        for b in blocks:
            t = _fourier(_prepare(sr[b], hr[b], sm[b]), workers)
            results.append(_best_windows(sr[b], hr[b], sm[b], t, workers))
    best = np.concatenate([r[0] for r in results]) if results else np.empty(0)
    where = np.concatenate([r[1] for r in results]) if results else np.empty(0, np.intp)
    cpsnr = np.asarray(cmse_to_cpsnr(best), np.float64)
    if not return_shift:
        return cpsnr
    shifts = [(int(k) // SHIFTS - BORDER, int(k) % SHIFTS - BORDER) for k in where]
    return cpsnr, shifts


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
