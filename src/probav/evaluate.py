"""Scoring a model on scenes with an HR: a per-scene table and its summary, in both tracks.

``evaluate_model(model, scenes, estimator, track)`` predicts every scene and scores it with the official
metric (``probav.metrics.score``) in the two tracks of ``probav.reference``: ``challenge`` (the reference
frame estimated by ``estimator``) and, for a scene with a labelled reference, ``ref`` (the reference
given). A model that does not use the reference (``uses_reference`` False) is predicted once and scores
the same in both. One row per scene with ``scene, band, frames, clearance`` (mean clear fraction of its LR
frames), ``hr_clearance``, ``norm``, ``cpsnr``, ``score`` and ``seconds`` (inference time) of the headline
``track``, ``cpsnr_<track>``/``score_<track>`` of each track (NaN where it cannot be scored), and the
labelled (``reference``) and estimated (``estimated``) reference frame numbers.
``summarise(table, model_name, extra, track)`` turns the table into the metrics dict written to
``metrics/<model>.json``: the headline track's figures at the top, each track's under ``tracks``.

Scoring is ``probav.metrics.scoring`` (shared with ``probav score`` and the benchmark): the norm of a
scene is its ``norm.csv`` value; a scene without one gets the cPSNR of the official baseline, as
PROBAV.md prescribes.
"""
from __future__ import annotations

import math
import time
from typing import Iterable

import numpy as np
import pandas as pd
from tqdm import tqdm

from probav.data.reference_labels import TRACKS
from probav.metrics.score import score as scene_score
from probav.metrics.scoring import Truth, score_predictions
from probav.models.registry import SRModel
from probav.scene import HR_SIZE, Scene

COLUMNS = ["scene", "band", "frames", "clearance", "hr_clearance", "norm", "cpsnr", "score", "seconds",
           "cpsnr_challenge", "score_challenge", "cpsnr_ref", "score_ref", "reference", "estimated"]


def check_prediction(image: np.ndarray, scene_name: str) -> np.ndarray:
    """A model's output must be a (384, 384) uint16 image."""
    image = np.asarray(image)
    if image.shape != (HR_SIZE, HR_SIZE) or image.dtype != np.uint16:
        raise ValueError(f"{scene_name}: the model returned {image.dtype} {image.shape}, "
                         f"expected uint16 ({HR_SIZE}, {HR_SIZE})")
    return image


def evaluate_scene(model: SRModel, scene: Scene, estimator=None, track: str = "challenge") -> dict:
    """Predict and score one scene (it must have HR and SM) in both tracks; one table row."""
    from probav.reference import reference_weights

    truth = Truth.of_scene(scene)
    results, estimated = {}, None
    for name in TRACKS:
        if name == "ref" and scene.reference is None:
            continue
        if model.uses_reference or not results:
            start = time.perf_counter()
            scene.reference_weights = reference_weights(scene, name, estimator) if model.uses_reference else None
            sr = check_prediction(model.predict(scene), scene.name)
            seconds = time.perf_counter() - start
            results[name] = (score_predictions([sr], [truth])[0]["cpsnr"], seconds)
            if name == "challenge" and scene.reference_weights is not None:
                estimated = int(scene.ids[int(np.argmax(scene.reference_weights))])
        else:
            results[name] = results["challenge"]  # the output does not depend on the reference
    cpsnr, seconds = results.get(track, results["challenge"])
    row = {"scene": scene.name, "band": scene.band, "frames": scene.frames,
           "clearance": float(scene.clearance.mean()), "hr_clearance": float(scene.hr_clearance),
           "norm": truth.norm, "cpsnr": cpsnr, "score": float(scene_score(cpsnr, truth.norm)), "seconds": seconds,
           "reference": None if scene.reference is None else int(scene.ids[scene.reference]),
           "estimated": estimated}
    for name in TRACKS:
        value = results[name][0] if name in results else math.nan
        row[f"cpsnr_{name}"] = value
        row[f"score_{name}"] = float(scene_score(value, truth.norm)) if name in results else math.nan
    return row


def evaluate_model(model: SRModel, scenes: Iterable[Scene], progress: bool = True, total: int | None = None,
                   estimator=None, track: str = "challenge") -> pd.DataFrame:
    """Per-scene table (columns ``COLUMNS``) of a model's predictions of ``scenes``, both tracks;
    ``estimator``: the reference estimator of the challenge track (default: the hand-set rule)."""
    rows = []
    desc = f"evaluate {model.name or type(model).__name__}"
    for scene in tqdm(scenes, total=total, desc=desc, unit="scene", disable=not progress, leave=False):
        rows.append(evaluate_scene(model, scene, estimator, track))
    table = pd.DataFrame(rows, columns=COLUMNS)
    for column in ("reference", "estimated"):
        table[column] = table[column].astype("Int64")
    return table


def _finite(value) -> float | None:
    """JSON-safe float: None for NaN/inf (a perfect prediction has an infinite cPSNR)."""
    value = float(value)
    return value if math.isfinite(value) else None


def _track_summary(scores: pd.Series, cpsnrs: pd.Series, bands: pd.Series) -> dict | None:
    ok = cpsnrs.notna()
    if not ok.any():
        return None
    out = {"scenes": int(ok.sum()), "mean_score": _finite(scores[ok].mean()), "mean_cpsnr": _finite(cpsnrs[ok].mean()),
           "beats_baseline": float((scores[ok] < 1.0).mean()), "bands": {}}
    for band in sorted(bands[ok].unique()):
        rows = ok & (bands == band)
        out["bands"][str(band)] = {"scenes": int(rows.sum()), "mean_score": _finite(scores[rows].mean()),
                                   "mean_cpsnr": _finite(cpsnrs[rows].mean())}
    return out


def summarise(table: pd.DataFrame, model_name: str, extra: dict | None = None, track: str = "challenge") -> dict:
    """Metrics of a per-scene table: mean score and cPSNR overall and per band, scene count, speed, of the
    headline ``track`` at the top and of each track under ``tracks`` (None where it was not scored).

    ``mean_score`` is the official submission score (mean of per-scene scores; lower is better, the
    baseline scores about 1). ``scenes_per_second`` is inference throughput (prediction only).
    """
    if table.empty:
        raise ValueError(f"{model_name}: no scene was evaluated")
    seconds = float(table["seconds"].sum())
    summary = {
        "model": model_name,
        "track": track,
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
    if "cpsnr_challenge" in table:
        summary["tracks"] = {name: _track_summary(table[f"score_{name}"], table[f"cpsnr_{name}"], table["band"])
                             for name in TRACKS}
    summary.update(extra or {})
    return summary
