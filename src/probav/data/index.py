"""Which scenes a stage works on: the scene index written by the check (``data/scenes.csv``)
and the train/dev split (``data/split.csv``), joined to the raw folder and ``norm.csv``."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pandas as pd

from probav.scene import Scene, read_norm, read_scene

SUBSETS = ("train", "val", "dev", "test")


def write_csv_atomic(table: pd.DataFrame, path: os.PathLike | str, columns: list[str]) -> Path:
    """Write ``table``'s ``columns`` as CSV under a temporary name, then rename it to ``path``: an
    interrupted write never leaves a half-written file that the next stage would trust."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    table.reindex(columns=columns).to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path


def write_json_atomic(data, path: os.PathLike | str) -> Path:
    """Write ``data`` as indented JSON under a temporary name, then rename it to ``path`` (as
    ``write_csv_atomic``); numpy numbers are written as plain numbers."""
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float) + "\n")
    os.replace(tmp, path)
    return path


def subset_table(index_csv: os.PathLike | str, split_csv: os.PathLike | str, subset: str) -> pd.DataFrame:
    """Rows (split, band, name, path, …) of the usable scenes of ``subset`` ∈ train | val | dev | test."""
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")
    index = pd.read_csv(index_csv, dtype={"name": str, "reference": "Int64"})
    index = index[index["status"] == "ok"]
    if subset == "test":
        return index[index["split"] == "test"].reset_index(drop=True)
    split = pd.read_csv(split_csv, dtype={"name": str})
    names = set(split.loc[split["subset"] == subset, "name"])
    return index[(index["split"] == "train") & index["name"].isin(names)].reset_index(drop=True)


def iter_scenes(raw_root: os.PathLike | str, table: pd.DataFrame) -> Iterator[Scene]:
    """Read the scenes of a table (from ``subset_table``) with their norms and, where the index has
    one, their labelled reference frame (``Scene.reference``)."""
    raw_root = Path(raw_root)
    norms = read_norm(raw_root / "norm.csv")
    for row in table.itertuples(index=False):
        yield read_indexed_scene(raw_root, row.path, norms.get(row.name), getattr(row, "reference", None))


def read_indexed_scene(raw_root: os.PathLike | str, path: str, norm: float | None, reference=None) -> Scene:
    """One scene of the index: ``read_scene`` plus its norm and labelled reference frame number (if any)."""
    scene = read_scene(Path(raw_root) / path, norm=norm)
    if reference is not None and not pd.isna(reference):
        scene.reference = scene.frame_index(int(reference))
    return scene
