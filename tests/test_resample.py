"""probav.resample: the separable spline translations and ×N zooms equal scipy.ndimage's (and skimage's
rescale) up to rounding, boundaries included."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from probav import resample
from probav.models.baseline import bicubic_upscale

TOL = 1e-12  # images of values ~1: scipy's own per-pixel rounding of the positions is ~1e-14


def _shifts(rng, count=25, reach=4.5):
    fixed = [(0.0, 0.5), (1.0, -2.0), (1e-13, -1e-13), (-1e-16, 3e-16), (0.25, 0.75), (-3.9993, 4.0017)]
    return fixed + [tuple(rng.uniform(-reach, reach, 2)) for _ in range(count)]


@pytest.mark.parametrize("order,mode,prefilter", [(3, "nearest", True), (3, "nearest", False),
                                                  (1, "nearest", False), (1, "constant", False)])
def test_shift_matches_ndimage(order, mode, prefilter):
    rng = np.random.default_rng(order + 2 * prefilter)
    image = rng.uniform(0, 1, (40, 33))
    for s in _shifts(rng):
        expected = ndi.shift(image, s, order=order, mode=mode, cval=0.0, prefilter=prefilter)
        np.testing.assert_allclose(resample.shift(image, s, order, mode, prefilter), expected, rtol=0, atol=TOL,
                                   err_msg=f"shift {s}")


def test_shift_beyond_the_padding_and_masks():
    rng = np.random.default_rng(3)
    image = rng.uniform(0, 1, (64, 48))
    for s in [(13.3, -14.7), (-20.0, 0.4)]:  # farther than scipy's 12-pixel prefilter padding
        np.testing.assert_allclose(resample.shift(image, s), ndi.shift(image, s, order=3, mode="nearest"),
                                   rtol=0, atol=TOL)
    mask = (rng.uniform(size=(64, 48)) > 0.3).astype(float)
    for s in _shifts(rng):
        # The conservative mask shift thresholds the bilinear value: the same pixels come out clear.
        expected = ndi.shift(mask, s, order=1, mode="constant", cval=0.0, prefilter=False) > 0.999
        np.testing.assert_array_equal(resample.shift(mask, s, 1, "constant", False) > 0.999, expected)


@pytest.mark.parametrize("order", [1, 3])
def test_upscale_matches_affine_transform(order):
    rng = np.random.default_rng(10 + order)
    image = rng.uniform(0, 1, (30, 37))
    for s in _shifts(rng, count=10):
        offset = -1 / 3 - np.asarray(s)
        expected = ndi.affine_transform(image, [1 / 3, 1 / 3], offset=offset, output_shape=(90, 111), order=order,
                                        mode="nearest")
        np.testing.assert_allclose(resample.upscale(image, 3, offset, order), expected, rtol=0, atol=TOL,
                                   err_msg=f"offset {offset}")


def test_bicubic_upscale_matches_the_official_baseline():
    rng = np.random.default_rng(5)
    for image in (rng.uniform(0, 1, (128, 128)), 1e-3 * rng.standard_normal((128, 128)),
                  np.zeros((16, 16)), ndi.gaussian_filter(rng.uniform(0, 1, (20, 24)), 0.5)):
        np.testing.assert_allclose(resample.bicubic_upscale(image), bicubic_upscale(image), rtol=0, atol=TOL)


def test_unsupported_orders_and_modes_are_refused():
    image = np.zeros((8, 8))
    with pytest.raises(ValueError):
        resample.shift(image, (0.5, 0.5), order=2)
    with pytest.raises(ValueError):
        resample.shift(image, (0.5, 0.5), order=3, mode="constant")
    with pytest.raises(ValueError):
        resample.shift(image, (0.5, 0.5), order=1, mode="reflect")
