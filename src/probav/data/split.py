"""The train/val/dev split of the usable train scenes (``data/split.csv``: ``name,band,subset``).

The challenge's test HR images are not public, so local evaluation holds out part of train as
``dev``: the reported scores. Model selection (early stopping, the best epoch) needs scenes of its own,
or the dev scores would be chosen on dev: ``val`` holds those out as well. The split is stratified by
band: in each band, ``round(dev_fraction · n)`` scenes go to dev (at least one and at most ``n - 1``
when the band has two scenes or more and the fraction is positive), then ``round(val_fraction · n)``
to val (at least one when the fraction is positive, always leaving one train scene). Which ones: the
scenes of a band ranked by a hash of (seed, name), the first ones to dev, the next ones to val. The
choice of a scene therefore depends only on the seed, its name and the size of its band, not on the
row order of ``scenes.csv``, and dev is the same whatever ``val_fraction``. The seed is
``derive_seed(params, "split")``.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd

from probav.data.index import write_csv_atomic
from probav.params import derive_seed
from probav.scene import BANDS

SPLIT_COLUMNS = ["name", "band", "subset"]


def dev_count(n: int, dev_fraction: float) -> int:
    """Number of dev scenes among the ``n`` scenes of one band."""
    if n <= 1 or dev_fraction <= 0:
        return 0
    return int(min(max(round(dev_fraction * n), 1), n - 1))


def val_count(n: int, dev: int, val_fraction: float) -> int:
    """Number of val scenes among the ``n`` scenes of one band, ``dev`` of which went to dev."""
    left = n - dev
    if left <= 1 or val_fraction <= 0:
        return 0
    return int(min(max(round(val_fraction * n), 1), left - 1))


def _rank_key(seed: int, name: str) -> bytes:
    return hashlib.sha256(f"{seed}/{name}".encode()).digest()


def usable_train(scenes: pd.DataFrame) -> pd.DataFrame:
    """The rows of the scene index that can be split: train scenes with status ``ok``."""
    missing = {"split", "band", "name", "status"} - set(scenes.columns)
    if missing:
        raise ValueError(f"scene index lacks the columns {sorted(missing)} "
                         f"(expected split,band,name,path,frames,mean_clearance,hr_clearance,status,reason)")
    ok = scenes[(scenes["split"] == "train") & (scenes["status"] == "ok")]
    return ok.reset_index(drop=True)


def split_scenes(scenes: pd.DataFrame, dev_fraction: float, seed: int, val_fraction: float = 0.0) -> pd.DataFrame:
    """``name,band,subset`` for the usable train scenes of the index ``scenes``, rows in index order."""
    dev_fraction, val_fraction = float(dev_fraction), float(val_fraction)
    if not 0.0 <= dev_fraction < 1.0:
        raise ValueError(f"split.dev_fraction must be in [0, 1), got {dev_fraction}")
    if not 0.0 <= val_fraction < 1.0 - dev_fraction:
        raise ValueError(f"split.val_fraction must be in [0, 1 - dev_fraction) = [0, {1.0 - dev_fraction:g}), "
                         f"got {val_fraction}")
    train = usable_train(scenes)
    if train.empty:
        raise ValueError("no usable train scene (status ok) in the scene index: nothing to split")
    if train["name"].duplicated().any():
        dup = train.loc[train["name"].duplicated(), "name"].iloc[0]
        raise ValueError(f"scene {dup} appears twice in the scene index")
    subset = pd.Series("train", index=train.index, dtype=object)
    bands = [b for b in BANDS if b in set(train["band"])] + sorted(set(train["band"]) - set(BANDS))
    for band in bands:
        rows = train[train["band"] == band]
        ranked = sorted(rows.index, key=lambda i: _rank_key(seed, str(train.at[i, "name"])))
        dev = dev_count(len(rows), dev_fraction)
        subset.loc[ranked[:dev]] = "dev"
        subset.loc[ranked[dev:dev + val_count(len(rows), dev, val_fraction)]] = "val"
    return pd.DataFrame({"name": train["name"].astype(str), "band": train["band"].astype(str),
                         "subset": subset.astype(str)})[SPLIT_COLUMNS]


def make_split(scenes_csv: os.PathLike | str, params: dict) -> pd.DataFrame:
    """The split of the index ``scenes_csv`` with ``params`` (group ``split``, root ``seed``)."""
    scenes_csv = Path(scenes_csv)
    if not scenes_csv.is_file():
        raise FileNotFoundError(f"{scenes_csv}: scene index not found (run the download stage first)")
    scenes = pd.read_csv(scenes_csv, dtype={"name": str, "band": str, "split": str, "status": str})
    settings = params.get("split") or {}
    return split_scenes(scenes, settings.get("dev_fraction", 0.25), derive_seed(params, "split"),
                        settings.get("val_fraction", 0.0))


def write_split(split: pd.DataFrame, path: os.PathLike | str) -> Path:
    """Write ``split.csv`` atomically (temporary name, then rename)."""
    return write_csv_atomic(split, path, SPLIT_COLUMNS)


def summary(split: pd.DataFrame) -> str:
    """One line: scenes per subset and band."""
    parts = []
    for sub in ("train", "val", "dev"):
        rows = split[split["subset"] == sub]
        if sub == "val" and rows.empty:
            continue
        per_band = ", ".join(f"{band} {int((rows['band'] == band).sum())}" for band in dict.fromkeys(split["band"]))
        parts.append(f"{sub} {len(rows)} ({per_band})")
    return "; ".join(parts)
