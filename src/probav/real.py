"""Real PROBA-V scenes beside the pipeline's data: where they are, reading them, scoring models on them.

``params.yaml``'s ``real`` group names the real material (``real_settings``):

- ``folder``: real scenes in the official layout (``norm.csv``, ``train/``, ``test/``); its train scenes
  with an HR are scored like the dev split (``evaluate_real`` stage), in both tracks where ``labels``
  (a PROBA-V-REF ``reference.json``) has them. Its test scenes (no HR) get the no-HR check.
- ``lr_only``: real scenes with LR frames only (``RED|NIR/imgsetNNNN/LRnnn.png``, no QM, HR or SM; their
  clouds are not masked): the no-HR check only.

``null`` (or a path that is not there) leaves a part out, with a sentence saying so: on a machine without
the real sample every stage still runs. With ``data.source`` set to the real archive, the dev split is
already real and this scores whatever extra real folder is given.

``find_scene_folders(root)`` accepts any of: the official layout's root, one of its splits, an LR-only
layout's root, or one scene folder; ``read_any_scene`` reads a scene with or without QMs and HR.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from probav.scene import (BANDS, LR_NAME, SCENE_NAME, SPLITS, BadSceneError, Scene, read_norm, read_scene)

DEFAULTS = {
    "folder": None,       # official layout: train scenes with an HR are scored, test scenes get the no-HR check
    "labels": None,       # PROBA-V-REF reference.json for those scenes (null: challenge track only)
    "lr_only": None,      # LR-only layout (RED|NIR/imgsetNNNN/LRnnn.png): the no-HR check
    "held_out": 2,        # no-HR check: frames held out per scene
}


def real_settings(params: dict | None, base: os.PathLike | str = ".") -> dict:
    """The ``real`` group with defaults; paths relative to ``base`` (the repository root), checked."""
    cfg = {**DEFAULTS, **((params or {}).get("real") or {})}
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown real settings {sorted(unknown)}; known: {', '.join(DEFAULTS)}")
    for key in ("folder", "labels", "lr_only"):
        if cfg[key] not in (None, "", "none"):
            cfg[key] = Path(base) / Path(str(cfg[key])).expanduser()
        else:
            cfg[key] = None
    if int(cfg["held_out"]) < 1:
        raise ValueError(f"real.held_out must be at least 1, got {cfg['held_out']}")
    return cfg


def missing(path: Path | None, what: str) -> str | None:
    """Why a real part is left out (None when ``path`` is there)."""
    if path is None:
        return f"no {what} configured (params.yaml real)"
    if not Path(path).exists():
        return f"{what} not found at {path} (params.yaml real; the real sample lives in ../shared on this " \
               f"project's machines)"
    return None


# --------------------------------------------------------------------------- finding and reading scenes

def _has_frames(folder: Path) -> bool:
    return folder.is_dir() and any(LR_NAME.match(p.name) for p in folder.iterdir())


def find_scene_folders(root: os.PathLike | str, split: str | None = None) -> list[Path]:
    """The scene folders under ``root``: an official layout (``train|test/RED|NIR/imgsetNNNN``, one
    ``split`` or both), one split of it, an LR-only layout (``RED|NIR/imgsetNNNN``) or one scene folder.
    BadSceneError naming ``root`` when it holds none of these."""
    root = Path(root)
    if not root.is_dir():
        raise BadSceneError(root, "folder not found")
    if SCENE_NAME.match(root.name) and _has_frames(root):
        return [root]
    splits = [split] if split else list(SPLITS)
    layouts = ([[root / s / b for s in splits for b in BANDS]] if any((root / s).is_dir() for s in SPLITS) else []) \
        + [[root / b for b in BANDS]]
    for bands in layouts:
        folders = sorted((d for band in bands if band.is_dir() for d in band.iterdir()
                          if d.is_dir() and SCENE_NAME.match(d.name)), key=lambda d: (d.parent.name != "RED", d.name))
        if folders:
            return folders
    raise BadSceneError(root, "no scene folders: expected the official layout (train|test/RED|NIR/imgsetNNNN/), "
                              "an LR-only layout (RED|NIR/imgsetNNNN/LRnnn.png) or one imgsetNNNN folder with "
                              "LRnnn.png files")


def read_any_scene(folder: os.PathLike | str, norms: dict | None = None, labels: dict | None = None) -> Scene:
    """A scene in the official layout (QMs, HR when present) or LR frames only (no QM: every pixel taken as
    clear, so its clouds are not masked), with its norm and labelled reference when known."""
    folder = Path(folder)
    has_qm = any(p.name.startswith("QM") for p in folder.iterdir())
    scene = read_scene(folder, norm=(norms or {}).get(folder.name), require_hr=False, require_qm=has_qm)
    if scene.band not in BANDS:
        scene.band = folder.parent.name if folder.parent.name in BANDS else scene.band
    if labels and scene.name in labels:
        scene.reference = scene.frame_index(labels[scene.name][1])
    return scene


def real_scenes_with_hr(cfg: dict) -> tuple[list[Scene], str | None]:
    """The scored real scenes (train scenes of ``real.folder`` with an HR), or ([], why not)."""
    from probav.data.reference_labels import read_labels

    why = missing(cfg["folder"], "real scenes folder")
    if why:
        return [], why
    folder = Path(cfg["folder"])
    norms = read_norm(folder / "norm.csv") if (folder / "norm.csv").is_file() else {}
    labels = read_labels(cfg["labels"]) if cfg["labels"] is not None and Path(cfg["labels"]).is_file() else {}
    scenes = [read_any_scene(d, norms, labels) for d in find_scene_folders(folder, "train")
              if (d / "HR.png").is_file()]
    if not scenes:
        return [], f"{folder}: no train scene with an HR.png"
    return scenes, None


def real_scenes_without_hr(cfg: dict) -> list[Scene]:
    """The real scenes for the no-HR check: the test scenes of ``real.folder`` and the LR-only scenes."""
    from probav.data.reference_labels import read_labels

    labels = read_labels(cfg["labels"]) if cfg["labels"] is not None and Path(cfg["labels"]).is_file() else {}
    scenes = []
    if not missing(cfg["folder"], ""):
        folder = Path(cfg["folder"])
        norms = read_norm(folder / "norm.csv") if (folder / "norm.csv").is_file() else {}
        scenes += [read_any_scene(d, norms, labels) for d in find_scene_folders(folder, "test")]
    if not missing(cfg["lr_only"], ""):
        scenes += [read_any_scene(d, None, labels) for d in find_scene_folders(cfg["lr_only"])]
    return scenes


def labelled_real_scenes(cfg: dict) -> tuple[list[Scene], str | None]:
    """Every real scene with a PROBA-V-REF label: the train scenes of ``real.folder`` (with QMs, with or
    without an HR) and the LR-only scenes (no QM: clearance and the SM tell nothing there), or ([], why
    not). What the reference estimator is measured on beside the pipeline's own dev scenes."""
    from probav.data.reference_labels import read_labels

    why = missing(cfg["labels"], "reference labels file")
    if why:
        return [], why
    labels = read_labels(cfg["labels"])
    folders = []
    for root, split in ((cfg["folder"], "train"), (cfg["lr_only"], None)):
        if not missing(root, ""):
            try:
                folders += find_scene_folders(root, split)
            except BadSceneError:   # e.g. a real folder with test scenes only
                pass
    if not folders:
        return [], "; ".join(why for why in (missing(cfg["folder"], "real scenes folder"),
                                            missing(cfg["lr_only"], "LR-only real scenes")) if why) \
            or "no real train scene and no LR-only scene in the real folders"
    norms = {}
    if not missing(cfg["folder"], "") and (Path(cfg["folder"]) / "norm.csv").is_file():
        norms = read_norm(Path(cfg["folder"]) / "norm.csv")
    scenes = [read_any_scene(d, norms, labels) for d in folders if d.name in labels]
    if not scenes:
        return [], f"none of the {len(folders)} real scenes has a label in {cfg['labels']}"
    return scenes, None


# --------------------------------------------------------------------------- scoring

def evaluate_real(model, params: dict, estimator=None, base: os.PathLike | str = ".",
                  progress: bool = True) -> tuple[dict, pd.DataFrame]:
    """Score ``model`` on the real scenes with an HR, in both tracks (``probav.evaluate``); returns the
    metrics (``skipped`` says why when there is nothing to score) and the per-scene table."""
    from probav.data.reference_labels import reference_settings
    from probav.evaluate import COLUMNS, evaluate_model, summarise

    cfg = real_settings(params, base)
    track = reference_settings(params)["track"]
    scenes, why = real_scenes_with_hr(cfg)
    name = model.name or type(model).__name__
    if why:
        return {"model": name, "track": track, "scenes": 0, "skipped": why}, pd.DataFrame(columns=COLUMNS)
    table = evaluate_model(model, scenes, progress=progress, total=len(scenes), estimator=estimator, track=track)
    given = (params.get("real") or {})  # the paths as params.yaml gives them (relative to it)
    metrics = summarise(table, name, {"subset": "real", "folder": given.get("folder"), "labels": given.get("labels")},
                        track=track)
    # Against the official baseline of the real scenes (norm.csv): the cPSNR gap per track, mean and worst.
    for key in ("challenge", "ref"):
        gap = table[f"cpsnr_{key}"] - table["norm"]
        if metrics["tracks"].get(key) and gap.notna().any():
            metrics["tracks"][key].update(mean_gain_db=float(gap.mean()), worst_gain_db=float(gap.min()))
    return metrics, table
