"""Classical multi-frame models (median, shift_and_add) and sub-pixel registration.

The scenes come from a small generator below (independent of probav.data.synthetic): an HR land-like
texture (multi-scale noise plus sharp-edged fields), LR frames = the HR shifted by a known sub-pixel
amount, blurred by a Gaussian PSF, box-downsampled ×3, with a per-frame gain/offset, noise, values
quantised to multiples of 16, and cloud blobs (bright, masked in the QM; optionally thin clouds the QM
misses). Frame 0 is unshifted: the HR is its truth.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from probav.metrics.score import score, shifted_cpsnr
from probav.models.baseline import baseline_sr
from probav.models.registry import load_model, model_class
from probav.registration import register, shift_image
from probav.scene import Scene, read_scene, to_uint16, to_unit

MARGIN = 12


def texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth random land-like texture around 0.05 (PROBA-V reflectance / 65535 scale)."""
    img = np.zeros((size, size))
    for sigma, amp in ((24, 1.0), (8, 0.6), (3, 0.35), (1.2, 0.15)):
        img += amp * sigma * ndi.gaussian_filter(rng.standard_normal((size, size)), sigma)
    # Fields: piecewise-constant Voronoi cells give sharp edges.
    points = rng.uniform(0, size, (40, 2))
    values = rng.normal(0, 1.0, 40)
    yy, xx = np.mgrid[:size, :size]
    nearest = np.argmin((yy[..., None] - points[:, 0]) ** 2 + (xx[..., None] - points[:, 1]) ** 2, axis=-1)
    img += values[nearest]
    img = (img - img.mean()) / img.std()
    return 0.05 + 0.012 * img


def make_scene(seed: int, frames: int = 10, noise: float = 6e-4, max_shift: float = 1.0, clouds: bool = True,
               cloud_every: int = 3, undetected: bool = False, change: bool = False, psf: float = 1.0, name: str = "imgset9000",
               band: str = "RED") -> Scene:
    """A synthetic scene with HR/SM, its baseline norm, and the true shifts in ``extra['shifts']``.

    ``shifts[k]`` is the registration shift of frame k onto frame 0 (probav.registration's convention:
    ``shift_image(frame_k, shift) ≈ frame_0``), in LR pixels. Clouds hit every ``cloud_every``-th frame.
    """
    rng = np.random.default_rng(seed)
    size = 384 + 2 * MARGIN
    hr_big = texture(rng, size)
    lr = np.empty((frames, 128, 128), np.uint16)
    qm = np.ones((frames, 128, 128), bool)
    yy, xx = np.mgrid[:128, :128]
    shifts = []
    for k in range(frames):
        s = rng.uniform(-3 * max_shift, 3 * max_shift, 2) if k else np.zeros(2)  # HR pixels
        shifts.append(-s / 3)
        moved = ndi.gaussian_filter(ndi.shift(hr_big, s, order=3, mode="nearest"), psf)
        low = moved[MARGIN:MARGIN + 384, MARGIN:MARGIN + 384].reshape(128, 3, 128, 3).mean(axis=(1, 3))
        low = rng.uniform(0.9, 1.1) * low + rng.uniform(-0.003, 0.003) + rng.normal(0, noise, low.shape)
        if clouds and k % cloud_every == 1 % cloud_every:
            cy, cx = rng.uniform(10, 118, 2)
            r = rng.uniform(6, 16)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
            low = low + 0.3 * blob
            qm[k] = blob < 0.05
        if undetected and k % 5 == 2:  # a thin cloud the QM misses
            cy, cx = rng.uniform(20, 108, 2)
            low = low + 0.02 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 128)
        if change and k % 4 == 3:  # land change in one frame, not masked
            cy, cx = rng.uniform(20, 108, 2)
            low = low + 0.01 * (((yy - cy) ** 2 + (xx - cx) ** 2) < 100)
        lr[k] = (np.clip(np.rint(low * 65535 / 16), 0, 4095) * 16).astype(np.uint16)
    hr = to_uint16(hr_big[MARGIN:MARGIN + 384, MARGIN:MARGIN + 384])
    sm = np.ones((384, 384), bool)
    sm[300:340, 20:70] = False
    scene = Scene(name=name, band=band, lr=lr, qm=qm, hr=hr, sm=sm)
    scene.norm = float(shifted_cpsnr(baseline_sr(lr, qm), hr, sm))
    scene.extra["shifts"] = np.array(shifts)
    return scene


def mean_score(model, scenes) -> tuple[float, float]:
    cpsnrs = [shifted_cpsnr(model.predict(s), s.hr, s.sm) for s in scenes]
    return float(np.mean([score(c, s.norm) for c, s in zip(cpsnrs, scenes)])), float(np.mean(cpsnrs))


@pytest.fixture(scope="module")
def synthetic_scenes() -> list[Scene]:
    """Shifted frames (up to ±1 LR px), clouds, and in two of them thin undetected clouds / land change."""
    return [make_scene(101, frames=10, change=True), make_scene(102, frames=12, undetected=True),
            make_scene(103, frames=9, undetected=True, change=True)]


# --- registration -------------------------------------------------------------------------------

def test_registration_recovers_known_shifts():
    scene = make_scene(7, frames=8, clouds=True)
    ref = to_unit(scene.lr[0])
    errors = []
    for k in range(1, scene.frames):
        result = register(ref, to_unit(scene.lr[k]), scene.qm[0], scene.qm[k])
        assert result.ok, result.reason
        errors.append(result.shift - scene.extra["shifts"][k])
        assert 0.8 < result.gain < 1.25
    errors = np.abs(errors)
    assert errors.max() < 0.05, errors  # LR pixels, through clouds, noise, gain/offset and aliasing


def test_registration_convention_and_exact_shift():
    rng = np.random.default_rng(0)
    ref = ndi.gaussian_filter(rng.standard_normal((128, 128)), 2.0)
    moving = shift_image(ref, (0.4, -0.7))  # moving(x) = ref(x − s): registering it back needs −s
    result = register(ref, moving)
    assert result.ok
    np.testing.assert_allclose(result.shift, (-0.4, 0.7), atol=0.02)
    np.testing.assert_allclose(shift_image(moving, result.shift)[10:-10, 10:-10], ref[10:-10, 10:-10], atol=0.05)


def test_registration_rejects_implausible():
    rng = np.random.default_rng(1)
    ref = ndi.gaussian_filter(rng.standard_normal((128, 128)), 2.0)
    unrelated = ndi.gaussian_filter(rng.standard_normal((128, 128)), 2.0)
    result = register(ref, unrelated)
    assert not result.ok and result.reason
    far = np.roll(ref, (6, -5), axis=(0, 1))  # a shift far beyond PROBA-V's geolocation error
    assert not register(ref, far, settings={"max_shift": 3.0}).ok
    cloudy = np.zeros((128, 128), bool)
    cloudy[:10] = True
    result = register(ref, ref, np.ones((128, 128), bool), cloudy)
    assert not result.ok and "clear" in result.reason


def test_coarse_shift_is_skimages_phase_correlation():
    """coarse_shift recomputes skimage's masked and upsampled phase correlations (real FFTs, the
    reference's spectra computed once): the same estimates as skimage's own."""
    from skimage.registration import phase_cross_correlation

    from probav.registration import _erode, _fill, coarse_shift, prepare_reference

    def skimage_coarse(reference, moving, ref_mask, mov_mask):  # coarse_shift as it was written on skimage
        integer = None
        if not (ref_mask.all() and mov_mask.all()):
            integer = np.asarray(phase_cross_correlation(reference, moving, reference_mask=ref_mask,
                                                         moving_mask=mov_mask, overlap_ratio=0.5)[0])
        fine = np.asarray(phase_cross_correlation(_fill(reference, ref_mask), _fill(moving, mov_mask),
                                                  upsample_factor=4, normalization=None)[0])
        return fine if integer is None or np.all(np.abs(fine - integer) <= 1.0) else integer

    scene = make_scene(11, frames=7, max_shift=2.0, cloud_every=2)
    lr = scene.lr / 65535.0
    prepared = prepare_reference(lr[0], scene.qm[0])
    for k in range(1, scene.frames):
        mask = _erode(scene.qm[k], 1)
        expected = skimage_coarse(lr[0], lr[k], prepared.mask, mask)
        np.testing.assert_array_equal(coarse_shift(lr[0], lr[k], prepared.mask, mask, prepared=prepared), expected)
        np.testing.assert_array_equal(coarse_shift(lr[0], lr[k], prepared.mask, mask), expected)


def test_registration_with_a_prepared_reference_is_the_same():
    from probav.registration import prepare_reference

    scene = make_scene(12, frames=5, cloud_every=2)
    lr = scene.lr / 65535.0
    prepared = prepare_reference(lr[0], scene.qm[0])
    for k in range(1, scene.frames):
        alone = register(lr[0], lr[k], scene.qm[0], scene.qm[k])
        shared = register(lr[0], lr[k], scene.qm[0], scene.qm[k], prepared=prepared)
        np.testing.assert_array_equal(alone.shift, shared.shift)
        assert {**vars(alone), "shift": None} == {**vars(shared), "shift": None}


def _numpy_refine_shift(ref, moving, mov_mask, initial, iterations=10, smooth_sigma=0.7, max_shift=3.0,
                        tolerance=5e-3):
    """refine_shift's Gauss–Newton loop as it was written in numpy (before its loops were compiled):
    (shift, offset, gain, converged, iterations run)."""
    from probav import resample
    from probav.registration import _erode, _fill, shift_mask

    coeffs, ref_valid = ref.smoothed(smooth_sigma)
    mov_s = ndi.gaussian_filter(_fill(moving, mov_mask), smooth_sigma)
    mov_valid = _erode(mov_mask, int(np.ceil(2 * smooth_sigma))) if not mov_mask.all() else mov_mask
    border = int(np.ceil(max_shift)) + 2
    inner = np.zeros(moving.shape, bool)
    inner[border:-border, border:-border] = True
    shift, weights = np.asarray(initial, np.float64).copy(), None
    for run in range(1, iterations + 1):
        warped = resample.shift(coeffs, -shift, order=3, mode="nearest", prefilter=False)
        valid = inner & mov_valid & shift_mask(ref_valid, -shift)
        gy, gx = np.gradient(warped)
        design = np.stack([np.ones(valid.sum()), warped[valid], gy[valid], gx[valid]], axis=1)
        w = np.ones(valid.sum()) if weights is None else weights[valid]
        offset, gain, *slope = np.linalg.solve(design.T @ (design * w[:, None]), design.T @ (w * mov_s[valid]))
        step = np.array(slope) / gain
        shift = shift + np.clip(step, -1.0, 1.0)
        residual = mov_s - offset - gain * warped
        scale = 1.4826 * np.median(np.abs(residual[valid] - np.median(residual[valid]))) + 1e-12
        weights = np.clip(1 - (residual / (4.685 * scale)) ** 2, 0, None) ** 2
        if np.abs(step).max() < tolerance:
            return shift, offset, gain, True, run
        if np.abs(shift).max() > max_shift + 1:
            break
    return shift, offset, gain, False, run


def test_compiled_refinement_is_the_numpy_loop():
    """refine_shift's compiled iterations follow the numpy loop they replace: same iterations, same
    convergence, shifts equal to rounding (only the normal equations' sums run in another order)."""
    from probav.registration import _erode, coarse_shift, prepare_reference, refine_shift

    for seed, clouds in ((21, True), (22, False), (23, True)):
        scene = make_scene(seed, frames=6, max_shift=2.0, clouds=clouds, cloud_every=2)
        lr = scene.lr / 65535.0
        prepared = prepare_reference(lr[0], scene.qm[0])
        for k in range(1, scene.frames):
            mask = _erode(scene.qm[k], 1)
            initial = coarse_shift(lr[0], lr[k], prepared.mask, mask, prepared=prepared)
            for start in (initial, initial + 0.4):  # from the coarse estimate, and from further away
                result = refine_shift(lr[0], lr[k], prepared.mask, mask, start, prepared=prepared)
                shift, offset, gain, converged, _ = _numpy_refine_shift(prepared, lr[k], mask, start)
                assert result.ok and (result.reason == "") == converged
                np.testing.assert_allclose(result.shift, shift, rtol=0, atol=1e-9)


def test_compiled_refinement_pieces_equal_numpy():
    """The warp, the common mask and the robust weights are numpy's to the bit; the normal
    equations to rounding."""
    from probav import resample
    from probav.registration import _common_valid, _normal_equations, _tukey_weights, _warp, shift_mask

    rng = np.random.default_rng(5)
    for trial in range(40):
        coeffs = rng.normal(size=(64, 80))
        shift = rng.uniform(-4, 4, 2) if trial % 4 else np.round(rng.uniform(-4, 4, 2))
        if trial == 0:
            shift = np.zeros(2)
        warped = _warp(coeffs, shift)
        np.testing.assert_array_equal(warped, resample.shift(coeffs, -shift, order=3, mode="nearest", prefilter=False))
        ref_valid = ndi.gaussian_filter(rng.normal(size=coeffs.shape), 3) > -0.1
        base = rng.uniform(size=coeffs.shape) > 0.05
        base[:5], base[-5:], base[:, :5], base[:, -5:] = False, False, False, False
        valid = _common_valid(base, ref_valid, shift)
        np.testing.assert_array_equal(valid, base & shift_mask(ref_valid, -shift))

        target, weights = rng.normal(size=coeffs.shape), rng.uniform(size=coeffs.shape)
        normal, rhs = _normal_equations(warped, valid, target, weights)
        gy, gx = np.gradient(warped)
        design = np.stack([np.ones(valid.sum()), warped[valid], gy[valid], gx[valid]], axis=1)
        w = weights[valid]
        size = np.abs(design).T @ (np.abs(design) * w[:, None])  # what rounding is relative to
        assert np.all(np.abs(normal - design.T @ (design * w[:, None])) <= 1e-13 * size)
        assert np.all(np.abs(rhs - design.T @ (w * target[valid])) <= 1e-13 * (np.abs(design).T @ np.abs(w * target[valid])))

        offset, gain = rng.normal(), rng.uniform(0.5, 2.0)
        residual = target - offset - gain * warped
        scale = 1.4826 * np.median(np.abs(residual[valid] - np.median(residual[valid]))) + 1e-12
        np.testing.assert_array_equal(_tukey_weights(target, warped, valid, offset, gain),
                                      np.clip(1 - (residual / (4.685 * scale)) ** 2, 0, None) ** 2)


def test_clear_median_is_numpys_nanmedian():
    from probav.registration import clear_median

    rng = np.random.default_rng(4)
    for t in (1, 2, 5, 12):
        stack = np.round(rng.normal(size=(t, 20, 30)), 1)  # ties
        stack[0, 0, :4] = np.nan
        masks = rng.uniform(size=stack.shape) < rng.uniform(0.2, 1.0)
        masks[:, 1, :3] = False  # no clear value: NaN
        with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
            expected = np.nanmedian(np.where(masks, stack, np.nan), axis=0)
        np.testing.assert_array_equal(clear_median(stack, masks), expected)


# --- models -------------------------------------------------------------------------------------

def test_median_beats_baseline_on_easy_scenes():
    """Nearly co-registered noisy frames, each with a cloud somewhere: the baseline keeps only the
    clearest frame, the clear median denoises with all of them."""
    scenes = [make_scene(200 + i, frames=12, noise=2e-3, max_shift=0.05, cloud_every=1) for i in range(2)]
    median, baseline = load_model("median"), load_model("baseline")
    median_score, median_cpsnr = mean_score(median, scenes)
    baseline_score, baseline_cpsnr = mean_score(baseline, scenes)
    print(f"easy synthetic: baseline {baseline_score:.4f} ({baseline_cpsnr:.2f} dB), "
          f"median {median_score:.4f} ({median_cpsnr:.2f} dB)")
    assert median_score < baseline_score - 0.01


def test_median_fallbacks():
    scene = make_scene(5, frames=9, clouds=False)
    scene.qm[:, :20, :20] = False  # no frame clear there: median of all frames
    scene.qm[3] = False
    out = load_model("median").predict(scene)
    assert out.dtype == np.uint16 and out.shape == (384, 384)
    assert abs(float(out[:60, :60].mean()) - float(scene.lr[:, :20, :20].mean())) < 0.1 * scene.lr.mean()


def test_shift_and_add_beats_baseline_on_synthetic(synthetic_scenes):
    sa, baseline = load_model("shift_and_add"), load_model("baseline")
    sa_score, sa_cpsnr = mean_score(sa, synthetic_scenes)
    base_score, base_cpsnr = mean_score(baseline, synthetic_scenes)
    median_score, median_cpsnr = mean_score(load_model("median"), synthetic_scenes)
    print(f"synthetic: baseline {base_score:.4f} ({base_cpsnr:.2f} dB), median {median_score:.4f} "
          f"({median_cpsnr:.2f} dB), shift_and_add {sa_score:.4f} ({sa_cpsnr:.2f} dB)")
    assert sa_score < 0.985
    assert sa_score < median_score


def test_shift_and_add_on_the_real_scene_in_both_tracks(probav_mini):
    """imgset0000 (the one real scene with an HR here; its PROBA-V-REF reference is LR004). Given the
    reference, the fusion beats that frame alone (54.17 dB); estimated by the hand-set rule (which does
    not find LR004: nothing visible singles it out), it hedges and still beats the baseline."""
    from probav.reference import with_track

    scene = read_scene(probav_mini / "train" / "RED" / "imgset0000", norm=52.352172662454414)
    base_cpsnr = shifted_cpsnr(load_model("baseline").predict(scene), scene.hr, scene.sm)
    assert base_cpsnr == pytest.approx(52.50, abs=0.02)
    model = load_model("shift_and_add")
    scene.reference = scene.frame_index(4)
    ref = shifted_cpsnr(model.predict(with_track(scene, "ref")), scene.hr, scene.sm)
    challenge = shifted_cpsnr(model.predict(with_track(scene, "challenge")), scene.hr, scene.sm)
    print(f"imgset0000: baseline {base_cpsnr:.3f} dB, shift_and_add ref track {ref:.3f} dB, challenge track "
          f"(hand-set rule) {challenge:.3f} dB")
    assert ref > 54.5
    assert challenge > base_cpsnr + 0.5 and score(challenge, scene.norm) < 0.99


@pytest.mark.parametrize("overrides", [
    {"fusion": "splat", "sharpen": 0.0, "max_frames": 0},
    {"consistency": 0, "candidates": 0.5, "outlier_sigma": 3.0},
])
def test_shift_and_add_variants_run(synthetic_scenes, overrides):
    scene = synthetic_scenes[0]
    model = load_model("shift_and_add", {"classical": {"shift_and_add": overrides}})
    out = model.predict(scene)
    assert out.dtype == np.uint16 and out.shape == (384, 384)
    assert shifted_cpsnr(out, scene.hr, scene.sm) > scene.norm - 1.0


def binned_scene(seed: int, frames: int = 10, change: float = 0.0) -> Scene:
    """Frame 0 is the HR's pass: the HR binned 3×3 (no blur, no gain) plus noise; the other frames are
    shifted, blurred, gain-changed copies of a changed landscape (``change``: relative land change of
    random blocks), so that frame 0 alone beats every other frame and fusing them can only hurt where
    they disagree with it."""
    rng = np.random.default_rng(seed)
    size = 384 + 2 * MARGIN
    hr_big = texture(rng, size)
    lr = np.empty((frames, 128, 128), np.uint16)
    for k in range(frames):
        land = hr_big.copy()
        if k:
            blocks = rng.normal(0, change, (size // 24 + 1, size // 24 + 1)).repeat(24, 0).repeat(24, 1)
            land = land * (1 + blocks[:size, :size])
            land = ndi.gaussian_filter(ndi.shift(land, rng.uniform(-2, 2, 2), order=3, mode="nearest"), 0.8)
        low = land[MARGIN:MARGIN + 384, MARGIN:MARGIN + 384].reshape(128, 3, 128, 3).mean(axis=(1, 3))
        if k:
            low = rng.uniform(0.95, 1.05) * low
        low = low + rng.normal(0, 3e-4, low.shape)
        lr[k] = (np.clip(np.rint(low * 65535 / 16), 0, 4095) * 16).astype(np.uint16)
    hr = to_uint16(hr_big[MARGIN:MARGIN + 384, MARGIN:MARGIN + 384])
    scene = Scene(name="imgset9100", band="RED", lr=lr, qm=np.ones((frames, 128, 128), bool), hr=hr,
                  sm=np.ones((384, 384), bool), reference=0)
    scene.norm = float(shifted_cpsnr(baseline_sr(lr, scene.qm), hr, scene.sm))
    return scene


def _with_weights(scene: Scene, weights) -> Scene:
    scene.reference_weights = np.asarray(weights, np.float64)
    scene.extra.clear()
    return scene


@pytest.mark.parametrize("change", [0.0, 0.05, 0.2])
def test_given_the_reference_never_worse_than_that_frame_alone(change):
    """The design rule of the reference-aware fusion: whatever the other frames hold (nothing new, land
    change, heavy land change), given the reference the fusion beats that frame alone, bicubic ×3."""
    from probav.models.baseline import bicubic_upscale

    scene = binned_scene(40 + int(100 * change), change=change)
    alone = shifted_cpsnr(to_uint16(bicubic_upscale(to_unit(scene.lr[0]))), scene.hr, scene.sm)
    fused = shifted_cpsnr(load_model("shift_and_add").predict(_with_weights(scene, np.eye(1, 10)[0])),
                          scene.hr, scene.sm)
    print(f"change {change}: frame alone {alone:.2f} dB, fused on it {fused:.2f} dB, baseline {scene.norm:.2f} dB")
    assert fused > alone + 0.1 and fused > scene.norm


def test_a_prediction_does_not_depend_on_what_ran_before_on_the_scene():
    """The reference estimator caches the scene's registration in ``scene.extra``; the fusion must use
    the same registration whether or not the estimator (the challenge track) ran first."""
    from probav.reference import ReferenceEstimator

    scene = binned_scene(62, change=0.05)
    model = load_model("shift_and_add")
    given = np.eye(1, 10, 2)[0]
    fresh = model.predict(_with_weights(scene, given))
    ReferenceEstimator.rule().probabilities(_with_weights(scene, given))  # caches the registration
    assert scene.extra, "the estimator no longer caches the registration: this test needs updating"
    scene.reference_weights = given
    np.testing.assert_array_equal(model.predict(scene), fresh)


def test_an_unsure_estimate_hedges_between_candidates():
    """With the weight split between the reference and a wrong frame, the output lies between the two
    committed outputs; with no knowledge at all (uniform weights) it still beats the baseline."""
    scene = binned_scene(61, change=0.05)
    model = load_model("shift_and_add")

    def cpsnr(weights):
        return shifted_cpsnr(model.predict(_with_weights(scene, weights)), scene.hr, scene.sm)

    right, wrong = cpsnr(np.eye(1, 10)[0]), cpsnr(np.eye(1, 10, 3)[0])
    half = cpsnr(0.5 * (np.eye(1, 10)[0] + np.eye(1, 10, 3)[0]))
    assert wrong < half < right
    assert cpsnr(np.ones(10)) > scene.norm


def test_reference_candidates_and_hedged_position():
    from probav.models.shift_and_add import hedged_position, reference_candidates

    np.testing.assert_array_equal(reference_candidates(np.array([0.1, 0.6, 0.3, 0.0]), 0.85), [1, 2])
    np.testing.assert_array_equal(reference_candidates(np.array([0.0, 1.0, 0.0]), 0.99), [1])
    # One candidate: exactly its position. Two a whole LR pixel apart (3 HR pixels: the score forgives
    # it) with the same sub-pixel phase: the bulk's whole pixel and that phase, not their mean.
    np.testing.assert_allclose(hedged_position(np.array([[0.2, -0.1]]), np.array([1.0])), [0.2, -0.1])
    shifts = np.array([[0.1, 0.0], [1.1, 0.0], [0.1, 0.0]])
    np.testing.assert_allclose(hedged_position(shifts, np.array([0.4, 0.2, 0.4])), [0.1, 0.0], atol=1e-9)


def test_shift_and_add_degenerate_scenes():
    scene = make_scene(9, frames=9, clouds=False)
    model = load_model("shift_and_add")
    scene.qm[:] = False  # nothing clear anywhere
    out = model.predict(scene)
    assert out.dtype == np.uint16 and out.shape == (384, 384) and out.std() > 0
    scene.qm[:] = False
    scene.qm[4] = True  # a single clear frame: it alone is used
    out = model.predict(scene)
    assert shifted_cpsnr(out, scene.hr, scene.sm) > 40


def test_shift_and_add_settings_are_checked(repo_root):
    from probav.params import load_params

    params = load_params(repo_root / "params.yaml")
    cls = model_class("shift_and_add")
    assert cls(params).settings["candidates"] == params["classical"]["shift_and_add"]["candidates"]
    with pytest.raises(ValueError, match="unknown"):
        cls({"classical": {"shift_and_add": {"refrence": "median"}}})
    with pytest.raises(ValueError, match="fusion"):
        cls({"classical": {"shift_and_add": {"fusion": "best"}}})
    with pytest.raises(ValueError, match="candidates"):
        cls({"classical": {"shift_and_add": {"candidates": 0.0}}})


def test_shift_and_add_beats_baseline_on_simulator(tmp_path):
    """Measured on the project's simulator too, when it is there (the tests above do not need it)."""
    synthetic = pytest.importorskip("probav.data.synthetic")
    from probav.scene import read_norm, scene_dirs

    params = {"seed": 2019, "synthetic": {"train_scenes_per_band": 2, "test_scenes_per_band": 0, "workers": 1}}
    synthetic.generate(tmp_path, params, progress=False)
    norms = read_norm(tmp_path / "norm.csv")
    scenes = [read_scene(d, norm=norms[d.name]) for d in scene_dirs(tmp_path, "train")]
    sa_score, sa_cpsnr = mean_score(load_model("shift_and_add"), scenes)
    base_score, base_cpsnr = mean_score(load_model("baseline"), scenes)
    print(f"simulator: baseline {base_score:.4f} ({base_cpsnr:.2f} dB), shift_and_add {sa_score:.4f} "
          f"({sa_cpsnr:.2f} dB)")
    assert sa_score < 1.0
