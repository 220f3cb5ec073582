"""probav.order_statistics.median: numpy's median, to the bit, on the inputs that make selection hard."""
from __future__ import annotations

import numpy as np
import pytest

from probav.order_statistics import median


def cases(rng: np.random.Generator, n: int):
    noise = rng.normal(size=n) * 10 ** rng.uniform(-6, 3)
    yield noise
    yield np.abs(noise - np.median(noise))             # a MAD: the registration's second median
    yield np.round(noise * 3 / (noise.std() or 1.0))    # many ties
    yield np.sort(noise)
    yield np.sort(noise)[::-1].copy()
    yield np.full(n, 1.5)
    yield np.where(rng.uniform(size=n) < 0.6, 0.0, noise)  # a tie across the middle
    yield np.concatenate([np.zeros(n // 2), np.ones(n - n // 2)])


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 17, 2047, 2048, 2049, 4096, 12894, 12895, 200_001])
def test_median_is_numpys(n):
    rng = np.random.default_rng(n)
    for values in cases(rng, n):
        before = values.copy()
        assert median(values) == np.median(values)
        np.testing.assert_array_equal(values, before)  # the caller's array is left as it was


def test_median_of_nan_empty_and_other_shapes():
    assert np.isnan(median(np.array([1.0, np.nan, 2.0])))
    assert np.isnan(median(np.array([])))
    image = np.random.default_rng(0).normal(size=(37, 41))
    assert median(image) == np.median(image)
    assert median(image[::2, 1::3]) == np.median(image[::2, 1::3])
    assert median([3, 1, 2]) == 2.0
