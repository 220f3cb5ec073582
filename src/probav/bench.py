"""Benchmarks: how fast each part of the project runs on this machine, and how it grows.

``run_bench(params, quick=False)`` runs the parts below and returns one JSON-able dict (the stage
``stages/bench.py`` writes it to ``metrics/bench.json`` and ``markdown_table`` to ``reports/bench.md``):

- ``meta``: CPU, cores, versions, settings, load average before/after, duration.
- ``hardware``: the yardsticks — memory bandwidth (numpy copy of a large array, bytes read +
  written), numpy float32/float64 matmul GFLOP/s, the nominal float32 peak (cores × clock × FLOPs
  per cycle), and under ``hardware.tensorflow`` TensorFlow's float32 matmul and 3×3 conv GFLOP/s.
- ``scorer``: ``probav.metrics.bench.benchmark_scorer`` (vectorised ``shifted_cpsnr_batch`` against
  the 49-window loop ``shifted_cpsnr_naive``, same scenes, same run, their ratio) plus scenes/s,
  bytes moved per scene and ``growth`` (time against the number of scenes).
- ``simulator``: ``compute`` (``simulate_scene`` alone, one process) and ``generate`` (end to end:
  PNGs, norm.csv) per worker count: scenes/s, MB/s of PNG written. Its archive feeds the next parts.
- ``check`` / ``tfrecords``: ``check_scenes`` and the TFRecord build (``write_tfrecords``) per
  worker count (1, 2 and more where the machine has the cores): scenes/s, MB/s of PNG read, of
  decoded arrays (and of TFRecords written). The archive is enlarged to ``bench.data.scenes`` by
  copying scenes; the stages' own thresholds below which they do not start a pool are lifted.
- ``pipeline``: ``training_dataset`` batches/s and examples/s (after the first batch, timed apart).
- ``models.<name>``: every model of params.yaml ``models`` + ``deep_models``, each in its own
  process. All: ``inference`` (scenes/s at the largest size), ``inference_growth`` (sizes
  ``bench.models.growth``, copies of one typical scene), ``parameters``, ``peak_memory_mb``.
  Deep models (untrained, built and compiled exactly as ``probav.training.train`` does): ``train``
  (steps/s on a fixed batch at the default batch and patch size, first step = trace time, FLOPs
  per step from TensorFlow's profiler on the trainer's own ``train_step``: forward, loss,
  gradients, optimizer, metrics, a GAN's discriminator), ``inference.flops_per_scene`` and
  ``train_growth`` (step time against K, ``bench.models.frames``).
- ``growth``: the growth series gathered (scorer, inference per model, training per model) with
  their exponent, the slope of log(time) against log(size).
- ``derived``: how far from the hardware each part is — the scorer's GB/s against the memory
  bandwidth, training/inference GFLOP/s against the measured matmul and conv peaks and the
  nominal peak — and whether training is input-bound (pipeline batches/s against steps/s).

Every timing is repeated (``bench.repeats`` times; fewer, but at least ``min_repeats``, once a
measurement has taken ``budget_s``) and summarised as ``{"median", "min", "max", "q1", "q3",
"repeats"}``; rates are computed per repeat, so a rate's ``min`` comes from the slowest repeat.
Hardware peaks in ``derived`` use the best repeat (a busy machine only slows a repeat down).
Timings on a shared machine are noisy: compare runs with ``meta.load_before`` / ``load_after`` in mind.

A measurement that cannot run (a module not written yet, a model that fails to build) is recorded
as ``{"skipped": reason}`` or ``{"error": reason}`` and the bench goes on.

Parts run in subprocesses (``python -m probav.bench CONFIG.json OUT.json PART [PART …]``): one
per part, so that memory peaks are separate; with ``quick``, two in all (without and with
TensorFlow) to keep it fast. Settings: ``DEFAULTS`` ← params.yaml ``bench:`` ← ``QUICK``.
"""
from __future__ import annotations

import copy
import importlib
import inspect
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
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
    "scorer": {"scenes": 16, "growth": [1, 4, 16, 64], "naive_max_scenes": 16},
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
    },
}

# --quick: tiny sizes, for tests and a smoke run (the deep models also get a tiny network).
QUICK: dict = {
    "repeats": 2,
    "min_repeats": 1,
    "budget_s": 5.0,
    "timeout_s": 240,
    "hardware": {"copy_mb": 16, "matmul_n": 256, "conv_batch": 2},
    "scorer": {"scenes": 2, "growth": [1, 2], "naive_max_scenes": 2},
    "simulator": {"compute_scenes": 1, "scenes": 2, "repeats": 1},
    "data": {"workers": [1, 2], "scenes": 2},
    "pipeline": {"batches": 3},
    "models": {"growth": [1, 2], "inference_budget_s": 2.0, "train_steps": 2, "frames": [9, 12], "frames_steps": 1,
               "frames_repeats": 1, "frames_budget_s": 2.0},
    "params": {"model": {"blocks": 1, "filters": 8}, "input": {"patch_size": 16, "batch_size": 2}},
}

# Parts that import TensorFlow (grouped in one subprocess in quick mode).
TF_PARTS = ("tfrecords", "hardware_tf", "pipeline")


# --------------------------------------------------------------------------- configuration

def _merge(base: dict, over: dict | None) -> dict:
    out = copy.deepcopy(base)
    for key, value in (over or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def bench_settings(params: dict, quick: bool = False) -> dict:
    """``DEFAULTS`` ← params.yaml ``bench:`` ← ``QUICK`` (when quick)."""
    settings = _merge(DEFAULTS, params.get("bench") or {})
    if quick:
        settings = _merge(settings, QUICK)
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


def _timing(settings: dict, **over) -> dict:
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
def _quiet():
    """Hide stdout chatter (progress lines, summaries) of the measured library calls."""
    with open(os.devnull, "w") as sink, redirect_stdout(sink):
        yield


def _skip(reason: str) -> dict:
    return {"skipped": reason}


def _optional_module(name: str):
    """The module, or None when it does not exist (yet)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name and (name == err.name or name.startswith(err.name + ".")):
            return None
        raise


def _dir_bytes(root: Path, pattern: str = "*.png") -> int:
    return sum(p.stat().st_size for p in Path(root).rglob(pattern) if p.is_file())


# --------------------------------------------------------------------------- hardware

def nominal_peak_gflop_s() -> dict | None:
    """Float32 FLOP/s the cores could do at most: cores × clock (/proc/cpuinfo) × FLOPs per cycle
    (2 FMA units × 8 lanes × 2 with AVX2+FMA, 2 × 16 × 2 with AVX-512, else 8 per cycle)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    mhz = [float(line.split(":")[1]) for line in text.splitlines() if line.startswith("cpu MHz")]
    flags = next((line.split(":")[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    if not mhz:
        return None
    per_cycle = 64 if "avx512f" in flags else 32 if ("avx2" in flags and "fma" in flags) else 8
    cores = os.cpu_count() or 1
    return {"gflop_s": cores * max(mhz) / 1e3 * per_cycle, "cores": cores, "mhz": max(mhz),
            "flop_per_cycle": per_cycle,
            "note": "cores × the clock /proc/cpuinfo reports × float32 FLOPs per cycle (turbo ignored)"}


def bench_hardware(settings: dict) -> dict:
    """Memory bandwidth (numpy copy), numpy matmul GFLOP/s and the nominal float32 peak."""
    hw = settings["hardware"]
    n_bytes = int(hw["copy_mb"] * MB)
    src = np.ones(n_bytes // 8)
    dst = np.empty_like(src)
    copy_times = measure(lambda: np.copyto(dst, src), **_timing(settings, budget_s=None))
    out = {"copy_mb": n_bytes / MB,
           "memory_bandwidth_gb_s": rate(copy_times, 2 * src.nbytes / 1e9),  # read + write
           "note": "bandwidth counts bytes read + written by np.copyto of a large float64 array"}
    del src, dst
    n = int(hw["matmul_n"])
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        a = rng.standard_normal((n, n)).astype(dtype)
        b = rng.standard_normal((n, n)).astype(dtype)
        times = measure(lambda: a @ b, **_timing(settings, budget_s=None))
        out[f"numpy_matmul_{np.dtype(dtype).name}_gflop_s"] = rate(times, 2 * n ** 3 / 1e9)
    out["matmul_n"] = n
    out["nominal_peak"] = nominal_peak_gflop_s()
    return out


def bench_hardware_tf(settings: dict) -> dict:
    """TensorFlow float32 matmul and 3×3 conv (32→32 channels) GFLOP/s: the peaks for the networks."""
    import tensorflow as tf

    hw = settings["hardware"]
    n = int(hw["matmul_n"])
    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    matmul = tf.function(lambda: tf.matmul(a, b))
    out = {"matmul_n": n,
           "tf_matmul_float32_gflop_s": rate(measure(lambda: matmul().numpy(), **_timing(settings, budget_s=None)),
                                             2 * n ** 3 / 1e9)}
    batch, side, channels = int(hw["conv_batch"]), 96, 32
    x = tf.random.normal((batch, side, side, channels))
    w = tf.random.normal((3, 3, channels, channels))
    conv = tf.function(lambda: tf.nn.conv2d(x, w, 1, "SAME"))
    flops = 2 * batch * side * side * 9 * channels * channels
    out["tf_conv3x3_float32_gflop_s"] = rate(measure(lambda: conv().numpy(), **_timing(settings, budget_s=None)),
                                             flops / 1e9)
    out["conv_shape"] = [batch, side, side, channels]
    out["tf_threads"] = {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                         "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}
    return out


# --------------------------------------------------------------------------- the official score

# Bytes per scene the scorers move through memory. The compulsory part is reading SR and HR
# (uint16) and SM (bool). The fast scorer's estimate counts its passes over the float32 buffer
# (2 images of 384², written once, read about 4 times: sums, squares, strips, FFT input) and the
# complex64 half spectra (2 × 384 × 193: written, multiplied, read). The naive loop's counts, per
# window, the mask read, the two gathers (read + write float64), the difference, its square and
# the mean: about 11 passes over 378² float64. Caches make these approximate.
_HR = 384
_CROP = 378
SCORER_COMPULSORY_BYTES = _HR * _HR * (2 + 2 + 1)
SCORER_FAST_BYTES = SCORER_COMPULSORY_BYTES + 5 * 2 * _HR * _HR * 4 + 3 * 2 * _HR * (_HR // 2 + 1) * 8
SCORER_NAIVE_BYTES = 49 * (_CROP * _CROP * (1 + 11 * 8))


def bench_scorer(settings: dict, seed: int = 0) -> dict:
    """The vectorised scorer against the naive loop (``probav.metrics.bench``), and its growth."""
    from probav.metrics.bench import benchmark_scorer, synthetic_scenes
    from probav.metrics.reference import shifted_cpsnr_naive
    from probav.metrics.score import shifted_cpsnr_batch

    cfg = settings["scorer"]
    result = benchmark_scorer(n_scenes=int(cfg["scenes"]), repeats=max(int(settings["repeats"]), 1), seed=seed)
    out = dict(result)
    sp = result["spread"]
    for name in ("fast", "fast_1thread", "naive"):
        ms = sp[name]
        # scenes/s from ms per scene: the slowest repeat (max ms) gives the min rate
        out[f"{name}_scenes_per_s"] = {"median": 1e3 / ms["median"], "min": 1e3 / ms["max"], "max": 1e3 / ms["min"]}
    out["bytes_per_scene"] = {"compulsory": SCORER_COMPULSORY_BYTES, "fast_estimated": SCORER_FAST_BYTES,
                              "naive_estimated": SCORER_NAIVE_BYTES}

    sizes = sorted({int(n) for n in cfg["growth"] if int(n) >= 1})
    growth = []
    if sizes:
        sr, hr, sm = synthetic_scenes(max(sizes), seed + 1)
        for n in sizes:
            row = {"scenes": n}
            t_fast = measure(lambda: shifted_cpsnr_batch(sr[:n], hr[:n], sm[:n]), **_timing(settings))
            t_one = measure(lambda: shifted_cpsnr_batch(sr[:n], hr[:n], sm[:n], workers=1), **_timing(settings))
            row["fast_s"] = summary(t_fast)
            row["fast_ms_per_scene"] = per_item_ms(t_fast, n)
            row["fast_1thread_ms_per_scene"] = per_item_ms(t_one, n)
            if n <= int(cfg["naive_max_scenes"]):
                t_naive = measure(lambda: [shifted_cpsnr_naive(sr[i], hr[i], sm[i]) for i in range(n)],
                                  **_timing(settings, warmup=0))
                row["naive_ms_per_scene"] = per_item_ms(t_naive, n)
            growth.append(row)
        out["growth"] = {"rows": growth, "fast_exponent": growth_exponent(
            [r["scenes"] for r in growth], [r["fast_s"]["median"] for r in growth])}
    return out


# --------------------------------------------------------------------------- data: simulator, check

def _synthetic_params(params: dict, scenes: int, workers: int) -> dict:
    p = copy.deepcopy(params)
    syn = dict(p.get("synthetic") or {})
    syn.update(profile="default", train_scenes_per_band=max(1, int(math.ceil(scenes / 2))),
               test_scenes_per_band=0, workers=int(workers))
    p["synthetic"] = syn
    return p


def bench_simulator(settings: dict, params: dict, work: Path) -> dict:
    """``simulate_scene`` (compute only, one process) and ``generate`` (end to end) on 1, 2, … workers.

    Leaves the last archive generated in ``work/raw`` for the data check and the TFRecord build.
    """
    from probav.data import synthetic

    cfg = settings["simulator"]
    sim_settings = synthetic.resolve_settings(params)
    out: dict = {}
    n_compute = max(int(cfg["compute_scenes"]), 1)

    def compute():
        for i in range(n_compute):
            synthetic.simulate_scene(np.random.default_rng(i), ("RED", "NIR")[i % 2], f"imgset{i:04d}",
                                     "train", sim_settings)

    t = measure(compute, **_timing(settings, repeats=cfg["repeats"], warmup=0))
    out["compute"] = {"scenes": n_compute, "scenes_per_s": rate(t, n_compute), "s_per_scene": summary(
        [x / n_compute for x in t]), "note": "simulate_scene only: no PNG writing, one process"}

    n = max(int(cfg["scenes"]), 1)
    generated = {}
    raw = work / "raw"
    for w in worker_counts(settings["data"]["workers"]):
        p = _synthetic_params(params, n, w)
        total = sum(synthetic.scene_counts(p).values())
        times, sizes = [], []
        for _ in range(max(int(cfg["repeats"]), 1)):
            shutil.rmtree(raw, ignore_errors=True)
            start = time.perf_counter()
            with _quiet():
                synthetic.generate(raw, p, progress=False)
            times.append(time.perf_counter() - start)
            sizes.append(_dir_bytes(raw))
            if len(times) >= settings["min_repeats"] and sum(times) >= settings["budget_s"]:
                break
        png = float(np.median(sizes))
        generated[str(w)] = {"scenes_per_s": rate(times, total), "png_mb_per_s": rate(times, png / MB),
                             "seconds": summary(times)}
        out["scenes"] = total
        out["png_mb"] = png / MB
    out["generate"] = {"workers": generated,
                       "note": "generate(): simulate, write PNGs and norm.csv; worker processes are spawned "
                               "(about 0.5 s each to start, included)"}
    return out


def enlarge_archive(raw: Path, scenes: int) -> int:
    """Copy train scenes of ``raw`` under new names (imgset5000…, listed in norm.csv) until it holds
    ``scenes`` scenes: more data for the check and the TFRecord build without simulating it.
    Returns the number of copies made."""
    from probav.scene import read_norm, scene_dirs, write_norm

    originals = scene_dirs(raw, "train")
    have = sum(1 for split in ("train", "test") for _ in scene_dirs(raw, split))
    if not originals or have >= scenes:
        return 0
    norms = read_norm(raw / "norm.csv")
    made = 0
    for i in range(scenes - have):
        source = originals[i % len(originals)]
        name = f"imgset{5000 + i:04d}"
        shutil.copytree(source, source.parent / name)
        norms[name] = norms[source.name]
        made += 1
    write_norm(raw / "norm.csv", norms)
    return made


def _decoded_bytes(raw: Path) -> int:
    """Bytes of the decoded arrays of every scene (LR uint16 + QM bool, HR uint16 + SM bool)."""
    lr = len(list(raw.rglob("LR*.png")))
    hr = len(list(raw.rglob("HR.png")))
    return lr * 128 * 128 * 3 + hr * 384 * 384 * 3


def bench_check(settings: dict, params: dict, work: Path) -> dict:
    """``check_scenes`` over ``work/raw`` on 1, 2, … workers (the pool is forced on at any size)."""
    from probav.data import check

    raw = work / "raw"
    if not (raw / "norm.csv").is_file():
        return _skip("no generated archive (the simulator part did not run)")
    copies = enlarge_archive(raw, int(settings["data"].get("scenes", 0) or 0))
    scenes = sum(1 for split in ("train", "test") for _ in (raw / split).glob("*/imgset*"))
    png, decoded = _dir_bytes(raw), _decoded_bytes(raw)
    saved = check.POOL_MIN_SCENES
    check.POOL_MIN_SCENES = 0  # measure the pool even on a small archive
    out = {"scenes": scenes, "copied_scenes": copies, "png_mb": png / MB, "decoded_mb": decoded / MB, "workers": {},
           "note": f"POOL_MIN_SCENES ({saved}) overridden to 0 so that workers > 1 really use a pool; "
                   f"the stage itself works in-process below {saved} scenes"}
    try:
        for w in worker_counts(settings["data"]["workers"]):
            def run():
                with _quiet():
                    check.check_scenes(raw, "stop", workers=w, index_csv=work / "scenes.csv")
            times = measure(run, **_timing(settings))
            out["workers"][str(w)] = {"scenes_per_s": rate(times, scenes), "png_mb_per_s": rate(times, png / MB),
                                      "decoded_mb_per_s": rate(times, decoded / MB), "seconds": summary(times)}
    finally:
        check.POOL_MIN_SCENES = saved
    return out


def _write_split(work: Path) -> Path:
    """data/split.csv for the bench archive: every usable train scene, 3 in 4 train, the rest dev."""
    import pandas as pd

    table = pd.read_csv(work / "scenes.csv")
    train = table[(table["split"] == "train") & (table["status"] == "ok")].reset_index(drop=True)
    split = pd.DataFrame({"name": train["name"], "band": train["band"],
                          "subset": ["dev" if i % 4 == 3 else "train" for i in range(len(train))]})
    path = work / "split.csv"
    split.to_csv(path, index=False)
    return path


# --------------------------------------------------------------------------- TFRecords and the input pipeline

def _call_with(fn: Callable, available: dict):
    """Call ``fn`` with the keyword arguments it accepts, from ``available`` (positional-only
    parameters are filled in order). Raises TypeError when a required one is missing."""
    sig = inspect.signature(fn)
    args, kwargs = [], {}
    for name, p in sig.parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if name in available:
            if p.kind == p.POSITIONAL_ONLY:
                args.append(available[name])
            else:
                kwargs[name] = available[name]
        elif p.default is p.empty:
            raise TypeError(f"{fn.__module__}.{fn.__name__}: no value for required argument {name!r}")
    return fn(*args, **kwargs)


TFRECORD_WRITERS = ("write_tfrecords", "build_tfrecords", "write_all", "build")


def bench_tfrecords(settings: dict, params: dict, work: Path) -> dict:
    """The TFRecord build of ``work/raw`` on 1, 2, … workers; leaves the last build in ``work/tfrecords``."""
    module = _optional_module("probav.data.tfrecords")
    if module is None:
        return _skip("probav.data.tfrecords does not exist yet")
    writer = next((getattr(module, n) for n in TFRECORD_WRITERS if callable(getattr(module, n, None))), None)
    if writer is None:
        return _skip(f"probav.data.tfrecords has none of {', '.join(TFRECORD_WRITERS)}")
    raw = work / "raw"
    if not (work / "scenes.csv").is_file():
        return _skip("no scene index (the check part did not run)")
    split = _write_split(work)
    png, decoded = _dir_bytes(raw), _decoded_bytes(raw)
    scenes = sum(1 for _ in raw.glob("*/*/imgset*"))
    out_dir = work / "tfrecords"
    out = {"function": f"{writer.__module__}.{writer.__name__}", "scenes": scenes, "png_mb": png / MB,
           "decoded_mb": decoded / MB, "workers": {}}
    import tensorflow  # noqa: F401  (imported by the writer: not part of its time)

    saved = getattr(module, "POOL_MIN_SCENES", None)
    if saved is not None:
        module.POOL_MIN_SCENES = 0  # measure the pool even on a small archive
        out["note"] = (f"POOL_MIN_SCENES ({saved}) overridden to 0 so that workers > 1 really use a pool; "
                       f"the stage itself works in-process below {saved} scenes")
    try:
        return _tfrecords_runs(writer, settings, params, work, raw, split, out_dir, out, scenes, png, decoded)
    finally:
        if saved is not None:
            module.POOL_MIN_SCENES = saved


def _tfrecords_runs(writer, settings, params, work, raw, split, out_dir, out, scenes, png, decoded) -> dict:
    for w in worker_counts(settings["data"]["workers"]):
        p = copy.deepcopy(params)
        p.setdefault("tfrecords", {})["workers"] = w
        available = {"raw": raw, "raw_root": raw, "scenes": work / "scenes.csv", "scenes_csv": work / "scenes.csv",
                     "index_csv": work / "scenes.csv", "split": split, "split_csv": split, "out": out_dir,
                     "out_dir": out_dir, "root": out_dir, "params": p, "workers": w, "progress": False}

        def run():
            shutil.rmtree(out_dir, ignore_errors=True)
            with _quiet():
                _call_with(writer, available)
        times = measure(run, **_timing(settings, warmup=0))
        written = _dir_bytes(out_dir, "*.tfrecord*")
        out["workers"][str(w)] = {"scenes_per_s": rate(times, scenes), "png_mb_per_s": rate(times, png / MB),
                                  "decoded_mb_per_s": rate(times, decoded / MB),
                                  "written_mb_per_s": rate(times, written / MB), "seconds": summary(times)}
        out["written_mb"] = written / MB
    return out


def _training_files(work: Path) -> list[str]:
    return sorted(str(p) for p in (work / "tfrecords").glob("train-*.tfrecord*"))


def bench_pipeline(settings: dict, params: dict, work: Path, seed: int = 0) -> dict:
    """Batches/s of ``probav.data.pipeline.training_dataset`` over the bench's TFRecords."""
    module = _optional_module("probav.data.pipeline")
    if module is None or not hasattr(module, "training_dataset"):
        return _skip("probav.data.pipeline.training_dataset does not exist yet")
    files = _training_files(work)
    if not files:
        return _skip("no train TFRecords (the tfrecords part did not run or failed)")
    n = max(int(settings["pipeline"]["batches"]), 1)
    inp = params.get("input") or {}
    start = time.perf_counter()
    dataset = module.training_dataset(files, params, seed)
    iterator = iter(dataset.repeat() if hasattr(dataset, "repeat") else dataset)
    first = next(iterator)
    startup = time.perf_counter() - start

    def batches():
        for _ in range(n):
            next(iterator)
    times = measure(batches, **_timing(settings, warmup=0))
    inputs, target = first
    shapes = {k: list(v.shape) for k, v in inputs.items()} if isinstance(inputs, dict) else list(inputs.shape)
    batch = int(next(iter(inputs.values())).shape[0]) if isinstance(inputs, dict) else int(inputs.shape[0])
    return {"batches_per_s": rate(times, n), "examples_per_s": rate(times, n * batch),
            "first_batch_s": startup, "batches_per_repeat": n, "batch_size": batch,
            "patch_size": inp.get("patch_size"), "frames": inp.get("frames"),
            "shapes": {"inputs": shapes, "target": list(target.shape)}, "train_files": len(files)}


# --------------------------------------------------------------------------- models

def _bench_scenes(work: Path, count: int) -> list:
    """``count`` copies of one scene of the bench archive: the one with the median frame count, so
    that growth curves show the cost of more scenes, not of different ones."""
    from probav.scene import read_scene, scene_dirs

    dirs = scene_dirs(work / "raw", "train")
    if not dirs:
        raise FileNotFoundError(f"no scenes under {work / 'raw'} (the simulator part did not run)")
    scenes = sorted((read_scene(d) for d in dirs[:16]), key=lambda sc: (sc.frames, sc.name))
    typical = scenes[len(scenes) // 2]
    return [typical] * max(count, 1)


def _inference_growth(predict_many: Callable[[list], object], scenes: list, sizes: list[int],
                      settings: dict) -> dict:
    rows = []
    for n in sizes:
        subset = scenes[:n]
        times = measure(lambda: predict_many(subset),
                        **_timing(settings, warmup=0, budget_s=settings["models"]["inference_budget_s"]))
        rows.append({"scenes": n, "seconds": summary(times), "ms_per_scene": per_item_ms(times, n),
                     "scenes_per_s": rate(times, n)})
    return {"rows": rows, "exponent": growth_exponent([r["scenes"] for r in rows],
                                                       [r["seconds"]["median"] for r in rows])}


def bench_classical_model(name: str, settings: dict, params: dict, work: Path) -> dict:
    """Inference scenes/s, its growth and peak memory of a classical (untrained) model."""
    import tracemalloc

    from probav.models.registry import model_class

    cls = model_class(name)
    if cls.trainable:
        return _skip(f"{name} is trainable: measured as a deep model")
    model = cls(params)
    sizes = sorted({int(n) for n in settings["models"]["growth"] if int(n) >= 1}) or [1]
    scenes = _bench_scenes(work, max(sizes))
    model.predict(scenes[0])  # warm-up (imports, caches)
    growth = _inference_growth(lambda s: list(model.predict_many(s)), scenes, sizes, settings)
    with RssPeak() as rss:
        model.predict(scenes[0])
    tracemalloc.start()
    model.predict(scenes[0])
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    last = growth["rows"][-1]
    return {"kind": "classical", "parameters": 0, "inference": {"scenes": last["scenes"],
            "scenes_per_s": last["scenes_per_s"], "ms_per_scene": last["ms_per_scene"]},
            "inference_growth": growth,
            "peak_memory_mb": {"tracemalloc_one_scene": traced / MB, "rss_one_scene": rss.delta_mb,
                               "note": "one scene's prediction, apart from the timings: numpy allocations "
                                       "(tracemalloc) and resident memory above the start (sampled)"},
            "scene": {"name": scenes[0].name, "frames": int(scenes[0].frames)}}


# ---- deep models

def _normalisation(scene) -> tuple[float, float]:
    """Mean and std of the clear LR values of a scene ([0,1] units): stands in for the training
    data's statistics (``probav.training.clear_statistics``), which only scale the inputs."""
    values = scene.lr[scene.qm].astype(np.float64) / 65535.0
    return (float(values.mean()), float(max(values.std(), 1e-4))) if values.size else (0.1, 0.05)


def _with_frames(params: dict, frames: int) -> dict:
    return _merge(params, {"input": {"frames": int(frames)}})


class DeepSetup:
    """An untrained deep model ready to time: ``network`` (the saved network), ``trainer`` (the
    compiled Keras model that training fits: the network itself, or e.g. a GAN wrapper), ``model``
    (the ``DeepModel``, None on the fallback path) and how each was obtained."""

    def __init__(self, name: str, params: dict, frames: int, norm: tuple[float, float]):
        from probav.models.registry import model_class

        self.name, self.frames = name, int(frames)
        params = _with_frames(params, frames)
        self.model, self.loss = None, None
        try:
            cls = model_class(name)
        except KeyError as err:
            cls, reason = None, str(err)
        if cls is not None and hasattr(cls, "build_network") and hasattr(cls, "compile_training_model"):
            self._from_deep_model(cls, name, params, norm)
        else:
            self._fallback(name, params, reason if cls is None else f"{cls.__name__} is not a DeepModel")

    def _from_deep_model(self, cls, name, params, norm):
        """Exactly as ``probav.training.train`` builds and compiles it."""
        from probav.losses import make_loss
        from probav.metrics.tf_score import CPSNR
        from probav.training import make_optimizer, train_settings

        self.model = cls(params)
        if hasattr(self.model, "set_normalisation"):
            self.model.set_normalisation(*norm)
        self.network = self.model.build()
        if getattr(self.model, "uses_prior", False):
            from probav.data.tfrecords import prior_spec

            # Inference then makes each scene's prior as the pipeline does: part of the model's cost.
            self.model.set_prior(prior_spec(params) or {"model": "shift_and_add", "classical": {}})
        settings = train_settings(params, name)
        self.loss = make_loss(settings["loss"])
        self.trainer = self.model.compile_training_model(make_optimizer(settings, 1000), self.loss,
                                                         [CPSNR(name="cpsnr")])
        self.built_by = f"{cls.__module__}.{cls.__name__}.build_network"
        self.compiled_by = (f"{cls.__name__}.compile_training_model (as probav.training.train: Adam, "
                            f"loss {settings['loss']}, cPSNR metric)")

    def _fallback(self, name, params, reason):
        import keras

        module = _optional_module(f"probav.models.{name}")
        builder = getattr(module, f"build_{name}", None) if module else None
        if builder is None:
            raise LookupError(f"{reason}; and no build_{name} in probav/models/{name}.py")
        cfg = params.get("model") or {}
        available = {k: v for k, v in {"frames": self.frames, "blocks": cfg.get("blocks"),
                                       "filters": cfg.get("filters")}.items() if v is not None}
        self.network = self.trainer = _call_with(builder, available)
        try:
            from probav.losses import make_loss

            self.loss, how = make_loss("l1"), "shift-aware l1 (probav.losses)"
        except ImportError:
            self.loss, how = _masked_l1, "masked l1"
        self.trainer.compile(optimizer=keras.optimizers.Adam(1e-3), loss=self.loss)
        self.built_by = f"{builder.__module__}.{builder.__name__} (fallback: {reason})"
        self.compiled_by = f"bench fallback: Adam + {how}"


def _masked_l1(y_true, y_pred):
    import tensorflow as tf

    mask = y_true[..., 1:2]
    return tf.reduce_sum(tf.abs(y_true[..., 0:1] - y_pred) * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)


def _input_names(setup: DeepSetup) -> list[str]:
    return [t.name for t in setup.network.inputs]


def _random_batch(batch: int, frames: int, patch: int, seed: int = 0, names=("lr", "qm", "frame_mask")):
    """One batch of the training input contract (the inputs in ``names``): LR-like values, 85% clear
    QMs, an LR-like prior, HR + SM target."""
    rng = np.random.default_rng(seed)
    inputs = {"lr": rng.uniform(0.02, 0.2, (batch, frames, patch, patch)).astype(np.float32),
              "qm": (rng.uniform(size=(batch, frames, patch, patch)) > 0.15).astype(np.float32),
              "frame_mask": np.ones((batch, frames), np.float32),
              "reference": np.tile(np.eye(1, frames, dtype=np.float32), (batch, 1)),
              "prior": rng.uniform(0.02, 0.2, (batch, 3 * patch, 3 * patch)).astype(np.float32)}
    inputs = {k: v for k, v in inputs.items() if k in names}
    target = np.stack([rng.uniform(0.02, 0.2, (batch, 3 * patch, 3 * patch)),
                       (rng.uniform(size=(batch, 3 * patch, 3 * patch)) > 0.1)], axis=-1).astype(np.float32)
    return inputs, target


def _specs(batch: int, frames: int, patch: int, names=("lr", "qm", "frame_mask")):
    import tensorflow as tf

    x = {"lr": tf.TensorSpec((batch, frames, patch, patch), tf.float32),
         "qm": tf.TensorSpec((batch, frames, patch, patch), tf.float32),
         "frame_mask": tf.TensorSpec((batch, frames), tf.float32),
         "reference": tf.TensorSpec((batch, frames), tf.float32),
         "prior": tf.TensorSpec((batch, 3 * patch, 3 * patch), tf.float32)}
    x = {k: v for k, v in x.items() if k in names}
    return x, tf.TensorSpec((batch, 3 * patch, 3 * patch, 2), tf.float32)


def graph_flops(fn: Callable, *specs) -> float | None:
    """FLOPs of one call of ``fn`` traced at fixed shapes, from TensorFlow's profiler (ops without a
    registered count, e.g. sorts and gathers, count as 0: a slight underestimate)."""
    import tensorflow as tf

    graph = tf.function(fn).get_concrete_function(*specs).graph
    opts = (tf.compat.v1.profiler.ProfileOptionBuilder(tf.compat.v1.profiler.ProfileOptionBuilder.float_operation())
            .with_empty_output().build())
    info = tf.compat.v1.profiler.profile(graph=graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op", options=opts)
    return float(info.total_float_ops) if info is not None else None


def train_step_flops(setup: DeepSetup, batch: int, patch: int) -> float | None:
    """FLOPs of one training step: the trainer's own ``train_step`` (forward, loss, gradients,
    optimizer update, metrics; a GAN's discriminator too)."""
    x, y = _specs(batch, setup.frames, patch, _input_names(setup))
    return graph_flops(lambda a, b: setup.trainer.train_step((a, b)), x, y)


def forward_flops(network, frames: int, side: int = 128, batch: int = 1) -> float | None:
    x, _ = _specs(batch, frames, side, [t.name for t in network.inputs])
    return graph_flops(lambda a: network(a, training=False), x)


def _tf_memory() -> dict | None:
    import tensorflow as tf

    for device in ("GPU:0", "CPU:0"):
        try:
            info = tf.config.experimental.get_memory_info(device)
            return {"device": device, "peak_mb": info["peak"] / MB}
        except (ValueError, RuntimeError):
            continue
    return None


def _time_train_steps(setup: DeepSetup, batch: int, patch: int, steps: int, timing: dict) -> tuple[list[float], float]:
    """Seconds per training step (one value per repeat of ``steps`` steps, on one fixed random batch)
    and the first step's seconds (it traces and compiles the train function)."""
    x, y = _random_batch(batch, setup.frames, patch, names=_input_names(setup))
    start = time.perf_counter()
    setup.trainer.train_on_batch(x, y)
    first = time.perf_counter() - start
    setup.trainer.train_on_batch(x, y)

    def run():
        for _ in range(steps):
            setup.trainer.train_on_batch(x, y)
    return [t / steps for t in measure(run, warmup=0, **timing)], first


def _deep_predictor(setup: DeepSetup, params: dict) -> tuple[Callable[[list], object], str]:
    """predict_many(scenes) of the untrained model: the DeepModel's own inference (frame selection by
    the pipeline's select_frames, self-ensemble); without the pipeline module, its predict_arrays on
    the K clearest frames; on the fallback path, the bare network on the K clearest frames."""
    model, frames = setup.model, setup.frames

    def clearest(scene):
        order = np.argsort(-scene.clearance, kind="stable")[:frames]
        lr = np.zeros((frames, 128, 128), np.float32)
        qm = np.zeros_like(lr)
        mask = np.zeros(frames, np.float32)
        lr[:len(order)] = scene.lr[order] / 65535.0
        qm[:len(order)] = scene.qm[order]
        mask[:len(order)] = 1
        return lr, qm, mask

    if model is not None:
        pipeline = _optional_module("probav.data.pipeline")
        if pipeline is not None and hasattr(pipeline, "select_frames"):
            return (lambda s: list(model.predict_many(s))), f"{type(model).__name__}.predict_many"
        return ((lambda s: [model.predict_arrays(*clearest(sc)) for sc in s]),
                f"{type(model).__name__}.predict_arrays on the K clearest frames (probav.data.pipeline not there yet)")

    import tensorflow as tf

    network = setup.network
    forward = tf.function(lambda x: network(x, training=False), reduce_retracing=True)

    def predict_many(scenes):
        out = []
        for scene in scenes:
            lr, qm, mask = clearest(scene)
            out.append(np.asarray(forward({"lr": lr[None], "qm": qm[None], "frame_mask": mask[None]})))
        return out
    return predict_many, "bare network on the K clearest frames, batch 1"


def bench_deep_model(name: str, settings: dict, params: dict, work: Path) -> dict:
    """Parameters, inference, training steps/s, FLOPs/step and K growth of an untrained deep model."""
    import tensorflow as tf

    inp = params.get("input") or {}
    frames, batch, patch = int(inp.get("frames", 9)), int(inp.get("batch_size", 16)), int(inp.get("patch_size", 32))
    sizes = sorted({int(n) for n in settings["models"]["growth"] if int(n) >= 1}) or [1]
    scenes = _bench_scenes(work, max(sizes))
    norm = _normalisation(scenes[0])
    base_rss = current_rss_mb()
    tf.keras.utils.set_random_seed(int(params.get("seed", 0)))
    setup = DeepSetup(name, params, frames, norm)
    network = setup.network
    out: dict = {"kind": "deep", "built_by": setup.built_by, "parameters": int(network.count_params()),
                 "frames": frames, "batch_size": batch, "patch_size": patch,
                 "self_ensemble": int(getattr(setup.model, "self_ensemble", 0) or 0)}

    # Inference first (so that its memory peak is its own): whole 128×128 scenes.
    predict_many, how = _deep_predictor(setup, params)
    out["inference_by"] = how
    predict_many(scenes[:1])  # warm-up: traces the inference function
    growth = _inference_growth(predict_many, scenes, sizes, settings)
    last = growth["rows"][-1]
    out["inference"] = {"scenes": last["scenes"], "scenes_per_s": last["scenes_per_s"],
                        "ms_per_scene": last["ms_per_scene"]}
    out["inference_growth"] = growth
    with RssPeak() as rss_infer:
        predict_many(scenes[:1])
    try:
        members = max(out["self_ensemble"], 1) if setup.model is not None else 1
        fwd = forward_flops(network, frames, 128, 1)
        out["inference"]["flops_per_scene"] = None if fwd is None else fwd * members
    except Exception as err:  # the profiler is best effort
        out["inference"]["flops_per_scene"] = None
        out["inference"]["flops_error"] = f"{type(err).__name__}: {err}"

    # Training at the default patch and batch size.
    steps = max(int(settings["models"]["train_steps"]), 1)
    step_s, first = _time_train_steps(setup, batch, patch, steps, _timing(settings))
    x, y = _random_batch(batch, frames, patch, names=_input_names(setup))
    with RssPeak() as rss_train:
        setup.trainer.train_on_batch(x, y)
    out["train"] = {"compiled_by": setup.compiled_by, "first_step_s": first,
                    "steps_per_s": summary([1 / t for t in step_s]), "step_ms": summary([1e3 * t for t in step_s]),
                    "steps_per_repeat": steps, "examples_per_s": summary([batch / t for t in step_s])}
    if setup.trainer is not network:
        out["train"]["trainer"] = type(setup.trainer).__name__
        out["train"]["trainer_parameters"] = int(sum(np.prod(v.shape) for v in setup.trainer.weights))
    try:
        out["train"]["flops_per_step"] = train_step_flops(setup, batch, patch)
    except Exception as err:
        out["train"]["flops_per_step"] = None
        out["train"]["flops_error"] = f"{type(err).__name__}: {err}"
    out["peak_memory_mb"] = {"inference_one_scene": rss_infer.delta_mb, "train_one_step": rss_train.delta_mb,
                             "model_peak": None if base_rss is None else max(maxrss_mb() - base_rss, 0.0),
                             "note": "inference_one_scene / train_one_step: resident memory above the "
                                     "start of one scene's prediction / one training step once traced "
                                     "(sampled, apart from the timings); model_peak: the process's peak "
                                     "(ru_maxrss) above its resident memory after imports, before the "
                                     "network was built (traces, inference and training at default "
                                     "K; the K-growth runs come after)"}
    tf_mem = _tf_memory()
    if tf_mem:
        out["peak_memory_mb"]["tf_allocator"] = tf_mem
    del setup, network

    # Growth: training step time against K (the default K is the measurement above).
    rows = []
    cfg = settings["models"]
    timing = _timing(settings, repeats=cfg["frames_repeats"], budget_s=cfg["frames_budget_s"])
    for k in sorted({int(k) for k in cfg["frames"]} | {frames}):
        if k == frames:
            rows.append({"frames": k, "step_ms": out["train"]["step_ms"]})
            continue
        try:
            tf.keras.backend.clear_session()
            setup_k = DeepSetup(name, params, k, norm)
            times, _ = _time_train_steps(setup_k, batch, patch, max(int(cfg["frames_steps"]), 1), timing)
            rows.append({"frames": k, "step_ms": summary([1e3 * t for t in times])})
            del setup_k
        except Exception as err:
            rows.append({"frames": k, "error": f"{type(err).__name__}: {err}"})
        finally:
            tf.keras.backend.clear_session()
    ok = [r for r in rows if "step_ms" in r]
    out["train_growth"] = {"rows": rows, "exponent": growth_exponent([r["frames"] for r in ok],
                                                                      [r["step_ms"]["median"] for r in ok])}
    return out


def bench_model(name: str, settings: dict, params: dict, work: Path) -> dict:
    from probav.models.registry import model_class

    deep = set(settings["models"]["deep"] if settings["models"]["deep"] is not None else params.get("deep_models") or [])
    if name in deep:
        if _optional_module(f"probav.models.{name}") is None:
            return _skip(f"probav/models/{name}.py does not exist yet")
        return bench_deep_model(name, settings, params, work)
    try:
        model_class(name)
    except KeyError as err:
        return _skip(str(err))
    return bench_classical_model(name, settings, params, work)


# --------------------------------------------------------------------------- parts and subprocesses

def run_part(part: str, settings: dict, params: dict, work: Path) -> dict:
    """One measurement by name: hardware, hardware_tf, scorer, simulator, check, tfrecords, pipeline,
    model:<name>. Errors become ``{"error": …}``."""
    seed = int(params.get("seed", 0))
    start = time.perf_counter()
    try:
        if part == "hardware":
            result = bench_hardware(settings)
        elif part == "hardware_tf":
            result = bench_hardware_tf(settings)
        elif part == "scorer":
            result = bench_scorer(settings, seed)
        elif part == "simulator":
            result = bench_simulator(settings, params, work)
        elif part == "check":
            result = bench_check(settings, params, work)
        elif part == "tfrecords":
            result = bench_tfrecords(settings, params, work)
        elif part == "pipeline":
            result = bench_pipeline(settings, params, work, seed)
        elif part.startswith("model:"):
            result = bench_model(part.split(":", 1)[1], settings, params, work)
        else:
            raise ValueError(f"unknown bench part {part!r}")
    except Exception as err:
        result = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc(limit=6)}
    result["wall_s"] = time.perf_counter() - start
    result["process_peak_rss_mb"] = maxrss_mb()
    return result


def run_parts_subprocess(parts: list[str], settings: dict, params: dict, work: Path) -> dict:
    """Run ``parts`` in one fresh Python process (``python -m probav.bench``); {part: result}."""
    with tempfile.TemporaryDirectory(prefix="bench-ipc-") as tmp:
        config, out = Path(tmp) / "config.json", Path(tmp) / "out.json"
        config.write_text(json.dumps({"settings": settings, "params": params, "work": str(work)}, default=str))
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "probav.bench", str(config), str(out), *parts]
        timeout = float(settings["timeout_s"]) * max(len(parts), 1)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
            failure = f"exit status {proc.returncode}: {proc.stderr.strip()[-1500:]}" if proc.returncode else None
        except subprocess.TimeoutExpired:
            failure = f"timed out after {timeout:.0f} s"
        results = json.loads(out.read_text()) if out.is_file() else {}
    for part in parts:
        if part not in results:
            results[part] = {"error": failure or "no result written"}
    return results


def _main_subprocess(argv: list[str]) -> int:
    """``python -m probav.bench CONFIG OUT PART…``: run parts, writing results after each one."""
    config_path, out_path, parts = Path(argv[0]), Path(argv[1]), argv[2:]
    config = json.loads(config_path.read_text())
    results = {}
    for part in parts:
        results[part] = run_part(part, config["settings"], config["params"], Path(config["work"]))
        out_path.write_text(json.dumps(results, default=_json_default))
    return 0


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return str(value)


# --------------------------------------------------------------------------- the whole bench

ALL_PARTS = ("hardware", "scorer", "simulator", "check", "tfrecords", "hardware_tf", "pipeline", "models")


def _load_avg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for key, dists in (("numpy", ["numpy"]), ("scipy", ["scipy"]), ("tensorflow", ["tensorflow-cpu", "tensorflow"]),
                       ("keras", ["keras"])):
        out[key] = None
        for dist in dists:
            try:
                out[key] = version(dist)
                break
            except PackageNotFoundError:
                continue
    return out


def run_bench(params: dict, quick: bool = False, parts: list[str] | None = None, work: Path | None = None,
              log: Callable[[str], None] | None = print) -> dict:
    """Run the bench (see the module docstring); ``parts`` limits it to some of ``ALL_PARTS``."""
    settings = bench_settings(params, quick)
    params = _merge(params, settings.get("params"))  # bench.params (and --quick's tiny network) override
    wanted = list(parts or ALL_PARTS)
    unknown = sorted(set(wanted) - set(ALL_PARTS))
    if unknown:
        raise ValueError(f"unknown bench parts {unknown}; choose from {', '.join(ALL_PARTS)}")
    classical = settings["models"]["classical"]
    deep = settings["models"]["deep"]
    classical = list(params.get("models") or []) if classical is None else list(classical)
    deep = list(params.get("deep_models") or []) if deep is None else list(deep)
    settings["models"]["classical"], settings["models"]["deep"] = classical, deep

    # Order matters: the simulator makes the archive the check reads, the check the index the
    # TFRecord build reads, which writes the files the input pipeline reads.
    order = [p for p in ALL_PARTS if p in wanted and p != "models"]
    if "models" in wanted:
        order += [f"model:{m}" for m in classical + deep]
    if any(p in wanted for p in ("check", "tfrecords", "pipeline", "models")) and "simulator" not in order:
        order.insert(0, "simulator")  # they need its archive
    if any(p in wanted for p in ("tfrecords", "pipeline")) and "check" not in order:
        order.insert(order.index("simulator") + 1, "check")
    if "pipeline" in wanted and "tfrecords" not in order:
        order.insert(order.index("check") + 1, "tfrecords")

    meta = {"version": VERSION, "quick": settings["quick"], "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "cpu_count": os.cpu_count(), "cpu": _cpu_model(), "platform": platform.platform(),
            "versions": _versions(), "load_before": _load_avg(), "settings": settings}
    start = time.perf_counter()
    results: dict = {}
    owned = work is None
    work = Path(tempfile.mkdtemp(prefix="probav-bench-")) if owned else Path(work)
    work.mkdir(parents=True, exist_ok=True)
    try:
        if settings["quick"]:
            # Two processes in all: everything without TensorFlow, then everything with it.
            tf_parts = [p for p in order if p in TF_PARTS or p.removeprefix("model:") in deep]
            groups = [[p for p in order if p not in tf_parts], tf_parts]
        else:
            groups = [[p] for p in order]  # one process per part: separate memory peaks
        for group in (g for g in groups if g):
            if log:
                log(f"bench: {', '.join(group)} …")
            results.update(run_parts_subprocess(group, settings, params, work))
            if log:
                for p in group:
                    r = results[p]
                    state = r.get("skipped") or r.get("error") or "ok"
                    log(f"  {p}: {str(state).splitlines()[0][:200]} ({r.get('wall_s', 0):.1f} s)")
    finally:
        if owned:
            shutil.rmtree(work, ignore_errors=True)

    report = {"meta": meta}
    for key in ("hardware", "scorer", "simulator", "check", "tfrecords", "pipeline"):
        if key in results:
            report[key] = results[key]
    if "hardware_tf" in results:
        report.setdefault("hardware", {})["tensorflow"] = results["hardware_tf"]
    models = {p.removeprefix("model:"): r for p, r in results.items() if p.startswith("model:")}
    if models:
        report["models"] = models
    report["growth"] = collect_growth(report)
    report["derived"] = derive(report)
    meta["load_after"] = _load_avg()
    meta["duration_s"] = time.perf_counter() - start
    return json.loads(json.dumps(report, default=_json_default))


# --------------------------------------------------------------------------- growth and hardware fractions

def _median(entry) -> float | None:
    if isinstance(entry, dict) and isinstance(entry.get("median"), (int, float)):
        return float(entry["median"])
    return None


def _best(entry) -> float | None:
    if isinstance(entry, dict) and isinstance(entry.get("max"), (int, float)):
        return float(entry["max"])
    return None


def collect_growth(report: dict) -> dict:
    """Every growth series in one place: {"scorer": …, "inference": {model: …}, "train_frames": {model: …}}."""
    out: dict = {}
    scorer = (report.get("scorer") or {}).get("growth")
    if scorer:
        out["scorer"] = {"scenes": [r["scenes"] for r in scorer["rows"]],
                         "fast_ms_per_scene": [_median(r["fast_ms_per_scene"]) for r in scorer["rows"]],
                         "naive_ms_per_scene": [_median(r.get("naive_ms_per_scene")) for r in scorer["rows"]],
                         "exponent": scorer["fast_exponent"]}
    inference, train = {}, {}
    for name, m in (report.get("models") or {}).items():
        g = m.get("inference_growth")
        if g:
            inference[name] = {"scenes": [r["scenes"] for r in g["rows"]],
                               "ms_per_scene": [_median(r["ms_per_scene"]) for r in g["rows"]],
                               "exponent": g["exponent"]}
        t = m.get("train_growth")
        if t:
            train[name] = {"frames": [r["frames"] for r in t["rows"]],
                           "step_ms": [_median(r.get("step_ms")) for r in t["rows"]], "exponent": t["exponent"]}
    if inference:
        out["inference"] = inference
    if train:
        out["train_frames"] = train
    return out


def derive(report: dict) -> dict:
    """How far from the hardware each part is, and whether training is input-bound."""
    hw = report.get("hardware") or {}
    bandwidth = _best(hw.get("memory_bandwidth_gb_s"))
    tf_hw = hw.get("tensorflow") or {}
    matmul = _best(tf_hw.get("tf_matmul_float32_gflop_s")) or _best(hw.get("numpy_matmul_float32_gflop_s"))
    conv = _best(tf_hw.get("tf_conv3x3_float32_gflop_s"))
    nominal = (hw.get("nominal_peak") or {}).get("gflop_s")
    out: dict = {"memory_bandwidth_gb_s": bandwidth, "matmul_gflop_s": matmul, "conv_gflop_s": conv,
                 "nominal_peak_gflop_s": nominal,
                 "note": "peaks are the best repeat of each hardware measurement (a busy machine only "
                         "slows a repeat down); the parts' rates are medians"}

    scorer = report.get("scorer") or {}
    if "fast_ms_per_scene" in scorer:
        rows = {}
        for name, key, nbytes in (("fast", "fast_ms_per_scene", SCORER_FAST_BYTES),
                                  ("fast_1thread", "fast_1thread_ms_per_scene", SCORER_FAST_BYTES),
                                  ("naive", "naive_ms_per_scene", SCORER_NAIVE_BYTES)):
            ms = scorer[key]
            row = {"ms_per_scene": ms, "estimated_gb_s": nbytes / (ms * 1e-3) / 1e9,
                   "compulsory_gb_s": SCORER_COMPULSORY_BYTES / (ms * 1e-3) / 1e9}
            if bandwidth:
                row["fraction_of_bandwidth"] = row["estimated_gb_s"] / bandwidth
                row["bandwidth_bound_ms"] = nbytes / (bandwidth * 1e9) * 1e3
                row["times_slower_than_bandwidth_bound"] = ms / row["bandwidth_bound_ms"]
            rows[name] = row
        out["scorer"] = rows

    for part in ("check", "tfrecords"):
        section = report.get(part) or {}
        if bandwidth and section.get("workers"):
            out[part] = {w: {"decoded_fraction_of_bandwidth": (_median(r.get("decoded_mb_per_s")) or 0) / 1e3 / bandwidth}
                         for w, r in section["workers"].items()}

    pipeline = _median((report.get("pipeline") or {}).get("batches_per_s"))
    models = {}
    for name, m in (report.get("models") or {}).items():
        row = {}
        train = m.get("train") or {}
        steps = _median(train.get("steps_per_s"))
        flops = train.get("flops_per_step")
        if steps and flops:
            row["train_gflop_s"] = flops * steps / 1e9
            row["train_gflop_per_step"] = flops / 1e9
            if matmul:
                row["train_fraction_of_matmul"] = row["train_gflop_s"] / matmul
            if conv:
                row["train_fraction_of_conv"] = row["train_gflop_s"] / conv
            if nominal:
                row["train_fraction_of_nominal_peak"] = row["train_gflop_s"] / nominal
        infer = m.get("inference") or {}
        per_s = _median(infer.get("scenes_per_s"))
        if per_s and infer.get("flops_per_scene"):
            row["inference_gflop_s"] = infer["flops_per_scene"] * per_s / 1e9
            if matmul:
                row["inference_fraction_of_matmul"] = row["inference_gflop_s"] / matmul
            if nominal:
                row["inference_fraction_of_nominal_peak"] = row["inference_gflop_s"] / nominal
        if steps and pipeline:
            # Measured apart, each on the whole machine. On a CPU-only machine the two share the
            # cores: a step then costs about (1 + input_cost_per_step) step times.
            row["input_batches_per_train_step"] = pipeline / steps
            row["input_cost_per_step"] = steps / pipeline
            row["input_bound"] = pipeline < steps
        if row:
            models[name] = row
    if models:
        out["models"] = models
    if pipeline is None:
        out["input_bound"] = "unknown: the input pipeline was not measured"
    return out


# --------------------------------------------------------------------------- markdown table

def _fmt(x, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        if x == 0:
            return "0"
        if abs(x) >= 100:
            return f"{x:,.0f}"
        return f"{x:.{digits}g}"
    return str(x)


def _cell(entry, scale: float = 1.0) -> tuple[str, str]:
    """(median, 'min–max') of a summary dict."""
    if not isinstance(entry, dict) or entry.get("median") is None:
        return "–", ""
    return _fmt(entry["median"] * scale), f"{_fmt(entry['min'] * scale)}–{_fmt(entry['max'] * scale)}"


def _reason(entry) -> str | None:
    if not isinstance(entry, dict):
        return "not measured"
    if "skipped" in entry:
        return f"skipped: {entry['skipped']}"
    if "error" in entry:
        return f"error: {str(entry['error']).splitlines()[0][:160]}"
    return None


def markdown_table(report: dict) -> str:
    """A short markdown summary: one table of medians (min–max over repeats), one of growth."""
    meta = report.get("meta", {})
    lines = [f"Benchmarks on {meta.get('cpu', '?')}, {meta.get('cpu_count', '?')} cores"
             f"{' (quick run: tiny sizes)' if meta.get('quick') else ''}; load average "
             f"{meta.get('load_before')} → {meta.get('load_after')}; medians of repeats, min–max in brackets.",
             "", "| part | measure | median | min–max | note |", "|---|---|---:|---|---|"]

    def row(part, measure_, entry, note="", scale=1.0):
        med, spread = _cell(entry, scale)
        lines.append(f"| {part} | {measure_} | {med} | {spread} | {note} |")

    def missing(part, entry):
        if entry is None:  # not asked for
            return "absent"
        reason = _reason(entry)
        if reason:
            lines.append(f"| {part} | | | | {reason} |")
        return reason

    hw = report.get("hardware")
    if not missing("hardware", hw):
        row("hardware", "memory bandwidth, GB/s", hw.get("memory_bandwidth_gb_s"), "numpy copy, read + write")
        row("hardware", "numpy matmul float32, GFLOP/s", hw.get("numpy_matmul_float32_gflop_s"), f"n = {hw.get('matmul_n')}")
        nominal = hw.get("nominal_peak") or {}
        if nominal.get("gflop_s"):
            lines.append(f"| hardware | nominal float32 peak, GFLOP/s | {_fmt(nominal['gflop_s'])} | | "
                         f"{nominal['cores']} cores × {nominal['mhz']:.0f} MHz × {nominal['flop_per_cycle']} FLOP/cycle |")
        tfh = hw.get("tensorflow")
        if tfh and not missing("hardware (TF)", tfh):
            row("hardware", "TF matmul float32, GFLOP/s", tfh.get("tf_matmul_float32_gflop_s"))
            row("hardware", "TF conv 3×3 32→32, GFLOP/s", tfh.get("tf_conv3x3_float32_gflop_s"))
    sc = report.get("scorer")
    if not missing("scorer", sc):
        der = (report.get("derived") or {}).get("scorer", {})
        frac = der.get("fast", {}).get("fraction_of_bandwidth")
        row("scorer", "vectorised, scenes/s", sc.get("fast_scenes_per_s"),
            f"{sc.get('n_scenes')} scenes; ≈{_fmt(frac)} of memory bandwidth (estimated bytes)")
        row("scorer", "vectorised 1 thread, scenes/s", sc.get("fast_1thread_scenes_per_s"))
        row("scorer", "naive 49-window loop, scenes/s", sc.get("naive_scenes_per_s"),
            f"vectorised is {_fmt(sc.get('ratio'))}× faster ({_fmt(sc.get('ratio_1thread'))}× on 1 thread); "
            f"max diff {_fmt(sc.get('max_abs_diff_db'))} dB")
    sim = report.get("simulator")
    if not missing("simulator", sim):
        row("simulator", "simulate_scene, scenes/s", sim["compute"]["scenes_per_s"], "compute only, 1 process")
        for w, r in sim["generate"]["workers"].items():
            row("simulator", f"generate, {w} worker(s), scenes/s", r["scenes_per_s"],
                f"{_fmt(_median(r['png_mb_per_s']))} MB/s of PNG written")
    for part, label in (("check", "data check"), ("tfrecords", "TFRecord build")):
        section = report.get(part)
        if not missing(label, section):
            for w, r in section["workers"].items():
                row(label, f"{w} worker(s), scenes/s", r["scenes_per_s"],
                    f"{_fmt(_median(r['png_mb_per_s']))} MB/s PNG, {_fmt(_median(r['decoded_mb_per_s']))} MB/s decoded")
    pipe = report.get("pipeline")
    if not missing("input pipeline", pipe):
        row("input pipeline", "training batches/s", pipe.get("batches_per_s"),
            f"batch {pipe.get('batch_size')}, patch {pipe.get('patch_size')}, K {pipe.get('frames')}")
    derived_models = (report.get("derived") or {}).get("models", {})
    for name, m in (report.get("models") or {}).items():
        if missing(f"model {name}", m):
            continue
        mem = m.get("peak_memory_mb") or {}
        peak = mem.get("inference_one_scene") if m.get("kind") == "deep" else mem.get("tracemalloc_one_scene")
        row(f"model {name}", "inference, scenes/s", (m.get("inference") or {}).get("scenes_per_s"),
            f"{m.get('kind')}; {m.get('parameters'):,} parameters; peak +{_fmt(peak)} MB per scene"
            + (f", {_fmt(mem['model_peak'])} MB for the model in all" if mem.get("model_peak") is not None else ""))
        if m.get("train"):
            d = derived_models.get(name, {})
            note = f"batch {m.get('batch_size')}, patch {m.get('patch_size')}, K {m.get('frames')}"
            if d.get("train_gflop_per_step") is not None:
                note += f"; {_fmt(d['train_gflop_per_step'])} GFLOP/step, {_fmt(d['train_gflop_s'])} GFLOP/s"
                peak = ("conv", d.get("train_fraction_of_conv")) if d.get("train_fraction_of_conv") else \
                    ("matmul", d.get("train_fraction_of_matmul"))
                if peak[1] is not None:
                    note += f" = {_fmt(peak[1])} of the {peak[0]} peak"
            note += f"; peak +{_fmt(mem.get('train_one_step'))} MB per step"
            if "input_bound" in d:
                note += (f"; input {'BOUND' if d['input_bound'] else 'not bound'}: the pipeline makes "
                         f"{_fmt(d['input_batches_per_train_step'])} batches per step time")
            row(f"model {name}", "training, steps/s", m["train"].get("steps_per_s"), note)

    growth = report.get("growth") or {}
    if growth:
        lines += ["", "| growth | sizes | time per item (median) | exponent |", "|---|---|---|---:|"]
        if "scorer" in growth:
            g = growth["scorer"]
            lines.append(f"| scorer, ms/scene vs scenes | {g['scenes']} | "
                         f"{[_fmt(v) for v in g['fast_ms_per_scene']]} | {_fmt(g['exponent'])} |")
        for name, g in growth.get("inference", {}).items():
            lines.append(f"| {name} inference, ms/scene vs scenes | {g['scenes']} | "
                         f"{[_fmt(v) for v in g['ms_per_scene']]} | {_fmt(g['exponent'])} |")
        for name, g in growth.get("train_frames", {}).items():
            lines.append(f"| {name} training, ms/step vs K | {g['frames']} | "
                         f"{[_fmt(v) for v in g['step_ms']]} | {_fmt(g['exponent'])} |")
        lines.append("")
        lines.append("Exponent: slope of log(time) against log(size) (1 = linear; for per-item columns, "
                     "total time grows as size^exponent).")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(_main_subprocess(sys.argv[1:]))
