"""Settings, timing, memory and small helpers shared by every part of the bench."""
from __future__ import annotations

import copy
import importlib
import os
import resource
import sys
import time
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Callable

import numpy as np


VERSION = 1
MB = 1e6

# Everything the bench does can be tuned under ``bench:`` in params.yaml; these are the defaults.
DEFAULTS: dict = {
    "repeats": 5,              # timing repeats per measurement (median and spread are reported)
    "min_repeats": 2,          # ... at least this many even past the budget
    "budget_s": 20.0,          # ... stop repeating once one measurement has taken this long
    "timeout_s": 600,          # per subprocess
    "hardware": {"copy_mb": 256, "matmul_n": 2048, "conv_batch": 16},
    "scorer": {"scenes": 16, "growth": [1, 4, 16, 64], "naive_max_scenes": 16,
               "folder_scenes": 200},  # a submission folder scored end to end (probav score)
    "simulator": {"compute_scenes": 4, "scenes": 12, "repeats": 2},  # generate() is the slow part
    "data": {"workers": [1, 2, 4, 8, 16],   # worker counts above the machine's cores are dropped
             "scenes": 24},                 # the data check and TFRecord build read this many scenes
                                            # (the simulator's, copied under new names up to it)
    "pipeline": {"batches": 20},
    "params": {},              # overrides of params.yaml groups for the bench only (e.g. input.batch_size)
    "models": {
        "classical": None,     # None: params.yaml `models`
        "deep": None,          # None: params.yaml `deep_models`
        "growth": [1, 4, 16],  # inference time against the number of scenes (copies of one scene)
        "inference_budget_s": 8.0,  # per size: repeats stop past this (at least min_repeats)
        "train_steps": 5,      # training steps per timing repeat
        "frames": [9, 16, 32],  # training step time against K (the default K is not measured twice)
        "frames_steps": 2,     # ... steps per repeat (each K costs a new trace of the train step)
        "frames_repeats": 2,
        "frames_budget_s": 10.0,
        "earlier": {},         # model -> commit: also time the model as it was then (probav.bench.history)
        "earlier_scenes": 8,   # ... on this many scenes of the bench archive
    },
}

# --quick: tiny sizes, for tests and a smoke run (the deep models also get a tiny network).
QUICK: dict = {
    "repeats": 2,
    "min_repeats": 1,
    "budget_s": 5.0,
    "timeout_s": 240,
    "hardware": {"copy_mb": 16, "matmul_n": 256, "conv_batch": 2},
    "scorer": {"scenes": 2, "growth": [1, 2], "naive_max_scenes": 2, "folder_scenes": 3},
    "simulator": {"compute_scenes": 1, "scenes": 2, "repeats": 1},
    "data": {"workers": [1, 2], "scenes": 2},
    "pipeline": {"batches": 3},
    "models": {"growth": [1, 2], "inference_budget_s": 2.0, "train_steps": 2, "frames": [9, 12], "frames_steps": 1,
               "frames_repeats": 1, "frames_budget_s": 2.0, "earlier_scenes": 2},
    "params": {"model": {"blocks": 1, "filters": 8}, "input": {"patch_size": 16, "batch_size": 2}},
}

# Parts that import TensorFlow (grouped in one subprocess in quick mode).
TF_PARTS = ("tfrecords", "hardware_tf", "pipeline")

# --------------------------------------------------------------------------- configuration

def merge_settings(base: dict, over: dict | None) -> dict:
    out = copy.deepcopy(base)
    for key, value in (over or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_settings(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def bench_settings(params: dict, quick: bool = False) -> dict:
    """``DEFAULTS`` ← params.yaml ``bench:`` ← ``QUICK`` (when quick)."""
    settings = merge_settings(DEFAULTS, params.get("bench") or {})
    if quick:
        settings = merge_settings(settings, QUICK)
    settings["quick"] = bool(quick)
    return settings


def worker_counts(requested: list[int], cpus: int | None = None) -> list[int]:
    """1, 2 and the requested counts the machine has cores for (always 1 and 2)."""
    cpus = cpus or os.cpu_count() or 1
    return sorted({1, 2} | {int(w) for w in requested if 1 <= int(w) <= cpus})


# --------------------------------------------------------------------------- timing helpers

def summary(values) -> dict:
    """median, min, max, quartiles of a list of numbers."""
    v = np.asarray(list(values), np.float64)
    if v.size == 0:
        return {"median": None, "min": None, "max": None, "q1": None, "q3": None, "repeats": 0}
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return {"median": float(med), "min": float(v.min()), "max": float(v.max()),
            "q1": float(q1), "q3": float(q3), "repeats": int(v.size)}


def rate(seconds: list[float], amount: float) -> dict:
    """``amount`` per second for each timing, summarised (the slowest repeat gives ``min``)."""
    return summary([amount / t for t in seconds if t > 0])


def per_item_ms(seconds: list[float], items: int) -> dict:
    return summary([1e3 * t / items for t in seconds])


def measure(fn: Callable[[], object], repeats: int, warmup: int = 1, min_repeats: int = 1,
            budget_s: float | None = None) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones; stops early
    (after ``min_repeats``) once the timed calls have taken ``budget_s`` in all."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    for _ in range(max(int(repeats), 1)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        if budget_s is not None and len(times) >= min_repeats and sum(times) >= budget_s:
            break
    return times


def timing_options(settings: dict, **over) -> dict:
    kw = dict(repeats=settings["repeats"], min_repeats=settings["min_repeats"], budget_s=settings["budget_s"])
    kw.update(over)
    return kw


def growth_exponent(sizes, seconds) -> float | None:
    """Slope of log(time) against log(size): 1 = linear, 0 = constant (fixed costs dominate)."""
    x, y = np.log(np.asarray(sizes, float)), np.log(np.asarray(seconds, float))
    if len(x) < 2 or np.ptp(x) == 0 or not np.all(np.isfinite(y)):
        return None
    return float(np.polyfit(x, y, 1)[0])


def maxrss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2 ** 20


def current_rss_mb() -> float | None:
    """Resident memory of this process now (Linux /proc), or None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB
    except (OSError, ValueError, IndexError):
        return None


class RssPeak:
    """Peak resident memory during a ``with`` block above the resident memory at its start (MB),
    sampled from /proc every ``interval`` seconds by a thread. Used on untimed runs only (the
    sampling thread would disturb timings). Where /proc is missing: the growth of ru_maxrss."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.start = self.peak = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            now = current_rss_mb()
            if now is not None and now > self.peak:
                self.peak = now

    def __enter__(self):
        import threading

        self.start = current_rss_mb()
        self._maxrss = maxrss_mb()
        self._stop = threading.Event()
        self._thread = None
        if self.start is not None:
            self.peak = self.start
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            now = current_rss_mb()
            self.peak = max(self.peak, now or 0.0)
        return False

    @property
    def delta_mb(self) -> float:
        if self.start is None:
            return max(maxrss_mb() - self._maxrss, 0.0)
        return max(self.peak - self.start, 0.0)


@contextmanager
def quiet():
    """Hide stdout chatter (progress lines, summaries) of the measured library calls."""
    with open(os.devnull, "w") as sink, redirect_stdout(sink):
        yield


def skipped(reason: str) -> dict:
    return {"skipped": reason}


def optional_module(name: str):
    """The module, or None when it does not exist (yet)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name and (name == err.name or name.startswith(err.name + ".")):
            return None
        raise


def dir_bytes(root: Path, pattern: str = "*.png") -> int:
    return sum(p.stat().st_size for p in Path(root).rglob(pattern) if p.is_file())


