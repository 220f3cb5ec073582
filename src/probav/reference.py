"""The reference frame: which LR frame was taken on the HR's own pass, estimated from what a test scene has.

Every PROBA-V HR comes from the same satellite pass as one of the scene's LR frames (the *reference*;
``../shared/PROBAV.md``). On the real imgset0000 that frame is the 3×3-binned HR to 28 DN rms and beats
every other single frame by 1.3 dB; a method that builds its output on another frame's grid, contrast and
content starts that far behind. PROBA-V-REF lists it for the train scenes; test scenes need an estimate.

Two tracks, as PROBA-V-REF defines them (``reference.track`` in params.yaml; both are scored where labels
exist): ``challenge`` (the reference is estimated from the scene) and ``ref`` (it is given by the labels).
``reference_weights(scene, track, estimator)`` turns either into the (T,) weights that reference-aware
models read from ``scene.reference_weights``: one-hot in the ``ref`` track, the estimator's probabilities
in the ``challenge`` track.

The estimator ranks a scene's frames with a conditional logit (a softmax over the scene's frames of a
linear score of per-frame features). Every feature uses only what a test scene has, and is relative to the
scene's other frames (``frame_features``):

- ``clearance``: log of the frame's clear share over the clearest frame's;
- ``sm_mismatch``: log of the share of LR pixels where the frame's QM disagrees with the HR's SM
  (block-reduced) over the scene's smallest (both plus ``SM_FLOOR``): the HR's clouds are the
  reference's clouds (test scenes have an SM too);
- ``median_distance``: log of the bias-corrected, gain-matched mean squared difference to the per-pixel
  clear median of the registered frames (the most typical frame), minus the scene's median;
- ``median_distance_raw``: the same without gain matching (PROBAV.md: ranks the real reference 1st–3rd on
  5 of 8 scenes, better than with gain matching);
- ``sharpness``: log of the high-pass share of the frame's variance, minus the scene's median (a binned
  100 m image keeps more detail than a native 300 m one, but on real scenes this never decides alone);
- ``gain``: |log| of the frame's brightness gain over the scene's median gain.

``ReferenceEstimator.rule()`` is a hand-set rule (weights chosen from the physics above, not fitted);
``ReferenceEstimator.fit(...)`` learns the weights by maximum likelihood on labelled train scenes, with an
L2 penalty that pulls them toward the rule (a few dozen scenes cannot pin six weights down; the real
archive's 870 can): the pipeline's ``reference`` stage does that on the train split and reports top-1
accuracy and the cost of its mistakes on dev. Frames whose registration fails get the scene's worst value of every
registration-based feature.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from probav.data.reference_labels import TRACKS
from probav.models.baseline import bicubic_upscale, clearest_frames
from probav.registration import Alignment, bias_corrected_mse, clear_median
from probav.scene import SCALE, Scene, to_uint16

FEATURES = ("clearance", "sm_mismatch", "median_distance", "median_distance_raw", "sharpness", "gain")
# The hand-set rule, per unit of each feature: a frame whose clouds differ from the SM's on 3.5% of the
# pixels where another frame matches it exactly loses a factor 70 in odds; a frame twice as far from the
# typical frame a factor 2.
SM_FLOOR = 0.005   # mismatch share below which QM/SM differences are noise (a few pixels of mask edge)
RULE_WEIGHTS = {"clearance": 8.0, "sm_mismatch": -2.0, "median_distance": -0.5, "median_distance_raw": -0.5,
                "sharpness": 0.5, "gain": -10.0}
FORMAT = "probav-reference-estimator/1"


# --------------------------------------------------------------------------- features

def clear_alignment(lr: np.ndarray, qm: np.ndarray, reg_settings: dict | None = None) -> Alignment:
    """Every frame registered to the clearest one (among ties, the one closest to the tied frames' mean)."""
    tied = clearest_frames(qm)
    provisional = int(tied[0])
    if len(tied) > 1:
        common = qm[tied].all(axis=0)
        mean = lr[tied].mean(axis=0)
        provisional = int(tied[np.argmin([bias_corrected_mse(lr[k], mean, common) for k in tied])])
    return Alignment.to(lr, qm, provisional, range(len(lr)), reg_settings)


def cached_alignment(scene: Scene, reg_settings: dict | None = None, compute: bool = True) -> Alignment | None:
    """``clear_alignment`` of the scene, kept in ``scene.extra`` so that the estimator and a model that
    fuses the frames register them once (keyed by the registration settings; None if not computed
    and ``compute`` is False)."""
    key = ("alignment", json.dumps(reg_settings or {}, sort_keys=True))
    if key not in scene.extra and compute:
        scene.extra[key] = clear_alignment(np.asarray(scene.lr, np.float64) / 65535.0,
                                           np.asarray(scene.qm, bool), reg_settings)
    return scene.extra.get(key)


def sm_on_lr_grid(sm: np.ndarray) -> np.ndarray:
    """The HR status map reduced to the LR grid: a pixel is clear when most of its 3×3 block is."""
    h, w = sm.shape[0] // SCALE, sm.shape[1] // SCALE
    return np.asarray(sm, bool).reshape(h, SCALE, w, SCALE).mean(axis=(1, 3)) > 0.5


def _sharpness(image: np.ndarray, mask: np.ndarray) -> float:
    inner = ndi.binary_erosion(mask, iterations=2, border_value=0)
    if inner.sum() < 64:
        return float("nan")
    high = image - ndi.gaussian_filter(image, 1.0, mode="nearest")
    var = image[inner].var()
    return float(np.log(high[inner].var() / var)) if var > 0 else float("nan")


def frame_features(scene: Scene, alignment: Alignment | None = None, reg_settings: dict | None = None) -> np.ndarray:
    """(T, len(FEATURES)) features of every frame, relative to the scene's other frames (see the module doc).

    ``alignment`` (every frame registered to one of them) is computed when not given."""
    lr = np.asarray(scene.lr, np.float64) / 65535.0
    qm = np.asarray(scene.qm, bool)
    t = len(lr)
    aligned = alignment if alignment is not None else cached_alignment(scene, reg_settings)
    out = np.full((t, len(FEATURES)), np.nan)
    col = {name: i for i, name in enumerate(FEATURES)}

    counts = qm.reshape(t, -1).sum(axis=1)
    out[:, col["clearance"]] = np.log(np.maximum(counts, 1) / max(counts.max(), 1))
    if scene.sm is not None:
        mismatch = (qm != sm_on_lr_grid(scene.sm)[None]).reshape(t, -1).mean(axis=1)
        # Relative (log) mismatch: a frame that matches the SM's small clouds exactly stands out from frames
        # a few percent off as much as a large cloud's match does.
        out[:, col["sm_mismatch"]] = np.log((mismatch + SM_FLOOR) / (mismatch.min() + SM_FLOOR))
    else:
        out[:, col["sm_mismatch"]] = 0.0

    frames = aligned.frames
    if len(frames) >= 3:
        stack, masks = aligned.stack(lr, qm)
        raw = np.array([aligned.results[k].gain * s + aligned.results[k].offset for k, s in zip(frames, stack)])
        inner = np.zeros(masks.shape[1:], bool)
        inner[4:-4, 4:-4] = True
        for name, images in (("median_distance", stack), ("median_distance_raw", raw)):
            # The median of all frames, the frame itself included: with 9 frames or more it is the median
            # of the others to within one order statistic, at a T-th of the cost.
            median = clear_median(images, masks)
            defined = np.isfinite(median) & inner
            median = np.nan_to_num(median)
            for i, k in enumerate(frames):
                mse = bias_corrected_mse(images[i], median, masks[i] & defined)
                out[k, col[name]] = math.log(mse) if 0 < mse < float("inf") else np.nan
        gains = np.array([aligned.results[k].gain for k in frames])
        out[frames, col["gain"]] = np.abs(np.log(gains / np.median(gains)))
    for k in range(t):
        out[k, col["sharpness"]] = _sharpness(lr[k], qm[k])
    for name in ("median_distance", "median_distance_raw", "sharpness"):
        values = out[:, col[name]]
        if np.isfinite(values).any():
            out[:, col[name]] = values - np.nanmedian(values)
    # Missing values (failed registration, too few clear pixels): the scene's worst of that feature.
    signs = np.sign(np.array([RULE_WEIGHTS[f] for f in FEATURES]))
    for j in range(len(FEATURES)):
        values = out[:, j]
        if not np.isfinite(values).all():
            finite = values[np.isfinite(values)]
            worst = (finite.min() if signs[j] > 0 else finite.max()) if finite.size else 0.0
            values[~np.isfinite(values)] = worst
    return out


# --------------------------------------------------------------------------- the estimator

def softmax(scores: np.ndarray) -> np.ndarray:
    z = np.exp(scores - scores.max())
    return z / z.sum()


class ReferenceEstimator:
    """Conditional logit over a scene's frames: P(frame k is the reference) ∝ exp(w · features_k)."""

    def __init__(self, weights: dict[str, float], kind: str = "rule", info: dict | None = None):
        unknown = set(weights) - set(FEATURES)
        if unknown:
            raise ValueError(f"unknown reference features {sorted(unknown)}; known: {', '.join(FEATURES)}")
        self.weights = {f: float(weights.get(f, 0.0)) for f in FEATURES}
        self.kind = kind
        self.info = dict(info or {})

    @classmethod
    def rule(cls) -> "ReferenceEstimator":
        """The hand-set rule (``RULE_WEIGHTS``), used where no fitted estimator is given."""
        return cls(RULE_WEIGHTS, kind="rule")

    @property
    def vector(self) -> np.ndarray:
        return np.array([self.weights[f] for f in FEATURES])

    def probabilities_from_features(self, features: np.ndarray) -> np.ndarray:
        return softmax(np.asarray(features, np.float64) @ self.vector)

    def probabilities(self, scene: Scene, alignment: Alignment | None = None) -> np.ndarray:
        """(T,) probability that each frame of ``scene`` is its reference."""
        return self.probabilities_from_features(frame_features(scene, alignment))

    @classmethod
    def fit(cls, features: list[np.ndarray], references: list[int], l2: float = 0.1) -> "ReferenceEstimator":
        """Maximum-likelihood weights from labelled scenes: ``features[i]`` (T_i, F) and the index of
        scene i's reference. ``l2`` penalises the squared distance of the weights (features scaled to unit
        spread) from the hand-set rule's, per scene: with few labelled scenes the fit stays near the rule,
        with many (the real archive's 870 train scenes) the data decide."""
        from scipy.optimize import minimize

        if not features:
            raise ValueError("no labelled scene to fit the reference estimator on")
        n = len(features)
        # Fit on features scaled to unit spread, so that the penalty treats every feature alike.
        scale = np.std(np.concatenate(features), axis=0)
        scale = np.where(scale > 1e-12, scale, 1.0)
        features = [f / scale for f in features]
        prior = cls.rule().vector * scale

        def loss(w):
            total, grad = 0.0, np.zeros_like(w)
            for f, r in zip(features, references):
                p = softmax(f @ w)
                total -= math.log(max(p[r], 1e-300))
                grad -= f[r] - p @ f
            d = w - prior
            return total / n + l2 * d @ d, grad / n + 2 * l2 * d

        result = minimize(loss, prior.copy(), jac=True, method="L-BFGS-B")
        weights = dict(zip(FEATURES, (result.x / scale).tolist()))
        return cls(weights, kind="fitted", info={"scenes": n, "l2": l2, "log_loss": float(result.fun),
                                                  "converged": bool(result.success)})

    def to_dict(self) -> dict:
        return {"format": FORMAT, "kind": self.kind, "features": list(FEATURES), "weights": self.weights,
                "info": self.info}

    def save(self, path: os.PathLike | str) -> None:
        """Write the estimator as JSON, atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: os.PathLike | str) -> "ReferenceEstimator":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no reference estimator (run `dvc repro reference`, or leave it out "
                                    f"to use the hand-set rule)")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not a reference estimator ({err})") from err
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{path}: not a reference estimator (expected format {FORMAT!r})")
        return cls(data["weights"], kind=data.get("kind", "fitted"), info=data.get("info"))


# --------------------------------------------------------------------------- tracks

def reference_weights(scene: Scene, track: str, estimator: ReferenceEstimator | None = None,
                      alignment: Alignment | None = None) -> np.ndarray:
    """(T,) weights of the frames as the reference, as ``track`` decides: one-hot on the labelled frame in
    the ``ref`` track; the estimator's probabilities in the ``challenge`` track (and in the ``ref`` track
    for a scene without a label, such as a real test scene)."""
    if track not in TRACKS:
        raise ValueError(f"reference.track must be one of {', '.join(TRACKS)}, got {track!r}")
    if track == "ref" and scene.reference is not None:
        weights = np.zeros(scene.frames)
        weights[scene.reference] = 1.0
        return weights
    return (estimator or ReferenceEstimator.rule()).probabilities(scene, alignment)


def with_track(scene: Scene, track: str, estimator: ReferenceEstimator | None = None) -> Scene:
    """``scene`` with ``reference_weights`` set for ``track`` (the scene is changed and returned)."""
    scene.reference_weights = reference_weights(scene, track, estimator)
    return scene


# --------------------------------------------------------------------------- single frames

def single_frame_cpsnr(scene: Scene) -> np.ndarray:
    """(T,) official cPSNR of each LR frame alone, bicubic ×3 (the scene needs its HR and SM)."""
    from probav.metrics.score import shifted_cpsnr_batch

    if scene.hr is None or scene.sm is None:
        raise ValueError(f"{scene.name}: no HR/SM, single frames cannot be scored")
    ups = np.array([to_uint16(bicubic_upscale(frame / 65535.0)) for frame in scene.lr])
    return shifted_cpsnr_batch(ups, np.broadcast_to(scene.hr, ups.shape), np.broadcast_to(scene.sm, ups.shape))


# --------------------------------------------------------------------------- the reference stage

SCENE_COLUMNS = ["scene", "band", "frames", "reference", "estimated", "p_reference", "rank", "p_estimated",
                 "rule_estimated", "rule_p_reference", "cpsnr_reference_frame", "cpsnr_estimated_frame",
                 "cpsnr_next_best_frame", "margin"]


def _scene_job(raw: str, row: tuple, single: bool) -> dict:
    """Features of one labelled scene (in a worker process), and its single-frame scores when ``single``."""
    from probav.data.index import read_indexed_scene

    path, norm, reference = row
    scene = read_indexed_scene(raw, path, norm, reference)
    out = {"scene": scene.name, "band": scene.band, "frames": scene.frames, "ids": scene.ids.tolist(),
           "reference": scene.reference, "features": frame_features(scene)}
    if single and scene.has_hr:
        out["single"] = single_frame_cpsnr(scene)
    if single:
        # The scene read as the real LR-only scenes are (no QM, no SM): how much of the estimator's accuracy
        # on the simulator comes from the masks, for a like-for-like comparison with those real scenes.
        scene.qm = np.ones_like(scene.qm, bool)
        scene.sm, scene.extra = None, {}
        out["features_unmasked"] = frame_features(scene)
    return out


def _map_scenes(raw, table, single: bool, workers: int, desc: str) -> list[dict]:
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial
    from multiprocessing import get_context

    from tqdm import tqdm

    rows = [(r.path, None, r.reference) for r in table.itertuples(index=False)]
    job = partial(_scene_job, str(raw), single=single)
    workers = min(int(workers), os.cpu_count() or 1, len(rows))
    with tqdm(total=len(rows), desc=desc, unit="scene", mininterval=0.5) as bar:
        if workers <= 1:
            results = []
            for row in rows:
                results.append(job(row))
                bar.update()
            return results
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            results = []
            for result in pool.map(job, rows, chunksize=2):
                results.append(result)
                bar.update()
            return results


def ranking_metrics(estimator: ReferenceEstimator, scenes: list[dict]) -> dict:
    """Top-1/top-3 accuracy, mean probability of the true frame and log loss of ``estimator`` on
    labelled scenes (``features``, ``reference``)."""
    top1 = top3 = prob = loss = 0.0
    for s in scenes:
        p = estimator.probabilities_from_features(s["features"])
        rank = int((p > p[s["reference"]]).sum()) + 1
        top1 += rank == 1
        top3 += rank <= 3
        prob += p[s["reference"]]
        loss -= math.log(max(p[s["reference"]], 1e-12))
    n = max(len(scenes), 1)
    return {"scenes": len(scenes), "top1": top1 / n, "top3": top3 / n, "mean_probability": prob / n,
            "log_loss": loss / n}


def feature_top1(scenes: list[dict]) -> dict[str, float]:
    """Per feature, used alone: the share of labelled scenes (``features``, ``reference``) whose reference
    it ranks first, ties shared evenly (a feature that ties all T frames counts 1/T): which cues find the
    reference on the simulator's scenes and which on real ones."""
    shares = dict.fromkeys(FEATURES, 0.0)
    for s in scenes:
        for j, name in enumerate(FEATURES):
            values = np.sign(RULE_WEIGHTS[name]) * np.asarray(s["features"])[:, j]
            best = values[s["reference"]]
            if not (values > best).any():
                shares[name] += 1.0 / int((values == best).sum())
    return {name: share / max(len(scenes), 1) for name, share in shares.items()}


REAL_COLUMNS = ["scene", "band", "frames", "masks", "reference", "estimated", "rank", "p_reference",
                "rule_estimated", "rule_rank", "cpsnr_reference_frame", "cpsnr_next_best_frame"]


def measure_on_real(estimator: ReferenceEstimator, scenes: list[Scene]):
    """The estimator (and the hand-set rule beside it) on labelled real scenes (``probav.real``'s
    ``labelled_real_scenes``): ranking metrics, each feature's top-1 alone, and a per-scene table. Real
    scenes without QMs (LR frames only) are counted apart in ``without_masks``: clearance and the SM tell
    nothing there."""
    import pandas as pd

    rule = ReferenceEstimator.rule()
    labelled, rows = [], []
    for scene in scenes:
        features = frame_features(scene)
        ref = scene.reference
        labelled.append({"features": features, "reference": ref})
        p, q = estimator.probabilities_from_features(features), rule.probabilities_from_features(features)
        single = single_frame_cpsnr(scene) if scene.has_hr and scene.frames > 1 else None
        rows.append({"scene": scene.name, "band": scene.band, "frames": scene.frames,
                     "masks": bool(scene.has_qm),
                     "reference": int(scene.ids[ref]), "estimated": int(scene.ids[int(np.argmax(p))]),
                     "rank": int((p > p[ref]).sum()) + 1, "p_reference": float(p[ref]),
                     "rule_estimated": int(scene.ids[int(np.argmax(q))]), "rule_rank": int((q > q[ref]).sum()) + 1,
                     "cpsnr_reference_frame": float(single[ref]) if single is not None else math.nan,
                     "cpsnr_next_best_frame": float(np.delete(single, ref).max()) if single is not None else math.nan})
    table = pd.DataFrame(rows, columns=REAL_COLUMNS)
    metrics = {**ranking_metrics(estimator, labelled), "rule": ranking_metrics(rule, labelled),
               "feature_top1": feature_top1(labelled), "without_masks": int((~table["masks"]).sum()),
               "chance_top1": float(np.mean([1.0 / s.frames for s in scenes]))}
    return metrics, table


def _quantiles(values) -> dict | None:
    values = np.asarray([v for v in values if np.isfinite(v)], np.float64)
    if not values.size:
        return None
    q = np.percentile(values, [0, 10, 50, 90, 100])
    return {"min": float(q[0]), "p10": float(q[1]), "median": float(q[2]), "p90": float(q[3]), "max": float(q[4]),
            "mean": float(values.mean())}


def fit_reference_estimator(raw: os.PathLike | str, scenes_csv: os.PathLike | str, split_csv: os.PathLike | str,
                            params: dict, workers: int = 2, base: os.PathLike | str = "."):
    """The ``reference`` stage: fit the estimator on the labelled train scenes (or take the hand-set rule
    when ``reference.estimator`` is ``rule`` or no train scene is labelled), and measure it on the
    labelled dev scenes and on the labelled real scenes of params.yaml's ``real`` group (paths relative to
    ``base``). Returns ``(estimator, metrics, per-dev-scene table, per-real-scene table)``; ``metrics["real"]``
    is ``{"skipped": why}`` without real scenes."""
    from probav.real import labelled_real_scenes, real_settings

    import pandas as pd

    from probav.data.index import subset_table
    from probav.data.reference_labels import reference_settings

    cfg = reference_settings(params)
    tables = {subset: subset_table(scenes_csv, split_csv, subset) for subset in ("train", "dev")}
    labelled = {subset: t[t["reference"].notna()] if "reference" in t else t.iloc[:0] for subset, t in tables.items()}
    rule = ReferenceEstimator.rule()
    estimator, train = rule, []
    if cfg["estimator"] == "fitted" and len(labelled["train"]):
        train = _map_scenes(raw, labelled["train"], False, workers, "reference features (train)")
        estimator = ReferenceEstimator.fit([s["features"] for s in train], [s["reference"] for s in train],
                                           l2=float(cfg["l2"]))
    dev = _map_scenes(raw, labelled["dev"], True, workers, "reference features (dev)") if len(labelled["dev"]) else []

    rows = []
    for s in dev:
        p = estimator.probabilities_from_features(s["features"])
        q = rule.probabilities_from_features(s["features"])
        ref, top = s["reference"], int(np.argmax(p))
        single = s.get("single")
        others = np.delete(single, ref) if single is not None and len(single) > 1 else None
        rows.append({"scene": s["scene"], "band": s["band"], "frames": s["frames"], "reference": s["ids"][ref],
                     "estimated": s["ids"][top], "p_reference": float(p[ref]), "rank": int((p > p[ref]).sum()) + 1,
                     "p_estimated": float(p[top]), "rule_estimated": s["ids"][int(np.argmax(q))],
                     "rule_p_reference": float(q[ref]),
                     "cpsnr_reference_frame": float(single[ref]) if single is not None else math.nan,
                     "cpsnr_estimated_frame": float(single[top]) if single is not None else math.nan,
                     "cpsnr_next_best_frame": float(others.max()) if others is not None else math.nan,
                     "margin": float(single[ref] - others.max()) if others is not None else math.nan})
    table = pd.DataFrame(rows, columns=SCENE_COLUMNS)
    wrong = table[table["estimated"] != table["reference"]]
    metrics = {
        "track": cfg["track"], "estimator": estimator.kind, "weights": estimator.weights,
        "train_scenes": len(train), "labelled": {k: int(len(v)) for k, v in labelled.items()},
        "dev": {**ranking_metrics(estimator, dev), "rule": ranking_metrics(rule, dev),
                "unmasked": ranking_metrics(estimator, [{"features": s["features_unmasked"], "reference": s["reference"]}
                                                        for s in dev]),
                "feature_top1": feature_top1(dev), "chance_top1": float(np.mean([1.0 / s["frames"] for s in dev]))}
        if dev else None,
        "single_frame": {
            "reference_cpsnr": _finite_mean(table["cpsnr_reference_frame"]),
            "estimated_cpsnr": _finite_mean(table["cpsnr_estimated_frame"]),
            "mistakes": int(len(wrong)),
            # What a wrong pick costs, frame alone against frame alone (the fusion's cost is in the
            # two tracks' scores of every model).
            "mistake_cost_db": _finite_mean(wrong["cpsnr_reference_frame"] - wrong["cpsnr_estimated_frame"]),
            "margin_db": _quantiles(table["margin"]),
        } if dev else None,
    }
    real_scenes, why = labelled_real_scenes(real_settings(params, base))
    real_table = pd.DataFrame(columns=REAL_COLUMNS)
    if real_scenes:
        metrics["real"], real_table = measure_on_real(estimator, real_scenes)
    else:
        metrics["real"] = {"skipped": why}
    return estimator, metrics, table, real_table


def _finite_mean(values) -> float | None:
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


def load_estimator(path: os.PathLike | str | None) -> ReferenceEstimator:
    """The estimator saved at ``path``; the hand-set rule when ``path`` is None."""
    return ReferenceEstimator.rule() if path is None else ReferenceEstimator.load(path)
