"""Timing of the official scorer: the vectorised ``shifted_cpsnr_batch`` against the 49-window
loop ``shifted_cpsnr_naive`` on the same scenes, in the same run.

The scenes are synthetic but shaped like PROBA-V ones: a smooth HR field of 14-bit values in
steps of 16, an SR that is the HR moved by a random whole shift within ±2 pixels, blurred and
noisy, and an SM that is fully clear for half of the scenes and carries blocky cloud patches
(drawn at LR resolution, 3×3 pixels per LR pixel, 2–20% cloudy) for the other half.

Timings on a shared machine are noisy: the two are measured alternately, ``repeats`` times, and
medians are reported with their spread (min and max over the repeats).
"""
from __future__ import annotations

import os
import time

import numpy as np
from scipy import ndimage

from probav.metrics.reference import shifted_cpsnr_naive
from probav.metrics.score import shifted_cpsnr_batch
from probav.scene import HR_SIZE, LR_SIZE, SCALE


def synthetic_scenes(n_scenes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sr, hr, sm): (n, 384, 384) uint16, uint16, bool — see the module docstring."""
    rng = np.random.default_rng(seed)
    shape = (n_scenes, HR_SIZE, HR_SIZE)
    field = sum(ndimage.gaussian_filter(rng.normal(size=shape), (0, sigma, sigma)) * sigma
                for sigma in (1.0, 4.0, 16.0))
    field = (field - field.mean()) / field.std()
    hr = (np.clip(5000 + 1500 * field, 0, 16383) // 16 * 16).astype(np.uint16)
    sr = np.empty_like(hr)
    sm = np.ones(shape, bool)
    for i in range(n_scenes):
        moved = np.roll(hr[i].astype(np.float64), tuple(rng.integers(-2, 3, 2)), axis=(0, 1))
        noisy = ndimage.gaussian_filter(moved, 1.0) + rng.normal(0, 60, moved.shape) + rng.normal(0, 100)
        sr[i] = np.clip(np.rint(noisy), 0, 65535).astype(np.uint16)
        if i % 2:
            blobs = ndimage.gaussian_filter(rng.normal(size=(LR_SIZE, LR_SIZE)), 4.0)
            cloudy = blobs > np.quantile(blobs, 1 - rng.uniform(0.02, 0.20))
            sm[i] = ~np.kron(cloudy, np.ones((SCALE, SCALE), bool))
    return sr, hr, sm


def _spread(times: list[float], n: int) -> dict:
    ms = np.asarray(times) * 1e3 / n
    return {"median": float(np.median(ms)), "min": float(ms.min()), "max": float(ms.max())}


def benchmark_scorer(n_scenes: int = 16, repeats: int = 5, seed: int = 0) -> dict:
    """Time the fast batch scorer and the naive loop (ms per scene) on the same synthetic scenes.

    Returns ``fast_ms_per_scene`` (default threads: all cores), ``fast_1thread_ms_per_scene``,
    ``naive_ms_per_scene`` (medians), ``ratio`` and ``ratio_1thread`` (naive / fast),
    ``spread`` (min, median, max per timing), ``max_abs_diff_db`` (fast against naive, which
    must be ~0), and the settings (``n_scenes``, ``repeats``, ``seed``, ``cpu_count``).
    """
    if n_scenes < 1 or repeats < 1:
        raise ValueError("n_scenes and repeats must be at least 1")
    sr, hr, sm = synthetic_scenes(n_scenes, seed)
    fast = shifted_cpsnr_batch(sr, hr, sm)  # warm-up, and the values to check
    naive = np.array([shifted_cpsnr_naive(sr[i], hr[i], sm[i]) for i in range(n_scenes)])
    timings: dict[str, list[float]] = {"fast": [], "fast_1thread": [], "naive": []}
    for _ in range(repeats):  # alternate, so that a busy spell slows all of them alike
        start = time.perf_counter()
        shifted_cpsnr_batch(sr, hr, sm)
        timings["fast"].append(time.perf_counter() - start)
        start = time.perf_counter()
        shifted_cpsnr_batch(sr, hr, sm, workers=1)
        timings["fast_1thread"].append(time.perf_counter() - start)
        start = time.perf_counter()
        for i in range(n_scenes):
            shifted_cpsnr_naive(sr[i], hr[i], sm[i])
        timings["naive"].append(time.perf_counter() - start)
    spread = {name: _spread(times, n_scenes) for name, times in timings.items()}
    return {
        "fast_ms_per_scene": spread["fast"]["median"],
        "fast_1thread_ms_per_scene": spread["fast_1thread"]["median"],
        "naive_ms_per_scene": spread["naive"]["median"],
        "ratio": spread["naive"]["median"] / spread["fast"]["median"],
        "ratio_1thread": spread["naive"]["median"] / spread["fast_1thread"]["median"],
        "spread": spread,
        "max_abs_diff_db": float(np.max(np.abs(fast - naive))),
        "n_scenes": n_scenes,
        "repeats": repeats,
        "seed": seed,
        "cpu_count": os.cpu_count(),
    }


if __name__ == "__main__":  # python -m probav.metrics.bench
    import json

    print(json.dumps(benchmark_scorer(), indent=2))
