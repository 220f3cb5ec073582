"""Paired comparisons of two models on the same scenes (probav.metrics.paired) and the report's use of them:
exact values on hand-computed cases."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from probav.metrics.paired import bootstrap_interval, compare_tables, sign_test_p


def test_sign_test_exact_values():
    # 9 wins, 1 loss: P(X <= 1) = (1 + 10) / 2^10 on each side
    assert sign_test_p(9, 1) == pytest.approx(2 * 11 / 1024, abs=1e-15)
    assert sign_test_p(1, 9) == sign_test_p(9, 1)
    # 3 wins, 0 losses: 2 / 2^3
    assert sign_test_p(3, 0) == pytest.approx(0.25, abs=1e-15)
    # 12 of 12: 2 / 4096
    assert sign_test_p(12, 0) == pytest.approx(2 / 4096, abs=1e-15)
    # an even split, and no untied scene at all, are no evidence
    assert sign_test_p(5, 5) == 1.0
    assert sign_test_p(0, 0) == 1.0


def test_bootstrap_of_a_constant_difference_is_that_constant():
    low, high = bootstrap_interval(np.full(17, 0.25), resamples=500, seed=3)
    assert low == pytest.approx(0.25, abs=1e-12) and high == pytest.approx(0.25, abs=1e-12)


def test_bootstrap_of_two_values_hits_the_extremes():
    # Resampling the two scenes [0, 1] gives means 0, 0.5 or 1 (probabilities 1/4, 1/2, 1/4): the 2.5% and
    # 97.5% quantiles of many such draws are exactly 0 and 1.
    low, high = bootstrap_interval(np.array([0.0, 1.0]), resamples=2000, seed=1)
    assert (low, high) == (0.0, 1.0)


def test_bootstrap_is_seeded_and_inside_the_data():
    d = np.array([-0.3, 0.1, 0.4, 0.2, -0.1, 0.05, 0.3, 0.0])
    first = bootstrap_interval(d, resamples=1000, seed=11)
    assert first == bootstrap_interval(d, resamples=1000, seed=11)
    assert first != bootstrap_interval(d, resamples=1000, seed=12)
    assert d.min() <= first[0] <= d.mean() <= first[1] <= d.max()


def _table(values, scenes=None, bands=None):
    scenes = scenes or [f"imgset{i:04d}" for i in range(len(values))]
    return pd.DataFrame({"scene": scenes, "band": bands or ["RED"] * len(values), "cpsnr": values})


def test_interval_containing_zero_is_no_detectable_difference():
    base = np.linspace(45.0, 50.0, 10)
    swing = np.array([0.5, -0.5] * 5)           # wins and losses of the same size: mean 0
    c = compare_tables("a", _table(base + swing), "b", _table(base), resamples=2000, seed=5)
    assert c.scenes == 10 and c.mean == pytest.approx(0.0, abs=1e-12)
    assert c.low < 0 < c.high
    assert (c.better, c.worse) == (5, 5) and c.sign_p == 1.0
    assert not c.detectable and c.verdict == "no detectable difference"


def test_consistent_gain_is_detected_with_its_sign():
    base = np.linspace(45.0, 50.0, 10)
    c = compare_tables("a", _table(base + 0.3), "b", _table(base), resamples=2000, seed=5)
    assert c.mean == pytest.approx(0.3) and c.low == pytest.approx(0.3) and c.high == pytest.approx(0.3)
    assert (c.better, c.worse) == (10, 0) and c.sign_p == pytest.approx(2 / 1024)
    assert c.detectable and c.verdict == "a better"
    flipped = compare_tables("b", _table(base), "a", _table(base + 0.3), resamples=2000, seed=5)
    assert flipped.mean == pytest.approx(-0.3) and flipped.verdict == "a better"


def test_tables_are_matched_on_scene_and_band():
    a = _table([50.0, 40.0, 47.0], scenes=["s1", "s2", "s3"], bands=["RED", "NIR", "RED"])
    b = _table([48.0, 41.0, 30.0], scenes=["s2", "s1", "s9"], bands=["NIR", "RED", "RED"])
    c = compare_tables("a", a, "b", b, resamples=100, seed=0)
    # s1: 50 − 41 = +9, s2: 40 − 48 = −8; s3 and s9 are in one table only
    assert c.scenes == 2 and c.mean == pytest.approx(0.5)
    assert (c.better, c.worse) == (1, 1)


def test_no_common_scene():
    c = compare_tables("a", _table([50.0], scenes=["s1"]), "b", _table([49.0], scenes=["s2"]), resamples=10, seed=0)
    assert c.scenes == 0 and math.isnan(c.mean) and not c.detectable
