"""Checking every scene of ``data/raw/`` and writing the scene index ``data/scenes.csv``.

A scene is usable when ``probav.scene.read_scene`` reads it (readable PNGs of the right sizes, a QM per
LR, HR and SM in train, enough frames) and, beyond what it checks, its LR/HR PNGs are 16-bit, no QM
lacks its LR, its name is listed in ``norm.csv`` and, where ``reference.json`` labels it, its reference
frame exists and its band is the labelled one. The index's ``reference`` column holds that frame's
number (empty without a label).
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from multiprocessing import get_context
from pathlib import Path

from tqdm import tqdm

from probav import png
from probav.data.index import write_csv_atomic
from probav.data.reference_labels import labels_path, read_labels
from probav.scene import (MIN_FRAMES, SPLITS, BadSceneError, frame_indices, read_norm, read_scene,
                          scene_dirs)

INDEX_COLUMNS = ["split", "band", "name", "path", "frames", "mean_clearance", "hr_clearance", "reference", "status",
                 "reason"]
ON_BAD_SCENE = ("stop", "skip")
# Below this many scenes, starting worker processes (about 0.4 s each) costs more than it saves.
POOL_MIN_SCENES = 200
SUMMARY_LINES = 20


class SceneCheckError(BadSceneError):
    """The first bad scene in ``stop`` mode; the message names the file, the problem and the way out."""

    def __init__(self, path: os.PathLike | str, problem: str):
        super().__init__(path, problem)
        self.args = (f"{self.path}: {problem}\nThis scene cannot be used. Fix or remove it, or set "
                     f"`data.on_bad_scene: skip` in params.yaml to leave it out (it is then listed in "
                     f"data/scenes.csv with status 'skipped' and the reason).",)


def png_bit_depth(path: Path) -> int:
    """Bit depth from a PNG's IHDR chunk (read_png has already checked the file is a readable PNG)."""
    with open(path, "rb") as f:
        fields = png.header(f.read(26))
    if fields is None:
        raise BadSceneError(path, "not a PNG file")
    return fields[2]


def _check_beyond_read_scene(scene_dir: Path, has_hr: bool) -> None:
    """What read_scene does not check: 16-bit LR/HR files and a matching LR for every QM."""
    indices = frame_indices(scene_dir)
    images = [scene_dir / f"LR{i:03d}.png" for i in indices] + ([scene_dir / "HR.png"] if has_hr else [])
    for path in images:
        depth = png_bit_depth(path)
        if depth != 16:
            raise BadSceneError(path, f"expected a 16-bit PNG, got {depth}-bit")
    lr_indices = set(indices)
    for qm in sorted(scene_dir.glob("QM*.png")):
        if qm.stem[2:].isdigit() and int(qm.stem[2:]) not in lr_indices:
            raise BadSceneError(qm, f"quality mask without its image LR{qm.stem[2:]}.png")


def check_scene(scene_dir: os.PathLike | str, raw_root: os.PathLike | str, min_frames: int = MIN_FRAMES,
                labels: dict[str, tuple[str, int]] | None = None) -> dict:
    """The index row of one scene folder; status ``skipped`` with the reason when it cannot be used.
    ``labels``: the reference labels (``probav.data.reference_labels``), checked against the scene."""
    scene_dir, raw_root = Path(scene_dir), Path(raw_root)
    row = {"split": scene_dir.parent.parent.name, "band": scene_dir.parent.name, "name": scene_dir.name,
           "path": scene_dir.relative_to(raw_root).as_posix(), "frames": 0, "mean_clearance": math.nan,
           "hr_clearance": math.nan, "reference": None, "status": "ok", "reason": "", "bad_file": ""}
    try:
        row["frames"] = len(frame_indices(scene_dir))
        scene = read_scene(scene_dir, min_frames=min_frames)
        _check_beyond_read_scene(scene_dir, scene.has_hr)
        if labels and scene.name in labels:
            row["reference"] = _check_label(scene_dir, raw_root, scene, *labels[scene.name])
    except BadSceneError as err:
        return {**row, "status": "skipped", "reason": f"{_relative(err.path, raw_root)}: {err.problem}",
                "bad_file": str(err.path), "problem": err.problem}
    row["mean_clearance"] = float(scene.clearance.mean())
    if scene.hr_clearance is not None:
        row["hr_clearance"] = scene.hr_clearance
    return row


def _check_label(scene_dir: Path, raw_root: Path, scene, band: str, frame: int) -> int:
    """The labelled reference frame's number, once checked against the scene."""
    source = raw_root / "reference.json"
    if band != scene.band:
        raise BadSceneError(source, f"{scene.name} is labelled as a {band} scene but lies in {scene_dir.parent}")
    if frame not in set(int(i) for i in scene.ids):
        raise BadSceneError(source, f"{scene.name}: its reference frame LR{frame:03d}.png is not among the scene's "
                                    f"{scene.frames} frames (wrong labels file for this data?)")
    return frame


def read_index_labels(raw_root: Path) -> dict[str, tuple[str, int]] | None:
    """The data's reference labels (``raw/reference.json``), or None where it has none."""
    path = labels_path(raw_root)
    return None if path is None else read_labels(path)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _check_layout(raw_root: Path) -> list[Path]:
    """The scene folders of train and test; a clear error when the layout itself is wrong."""
    for split in SPLITS:
        if not (raw_root / split).is_dir():
            raise BadSceneError(raw_root / split, f"{split}/ folder is missing (expected the official layout: "
                                                  f"norm.csv, train/, test/)")
    dirs = [d for split in SPLITS for d in scene_dirs(raw_root, split)]
    if not dirs:
        raise BadSceneError(raw_root, "no scene folders (train|test/RED|NIR/imgsetNNNN) found")
    return dirs


def check_scenes(raw_root: os.PathLike | str, on_bad_scene: str = "stop", min_frames: int = MIN_FRAMES,
                 workers: int = 2, index_csv: os.PathLike | str | None = None):
    """Check every scene of train and test; returns the index (``INDEX_COLUMNS``) and writes it to ``index_csv``.

    ``on_bad_scene="stop"`` raises SceneCheckError at the first bad scene; ``"skip"`` marks it ``skipped``
    with the reason and prints a summary. With ``workers > 1`` and many scenes, worker processes are
    spawned: a script calling this must do so under ``if __name__ == "__main__":``.
    """
    import pandas as pd

    if on_bad_scene not in ON_BAD_SCENE:
        raise ValueError(f"on_bad_scene must be one of {ON_BAD_SCENE}, got {on_bad_scene!r}")
    raw_root = Path(raw_root)
    norm_path = raw_root / "norm.csv"
    norms = read_norm(norm_path)
    dirs = _check_layout(raw_root)
    labels = read_index_labels(raw_root)
    check = partial(check_scene, raw_root=raw_root, min_frames=min_frames, labels=labels)
    pool = _process_pool(workers, len(dirs))
    rows = []
    try:
        results = pool.map(check, dirs, chunksize=8) if pool else map(check, dirs)
        with tqdm(total=len(dirs), desc="checking scenes", unit="scene", mininterval=0.5) as bar:
            for row in results:
                if row["status"] == "ok" and row["name"] not in norms:
                    row.update(status="skipped", reason=f"norm.csv: {row['name']} is not listed",
                               bad_file=str(norm_path), problem=f"scene {row['path']} is not listed in norm.csv")
                if row["status"] != "ok" and on_bad_scene == "stop":
                    raise SceneCheckError(row["bad_file"], row["problem"])
                rows.append(row)
                bar.update()
    finally:
        if pool:
            pool.shutdown(wait=True, cancel_futures=True)  # in stop mode, drop the scenes not started yet
    table = pd.DataFrame(rows).reindex(columns=INDEX_COLUMNS)
    table["reference"] = table["reference"].astype("Int64")
    _print_summary(table, raw_root)
    if labels is not None:
        _print_labels_summary(table, labels, raw_root)
    if not (table["status"] == "ok").any():
        raise BadSceneError(raw_root, f"no usable scene: all {len(table)} scenes were skipped (reasons above)")
    if index_csv is not None:
        write_index(table, index_csv)
    return table


def _process_pool(workers: int, scenes: int) -> ProcessPoolExecutor | None:
    """Worker processes for reading PNGs (the cost of the check), or None to work in this process.

    'spawn' rather than fork: the caller may hold threads (TensorFlow, tqdm) that fork would copy mid-state.
    """
    workers = min(int(workers), os.cpu_count() or 1)
    if workers <= 1 or scenes < POOL_MIN_SCENES:
        return None
    return ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))


def _print_summary(table, raw_root: Path) -> None:
    """One line of counts, then the skipped scenes and why."""
    skipped = table[table["status"] != "ok"]
    counts = ", ".join(f"{split} {int((table['split'] == split).sum())}" for split in SPLITS)
    if skipped.empty:
        print(f"checked {len(table)} scenes in {raw_root} ({counts}): all usable")
        return
    print(f"checked {len(table)} scenes in {raw_root} ({counts}): {len(table) - len(skipped)} usable, "
          f"{len(skipped)} skipped (data.on_bad_scene: skip):")
    for reason in skipped["reason"].head(SUMMARY_LINES):
        print(f"  {reason}")
    if len(skipped) > SUMMARY_LINES:
        print(f"  … and {len(skipped) - SUMMARY_LINES} more (see the index, status 'skipped')")


def _print_labels_summary(table, labels: dict, raw_root: Path) -> None:
    """How many scenes the labels cover; an error when they name none of them (the wrong file)."""
    labelled = int(table["reference"].notna().sum())
    present = set(table["name"])
    if labelled == 0 and labels:
        raise BadSceneError(raw_root / "reference.json", f"its {len(labels)} labels name none of the {len(table)} "
                                                         f"scenes of {raw_root}: the labels of other data?")
    outside = sum(1 for name in labels if name not in present)
    note = f"; {outside} labels name scenes not in this data (ignored)" if outside else ""
    print(f"reference labels: {labelled} of {len(table)} scenes labelled{note}")


def write_index(table, path: os.PathLike | str) -> Path:
    """Write the scene index CSV atomically (temporary name, then rename)."""
    return write_csv_atomic(table, path, INDEX_COLUMNS)
