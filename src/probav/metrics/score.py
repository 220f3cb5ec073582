"""The official PROBA-V score: shifted, brightness-bias-corrected, clear-pixel cPSNR.

For an SR image, the 378×378 centre (3-pixel border cropped) is compared with each of the 49
378×378 windows of HR whose upper-left corner is (u, v), u, v ∈ {0…6}; on the clear pixels of SM
the brightness bias b = mean(HR − SR) is removed and cMSE = mean((HR − SR − b)²). The scene's
cPSNR is the best of the 49, −10·log10(cMSE), on images scaled to [0, 1] by 65535. Its score is
norm / cPSNR (lower is better; the official baseline scores 1).

How it is computed fast (see ``probav.bench.scoring`` for timings against the 49-window loop of
``probav.metrics.reference``): compiled loops (numba) over one scene at a time, in two stages.

1. Estimate all 49 cMSEs at once. With h = HR − h0 and s = SR_crop − s0 (constants removed: cMSE
   ignores them, and centring keeps rounding small), each window needs n = Σ M, Σ M·h, Σ M·h²,
   Σ M·s, Σ M·s² and Σ M·h·s, where M is the window of SM.
   - Σ M, Σ M·h and Σ M·h² are window sums: one pass over HR gives each row's sums over the 7
     column ranges, and the 7 row ranges add those up.
   - Σ M·h·s is a correlation at 7×7 offsets: 7 M multiply-adds, done directly as float32 dot
     products of a row of s with rows of M·h (378 terms, in cache), summed in float64. At this
     size that takes about a third of the time of the two float32 FFTs of 384×384 that it
     replaced, and its error has a simple rigorous bound.
   - Σ M·s and Σ M·s² are Σ s and Σ s² minus the cloudy pixels' share, summed along each cloudy
     run of an SM row: the run's sum at the next offset gains one pixel and loses one, so a run
     costs its length plus a few reads per offset (nothing at all for a clear SM).
   Everything but the correlation is summed in float64 from float64 values; for a uint16 pair
   those sums are of integers below 2**53, hence exact.
2. Make it exact. Each estimate comes with a bound on its error (the float32 dot products'
   γ₃₇₈·‖M·h‖·‖s‖ dominates). The windows are recomputed exactly in order of their lower bound
   (estimate − bound) until the next lower bound exceeds the best exact value: no window left can
   then win. For a uint16 pair the recompute is in integers (float64 sums of integers below 2**53,
   then Python integers), so a perfect prediction gets cMSE exactly 0; for float images it is the
   float64 formula. Usually one window is recomputed.

The result equals the 49-window loop to rounding (well below 1e-9 dB): the estimate only has to
rank the windows, and a near-tie that it cannot separate is settled by the exact recompute. The
loops release the GIL, so a batch is scored on ``workers`` threads, a scene per task.

Decision for cMSE = 0 (SR = HR plus a constant on the clear pixels): cPSNR is +inf and the score
is 0, which is what the official formula gives.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from probav.scene import HR_SIZE

BORDER = 3
SHIFTS = 2 * BORDER + 1  # 7 positions per axis, 49 in all
CROP = HR_SIZE - 2 * BORDER  # 378
PEAK = 65535.0

# Compiled once per input dtype and cached on disk. Reassociation lets the sums vectorise (the
# error bounds below hold for any order of summation); no nnan/ninf, since huge float inputs
# overflow float32 to inf, which the exact stage then handles.
_JIT = {"nogil": True, "cache": True, "fastmath": {"reassoc", "contract"}}

# Error bounds (unit roundoffs u32 = 2**-24, u64 = 2**-53). A float32 dot product of 378 terms
# errs by at most γ₃₇₈ = 378·u32 / (1 − 378·u32) of Σ|terms|; rounding float inputs to float32 adds
# 2·u32, the float64 sum of the rows' dot products another 378·u64. Doubled for safety.
_U32, _U64 = 2.0 ** -24, 2.0 ** -53
_CROSS_ERROR = 2 * (CROP * _U32 / (1 - CROP * _U32) + 3 * _U32 + CROP * _U64)
# Any float64 sum over at most one image (384² terms, and the cloudy share taken off), doubled.
_SUM_ERROR = 2 * 2 * HR_SIZE * HR_SIZE * _U64


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


def _compiled_input(image: np.ndarray) -> np.ndarray:
    """A C-contiguous array of a dtype the loops are compiled for: uint16, float32 or float64
    (float16 widens exactly; longer floats are rounded to float64, the precision of the score)."""
    if image.dtype not in (np.uint16, np.float32, np.float64, np.bool_):
        image = image.astype(np.float32 if image.dtype == np.float16 else np.float64)
    return np.ascontiguousarray(image)


# --- Stage 1: the estimate -----------------------------------------------------------------------

@numba.njit(**_JIT)
def _centres(sr, hr, sm, whole_h, whole_s):
    """Centring constants from every 7th pixel: h0 the mean of the clear HR pixels, s0 that of
    the SR crop; whole numbers for a uint16 image, so that its centred values stay integers."""
    sum_h, n_h, sum_s, n_s = 0.0, 0, 0.0, 0
    for r in range(0, HR_SIZE, 7):
        for c in range(0, HR_SIZE, 7):
            if sm[r, c]:
                sum_h += hr[r, c]
                n_h += 1
    for r in range(BORDER, HR_SIZE - BORDER, 7):
        for c in range(BORDER, HR_SIZE - BORDER, 7):
            sum_s += sr[r, c]
            n_s += 1
    h0, s0 = sum_h / max(n_h, 1), sum_s / n_s
    return (np.rint(h0) if whole_h else h0), (np.rint(s0) if whole_s else s0)


@numba.njit(**_JIT)
def _range_sums(values, sums):
    """Fills sums[v] = Σ values[v : v + 378] for v = 0…6 (``values``: 384 float64) and returns
    Σ values: everything minus what range v leaves out (the first v and the last 6 − v values), so
    that only the edges are read twice."""
    every = 0.0
    for k in range(HR_SIZE):
        every += values[k]
    for v in range(SHIFTS):
        left_out = 0.0
        for k in range(v):
            left_out += values[k]
        for k in range(v + CROP, HR_SIZE):
            left_out += values[k]
        sums[v] = every - left_out
    return every


@numba.njit(**_JIT)
def _hr_pass(hr, sm, h0, unit, mh):
    """Fills mh = M·h, h = (HR − h0)·unit, in float32. Returns the window sums of M, M·h and M·h²,
    (3, 7, 7) by corner (u, v), and the same three over the whole image (3,), all float64."""
    values = np.empty((3, HR_SIZE))  # one row of M, M·h, M·h²
    rows = np.empty((3, SHIFTS, HR_SIZE))  # each row's sums over the 7 column ranges [v, v + 378)
    sums, totals = np.empty(SHIFTS), np.zeros(3)
    for r in range(HR_SIZE):
        for c in range(HR_SIZE):
            clear = sm[r, c]
            h = (hr[r, c] - h0) * unit if clear else 0.0
            mh[r, c] = h
            values[0, c] = 1.0 if clear else 0.0
            values[1, c] = h
            values[2, c] = h * h
        for q in range(3):
            totals[q] += _range_sums(values[q], sums)
            for v in range(SHIFTS):
                rows[q, v, r] = sums[v]
    boxes = np.empty((3, SHIFTS, SHIFTS))
    for q in range(3):
        for v in range(SHIFTS):  # then the 7 row ranges [u, u + 378) of each column range
            _range_sums(rows[q, v], sums)
            for u in range(SHIFTS):
                boxes[q, u, v] = sums[u]
    return boxes, totals


@numba.njit(**_JIT)
def _centred_sr(sr, i, j, s0, unit):
    """s[i, j] = (SR_crop[i, j] − s0)·unit, in float64."""
    return (sr[i + BORDER, j + BORDER] - s0) * unit


@numba.njit(**_JIT)
def _sr_pass(sr, s0, unit, s):
    """Fills s = (SR_crop − s0)·unit in float32; returns Σ s and Σ s² (float64)."""
    t1, t2 = 0.0, 0.0
    for i in range(CROP):
        for j in range(CROP):
            x = _centred_sr(sr, i, j, s0, unit)
            s[i, j] = x
            t1 += x
            t2 += x * x
    return t1, t2


@numba.njit(**_JIT)
def _cross(s, mh):
    """Σ M·h·s for the 49 windows: (7, 7). For each row of s and each u, the 7 dot products (one
    per v) run in one loop over the row (each value of s read once), in float32; rows are summed
    in float64."""
    out = np.zeros((SHIFTS, SHIFTS))
    for i in range(CROP):
        row = s[i]
        for u in range(SHIFTS):
            other = mh[i + u]
            a0 = a1 = a2 = a3 = a4 = a5 = a6 = np.float32(0.0)
            for j in range(CROP):
                x = row[j]
                a0 += x * other[j]
                a1 += x * other[j + 1]
                a2 += x * other[j + 2]
                a3 += x * other[j + 3]
                a4 += x * other[j + 4]
                a5 += x * other[j + 5]
                a6 += x * other[j + 6]
            out[u, 0] += a0
            out[u, 1] += a1
            out[u, 2] += a2
            out[u, 3] += a3
            out[u, 4] += a4
            out[u, 5] += a5
            out[u, 6] += a6
    return out


_EIGHT_CLEAR = np.uint64(0x0101010101010101)  # 8 bytes of True


@numba.njit(**_JIT)
def _cloudy_share(sr, sm, words, s0, unit):
    """Σ s and Σ s² over the cloudy pixels of each window, (2, 7, 7), float64. ``words``: SM's
    rows as uint64 words of 8 pixels, so that clear stretches are skipped 8 pixels at a time.

    Window (u, v) pairs HR pixel (r, c) with s[r − u, c − v]. For a cloudy run [a, b) of HR row r
    and a given u, the sum over s[r − u, a − v … b − v − 1] (within 0…377) at v is the one at
    v − 1 plus the pixel that enters on the left, minus the one that leaves on the right.
    """
    out = np.zeros((2, SHIFTS, SHIFTS))
    for r in range(HR_SIZE):
        b = 0
        while b < HR_SIZE:
            if b % 8 == 0 and words[r, b // 8] == _EIGHT_CLEAR:
                b += 8
                continue
            if sm[r, b]:
                b += 1
                continue
            a = b
            while b < HR_SIZE and not sm[r, b]:
                b += 1
            for u in range(SHIFTS):
                i = r - u
                if i < 0 or i >= CROP:
                    continue
                t1, t2 = 0.0, 0.0
                for j in range(a, min(b, CROP)):
                    x = _centred_sr(sr, i, j, s0, unit)
                    t1 += x
                    t2 += x * x
                out[0, u, 0] += t1
                out[1, u, 0] += t2
                for v in range(1, SHIFTS):
                    j = a - v
                    if 0 <= j < CROP:
                        x = _centred_sr(sr, i, j, s0, unit)
                        t1 += x
                        t2 += x * x
                    j = b - v
                    if 0 <= j < CROP:
                        x = _centred_sr(sr, i, j, s0, unit)
                        t1 -= x
                        t2 -= x * x
                    out[0, u, v] += t1
                    out[1, u, v] += t2
    return out


@numba.njit(**_JIT)
def _estimate_scene(sr, hr, sm, h0, s0, hr_unit, sr_unit):
    """cmse, lin = Σ M·(h − s), count and bound, each (7, 7), for one scene in working units."""
    mh = np.empty((HR_SIZE, HR_SIZE), np.float32)
    s = np.empty((CROP, CROP), np.float32)
    boxes, totals = _hr_pass(hr, sm, h0, hr_unit, mh)
    sum_s, sum_s2 = _sr_pass(sr, s0, sr_unit, s)
    cross = _cross(s, mh)
    share = np.zeros((2, SHIFTS, SHIFTS))
    if totals[0] < HR_SIZE * HR_SIZE:
        share = _cloudy_share(sr, sm, sm.view(np.uint64), s0, sr_unit)
    norm_mh, norm_s = np.sqrt(totals[2]), np.sqrt(sum_s2)
    # Error of Σ M·h·s (float32 dot products), and of the float64 sums (zero for a uint16 pair).
    err_cross = _CROSS_ERROR * norm_mh * norm_s
    err_lin = _SUM_ERROR * (np.sqrt(totals[0]) * norm_mh + CROP * norm_s)  # Σ|M·h| ≤ √n·‖M·h‖
    err_squares = _SUM_ERROR * (totals[2] + 2 * sum_s2)
    cmse, lin, bound = np.empty((3, SHIFTS, SHIFTS))
    count = boxes[0]
    for u in range(SHIFTS):
        for v in range(SHIFTS):
            n = count[u, v]
            lin[u, v] = boxes[1, u, v] - (sum_s - share[0, u, v])
            if n == 0:
                cmse[u, v], bound[u, v] = np.inf, 0.0
                continue
            squares = boxes[2, u, v] + (sum_s2 - share[1, u, v])
            mean_part = lin[u, v] * lin[u, v] / n
            cmse[u, v] = (squares - 2 * cross[u, v] - mean_part) / n
            # (plus the rounding of this formula's few float64 operations)
            err = (2 * err_cross + err_squares + (2 * abs(lin[u, v]) + err_lin) * err_lin / n
                   + 8 * _U64 * (squares + 2 * norm_mh * norm_s + mean_part))
            bound[u, v] = err / n
    return cmse, lin, count, bound


def _units(sr: np.ndarray, hr: np.ndarray) -> tuple[bool, float, float]:
    """(integer, hr_unit, sr_unit): raw values for a uint16 pair, else everything in [0, 1]."""
    integer = sr.dtype == np.uint16 and hr.dtype == np.uint16
    hr_unit = 1.0 if integer or hr.dtype != np.uint16 else 1.0 / PEAK
    sr_unit = 1.0 if integer or sr.dtype != np.uint16 else 1.0 / PEAK
    return integer, hr_unit, sr_unit


def _estimate_one(sr: np.ndarray, hr: np.ndarray, sm: np.ndarray):
    """Estimates of one scene's 49 windows: cmse, lin, count, bound (each (7, 7)) and the offset
    h0 − s0 (see ``_estimate``). Inputs already through ``_compiled_input``."""
    _, hr_unit, sr_unit = _units(sr, hr)
    h0, s0 = _centres(sr, hr, sm, hr.dtype == np.uint16, sr.dtype == np.uint16)
    cmse, lin, count, bound = _estimate_scene(sr, hr, sm, h0, s0, hr_unit, sr_unit)
    return cmse, lin, count, bound, h0 * hr_unit - s0 * sr_unit


def _estimate(sr: np.ndarray, hr: np.ndarray, sm: np.ndarray):
    """Estimates of the 49 windows of a batch of scenes, in working units.

    Returns cmse, lin = Σ M·(h − s), count, bound (each (N, 7, 7)), the unit scale (65535 for a
    uint16 pair, else 1) and the offset h0 − s0 (N,), so that the bias in [0, 1] units is
    (lin / count + offset) / scale. |cmse − exact| ≤ bound for every window with count > 0.
    """
    sr, hr, sm = (_compiled_input(a) for a in (sr, hr, sm))
    scale = PEAK if _units(sr, hr)[0] else 1.0
    scenes = [_estimate_one(sr[i], hr[i], sm[i]) for i in range(len(sr))]
    if not scenes:
        empty = np.empty((0, SHIFTS, SHIFTS))
        return empty, empty, empty, empty, scale, np.empty(0)
    cmse, lin, count, bound = (np.stack([scene[k] for scene in scenes]) for k in range(4))
    return cmse, lin, count, bound, scale, np.array([scene[4] for scene in scenes])


def shift_cmse(sr: np.ndarray, hr: np.ndarray, sm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cMSE, bias and clear-pixel count for all 49 shifts of a batch: three (N, 7, 7) arrays.

    ``sr``, ``hr``: (N, 384, 384) uint16 or float in [0, 1]; ``sm``: (N, 384, 384) bool.
    Windows with no clear pixel get cMSE = +inf and bias NaN. These are the fast estimates (error
    about 1e-6 of the images' variance, never more than the bound used internally);
    ``shifted_cpsnr_batch`` settles the winner exactly.
    """
    sr, hr, sm = np.asarray(sr), np.asarray(hr), np.asarray(sm)
    _check(sr, hr, sm, batched=True)
    cmse, lin, count, _, scale, offset = _estimate(sr, hr, sm)
    with np.errstate(invalid="ignore", divide="ignore"):
        bias = np.where(count > 0, lin / np.maximum(count, 1) + offset[:, None, None], np.nan) / scale
    return np.maximum(cmse, 0.0) / scale ** 2, bias, count


# --- Stage 2: the exact recompute ----------------------------------------------------------------

@numba.njit(**_JIT)
def _window_integer_sums(sr, hr, sm, u, v):
    """n, Σd and Σd² of a uint16 pair's window (d = HR − SR on its clear pixels), as float64:
    |d| < 2**16 and Σd² < 378²·2**32 < 2**53, so every sum is exact in any order."""
    n, s1, s2 = 0.0, 0.0, 0.0
    for i in range(CROP):
        for j in range(CROP):
            clear = np.float64(sm[i + u, j + v])  # 0 or 1: a product, not a branch, so it vectorises
            d = (np.float64(hr[i + u, j + v]) - np.float64(sr[i + BORDER, j + BORDER])) * clear
            n += clear
            s1 += d
            s2 += d * d
    return n, s1, s2


@numba.njit(**_JIT)
def _window_float_cmse(sr, hr, sm, u, v, sr_div, hr_div):
    """cMSE of a window in float64 ([0, 1] units: a uint16 image is divided by 65535), two-pass."""
    n, total = 0, 0.0
    for i in range(CROP):
        for j in range(CROP):
            if sm[i + u, j + v]:
                total += hr[i + u, j + v] / hr_div - sr[i + BORDER, j + BORDER] / sr_div
                n += 1
    if n == 0:
        return np.inf
    mean, acc = total / n, 0.0
    for i in range(CROP):
        for j in range(CROP):
            if sm[i + u, j + v]:
                e = hr[i + u, j + v] / hr_div - sr[i + BORDER, j + BORDER] / sr_div - mean
                acc += e * e
    return acc / n


def _exact_window_cmse(sr: np.ndarray, hr: np.ndarray, sm: np.ndarray, u: int, v: int) -> float:
    """cMSE of one window (one scene, [0, 1] units), exact in integer arithmetic for a uint16 pair."""
    sr, hr, sm = (_compiled_input(a) for a in (sr, hr, sm))
    if sr.dtype == np.uint16 and hr.dtype == np.uint16:
        n, s1, s2 = (int(x) for x in _window_integer_sums(sr, hr, sm, u, v))
        if n == 0:
            return float("inf")
        return (n * s2 - s1 * s1) / (n * n) / (PEAK * PEAK)
    sr_div = PEAK if sr.dtype == np.uint16 else 1.0
    hr_div = PEAK if hr.dtype == np.uint16 else 1.0
    return float(_window_float_cmse(sr, hr, sm, u, v, sr_div, hr_div))


def cmse_to_cpsnr(cmse: np.ndarray | float) -> np.ndarray | float:
    with np.errstate(divide="ignore"):
        return -10.0 * np.log10(cmse)


def _best_window(sr: np.ndarray, hr: np.ndarray, sm: np.ndarray) -> tuple[float, int]:
    """Exact best cMSE of one scene and its window index (0…48)."""
    cmse, _, count, bound, _ = _estimate_one(sr, hr, sm)
    with np.errstate(invalid="ignore"):
        lower = (cmse - bound).ravel()
    # A window whose estimate is not finite (values too large for float32) is checked exactly.
    lower[~np.isfinite(lower) & (count.ravel() > 0)] = -np.inf
    best, where = np.inf, -1
    for k in np.argsort(lower, kind="stable"):
        # Every window left has exact cMSE ≥ its lower bound ≥ this one: none can win.
        if lower[k] > best or best == 0.0:
            break
        exact = _exact_window_cmse(sr, hr, sm, *divmod(int(k), SHIFTS))
        if exact < best:
            best, where = exact, int(k)
    return best, where


def shifted_cpsnr_batch(sr: np.ndarray, hr: np.ndarray, sm: np.ndarray,
                        return_shift: bool = False, workers: int | None = None):
    """Official cPSNR (dB) of each scene of a batch, shape (N,); optionally the best shifts too.

    A shift (du, dv) ∈ {−3…3}² means SR[y, x] matches HR[y + du, x + dv]. ``workers``: threads,
    a scene per task (default: all cores; the compiled loops release the GIL).
    """
    sr, hr, sm = np.asarray(sr), np.asarray(hr), np.asarray(sm)
    _check(sr, hr, sm, batched=True)
    # Every HR pixel lies in some window, so only an SM without any clear pixel leaves all 49 empty.
    empty = ~sm.any(axis=(1, 2))
    if empty.any():
        raise ValueError(f"SM has no clear pixel for scene(s) {np.flatnonzero(empty).tolist()}: "
                         "the score is undefined")
    sr, hr, sm = (_compiled_input(a) for a in (sr, hr, sm))
    workers = (os.cpu_count() or 1) if workers is None else max(int(workers), 1)

    def best_of(i: int) -> tuple[float, int]:
        return _best_window(sr[i], hr[i], sm[i])

    if workers > 1 and len(sr) > 1:
        with ThreadPoolExecutor(min(workers, len(sr))) as pool:
            results = list(pool.map(best_of, range(len(sr))))
    else:
        results = [best_of(i) for i in range(len(sr))]
    best = np.array([r[0] for r in results], np.float64)
    cpsnr = np.asarray(cmse_to_cpsnr(best), np.float64)
    if not return_shift:
        return cpsnr
    shifts = [(r[1] // SHIFTS - BORDER, r[1] % SHIFTS - BORDER) for r in results]
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
