"""The official score: hand-computed cases, its defining properties, the fast scorer against the
49-window oracle, and clear errors for bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from probav.metrics import score as S
from probav.metrics.reference import shifted_cpsnr_naive, window_cmse_naive
from probav.metrics.score import cmse_to_cpsnr, score, shift_cmse, shifted_cpsnr, shifted_cpsnr_batch

SIZE = 384
CROP = 378
N_CLEAR = CROP * CROP  # clear pixels of a window when SM is all clear


def smooth_field(rng: np.random.Generator, low: int = 2000, high: int = 12000) -> np.ndarray:
    """A smooth uint16 image with large variations, like a land scene."""
    field = ndimage.gaussian_filter(rng.normal(size=(SIZE, SIZE)), 3.0)
    field = (field - field.min()) / (field.max() - field.min())
    return (low + (high - low) * field).astype(np.uint16)


def clear_mask() -> np.ndarray:
    return np.ones((SIZE, SIZE), bool)


# --- hand-computed values ----------------------------------------------------------------------

def test_perfect_prediction_plus_constant_scores_zero():
    rng = np.random.default_rng(0)
    hr = smooth_field(rng)
    sr = hr + np.uint16(37)  # a brightness offset only: the bias removes it exactly
    cpsnr = shifted_cpsnr(sr, hr, clear_mask())
    # Decision: cMSE = 0 gives cPSNR = +inf and score 0 (what the official formula gives).
    assert cpsnr == math.inf
    assert score(cpsnr, 47.0) == 0.0
    # The float64 oracle leaves a rounding residue (about 1e-35) instead of 0: hundreds of dB.
    assert shifted_cpsnr_naive(sr, hr, clear_mask()) > 300
    cloudy = clear_mask()
    cloudy[50:120, 200:300] = False
    assert shifted_cpsnr(sr, hr, cloudy) == math.inf


def test_single_bright_pixel_by_hand():
    # HR all 0, SR all 0 except one pixel of the crop at 65535 (1.0 in [0, 1] units). Every
    # window compares n = 378² clear pixels where d = HR − SR is 0 except one d = −1:
    # bias b = −1/n, cMSE = (1/n)·Σ(d − b)² = (Σd² − n·b²)/n = (1 − 1/n)/n = (n − 1)/n².
    hr = np.zeros((SIZE, SIZE), np.uint16)
    sr = np.zeros((SIZE, SIZE), np.uint16)
    sr[100, 200] = 65535
    n = N_CLEAR
    expected = -10 * math.log10((n - 1) / n**2)  # 51.549… dB
    assert shifted_cpsnr(sr, hr, clear_mask()) == pytest.approx(expected, abs=1e-12)
    assert shifted_cpsnr_naive(sr, hr, clear_mask()) == pytest.approx(expected, abs=1e-12)


def test_two_clear_rows_by_hand():
    # SM clear on HR rows 100 and 101 only; every window holds both rows, 378 columns each:
    # n = 756. HR row 100 is 65535 (1.0) on even columns, 0 elsewhere; SR is 0. Any 378
    # consecutive columns hold 189 even ones, so d = 1 on 189 pixels, 0 on 567:
    # b = 189/756 = 1/4, cMSE = mean(d²) − b² = 1/4 − 1/16 = 3/16 → cPSNR = 10·log10(16/3).
    hr = np.zeros((SIZE, SIZE), np.uint16)
    hr[100, 0::2] = 65535
    sm = np.zeros((SIZE, SIZE), bool)
    sm[100:102] = True
    sr = np.zeros((SIZE, SIZE), np.uint16)
    expected = 10 * math.log10(16 / 3)
    assert shifted_cpsnr(sr, hr, sm) == pytest.approx(expected, abs=1e-12)
    cmse, bias, count = shift_cmse(sr[None], hr[None], sm[None])
    assert np.all(count == 756)
    np.testing.assert_allclose(cmse, 3 / 16, rtol=1e-6)
    np.testing.assert_allclose(bias, 1 / 4, rtol=1e-6)


def test_cmse_to_cpsnr_and_score():
    assert cmse_to_cpsnr(1e-5) == pytest.approx(50.0)
    assert cmse_to_cpsnr(0.0) == math.inf
    assert score(50.0, 45.0) == pytest.approx(0.9)
    np.testing.assert_allclose(score(np.array([50.0, np.inf]), np.array([45.0, 45.0])), [0.9, 0.0])
    for bad in (0.0, -1.0, np.nan, np.inf):
        with pytest.raises(ValueError):
            score(50.0, bad)


# --- the defining properties -------------------------------------------------------------------

def checkerboard(amplitude: int, shape=(SIZE + 12, SIZE + 12)) -> np.ndarray:
    rows, cols = np.indices(shape)
    return np.where((rows + cols) % 2 == 0, amplitude, -amplitude)


@pytest.mark.parametrize("du,dv", [(0, 0), (1, -2), (-3, -3), (3, 3), (-3, 2), (2, 0), (0, -1)])
def test_known_shift_is_found(du, dv):
    # One large smooth scene F; HR is its centre, SR the same view moved by (du, dv) plus a ±50
    # checkerboard. At the true shift HR − SR is exactly the checkerboard on an even-sized
    # window (half +50, half −50: bias 0, cMSE = 50²) whatever the shift, so the best cPSNR is
    # the unshifted case's, 20·log10(65535/50); any other shift mixes in F's variations.
    rng = np.random.default_rng(du * 7 + dv + 100)
    big = ndimage.gaussian_filter(rng.normal(size=(SIZE + 12, SIZE + 12)), 3.0)
    big = 2000 + 8000 * (big - big.min()) / (big.max() - big.min())
    scene = big.astype(np.int64)
    hr = scene[6:6 + SIZE, 6:6 + SIZE].astype(np.uint16)
    seen = scene + checkerboard(50)
    sr = seen[6 + du:6 + du + SIZE, 6 + dv:6 + dv + SIZE].astype(np.uint16)
    cpsnr, shifts = shifted_cpsnr_batch(sr[None], hr[None], clear_mask()[None], return_shift=True)
    assert shifts == [(du, dv)]
    assert cpsnr[0] == pytest.approx(20 * math.log10(65535 / 50), abs=1e-9)
    assert cpsnr[0] == pytest.approx(shifted_cpsnr_naive(sr, hr, clear_mask()), abs=1e-9)


def test_bias_is_removed():
    rng = np.random.default_rng(1)
    hr = smooth_field(rng)
    sr = np.clip(hr.astype(np.int64) + rng.integers(-300, 300, hr.shape), 0, 60000).astype(np.uint16)
    sm = clear_mask()
    sm[:40, :90] = False
    base = shifted_cpsnr(sr, hr, sm)
    assert shifted_cpsnr(sr + np.uint16(1234), hr, sm) == base  # exact: integer arithmetic
    unit = sr / 65535.0
    assert shifted_cpsnr(unit + 0.01, hr, sm) == pytest.approx(base, abs=1e-9)
    assert shifted_cpsnr(unit - 0.2, hr, sm) == pytest.approx(base, abs=1e-9)


def test_only_clear_pixels_count():
    rng = np.random.default_rng(2)
    hr = smooth_field(rng)
    sr = np.clip(hr.astype(np.int64) + rng.integers(-200, 200, hr.shape), 0, 60000).astype(np.uint16)
    sm = clear_mask()
    sm[100:150, 200:260] = False  # a 50×60 cloud
    base = shifted_cpsnr(sr, hr, sm)
    # SR pixel (a + 3, b + 3) meets HR pixels (a + u, b + v), u, v ∈ 0…6: those SR pixels whose
    # 7×7 HR neighbourhood is all cloudy never count, nor does SR's 3-pixel border.
    changed = sr.copy()
    changed[100 + 3:150 - 6 + 3, 200 + 3:260 - 6 + 3] = rng.integers(0, 65535, (44, 54))
    changed[:3] = 65535
    changed[:, -3:] = 0
    assert shifted_cpsnr(changed, hr, sm) == base
    assert shifted_cpsnr_naive(changed, hr, sm) == pytest.approx(base, abs=1e-9)
    # HR under the clouds does not count either.
    hr_changed = hr.copy()
    hr_changed[100:150, 200:260] = 28000
    assert shifted_cpsnr(sr, hr_changed, sm) == base
    # ...while one SR pixel that some clear HR pixel meets does.
    changed[150 + 3, 260 + 3] ^= np.uint16(4095)
    assert shifted_cpsnr(changed, hr, sm) != base


def test_peak_is_65535():
    rng = np.random.default_rng(3)
    hr = smooth_field(rng)
    sr = np.clip(hr.astype(np.int64) + rng.integers(-500, 500, hr.shape), 0, 65535).astype(np.uint16)
    sm = clear_mask()
    sm[300:, :50] = False
    reference = shifted_cpsnr(sr, hr, sm)
    assert reference == pytest.approx(shifted_cpsnr_naive(sr, hr, sm), abs=1e-9)
    for sr_x, hr_x in ((sr / 65535.0, hr / 65535.0), (sr / 65535.0, hr), (sr, hr / 65535.0)):
        assert shifted_cpsnr(sr_x, hr_x, sm) == pytest.approx(reference, abs=1e-9)
    # float32 input: the same up to float32's rounding of the pixel values
    single = shifted_cpsnr((sr / 65535.0).astype(np.float32), (hr / 65535.0).astype(np.float32), sm)
    assert single == pytest.approx(reference, abs=1e-4)
    # A 14-bit peak (16383) would have scored 20·log10(65535/16383) ≈ 12.04 dB lower.
    as_14_bit = shifted_cpsnr(sr / 16383.0, hr / 16383.0, sm)
    assert reference - as_14_bit == pytest.approx(20 * math.log10(65535 / 16383), abs=1e-9)


# --- the fast scorer against the oracle --------------------------------------------------------

def random_mask(rng: np.random.Generator, kind: str) -> np.ndarray:
    sm = clear_mask()
    if kind == "blobs":  # blocky clouds drawn at LR resolution, like PROBA-V's
        blobs = ndimage.gaussian_filter(rng.normal(size=(128, 128)), rng.uniform(1, 6))
        cloudy = blobs > np.quantile(blobs, 1 - rng.uniform(0.02, 0.4))
        sm = ~np.kron(cloudy, np.ones((3, 3), bool))
    elif kind == "salt":  # fragmented: many short cloudy runs
        sm = rng.random((SIZE, SIZE)) > rng.uniform(0.05, 0.5)
    elif kind == "few":  # a handful of clear pixels anywhere
        sm = np.zeros((SIZE, SIZE), bool)
        sm.flat[rng.choice(SIZE * SIZE, rng.integers(1, 6), replace=False)] = True
    elif kind == "corner":  # clear pixels only near a corner: most windows have none
        sm = np.zeros((SIZE, SIZE), bool)
        r, c = rng.integers(0, 6, 2)
        sm[r:r + rng.integers(1, 4), c:c + rng.integers(1, 4)] = True
    elif kind == "edges":  # clouds along the borders, where windows differ most
        sm[:rng.integers(1, 10)] = False
        sm[:, -rng.integers(1, 10):] = False
        sm[rng.integers(300, 384):, :rng.integers(1, 200)] = False
    elif kind == "rect":
        r, c = rng.integers(0, 300, 2)
        sm[r:r + rng.integers(1, 84), c:c + rng.integers(1, 84)] = False
    return sm


def random_case(rng: np.random.Generator, i: int):
    kinds = ["clear", "blobs", "salt", "few", "corner", "edges", "rect"]
    kind = kinds[i % len(kinds)]
    sm = random_mask(rng, kind)
    style = rng.integers(3)
    if style == 0:  # white noise, values anywhere in 0…65535
        hr = rng.integers(0, 65536, (SIZE, SIZE)).astype(np.uint16)
        sr = rng.integers(0, 65536, (SIZE, SIZE)).astype(np.uint16)
    else:  # a smooth scene, SR shifted, blurred, noisy
        hr = smooth_field(rng, 0, int(rng.integers(1000, 60000)))
        moved = np.roll(hr.astype(np.float64), tuple(rng.integers(-3, 4, 2)), axis=(0, 1))
        blurred = ndimage.gaussian_filter(moved, rng.uniform(0.3, 2))
        sr = np.clip(blurred + rng.normal(0, rng.uniform(1, 500), moved.shape), 0, 65535).astype(np.uint16)
    if style == 2:  # float input, in [0, 1] or a little outside
        sr = sr / 65535.0 + rng.normal(0, 0.01)
        hr = hr / 65535.0 if rng.random() < 0.5 else hr
    return sr, hr, sm, kind


def test_fast_matches_naive_on_many_random_cases():
    rng = np.random.default_rng(2024)
    cases = [random_case(rng, i) for i in range(56)]
    fast = [shifted_cpsnr(sr, hr, sm) for sr, hr, sm, _ in cases]
    for (sr, hr, sm, kind), value in zip(cases, fast):
        expected = shifted_cpsnr_naive(sr, hr, sm)
        assert not math.isnan(value)
        if math.isinf(expected):
            assert value == expected, kind
        else:
            assert value == pytest.approx(expected, abs=1e-9), kind


def test_fast_matches_naive_in_batches():
    # Several scenes, so that they are scored on several threads (a scene per task).
    rng = np.random.default_rng(7)
    cases = [c for c in (random_case(rng, i) for i in range(30))
             if c[0].dtype == np.uint16 and c[1].dtype == np.uint16][:11]
    assert len(cases) > 2
    sr, hr, sm = (np.stack([c[k] for c in cases]) for k in range(3))
    batch, shifts = shifted_cpsnr_batch(sr, hr, sm, return_shift=True)
    assert batch.shape == (len(cases),) and len(shifts) == len(cases)
    np.testing.assert_array_equal(batch, shifted_cpsnr_batch(sr, hr, sm, workers=1))
    np.testing.assert_array_equal(batch, [shifted_cpsnr(*scene) for scene in zip(sr, hr, sm)])
    np.testing.assert_allclose(batch, [shifted_cpsnr_naive(*scene) for scene in zip(sr, hr, sm)],
                               rtol=0, atol=1e-9)


def test_threads_match_one_thread_on_float_and_mixed_batches():
    # With several threads the scenes are scored side by side: the same values and shifts as one
    # thread, for float and mixed uint16/float batches too.
    rng = np.random.default_rng(12)
    scenes = []
    for i in range(5):
        hr = smooth_field(rng, 0, 50000)
        moved = np.roll(hr.astype(np.float64), (i % 3 - 1, 2 - i % 4), axis=(0, 1))
        moved = ndimage.gaussian_filter(moved, 1.0)
        sr = np.clip(moved + rng.normal(0, 80, moved.shape), 0, 65535).astype(np.uint16)
        scenes.append((sr, hr, random_mask(rng, ("clear", "blobs", "salt", "edges", "rect")[i])))
    sr, hr, sm = (np.stack([c[k] for c in scenes]) for k in range(3))
    for sr_x, hr_x in ((sr, hr), (sr / 65535.0, hr / 65535.0), (sr / 65535.0, hr), (sr, hr / 65535.0)):
        threaded, shifts = shifted_cpsnr_batch(sr_x, hr_x, sm, return_shift=True, workers=2)
        alone, alone_shifts = shifted_cpsnr_batch(sr_x, hr_x, sm, return_shift=True, workers=1)
        np.testing.assert_array_equal(threaded, alone)
        assert shifts == alone_shifts
        np.testing.assert_allclose(threaded, [shifted_cpsnr_naive(*scene) for scene in zip(sr_x, hr_x, sm)],
                                   rtol=0, atol=1e-9)


def test_exact_recompute_is_exact_for_uint16():
    # The uint16 recompute forms the differences in float32 and sums them in float64: the same
    # value as Python-integer arithmetic on every window, for clear, cloudy and extreme
    # (white-noise 0…65535) scenes, and exactly 0 for a perfect prediction plus a constant.
    rng = np.random.default_rng(13)
    hr = smooth_field(rng, 0, 60000)
    noisy = np.roll(hr, 1, axis=0).astype(np.int64) + rng.integers(-300, 300, hr.shape)
    sr = np.clip(noisy, 0, 65535).astype(np.uint16)
    noise_hr = rng.integers(0, 65536, (SIZE, SIZE)).astype(np.uint16)
    noise_sr = rng.integers(0, 65536, (SIZE, SIZE)).astype(np.uint16)
    for kind in ("clear", "blobs", "salt", "few"):
        sm = random_mask(rng, kind)
        for sr_x, hr_x in ((sr, hr), (noise_sr, noise_hr)):
            for u, v in ((0, 0), (3, 3), (6, 2), (1, 6)):
                clear = sm[u:u + CROP, v:v + CROP]
                if not clear.any():
                    continue
                d = (hr_x[u:u + CROP, v:v + CROP].astype(np.int64) - sr_x[3:-3, 3:-3])[clear]
                n, s1, s2 = len(d), int(d.sum()), int((d * d).sum())
                expected = (n * s2 - s1 * s1) / (n * n) / 65535.0**2
                assert S._exact_window_cmse(sr_x, hr_x, sm, u, v) == expected, (kind, u, v)
        assert S._exact_window_cmse(hr + np.uint16(37), hr, sm, 3, 3) == 0.0


def test_exact_ties_between_windows():
    # HR constant along rows: all 7 column shifts of a row shift are exactly as good.
    rng = np.random.default_rng(4)
    column = rng.integers(0, 60000, SIZE).astype(np.uint16)
    hr = np.repeat(column[:, None], SIZE, axis=1)
    sr = np.roll(hr, 2, axis=0) + np.uint16(3)
    sr[5::7, 11::13] += np.uint16(500)
    value, shifts = shifted_cpsnr_batch(sr[None], hr[None], clear_mask()[None], return_shift=True)
    assert value[0] == pytest.approx(shifted_cpsnr_naive(sr, hr, clear_mask()), abs=1e-9)
    assert shifts[0][0] == -2


def test_shift_cmse_estimates_every_window():
    rng = np.random.default_rng(5)
    for i in range(4):
        sr, hr, sm, kind = random_case(rng, i * 2 + 1)
        cmse, bias, count = shift_cmse(sr[None], hr[None], sm[None])
        naive = window_cmse_naive(sr, hr, sm)
        finite = np.isfinite(naive)
        np.testing.assert_array_equal(np.isfinite(cmse[0]), finite)
        np.testing.assert_array_equal(count[0] > 0, finite)
        # float32 estimates, within the bound the exact stage relies on...
        _, _, _, bound, scale, _ = S._estimate(sr[None], hr[None], sm[None])
        assert np.all(np.abs(cmse[0] - naive)[finite] <= bound[0][finite] / scale**2 + 1e-15), kind
        # ...which, with many clear pixels, is a tiny fraction of the images' variance
        if sm.sum() > 10_000:
            variance = np.var(hr / 65535.0 if hr.dtype == np.uint16 else hr)
            np.testing.assert_allclose(cmse[0][finite], naive[finite], rtol=0, atol=1e-6 * variance)


def test_estimates_stay_within_their_bound():
    # The exact stage relies on |estimate − exact| ≤ bound for every window: uint16 pairs (exact
    # integer recompute), float and mixed inputs (float64 recompute, far inside the bound).
    rng = np.random.default_rng(6)
    for i in range(21):
        sr, hr, sm, kind = random_case(rng, i)
        cmse, _, count, bound, scale, _ = S._estimate(sr[None], hr[None], sm[None])
        for u in range(7):
            for v in range(7):
                if count[0, u, v] == 0:
                    continue
                exact = S._exact_window_cmse(sr, hr, sm, u, v) * scale ** 2
                assert abs(cmse[0, u, v] - exact) <= bound[0, u, v], (kind, sr.dtype, hr.dtype, u, v)


def test_cloudy_share_equals_a_direct_sum():
    # Σ s and Σ s² over the cloudy pixels of each window, summed along cloudy runs (skipping clear
    # stretches 8 pixels at a time): equal to the direct masked sums, on masks whose runs start and
    # end anywhere (inside and across 8-pixel words, at the image's edges).
    rng = np.random.default_rng(14)
    sr = rng.integers(0, 65536, (SIZE, SIZE)).astype(np.uint16)
    s = sr[3:-3, 3:-3].astype(np.float64) - 30000
    for kind in ("blobs", "salt", "edges", "rect", "few"):
        sm = random_mask(rng, kind)
        share = S._cloudy_share(sr, sm, sm.view(np.uint64), 30000.0, 1.0)
        for u in range(7):
            for v in range(7):
                cloudy = ~sm[u:u + CROP, v:v + CROP]
                assert share[0, u, v] == s[cloudy].sum(), (kind, u, v)
                assert share[1, u, v] == (s[cloudy] ** 2).sum(), (kind, u, v)


def test_hr_window_sums_equal_direct_sums():
    # Σ M, Σ M·h and Σ M·h² over each of the 49 windows and over the whole image, from per-row range
    # sums: equal to direct masked sums (exactly, for integer values).
    rng = np.random.default_rng(16)
    hr = rng.integers(0, 65536, (SIZE, SIZE)).astype(np.uint16)
    h = hr.astype(np.float64) - 30000
    for kind in ("clear", "blobs", "salt", "edges"):
        sm = random_mask(rng, kind)
        mh = np.empty((SIZE, SIZE), np.float32)
        boxes, totals = S._hr_pass(hr, sm, 30000.0, 1.0, mh)
        masked = np.where(sm, h, 0.0)
        np.testing.assert_array_equal(mh, masked.astype(np.float32))
        for q, image in enumerate((sm.astype(np.float64), masked, masked ** 2)):
            assert totals[q] == image.sum(), (kind, q)
            for u in range(7):
                for v in range(7):
                    assert boxes[q, u, v] == image[u:u + CROP, v:v + CROP].sum(), (kind, q, u, v)


def test_any_layout_and_float_width_gives_the_same_score():
    # The compiled loops take C-contiguous uint16, float32 or float64 images: other layouts are
    # copied, float16 is widened (exactly), so the score does not depend on how the arrays are held.
    rng = np.random.default_rng(15)
    sr, hr, sm, _ = random_case(rng, 1)
    expected = shifted_cpsnr(sr, hr, sm)
    assert shifted_cpsnr(np.asfortranarray(sr), hr[::-1][::-1], np.asfortranarray(sm)) == expected
    wide = np.zeros((SIZE, 2 * SIZE), np.uint16)
    wide[:, ::2] = sr
    assert shifted_cpsnr(wide[:, ::2], hr, sm) == expected
    half = (sr / 65535.0).astype(np.float16)
    assert shifted_cpsnr(half, hr, sm) == shifted_cpsnr(half.astype(np.float32), hr, sm)


def test_bound_is_tight_enough_to_need_one_recompute():
    # On a realistic scene the bound is a small fraction of cMSE, so usually only the winning
    # window is recomputed exactly (this is what makes the scorer fast).
    rng = np.random.default_rng(8)
    hr = smooth_field(rng)
    noisy = np.roll(hr, 1, axis=1).astype(np.int64) + rng.integers(-100, 100, hr.shape)
    sr = np.clip(noisy, 0, 65535).astype(np.uint16)
    cmse, _, _, bound, _, _ = S._estimate(sr[None], hr[None], clear_mask()[None])
    lower = cmse - bound
    assert np.sum(lower <= cmse.min()) == 1


# --- bad input ---------------------------------------------------------------------------------

def good_scene():
    rng = np.random.default_rng(9)
    hr = smooth_field(rng)
    return hr.copy(), hr, clear_mask()


@pytest.mark.parametrize("shape", [(384, 383), (383, 384), (384,), (2, 384, 384)])
def test_wrong_shapes(shape):
    sr, hr, sm = good_scene()
    with pytest.raises(ValueError, match="shape"):
        shifted_cpsnr(np.zeros(shape, np.uint16), hr, sm)
    with pytest.raises(ValueError, match="shape"):
        shifted_cpsnr(sr, hr, np.ones(shape, bool))


def test_batch_shapes_must_agree():
    sr, hr, sm = good_scene()
    with pytest.raises(ValueError, match="differ"):
        shifted_cpsnr_batch(np.stack([sr, sr]), hr[None], sm[None])
    with pytest.raises(ValueError, match="shape"):
        shifted_cpsnr_batch(sr, hr, sm)  # one scene where a batch is expected


def test_wrong_dtypes():
    sr, hr, sm = good_scene()
    with pytest.raises(TypeError, match="sr"):
        shifted_cpsnr(sr.astype(np.int32), hr, sm)
    with pytest.raises(TypeError, match="hr"):
        shifted_cpsnr(sr, hr.astype(np.int64), sm)
    with pytest.raises(TypeError, match="sm"):
        shifted_cpsnr(sr, hr, sm.astype(np.float64))
    with pytest.raises(TypeError, match="sm"):
        shifted_cpsnr(sr, hr, sm.astype(np.uint8))


def test_no_clear_pixel_is_an_error():
    sr, hr, sm = good_scene()
    with pytest.raises(ValueError, match="no clear pixel"):
        shifted_cpsnr(sr, hr, np.zeros_like(sm))
    # The scene is named by its place in the whole batch, not in its block.
    batch_sm = np.stack([sm] * 9 + [np.zeros_like(sm)])
    with pytest.raises(ValueError, match=r"scene\(s\) \[9\]"):
        shifted_cpsnr_batch(np.stack([sr] * 10), np.stack([hr] * 10), batch_sm)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_an_error(bad):
    sr, hr, sm = good_scene()
    sr_f, hr_f = sr / 65535.0, hr / 65535.0
    sr_f[10, 10] = bad
    with pytest.raises(ValueError, match="sr contains NaN"):
        shifted_cpsnr(sr_f, hr, sm)
    hr_f[200, 300] = bad
    with pytest.raises(ValueError, match="hr contains NaN"):
        shifted_cpsnr(sr / 65535.0, hr_f, sm)


def test_huge_float_values_are_scored_not_nan():
    # Too large for the float32 estimates: every window is then checked exactly.
    sr, hr, sm = good_scene()
    big = sr / 65535.0 * 1e30
    value = shifted_cpsnr(big, hr, sm)
    assert value == pytest.approx(shifted_cpsnr_naive(big, hr, sm), abs=1e-9)


def test_empty_batch():
    empty = np.zeros((0, SIZE, SIZE))
    assert shifted_cpsnr_batch(empty.astype(np.uint16), empty.astype(np.uint16), empty.astype(bool)).shape == (0,)


def test_benchmark_reports_timings_and_agreement():
    from probav.bench.scoring import benchmark_scorer

    result = benchmark_scorer(n_scenes=2, repeats=1, seed=1)
    for key in ("fast_ms_per_scene", "fast_1thread_ms_per_scene", "naive_ms_per_scene", "organisers_ms_per_scene",
                "ratio", "ratio_1thread", "ratio_organisers", "ratio_organisers_1thread"):
        assert result[key] > 0
    assert result["ratio"] == pytest.approx(result["naive_ms_per_scene"] / result["fast_ms_per_scene"])
    assert result["ratio_organisers"] == pytest.approx(result["organisers_ms_per_scene"] / result["fast_ms_per_scene"])
    assert set(result["spread"]["fast"]) == {"min", "median", "max"}
    assert result["max_abs_diff_db"] < 1e-9 and result["max_abs_score_diff"] < 1e-12
    with pytest.raises(ValueError):
        benchmark_scorer(n_scenes=0)
