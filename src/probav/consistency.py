"""A quality check that needs no HR: leave-one-frame-out consistency.

For a scene without an HR (a test scene, LR frames only), hold out a clear frame, super-resolve the
scene from the others, and ask how well the result predicts the held-out frame once brought to that
frame's grid and resolution:

1. the SR is registered to the held-out frame (``probav.registration.register`` on the SR binned 3×3
   against the frame: sub-pixel shift, brightness gain and offset), shifted by that amount at HR
   resolution (so its sub-pixel detail lands where the frame sampled it), blurred by a Gaussian PSF
   and binned 3×3 (the LR blur and ×3 decimation); the PSF width is the one of ``PSF_SIGMAS`` (HR
   pixels) that predicts the frame best, chosen for each SR, so no model is judged with another's blur;
2. on the frame's clear pixels (away from the border), the mean difference is removed (brightness, as
   the official score does) and ``cPSNR = −10·log10(mean squared difference)``, values in [0, 1].

The scene's value is the mean over the ``held_out`` clearest frames, the most likely reference frame
excepted (so every model keeps the frame it builds on). Higher is better, like a cPSNR; it is not the
official score: the held-out frame was taken on another day, so land and light changes cap it the same
for every model, and it sees the SR only through a 300 m frame.

Validated before being trusted (``validate``): on scenes with an HR, how well it ranks models (Spearman ρ
between its value and the official cPSNR, per scene across models, and of the models' mean ranks) and
scenes (ρ across scenes, per model).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from probav.registration import register, shift_image
from probav.scene import SCALE, Scene

HELD_OUT = 2                          # frames held out per scene
MIN_CLEARANCE = 0.9                   # a held-out frame is at least this clear
PSF_SIGMAS = (0.0, 0.4, 0.7, 1.0)     # HR pixels: the LR blur tried on top of the 3×3 binning
BORDER = 6                            # LR pixels left out at the border (shifts, interpolation)


@dataclass
class HeldOut:
    frame: int          # the held-out frame's file number (LRNNN.png)
    cpsnr: float        # consistency cPSNR of the SR against it (dB)
    psf_sigma: float    # the LR blur that predicted it best (HR px)
    shift: tuple        # its registration shift relative to the SR's grid (LR px)


def held_out_frames(scene: Scene, count: int = HELD_OUT, min_clearance: float = MIN_CLEARANCE) -> list[int]:
    """Indices of the frames to hold out: of the frames at least ``min_clearance`` clear, the ``count``
    closest to the median of the registered frames (the most typical: where the QM is missing, as for
    LR-only material, this keeps unmasked clouds out), not the most likely reference
    (``scene.reference_weights``). The choice depends on the scene only, never on a model."""
    from probav.reference import FEATURES, frame_features

    clear = [int(i) for i in np.flatnonzero(scene.clearance >= min_clearance)]
    if scene.reference_weights is not None:
        top = int(np.argmax(scene.reference_weights))
        clear = [i for i in clear if i != top]
    distance = frame_features(scene)[:, FEATURES.index("median_distance")]
    return sorted(clear, key=lambda i: (distance[i], i))[:count]


def without_frame(scene: Scene, index: int) -> Scene:
    """The scene without frame ``index`` (its label and reference weights follow the remaining frames)."""
    keep = np.arange(scene.frames) != index
    reference = scene.reference
    if reference is not None:
        reference = None if reference == index else reference - int(reference > index)
    weights = scene.reference_weights
    if weights is not None:
        weights = np.asarray(weights)[keep]
        weights = weights / weights.sum() if weights.sum() > 0 else None
    return Scene(name=scene.name, band=scene.band, split=scene.split, lr=scene.lr[keep], qm=scene.qm[keep],
                 hr=scene.hr, sm=scene.sm, norm=scene.norm, frame_ids=scene.ids[keep], reference=reference,
                 reference_weights=weights)


def _binned(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[0] // SCALE, image.shape[1] // SCALE
    return image.reshape(h, SCALE, w, SCALE).mean(axis=(1, 3))


def frame_consistency(sr: np.ndarray, frame: np.ndarray, clear: np.ndarray) -> HeldOut | None:
    """How well an SR image (384×384, [0,1]) predicts one LR frame (128×128, [0,1]) on its ``clear``
    pixels (see the module doc); None when they cannot be registered."""
    sr = np.asarray(sr, np.float64)
    reg = register(_binned(sr), frame, None, clear)
    if not reg.ok:
        return None
    # frame(y) ≈ offset + gain · binned(y + s): move the SR by s LR pixels (3s HR pixels) onto the frame.
    moved = shift_image(sr, -SCALE * np.asarray(reg.shift), order=3, mode="nearest")
    inner = np.zeros(frame.shape, bool)
    inner[BORDER:-BORDER, BORDER:-BORDER] = True
    valid = clear & inner
    if valid.sum() < 256:
        return None
    best = None
    for sigma in PSF_SIGMAS:
        predicted = _binned(ndi.gaussian_filter(moved, sigma, mode="nearest") if sigma > 0 else moved)
        # The brightness gain and offset of the frame's pass, fitted on its clear pixels.
        a = np.stack([np.ones(valid.sum()), predicted[valid]], axis=1)
        coef, *_ = np.linalg.lstsq(a, frame[valid], rcond=None)
        d = frame[valid] - a @ coef
        mse = float(np.mean((d - d.mean()) ** 2))
        cpsnr = -10 * math.log10(mse) if mse > 0 else math.inf
        if best is None or cpsnr > best.cpsnr:
            best = HeldOut(frame=-1, cpsnr=cpsnr, psf_sigma=float(sigma), shift=tuple(float(v) for v in reg.shift))
    return best


def scene_consistency(model, scene: Scene, track: str = "challenge", estimator=None, held_out: int = HELD_OUT
                      ) -> dict:
    """Leave-one-frame-out consistency of ``model`` on ``scene`` (no HR needed): ``{"cpsnr": mean over the
    held-out frames (NaN if none could be used), "frames": [HeldOut, …]}``."""
    from probav.reference import reference_weights
    from probav.scene import to_unit

    if model.uses_reference and scene.reference_weights is None:
        scene.reference_weights = reference_weights(scene, track, estimator)
    results = []
    for index in held_out_frames(scene, held_out):
        rest = without_frame(scene, index)
        if model.uses_reference:
            rest.reference_weights = reference_weights(rest, track, estimator)
        sr = to_unit(model.predict(rest))
        result = frame_consistency(sr, to_unit(scene.lr[index]), scene.qm[index])
        if result is not None:
            result.frame = int(scene.ids[index])
            results.append(result)
    values = [r.cpsnr for r in results if math.isfinite(r.cpsnr)]
    return {"cpsnr": float(np.mean(values)) if values else math.nan, "frames": results}


# --------------------------------------------------------------------------- many scenes and models

ROW_COLUMNS = ["scene", "band", "frames", "kind", "model", "consistency", "held_out", "cpsnr"]


def consistency_rows(models: dict, scenes, kind: str, track: str = "challenge", estimator=None,
                     held_out: int = HELD_OUT, official: dict | None = None, progress: bool = True) -> list[dict]:
    """One row per (scene, model): the scene's leave-one-frame-out consistency (dB) and, where known, the
    official cPSNR (``official[(scene, model)]``, or scored here when the scene has an HR). ``kind`` says
    what the scenes are (``dev``, ``real``, ``real_no_hr``)."""
    from tqdm import tqdm

    from probav.evaluate import evaluate_scene

    rows = []
    scenes = list(scenes)
    with tqdm(total=len(scenes) * len(models), desc=f"no-HR check ({kind})", unit="prediction set",
              disable=not progress, leave=False) as bar:
        for scene in scenes:
            for name, model in models.items():
                scene.reference_weights = None
                result = scene_consistency(model, scene, track, estimator, held_out)
                cpsnr = (official or {}).get((scene.name, name))
                if cpsnr is None and scene.has_hr:
                    cpsnr = evaluate_scene(model, scene, estimator, track)["cpsnr"]
                rows.append({"scene": scene.name, "band": scene.band, "frames": scene.frames, "kind": kind,
                             "model": name, "consistency": result["cpsnr"],
                             "held_out": " ".join(f"LR{r.frame:03d}" for r in result["frames"]),
                             "cpsnr": math.nan if cpsnr is None else float(cpsnr)})
                bar.update()
    return rows


def validate(rows) -> dict:
    """How well the check ranks models and scenes where the official cPSNR is known: Spearman ρ per scene
    across models (its mean, and on how many scenes it is positive), ρ of the models' mean values, ρ per
    model across scenes; NaN-free rows only."""
    import pandas as pd
    from scipy.stats import spearmanr

    table = pd.DataFrame(rows)
    if table.empty or not {"consistency", "cpsnr"} <= set(table):
        return {"scenes": 0}
    table = table.dropna(subset=["consistency", "cpsnr"])
    if table.empty:
        return {"scenes": 0}

    def rho(a, b):
        if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
            return None
        value = spearmanr(a, b)[0]
        return None if not np.isfinite(value) else float(value)

    per_scene = {name: rho(g["consistency"], g["cpsnr"]) for name, g in table.groupby("scene")}
    values = [v for v in per_scene.values() if v is not None]
    means = table.groupby("model")[["consistency", "cpsnr"]].mean()
    per_model = {name: rho(g["consistency"], g["cpsnr"]) for name, g in table.groupby("model")}
    return {"scenes": int(table["scene"].nunique()), "models": int(table["model"].nunique()),
            "rho_per_scene_mean": float(np.mean(values)) if values else None,
            "rho_per_scene_positive": int(sum(v > 0 for v in values)), "rho_per_scene": per_scene,
            "rho_model_means": rho(means["consistency"], means["cpsnr"]),
            "model_means": {m: {"consistency": float(r.consistency), "cpsnr": float(r.cpsnr)}
                            for m, r in means.iterrows()},
            "rho_per_model": per_model}
