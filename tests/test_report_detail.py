"""The report's detail figures: the spectrum of a known power law, the power above the LR Nyquist frequency,
and the zoomed window's choice."""
import numpy as np

from probav.report import detail


def power_law_field(n: int, beta: float, seed: int = 0) -> np.ndarray:
    """A random field whose power falls as frequency^-beta."""
    rng = np.random.default_rng(seed)
    f = np.hypot(np.fft.fftfreq(n)[:, None], np.fft.fftfreq(n)[None, :])
    f[0, 0] = 1.0
    amplitude = f ** (-beta / 2)
    amplitude[0, 0] = 0.0
    phase = np.fft.fft2(rng.normal(size=(n, n)))
    return np.real(np.fft.ifft2(phase * amplitude))


def test_radial_power_recovers_the_slope_of_a_power_law():
    field = power_law_field(256, beta=2.0)
    freq, power = detail.radial_power(field)
    band = (freq > 0.05) & (freq < 0.4)
    slope = np.polyfit(np.log(freq[band]), np.log(power[band]), 1)[0]
    assert abs(slope + 2.0) < 0.2
    assert freq[0] > 0 and freq[-1] < 0.5


def test_radial_power_ignores_masked_pixels():
    field = power_law_field(128, beta=2.0, seed=1)
    mask = np.ones(field.shape, bool)
    mask[:, 64:] = False
    spoiled = field.copy()
    spoiled[~mask] = 1e6          # a cloud: were it counted, it would dominate every frequency
    _, clean = detail.radial_power(np.where(mask, field, 0.0), mask)
    _, masked = detail.radial_power(spoiled, mask)
    np.testing.assert_allclose(masked, clean, rtol=1e-9)


def test_above_nyquist_ratios():
    freq = np.array([0.1, 0.3, 0.6, 1.2])
    spectrum = {"freq": freq, "hr": np.array([9.0, 9.0, 4.0, 1.0]), "sr": np.array([9.0, 9.0, 2.0, 0.5]),
                "error": np.array([0.1, 0.1, 1.0, 1.0])}
    ratios = detail.above_nyquist(spectrum)
    assert ratios["sr_over_hr"] == 2.5 / 5.0
    assert ratios["error_over_hr"] == 2.0 / 5.0


def test_spectra_of_a_perfect_prediction_have_no_error_power():
    rng = np.random.default_rng(2)
    hr = (3000 + 400 * power_law_field(384, beta=2.0, seed=3) / power_law_field(384, 2.0, 3).std()).astype(np.uint16)
    sm = np.ones(hr.shape, bool)
    sm[50:90, 50:90] = False
    out = detail.spectra({"perfect": hr.copy(), "none": None, "noisy": hr + rng.integers(0, 50, hr.shape).astype(np.uint16)},
                         hr, sm)
    assert set(out) == {"perfect", "noisy"}
    assert out["perfect"]["error"].max() < 1e-12 * out["perfect"]["hr"].max()
    np.testing.assert_allclose(out["perfect"]["sr"], out["perfect"]["hr"])
    assert detail.above_nyquist(out["noisy"])["error_over_hr"] > 0


def test_zoom_window_is_clear_and_on_the_busiest_part():
    hr = np.full((384, 384), 1000, np.uint16)
    hr[200:260, 100:160] += (np.arange(60)[None, :] % 2 * 500).astype(np.uint16)   # stripes: the busy part
    sm = np.ones(hr.shape, bool)
    y, x = detail.zoom_window(hr, sm)
    assert 200 - detail.ZOOM < y < 260 and 100 - detail.ZOOM < x < 160
    sm[200:260, 100:160] = False            # now clouded over: a clear window elsewhere
    y, x = detail.zoom_window(hr, sm)
    assert sm[y:y + detail.ZOOM, x:x + detail.ZOOM].all()


def test_residual_misalignment_measures_a_sub_pixel_shift():
    from scipy import ndimage as ndi

    field = power_law_field(384, beta=3.0, seed=4)
    hr = (3000 + 600 * field / field.std()).clip(0, 65535)
    sm = np.ones(hr.shape, bool)
    shifted = ndi.shift(hr, (0.0, 0.4), order=3, mode="nearest")     # SR(y, x) = HR(y, x − 0.4)
    dy, dx = detail.residual_misalignment(shifted.astype(np.uint16), hr.astype(np.uint16), sm)
    assert abs(dy) < 0.05 and abs(abs(dx) - 0.4) < 0.05
    dy, dx = detail.residual_misalignment(hr.astype(np.uint16), hr.astype(np.uint16), sm)
    assert abs(dy) < 0.02 and abs(dx) < 0.02


def test_paired_scores_line_up_each_scene_from_worst_to_best_model():
    import pandas as pd

    from probav.report import figures

    tables = {
        "baseline": pd.DataFrame({"scene": ["a", "b", "c"], "band": ["RED", "NIR", "RED"], "score": [1.0, 1.0, 1.0]}),
        "good": pd.DataFrame({"scene": ["c", "a", "b"], "band": ["RED", "RED", "NIR"], "score": [0.90, 0.95, 1.02]}),
        "partial": pd.DataFrame({"scene": ["a", "b"], "band": ["RED", "NIR"], "score": [0.97, 0.99]}),
    }
    wide = figures.paired_scores(tables)
    assert list(wide.columns) == ["band", "baseline", "partial", "good"]      # worst mean first, best last
    assert list(wide.index) == ["a", "b"]                                      # c lacks a "partial" score
    assert wide.loc["a", "good"] == 0.95 and wide.loc["b", "good"] == 1.02    # paired by scene, not by row
    assert list(wide["band"]) == ["RED", "NIR"]


def test_normalised_spectrum_has_unit_mean_power_below_the_lr_nyquist_frequency():
    from probav.report import figures

    freq = np.array([0.1, 0.3, 0.5, 0.9, 1.4])
    power = np.array([40.0, 20.0, 6.0, 2.0, 1.0])
    out = figures.normalised_spectrum(freq, power)
    assert out[:3].mean() == 1.0
    np.testing.assert_allclose(out / out[0], power / power[0])          # the shape is kept
    np.testing.assert_allclose(figures.normalised_spectrum(freq, 9 * power), out)   # brightness is not


def test_robust_limits_keep_the_bulk_and_leave_out_a_far_outlier():
    from probav.report import figures

    scores = np.r_[np.linspace(0.93, 0.99, 40), 1.6]
    lo, hi = figures.robust_limits(scores)
    assert lo < 0.93 and 0.99 < hi < 1.2
    lo2, hi2 = figures.robust_limits(np.linspace(0.93, 0.99, 40))
    assert hi2 < 1.0 and lo2 < 0.93


def test_chance_rho_is_where_spearmans_p_crosses_five_percent():
    from scipy.stats import t

    from probav.report import figures

    r = figures.chance_rho(24)
    df = 22
    p = 2 * t.sf(r * np.sqrt(df / (1 - r * r)), df)      # spearmanr's p for this ρ and 24 scenes
    assert abs(p - 0.05) < 1e-9
    assert 0.39 < r < 0.41
