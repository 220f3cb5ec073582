"""One-factor ablations on the dev scenes: what each part of the best methods contributes.

``make ablations`` (``studies/dvc.yaml:ablations``, ``stages/ablations.py``) changes one thing at a time
against the method as shipped (params.yaml), every other setting held, on every dev scene, in both
tracks, and writes ``metrics/ablations.json`` (per variant: mean cPSNR per track and the paired
difference against the shipped variant, ``probav.metrics.paired``) and ``metrics/ablations/scenes.csv``
(one row per scene and variant). The factors (``FACTORS``):

- ``shifts`` (``shift_and_add``): the registered shifts (shipped) | the simulator's true shifts (synthetic
  data only: ``raw/synthetic/shifts.csv``) | zero (no registration). How much does registration matter,
  and how much is left on the table by registering from the data?
- ``masks`` (``shift_and_add``, ``misr_net``): the QMs used (shipped) | ignored, every pixel taken as
  clear by the method (its reference estimate and prior included; the score still uses the SM).
- ``frames`` (``shift_and_add``'s ``max_frames``): K = 1, 5, 9, 12, 16, 24 and all frames (the
  reference candidates always come on top of the K clearest).
- ``frames`` (``misr_net``): all frames (shipped) | the reference alone: the network's frame input
  keeps the most likely reference only (the others withheld: frame mask 0), its prior still made from all
  frames. Does the network use the frames, or only sharpen its prior?
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from probav.scene import Scene, to_uint16

TRACKS = ("challenge", "ref")
TABLE_COLUMNS = ["factor", "model", "variant", "label", "shipped", "scene", "band", "cpsnr_challenge", "cpsnr_ref"]
FRAME_COUNTS = (1, 5, 9, 12, 16, 24, 0)   # shift_and_add max_frames; 0 = all
RESAMPLES = 10_000                         # bootstrap resamples of the scenes per paired comparison


@dataclass(frozen=True)
class Variant:
    factor: str
    model: str
    name: str                                # a slug: the key in metrics/ablations.json (citable in prose)
    shipped: bool
    predict: Callable[[Scene], np.ndarray]   # the scene (reference weights set for the track) → uint16 SR
    unmasked: bool = False                    # the method sees the scene with every pixel clear
    label: str = ""                           # as the report shows it (default: the name)


def without_masks(scene: Scene) -> Scene:
    """A copy of ``scene`` whose QMs call every pixel clear (HR and SM kept, for the score)."""
    return Scene(scene.name, scene.band, scene.lr, np.ones_like(scene.qm, bool), hr=scene.hr, sm=scene.sm,
                 norm=scene.norm, split=scene.split, frame_ids=scene.ids, reference=scene.reference)


def true_positions(raw: os.PathLike | str) -> dict[str, dict[int, np.ndarray]] | None:
    """``{scene: {frame number: (dy, dx)}}`` from the simulator's ``raw/synthetic/shifts.csv``; None
    when the data has none (real data)."""
    from probav.data.synthetic import read_truth

    if not (Path(raw) / "synthetic" / "shifts.csv").is_file():
        return None
    return {name: {int(f["frame"]): np.array([f["dy"], f["dx"]]) for f in frames}
            for name, frames in read_truth(raw).items()}


def variants(params: dict, models: dict, positions: dict | None) -> list[Variant]:
    """Every variant of every factor, for the models given (``{"shift_and_add": …, "misr_net": …}``;
    a factor whose model is missing is left out)."""
    from probav.models.shift_and_add import settings, shift_and_add_sr

    out: list[Variant] = []
    if "shift_and_add" in models:
        model = models["shift_and_add"]
        cfg = settings(params)

        def with_shifts(kind: str):
            def predict(scene: Scene) -> np.ndarray:
                if kind == "zero":
                    shifts = np.zeros((scene.frames, 2))
                else:
                    shifts = np.array([positions[scene.name][int(i)] for i in scene.ids])
                return to_uint16(shift_and_add_sr(scene, cfg, shifts=shifts))
            return predict

        out.append(Variant("shifts", "shift_and_add", "registered", True, model.predict))
        if positions is not None:
            out.append(Variant("shifts", "shift_and_add", "true", False, with_shifts("true")))
        out.append(Variant("shifts", "shift_and_add", "zero", False, with_shifts("zero")))
        out.append(Variant("masks", "shift_and_add", "qm_used", True, model.predict, label="QMs used"))
        out.append(Variant("masks", "shift_and_add", "qm_ignored", False, model.predict, unmasked=True,
                           label="QMs ignored"))
        shipped_k = int(cfg["max_frames"])
        for k in sorted({*FRAME_COUNTS, shipped_k}, key=lambda k: k or math.inf):   # the shipped K among them
            chosen = {**cfg, "max_frames": k}
            out.append(Variant("frames", "shift_and_add", f"k{k}" if k else "k_all", k == shipped_k,
                               lambda scene, chosen=chosen: to_uint16(shift_and_add_sr(scene, chosen)),
                               label=f"K = {k}" if k else "K = all"))
    if "misr_net" in models:
        net = models["misr_net"]

        def reference_alone(scene: Scene) -> np.ndarray:
            lr, qm, frame_mask, reference = (np.array(a) for a in net.select(scene))
            lr[1:], qm[1:], frame_mask[1:] = 0.0, 0.0, 0.0     # the most likely reference comes first
            prior = net.prior_of(scene) if net.uses_prior else None
            return to_uint16(net.predict_arrays(lr, qm, frame_mask, prior, reference))

        out.append(Variant("masks", "misr_net", "qm_used", True, net.predict, label="QMs used"))
        out.append(Variant("masks", "misr_net", "qm_ignored", False, net.predict, unmasked=True, label="QMs ignored"))
        out.append(Variant("frames", "misr_net", "all_frames", True, net.predict, label="all frames"))
        out.append(Variant("frames", "misr_net", "reference_alone", False, reference_alone,
                           label="the reference alone"))
    return out


def ablate_scene(scene: Scene, chosen: list[Variant], estimator=None) -> list[dict]:
    """One row per variant: its cPSNR on ``scene`` in both tracks (the ref track where it is labelled)."""
    from probav.evaluate import check_prediction
    from probav.metrics.scoring import Truth, score_predictions
    from probav.reference import reference_weights

    truth = Truth.of_scene(scene)
    seen: dict[tuple, float] = {}
    rows = []
    unmasked = without_masks(scene) if any(v.unmasked for v in chosen) else None
    for v in chosen:
        row = {"factor": v.factor, "model": v.model, "variant": v.name, "label": v.label or v.name,
               "shipped": v.shipped, "scene": scene.name, "band": scene.band}
        for track in TRACKS:
            if track == "ref" and scene.reference is None:
                row[f"cpsnr_{track}"] = math.nan
                continue
            key = (v.predict, v.unmasked, track)   # a shipped variant shared by factors: computed once
            if v.shipped and key in seen:
                row[f"cpsnr_{track}"] = seen[key]
                continue
            target = unmasked if v.unmasked else scene
            target.reference_weights = reference_weights(target, track, estimator)
            sr = check_prediction(v.predict(target), scene.name)
            row[f"cpsnr_{track}"] = score_predictions([sr], [truth])[0]["cpsnr"]
            if v.shipped:
                seen[key] = row[f"cpsnr_{track}"]
        rows.append(row)
    return rows


def summarise(table: pd.DataFrame, resamples: int, seed: int) -> dict:
    """``{"<model>_<factor>": …}`` (e.g. ``shift_and_add_shifts``): per variant (by its slug, with its label),
    mean cPSNR per track and the paired difference against the factor's shipped variant (bootstrap
    interval, sign test). Every key is a plain word, so the report's prose can cite any number by its
    dotted path."""
    from probav.metrics.paired import compare_tables

    factors = {}
    for (factor, model), rows in table.groupby(["factor", "model"], sort=False):
        shipped = rows[rows["shipped"]]
        if shipped.empty:
            continue
        shipped_name = str(shipped["variant"].iloc[0])
        out = {"model": model, "shipped": shipped_name, "variants": {}}
        for name, group in rows.groupby("variant", sort=False):
            entry = {"label": str(group["label"].iloc[0])}
            for track in TRACKS:
                column = f"cpsnr_{track}"
                values = group[column].dropna()
                if values.empty:
                    continue
                entry[track] = {"scenes": int(len(values)), "mean_cpsnr": float(values.mean())}
                if name != shipped_name:
                    c = compare_tables(str(name), group, shipped_name, shipped, resamples, seed, column=column)
                    entry[track]["vs_shipped"] = {"mean": c.mean, "low": c.low, "high": c.high, "better": c.better,
                                                  "worse": c.worse, "sign_p": c.sign_p, "verdict": c.verdict}
            out["variants"][str(name)] = entry
        factors[f"{model}_{factor}"] = out
    return factors


def run_ablations(raw: os.PathLike | str, scenes_csv: os.PathLike | str, split_csv: os.PathLike | str,
                  params: dict, models_dir: os.PathLike | str, estimator=None, limit: int = 0,
                  progress: bool = True) -> tuple[dict, pd.DataFrame]:
    """The study: every variant on every dev scene (the first ``limit``, 0 = all). Returns the summary
    (``metrics/ablations.json``) and the per-scene table."""
    from tqdm import tqdm

    from probav.data.index import iter_scenes, subset_table
    from probav.models.registry import load_model
    from probav.params import derive_seed

    models, skipped = {}, {}
    for name in ("shift_and_add", "misr_net"):
        try:
            models[name] = load_model(name, params, model_dir=Path(models_dir) / name)
        except FileNotFoundError as err:
            skipped[name] = str(err)
    if not models:
        raise FileNotFoundError("no model to ablate: " + "; ".join(skipped.values()))
    positions = true_positions(raw)
    chosen = variants(params, models, positions)
    table = subset_table(scenes_csv, split_csv, "dev")
    if limit:
        table = table.head(int(limit))
    if table.empty:
        raise ValueError(f"{split_csv}: no dev scene to ablate on")
    rows = []
    for scene in tqdm(iter_scenes(raw, table), total=len(table), desc="ablations", unit="scene",
                      disable=not progress):
        rows += ablate_scene(scene, chosen, estimator)
    frame = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    seed = derive_seed(params, "ablations")
    summary = {"scenes": int(len(table)), "resamples": RESAMPLES, "seed": seed, "true_shifts": positions is not None,
               "skipped_models": skipped, "factors": summarise(frame, RESAMPLES, seed)}
    return summary, frame
