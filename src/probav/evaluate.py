"""Scoring a model on scenes with an HR: a per-scene table and its summary.

``evaluate_model(model, scenes)`` predicts every scene and scores it with the official metric
(``probav.metrics.score``): one row per scene with ``scene, band, frames, clearance`` (mean clear
fraction of its LR frames), ``hr_clearance``, ``norm``, ``cpsnr``, ``score`` and ``seconds`` (inference
time). ``summarise(table, model_name, extra)`` turns the table into the metrics dict written to
``metrics/<model>.json``.

The norm of a scene is its ``norm.csv`` value; a scene without one (synthetic data written without
``norm.csv`` entries) gets the cPSNR of the official baseline, computed here, as PROBAV.md prescribes.
"""
from __future__ import annotations

import math
import time
from typing import Iterable

import numpy as np
import pandas as pd
from tqdm import tqdm

from probav.metrics.score import score as scene_score
from probav.metrics.score import shifted_cpsnr
from probav.models.baseline import baseline_sr
from probav.models.registry import SRModel
from probav.scene import HR_SIZE, Scene

COLUMNS = ["scene", "band", "frames", "clearance", "hr_clearance", "norm", "cpsnr", "score", "seconds"]


def scene_norm(scene: Scene) -> float:
    """The scene's norm: its norm.csv value, else the official baseline's cPSNR on it."""
    if scene.norm is not None and math.isfinite(scene.norm) and scene.norm > 0:
        return float(scene.norm)
    return float(shifted_cpsnr(baseline_sr(scene.lr, scene.qm), scene.hr, scene.sm))


def check_prediction(image: np.ndarray, scene_name: str) -> np.ndarray:
    """A model's output must be a (384, 384) uint16 image."""
    image = np.asarray(image)
    if image.shape != (HR_SIZE, HR_SIZE) or image.dtype != np.uint16:
        raise ValueError(f"{scene_name}: the model returned {image.dtype} {image.shape}, "
                         f"expected uint16 ({HR_SIZE}, {HR_SIZE})")
    return image


def evaluate_scene(model: SRModel, scene: Scene) -> dict:
    """Predict and score one scene (it must have HR and SM); one table row."""
    if not scene.has_hr or scene.sm is None:
        raise ValueError(f"{scene.name}: no HR/SM, cannot be scored (test scenes have no HR)")
    start = time.perf_counter()
    sr = check_prediction(model.predict(scene), scene.name)
    seconds = time.perf_counter() - start
    norm = scene_norm(scene)
    cpsnr = shifted_cpsnr(sr, scene.hr, scene.sm)
    return {"scene": scene.name, "band": scene.band, "frames": scene.frames,
            "clearance": float(scene.clearance.mean()), "hr_clearance": float(scene.hr_clearance),
            "norm": norm, "cpsnr": float(cpsnr), "score": float(scene_score(cpsnr, norm)), "seconds": seconds}


def evaluate_model(model: SRModel, scenes: Iterable[Scene], progress: bool = True,
                   total: int | None = None) -> pd.DataFrame:
    """Per-scene table (columns ``COLUMNS``) of a model's predictions of ``scenes``."""
    rows = []
    desc = f"evaluate {model.name or type(model).__name__}"
    for scene in tqdm(scenes, total=total, desc=desc, unit="scene", disable=not progress, leave=False):
        rows.append(evaluate_scene(model, scene))
    return pd.DataFrame(rows, columns=COLUMNS)


def _finite(value) -> float | None:
    """JSON-safe float: None for NaN/inf (a perfect prediction has an infinite cPSNR)."""
    value = float(value)
    return value if math.isfinite(value) else None


def summarise(table: pd.DataFrame, model_name: str, extra: dict | None = None) -> dict:
    """Metrics of a per-scene table: mean score and cPSNR overall and per band, scene count, speed.

    ``mean_score`` is the official submission score (mean of per-scene scores; lower is better, the
    baseline scores about 1). ``scenes_per_second`` is inference throughput (prediction only).
    """
    if table.empty:
        raise ValueError(f"{model_name}: no scene was evaluated")
    seconds = float(table["seconds"].sum())
    summary = {
        "model": model_name,
        "scenes": int(len(table)),
        "mean_score": _finite(table["score"].mean()),
        "mean_cpsnr": _finite(table["cpsnr"].mean()),
        "median_cpsnr": _finite(table["cpsnr"].median()),
        "beats_baseline": float((table["score"] < 1.0).mean()),  # share of scenes with score < 1
        "bands": {},
        "seconds": seconds,
        "scenes_per_second": _finite(len(table) / seconds) if seconds > 0 else None,
    }
    for band, rows in table.groupby("band", sort=True):
        summary["bands"][str(band)] = {"scenes": int(len(rows)), "mean_score": _finite(rows["score"].mean()),
                                       "mean_cpsnr": _finite(rows["cpsnr"].mean())}
    summary.update(extra or {})
    return summary
