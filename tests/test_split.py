"""The train/dev split: only usable train scenes, stratified by band, seeded and deterministic."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import pandas as pd
import pytest

from probav.data.split import dev_count, make_split, split_scenes, summary, val_count, write_split
from probav.params import derive_seed

COLUMNS = ["split", "band", "name", "path", "frames", "mean_clearance", "hr_clearance", "status", "reason"]


def index(red: int = 20, nir: int = 12, skipped: int = 3, test: int = 4) -> pd.DataFrame:
    rows, n = [], 0

    def add(split, band, status="ok"):
        nonlocal n
        name = f"imgset{n:04d}"
        rows.append([split, band, name, f"{split}/{band}/{name}", 19, 0.9, 0.95 if split == "train" else float("nan"),
                     status, "" if status == "ok" else "LR000.png: unreadable PNG"])
        n += 1

    for _ in range(red):
        add("train", "RED")
    for _ in range(skipped):
        add("train", "RED", "skipped")
    for _ in range(nir):
        add("train", "NIR")
    for _ in range(test):
        add("test", "NIR")
    return pd.DataFrame(rows, columns=COLUMNS)


def test_only_usable_train_scenes_stratified_by_band():
    table = index()
    split = split_scenes(table, 0.25, seed=1)
    assert list(split.columns) == ["name", "band", "subset"]
    usable = table[(table["split"] == "train") & (table["status"] == "ok")]
    assert list(split["name"]) == list(usable["name"])          # index order, nothing else
    assert set(split["subset"]) == {"train", "dev"}
    counts = split.groupby(["band", "subset"]).size()
    assert counts["RED", "dev"] == 5 and counts["RED", "train"] == 15
    assert counts["NIR", "dev"] == 3 and counts["NIR", "train"] == 9


def test_deterministic_seeded_and_order_independent():
    table = index()
    a = split_scenes(table, 0.25, seed=7)
    b = split_scenes(table, 0.25, seed=7)
    pd.testing.assert_frame_equal(a, b)
    shuffled = split_scenes(table.sample(frac=1.0, random_state=3), 0.25, seed=7)
    assert dict(zip(shuffled["name"], shuffled["subset"])) == dict(zip(a["name"], a["subset"]))
    others = [set(split_scenes(table, 0.25, seed=s).query("subset == 'dev'")["name"]) for s in range(8, 12)]
    assert any(o != set(a.query("subset == 'dev'")["name"]) for o in others)


def test_dev_count_edges():
    assert dev_count(1, 0.25) == 0          # a lone scene trains
    assert dev_count(2, 0.01) == 1          # at least one dev scene per band
    assert dev_count(3, 0.9) == 2           # at least one train scene per band
    assert dev_count(10, 0.0) == 0
    split = split_scenes(index(red=4, nir=1), 0.0, seed=0)
    assert set(split["subset"]) == {"train"}
    with pytest.raises(ValueError, match="dev_fraction"):
        split_scenes(index(), 1.0, seed=0)
    with pytest.raises(ValueError, match="no usable train scene"):
        split_scenes(index(red=0, nir=0), 0.25, seed=0)


def test_make_split_uses_params_seed_and_write_is_atomic(tmp_path):
    csv = tmp_path / "scenes.csv"
    index().to_csv(csv, index=False)
    params = {"seed": 2019, "split": {"dev_fraction": 0.3}}
    split = make_split(csv, params)
    pd.testing.assert_frame_equal(split, split_scenes(index(), 0.3, derive_seed(params, "split")))
    out = write_split(split, tmp_path / "data" / "split.csv")
    assert [p.name for p in out.parent.iterdir()] == ["split.csv"]
    back = pd.read_csv(out, dtype={"name": str})
    pd.testing.assert_frame_equal(back, split.reset_index(drop=True))


def test_stage_cli(tmp_path, repo_root):
    csv, out, params = tmp_path / "scenes.csv", tmp_path / "split.csv", tmp_path / "params.yaml"
    index().to_csv(csv, index=False)
    params.write_text("seed: 5\nsplit:\n  dev_fraction: 0.25\n")
    spec = importlib.util.spec_from_file_location("split_stage", repo_root / "stages" / "split.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    assert stage.main(["--params", str(params), "--scenes", str(csv), "--out", str(out)]) == 0
    written = pd.read_csv(out, dtype={"name": str})
    expected = split_scenes(index(), 0.25, derive_seed({"seed": 5}, "split")).reset_index(drop=True)
    pd.testing.assert_frame_equal(written, expected)
    # A missing index is a clear failure, not a traceback.
    result = subprocess.run([sys.executable, str(repo_root / "stages" / "split.py"), "--params", str(params),
                             "--scenes", str(tmp_path / "missing.csv"), "--out", str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "missing.csv" in result.stderr and "download stage" in result.stderr


def test_val_held_out_for_model_selection_and_dev_unchanged():
    """val comes after dev in each band's ranking: dev is the same scenes with or without val, no scene is in
    two subsets, and each band keeps a train scene."""
    table = index()
    without = split_scenes(table, 0.25, seed=3)
    with_val = split_scenes(table, 0.25, seed=3, val_fraction=0.1)
    assert set(with_val.query("subset == 'dev'")["name"]) == set(without.query("subset == 'dev'")["name"])
    counts = with_val.groupby(["band", "subset"]).size()
    assert counts["RED", "val"] == 2 and counts["RED", "train"] == 13      # 20 RED: 5 dev, round(2.0) val
    assert counts["NIR", "val"] == 1 and counts["NIR", "train"] == 8       # 12 NIR: 3 dev, round(1.2) val
    assert val_count(12, 3, 0.01) == 1 and val_count(3, 2, 0.5) == 0 and val_count(4, 2, 0.9) == 1
    assert val_count(10, 2, 0.0) == 0
    with pytest.raises(ValueError, match="val_fraction"):
        split_scenes(table, 0.5, seed=3, val_fraction=0.5)
    assert "val 3" in summary(with_val) and "val" not in summary(without)
