"""Paired comparisons of two models on the same scenes: the mean per-scene difference with a bootstrap
confidence interval, and an exact two-sided sign test on the scenes one model wins. Both models are scored on
the same scenes, so the scene-to-scene spread (far larger than the differences between models) cancels in
the per-scene difference."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

LEVEL = 0.95


def sign_test_p(better: int, worse: int) -> float:
    """Exact two-sided sign test: the probability, if either model were as likely to win a scene, of a split
    at least as uneven as ``better`` against ``worse`` (ties left out). 1 when there is no untied scene."""
    n = better + worse
    if n == 0:
        return 1.0
    k = min(better, worse)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def bootstrap_interval(differences: np.ndarray, resamples: int, seed: int,
                       level: float = LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``differences``: the scenes resampled with replacement
    ``resamples`` times (generator seeded with ``seed``), the ``(1 - level) / 2`` and ``(1 + level) / 2``
    quantiles of the resampled means."""
    d = np.asarray(differences, dtype=np.float64)
    if d.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(resamples, d.size))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


@dataclass(frozen=True)
class PairedComparison:
    """Model ``a`` against model ``b`` on the scenes both were scored on; differences are a − b in dB of cPSNR
    (positive: ``a`` is better)."""

    a: str
    b: str
    scenes: int
    mean: float
    low: float
    high: float
    better: int          # scenes where a's cPSNR is higher
    worse: int           # scenes where it is lower
    sign_p: float
    resamples: int

    @property
    def detectable(self) -> bool:
        """Whether the interval excludes zero."""
        return self.scenes > 0 and (self.low > 0 or self.high < 0)

    @property
    def verdict(self) -> str:
        if not self.detectable:
            return "no detectable difference"
        return f"{self.a} better" if self.mean > 0 else f"{self.b} better"


def compare_tables(a: str, table_a: pd.DataFrame, b: str, table_b: pd.DataFrame, resamples: int, seed: int,
                   column: str = "cpsnr") -> PairedComparison:
    """``a`` against ``b`` from their per-scene tables (``metrics/scenes/<model>.csv``), matched on scene and band."""
    keys = ["scene", "band"] if "band" in table_a and "band" in table_b else ["scene"]
    both = table_a[keys + [column]].merge(table_b[keys + [column]], on=keys, suffixes=("_a", "_b")).dropna()
    d = (both[f"{column}_a"] - both[f"{column}_b"]).to_numpy(dtype=np.float64)
    low, high = bootstrap_interval(d, resamples, seed)
    better, worse = int((d > 0).sum()), int((d < 0).sum())
    return PairedComparison(a, b, int(d.size), float(d.mean()) if d.size else math.nan, low, high, better, worse,
                            sign_test_p(better, worse), resamples)
