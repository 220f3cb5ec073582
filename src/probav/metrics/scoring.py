"""Scoring predictions against the HRs: what ``evaluate``, ``probav score`` and the benchmark share.

- ``Truth``: what the score needs of a scene (HR, SM, norm, band) and nothing else.
  ``read_truth(scene_dir, norms)`` reads it from a folder in the official layout: ``HR.png`` and
  ``SM.png`` only (the LR frames and QMs are read only for a scene that has no ``norm.csv`` entry,
  whose norm is then the official baseline's cPSNR, as PROBAV.md prescribes). ``Truth.of_scene``
  takes it from a ``Scene`` already in memory.
- ``score_predictions(predictions, truths)``: the official score of each (SR, truth) pair, in blocks
  of scenes through the batch kernel (``shifted_cpsnr_batch``); one row per scene.
- ``score_folder(submission, data)``: a submission (zip or folder of ``imgsetNNNN.png``) against a
  data folder. Reading dominates once the kernel is fast (three PNG decodes per scene against a few
  milliseconds of arithmetic), so blocks of scenes are read and scored on ``workers`` threads
  (PNG decoding, zlib and the kernel's compiled loops release the GIL), and nothing but the
  prediction, HR and SM of each scene is decoded.

Errors name the file and the problem: a missing, unreadable or wrongly sized HR or SM raises
``BadSceneError``; a prediction that is missing, unexpected or unreadable raises ``SubmissionError``.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from probav.metrics.score import score as scene_score
from probav.metrics.score import shifted_cpsnr_batch
from probav.scene import HR_SIZE, SPLITS, BadSceneError, Scene, read_image, read_mask, read_norm, scene_dirs

# Scenes read and scored together by one thread: enough to keep the per-task overhead small, few
# enough that a few blocks in flight stay within tens of MB.
BLOCK = 8


@dataclass
class Truth:
    """What the official score needs of one scene."""
    name: str
    band: str
    hr: np.ndarray           # (384, 384) uint16
    sm: np.ndarray           # (384, 384) bool, true = clear
    norm: float              # the baseline's cPSNR on the scene (norm.csv, or computed)

    @classmethod
    def of_scene(cls, scene: Scene) -> "Truth":
        if not scene.has_hr or scene.sm is None:
            raise ValueError(f"{scene.name}: no HR/SM, cannot be scored (test scenes have no HR)")
        return cls(scene.name, scene.band, scene.hr, scene.sm, scene_norm(scene))


def scene_norm(scene: Scene) -> float:
    """The scene's norm: its norm.csv value, else the official baseline's cPSNR on it."""
    from probav.metrics.score import shifted_cpsnr
    from probav.models.baseline import baseline_sr

    if scene.norm is not None and math.isfinite(scene.norm) and scene.norm > 0:
        return float(scene.norm)
    return float(shifted_cpsnr(baseline_sr(scene.lr, scene.qm), scene.hr, scene.sm))


def read_truth(scene_dir: os.PathLike | str, norms: dict[str, float] | None = None) -> Truth:
    """HR.png and SM.png of a scene folder, and its norm (``norms``, else computed from its frames)."""
    from probav.scene import read_scene

    scene_dir = Path(scene_dir)
    hr_path, sm_path = scene_dir / "HR.png", scene_dir / "SM.png"
    if not hr_path.is_file():
        raise BadSceneError(hr_path, "missing HR image: only scenes with an HR can be scored")
    if not sm_path.is_file():
        raise BadSceneError(sm_path, "missing status mask SM.png for the HR image")
    hr = read_image(hr_path, (HR_SIZE, HR_SIZE))
    sm = read_mask(sm_path, (HR_SIZE, HR_SIZE))
    if not sm.any():
        raise BadSceneError(sm_path, "no clear pixel: the score is undefined")
    norm = (norms or {}).get(scene_dir.name)
    if norm is None or not (math.isfinite(norm) and norm > 0):
        norm = scene_norm(read_scene(scene_dir))
    return Truth(scene_dir.name, scene_dir.parent.name, hr, sm, float(norm))


def score_predictions(predictions: Sequence[np.ndarray], truths: Sequence[Truth], workers: int = 1) -> list[dict]:
    """``{"scene", "band", "cpsnr", "norm", "score"}`` for each (SR, truth) pair, in order.

    ``predictions``: (384, 384) uint16 images (or floats in [0, 1]); ``workers``: threads of the kernel.
    """
    if len(predictions) != len(truths):
        raise ValueError(f"{len(predictions)} predictions for {len(truths)} scenes")
    if not truths:
        return []
    cpsnr = shifted_cpsnr_batch(np.stack(predictions), np.stack([t.hr for t in truths]),
                                np.stack([t.sm for t in truths]), workers=workers)
    return [{"scene": t.name, "band": t.band, "cpsnr": float(c), "norm": t.norm,
             "score": float(scene_score(c, t.norm))} for t, c in zip(truths, cpsnr)]


class ScoringError(ValueError):
    """A submission and a data folder that do not match (missing or unexpected scenes)."""


def scorable_scenes(data: os.PathLike | str) -> tuple[dict[str, Path], dict[str, Path]]:
    """Scene name → folder, of DATA's scenes with an HR.png and of all its scenes (both splits)."""
    data = Path(data)
    if not data.is_dir():
        raise ScoringError(f"{data}: data folder not found")
    folders = {d.name: d for s in SPLITS for d in scene_dirs(data, s)}
    if not folders:
        raise ScoringError(f"{data}: no scene folder train|test/RED|NIR/imgsetNNNN (is this the root of the "
                           "PROBA-V data, holding norm.csv, train/ and test/?)")
    with_hr = {n: d for n, d in folders.items() if (d / "HR.png").is_file()}
    if not with_hr:
        raise ScoringError(f"{data}: no scene with an HR.png to score against (test scenes have none)")
    return with_hr, folders


def _match(predictions: dict, submission: Path, data: Path,
           names: list[str] | None) -> tuple[list[str], dict[str, Path]]:
    """The scenes to score: every scene of DATA with an HR (or ``names``), each predicted."""
    with_hr, folders = scorable_scenes(data)
    unknown = sorted(set(predictions) - set(with_hr))
    if unknown:
        no_hr = [n for n in unknown if n in folders]
        detail = (f" ({', '.join(no_hr[:10])} {'has' if len(no_hr) == 1 else 'have'} no HR.png: test scenes "
                  "cannot be scored)") if no_hr else ""
        raise ScoringError(f"{submission}: prediction(s) for scene(s) not in {data} with an HR: "
                           f"{', '.join(unknown[:10])}{detail}")
    if names is not None:
        not_scorable = [n for n in names if n not in with_hr]
        if not_scorable:
            raise ScoringError(f"scene(s) with no HR in {data}: {', '.join(not_scorable)}")
    wanted = sorted(with_hr) if names is None else list(names)
    missing = [n for n in wanted if n not in predictions]
    if missing:
        raise ScoringError(f"{submission}: missing prediction(s) for {', '.join(missing[:10])}"
                           f"{' …' if len(missing) > 10 else ''} (use --scenes to score a subset)")
    return wanted, with_hr


def score_folder(submission: os.PathLike | str, data: os.PathLike | str, names: list[str] | None = None,
                 workers: int | None = None, progress: bool = False) -> dict:
    """Official score of a submission (zip or folder of ``imgsetNNNN.png``) against DATA's scenes.

    Every scene of DATA with an HR (or every scene of ``names``) must be predicted, and every prediction
    must be such a scene. ``workers``: threads (default: all cores). Returns
    ``{"mean_score", "mean_cpsnr", "scenes": {name: {"band", "cpsnr", "norm", "score"}}}``;
    ``mean_cpsnr`` is None when a scene's cPSNR is infinite (a perfect prediction).
    """
    from tqdm import tqdm

    from probav.submission import open_predictions, read_prediction

    submission, data = Path(submission), Path(data)
    predictions = open_predictions(submission)
    wanted, folders = _match(predictions, submission, data, names)
    norms = read_norm(data / "norm.csv") if (data / "norm.csv").is_file() else {}
    workers = max(int(workers or os.cpu_count() or 1), 1)

    def block(chunk: list[str]) -> list[dict]:
        srs = [read_prediction(predictions[n](), f"{submission}:{n}.png") for n in chunk]
        truths = [read_truth(folders[n], norms) for n in chunk]
        return score_predictions(srs, truths)

    chunks = [wanted[i:i + BLOCK] for i in range(0, len(wanted), BLOCK)]

    def scored() -> Iterator[list[dict]]:
        if workers == 1 or len(chunks) == 1:
            yield from map(block, chunks)
        else:
            with ThreadPoolExecutor(min(workers, len(chunks))) as pool:
                yield from pool.map(block, chunks)

    rows: list[dict] = []
    with tqdm(total=len(wanted), desc="score", unit="scene", disable=not progress, leave=False) as bar:
        for chunk_rows in scored():
            rows += chunk_rows
            bar.update(len(chunk_rows))
    return summarise_rows(rows)


HIDDEN_TEST = Path("synthetic") / "test_hr"   # the simulator's test HRs and SMs, withheld from the test scenes


def score_hidden_test(submission: os.PathLike | str, raw: os.PathLike | str, scenes) -> dict | None:
    """A submission against the hidden HRs of the test scenes (``raw/synthetic/test_hr/imgsetNNNN/HR.png``,
    ``SM.png``, which the simulator writes; the norms from ``raw/norm.csv``), as ``score_folder`` returns
    it; None when the data has none (the real challenge's test HRs are not public). ``scenes``: the test
    scenes' names and bands (a table with ``name`` and ``band`` columns)."""
    from probav.submission import SubmissionError, open_predictions, read_prediction

    hidden, submission = Path(raw) / HIDDEN_TEST, Path(submission)
    if not hidden.is_dir():
        return None
    predictions = open_predictions(submission)
    norms = read_norm(Path(raw) / "norm.csv") if (Path(raw) / "norm.csv").is_file() else {}
    rows: list[dict] = []
    pairs = list(zip(scenes["name"], scenes["band"]))
    for i in range(0, len(pairs), BLOCK):
        srs, truths = [], []
        for name, band in pairs[i:i + BLOCK]:
            if name not in predictions:
                raise SubmissionError(f"{submission}: no prediction for test scene {name}")
            srs.append(read_prediction(predictions[name](), f"{submission}:{name}.png"))
            truth = read_truth(hidden / name, norms)
            truth.band = band     # the folder's parent is test_hr, not the band
            truths.append(truth)
        rows += score_predictions(srs, truths)
    return summarise_rows(rows)


def summarise_rows(rows: list[dict]) -> dict:
    """Mean score and mean cPSNR (None if one is infinite) of score rows, the same per band, and the rows
    by scene."""
    def means(rows: list[dict]) -> dict:
        cpsnrs = [r["cpsnr"] for r in rows]
        return {"mean_score": float(math.fsum(r["score"] for r in rows) / len(rows)),
                "mean_cpsnr": float(math.fsum(cpsnrs) / len(cpsnrs)) if all(map(math.isfinite, cpsnrs)) else None}

    bands = {band: {"scenes": len(group), **means(group)}
             for band in dict.fromkeys(r["band"] for r in rows) for group in [[r for r in rows if r["band"] == band]]}
    return {**means(rows), "bands": bands,
            "scenes": {r["scene"]: {k: r[k] for k in ("band", "cpsnr", "norm", "score")} for r in rows}}


