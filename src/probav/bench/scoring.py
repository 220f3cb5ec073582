"""The official score: the compiled kernel against the naive loop, and scoring a folder end to end.

- ``benchmark_scorer``: ``shifted_cpsnr_batch`` against the 49-window loop ``shifted_cpsnr_naive``
  on the same in-memory scenes, in the same run (the kernel alone; ``synthetic_scenes`` below).
- ``bench_score_folder``: ``probav.metrics.scoring.score_folder`` (what ``probav score`` runs) against
  ``organisers_score_folder``, the organisers' numpy scorer of the challenge kit written again here
  step for step (read SR, HR and SM with scikit-image, convert to floats in [0, 1], look the norm up in
  ``norm.csv`` with pandas, then for each of the 49 windows gather the clear pixels, remove the bias
  and keep the best norm / cPSNR), on a folder of ``scorer.folder_scenes`` scenes written as PNGs
  (HR, SM, norm.csv; no LR frames, which neither reads) and a prediction for each. Same files, same
  run, alternating; both mean scores are kept and must agree to 1e-9.

The scenes are synthetic but shaped like PROBA-V ones: a smooth HR field of 14-bit values in steps
of 16, an SR that is the HR moved by a random whole shift within ±2 pixels, blurred and noisy, and an
SM that is fully clear for half of the scenes and carries blocky cloud patches (drawn at LR
resolution, 3×3 pixels per LR pixel, 2–20% cloudy) for the other half.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from probav.bench.common import growth_exponent, measure, per_item_ms, summary, timing_options
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
    """Time the kernel (scores from arrays in memory) four ways on the same synthetic scenes, ms per scene.

    ``fast``: ``shifted_cpsnr_batch`` with the default threads (all cores); ``fast_1thread``: one
    thread; ``naive``: the 49-window loop ``shifted_cpsnr_naive``; ``organisers``: the organisers'
    ``organisers_score`` (conversion to floats, 49 gathers). Returns each ``<name>_ms_per_scene``
    (median), ``ratio`` / ``ratio_1thread`` (naive / fast), ``ratio_organisers`` /
    ``ratio_organisers_1thread`` (organisers / fast), ``spread`` (min, median, max per timing),
    ``max_abs_diff_db`` (fast against naive) and ``max_abs_score_diff`` (fast against the organisers,
    as norm / cPSNR with a norm of 50), both ~0, and the settings.
    """
    if n_scenes < 1 or repeats < 1:
        raise ValueError("n_scenes and repeats must be at least 1")
    sr, hr, sm = synthetic_scenes(n_scenes, seed)
    norm = 50.0
    runs = {"fast": lambda: shifted_cpsnr_batch(sr, hr, sm),
            "fast_1thread": lambda: shifted_cpsnr_batch(sr, hr, sm, workers=1),
            "naive": lambda: [shifted_cpsnr_naive(sr[i], hr[i], sm[i]) for i in range(n_scenes)],
            "organisers": lambda: [organisers_score(sr[i], hr[i], sm[i], norm) for i in range(n_scenes)]}
    fast = runs["fast"]()  # warm-up, and the values to check
    naive = np.array(runs["naive"]())
    organisers = np.array(runs["organisers"]())
    timings: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):  # alternate, so that a busy spell slows all of them alike
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            timings[name].append(time.perf_counter() - start)
    spread = {name: _spread(times, n_scenes) for name, times in timings.items()}
    ms = {name: s["median"] for name, s in spread.items()}
    return {
        **{f"{name}_ms_per_scene": value for name, value in ms.items()},
        "ratio": ms["naive"] / ms["fast"],
        "ratio_1thread": ms["naive"] / ms["fast_1thread"],
        "ratio_organisers": ms["organisers"] / ms["fast"],
        "ratio_organisers_1thread": ms["organisers"] / ms["fast_1thread"],
        "spread": spread,
        "max_abs_diff_db": float(np.max(np.abs(fast - naive))),
        "max_abs_score_diff": float(np.max(np.abs(norm / fast - organisers))),
        "n_scenes": n_scenes,
        "repeats": repeats,
        "seed": seed,
        "cpu_count": os.cpu_count(),
    }


# --------------------------------------------------------------------------- the official score

# Bytes per scene the scorers move through memory. The compulsory part is reading SR and HR
# (uint16) and SM (bool). The fast scorer's estimate adds its two float32 images (M·h and s, 384²
# each: written once, read once by the correlation, whose rows stay in cache) and the exact
# recompute's second read of SR, HR and SM. The naive loop's counts, per window, the mask read,
# the two gathers (read + write float64), the difference, its square and the mean: about 11
# passes over 378² float64. Caches make these approximate.
_HR = 384
_CROP = 378
SCORER_COMPULSORY_BYTES = _HR * _HR * (2 + 2 + 1)
SCORER_FAST_BYTES = 2 * SCORER_COMPULSORY_BYTES + 2 * 2 * _HR * _HR * 4
SCORER_NAIVE_BYTES = 49 * (_CROP * _CROP * (1 + 11 * 8))


def bench_scorer(settings: dict, work: Path, seed: int = 0) -> dict:
    """The kernel against the naive loop (``benchmark_scorer``) and its growth; under ``folder``, a
    folder scored end to end against the organisers' scorer (``bench_score_folder``)."""
    cfg = settings["scorer"]
    result = benchmark_scorer(n_scenes=int(cfg["scenes"]), repeats=max(int(settings["repeats"]), 1), seed=seed)
    out = dict(result)
    sp = result["spread"]
    for name in ("fast", "fast_1thread", "naive", "organisers"):
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
            t_fast = measure(lambda: shifted_cpsnr_batch(sr[:n], hr[:n], sm[:n]), **timing_options(settings))
            t_one = measure(lambda: shifted_cpsnr_batch(sr[:n], hr[:n], sm[:n], workers=1), **timing_options(settings))
            row["fast_s"] = summary(t_fast)
            row["fast_ms_per_scene"] = per_item_ms(t_fast, n)
            row["fast_1thread_ms_per_scene"] = per_item_ms(t_one, n)
            if n <= int(cfg["naive_max_scenes"]):
                t_naive = measure(lambda: [shifted_cpsnr_naive(sr[i], hr[i], sm[i]) for i in range(n)],
                                  **timing_options(settings, warmup=0))
                row["naive_ms_per_scene"] = per_item_ms(t_naive, n)
            growth.append(row)
        out["growth"] = {"rows": growth, "fast_exponent": growth_exponent(
            [r["scenes"] for r in growth], [r["fast_s"]["median"] for r in growth])}
    out["folder"] = bench_score_folder(settings, work, seed)
    return out


# --------------------------------------------------------------------------- scoring a folder, end to end

def write_scoring_folder(root: Path, scenes: int, seed: int = 0, unique: int = 16) -> tuple[Path, Path, list[str]]:
    """A data folder (``train/RED|NIR/imgsetNNNN/HR.png, SM.png``, ``norm.csv``) and a folder of
    predictions ``imgsetNNNN.png`` for ``scenes`` scenes: ``unique`` of ``synthetic_scenes``, repeated
    under new names (decoding costs the same). Returns (data, predictions, names).

    The predictions are the bytes ``probav predict`` puts in a submission (``probav.submission.encode_png``,
    which is also what ``write_png`` writes); HR and SM are written by ``write_png``, as the simulator
    writes them (16-bit HR, 8-bit 0/255 SM)."""
    from probav.scene import write_norm, write_png
    from probav.submission import encode_png

    sr, hr, sm = synthetic_scenes(min(unique, scenes), seed)
    data, predictions = root / "data", root / "predictions"
    predictions.mkdir(parents=True, exist_ok=True)
    names, norms = [], {}
    for i in range(scenes):
        name, k = f"imgset{i:04d}", i % len(sr)
        scene_dir = data / "train" / ("RED", "NIR")[i % 2] / name
        scene_dir.mkdir(parents=True, exist_ok=True)
        write_png(scene_dir / "HR.png", hr[k])
        write_png(scene_dir / "SM.png", sm[k])
        (predictions / f"{name}.png").write_bytes(encode_png(sr[k]))
        names.append(name)
        norms[name] = 40.0 + 10.0 * (i % 7) / 7  # any positive norm: both scorers read the same file
    write_norm(data / "norm.csv", norms)
    return data, predictions, names


def organisers_score(sr: np.ndarray, hr: np.ndarray, sm: np.ndarray, norm: float) -> float:
    """One scene's score as the organisers' numpy scorer computes it from arrays: SR and HR to floats
    in [0, 1], then for each of the 49 windows the clear pixels gathered, the bias removed and
    norm / cPSNR kept; the lowest wins."""
    import skimage

    sr, hr = skimage.img_as_float(sr), skimage.img_as_float(hr)
    sr_crop = sr[3:-3, 3:-3]
    crop = sr_crop.shape[0]
    window_scores = []
    for u in range(7):
        for v in range(7):
            clear = sm[u:u + crop, v:v + crop]
            diff = hr[u:u + crop, v:v + crop][clear] - sr_crop[clear]
            diff -= np.mean(diff)
            cmse = np.mean(diff * diff)
            window_scores.append(norm / (-10.0 * np.log10(cmse)))
    return float(min(window_scores))


def organisers_score_folder(predictions: Path, data: Path, names: list[str]) -> dict[str, float]:
    """Per-scene score of a folder as the organisers' scorer computes it: each scene's SR, HR and SM
    read with scikit-image, its norm looked up in norm.csv with pandas, then ``organisers_score``."""
    import pandas as pd
    import skimage.io

    norms = pd.read_csv(data / "norm.csv", names=["scene", "cPSNR"], index_col="scene", sep=" ")
    folders = {d.name: d for d in data.glob("*/*/imgset*")}
    scores = {}
    for name in names:
        sr = skimage.io.imread(predictions / f"{name}.png")
        hr = skimage.io.imread(folders[name] / "HR.png")
        sm = skimage.io.imread(folders[name] / "SM.png").astype(bool)
        scores[name] = organisers_score(sr, hr, sm, norms.loc[name].iloc[0])
    return scores


def bench_score_folder(settings: dict, work: Path, seed: int = 0) -> dict:
    """``score_folder`` (all cores, and one thread) against ``organisers_score_folder`` on the same
    folder of ``scorer.folder_scenes`` scenes: seconds, scenes/s, their ratio, the scores' agreement."""
    from probav.metrics.scoring import score_folder
    from probav.png import INFLATE

    n = max(int(settings["scorer"]["folder_scenes"]), 1)
    data, predictions, names = write_scoring_folder(work / "scoring", n, seed)
    ours = score_folder(predictions, data)  # warm-up (file cache), and the values to check
    theirs = organisers_score_folder(predictions, data, names)
    differences = [abs(ours["scenes"][name]["score"] - theirs[name]) for name in names]
    timings: dict[str, list[float]] = {"probav": [], "probav_1thread": [], "organisers": []}
    runs = {"probav": lambda: score_folder(predictions, data),
            "probav_1thread": lambda: score_folder(predictions, data, workers=1),
            "organisers": lambda: organisers_score_folder(predictions, data, names)}
    budget = float(settings["budget_s"])
    for repeat in range(max(int(settings["repeats"]), 1)):  # alternate: a busy spell slows all alike
        for key, run in runs.items():
            start = time.perf_counter()
            run()
            timings[key].append(time.perf_counter() - start)
        if repeat + 1 >= int(settings["min_repeats"]) and sum(map(sum, timings.values())) >= 3 * budget:
            break
    out = {key: {"seconds": summary(t), "scenes_per_s": summary([n / s for s in t])} for key, t in timings.items()}
    reference = float(np.median(timings["organisers"]))
    out.update(scenes=n, ratio=reference / float(np.median(timings["probav"])),
               ratio_1thread=reference / float(np.median(timings["probav_1thread"])),
               mean_score={"probav": ours["mean_score"], "organisers": float(np.mean(list(theirs.values())))},
               max_abs_score_diff=float(max(differences)), cpu_count=os.cpu_count(),
               note="end to end: PNG decoding of SR, HR and SM, the norm, the 49 windows; ratio = organisers' "
                    "median seconds / probav's, same folder, same run")
    out["mean_score_diff"] = abs(out["mean_score"]["probav"] - out["mean_score"]["organisers"])
    out["inflate"] = INFLATE  # what probav's PNG reader inflates with (libdeflate when installed, else zlib)
    return out
