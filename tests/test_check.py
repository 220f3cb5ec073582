"""The scene check: every kind of bad scene gives a clear error naming the file (stop) or is listed (skip)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from probav.data import check as check_module
from probav.data.check import INDEX_COLUMNS, SceneCheckError, check_scenes
from probav.scene import BadSceneError, Scene, write_norm, write_png, write_scene

# (split, band, name) of the tiny fake archive.
FAKE_SCENES = [("train", "RED", "imgset0000"), ("train", "NIR", "imgset0594"), ("test", "RED", "imgset1160")]


def fake_scene(split: str, band: str, name: str, frames: int = 9, seed: int = 0) -> Scene:
    """Random uint16 LR frames and masks; HR and SM for train scenes."""
    rng = np.random.default_rng(seed)
    lr = (rng.integers(0, 1024, (frames, 128, 128)) * 16).astype(np.uint16)
    qm = rng.random((frames, 128, 128)) > 0.1
    hr = (rng.integers(0, 1024, (384, 384)) * 16).astype(np.uint16) if split == "train" else None
    sm = rng.random((384, 384)) > 0.05
    return Scene(name=name, band=band, split=split, lr=lr, qm=qm, hr=hr, sm=sm)


def fake_raw(root: Path, scenes=FAKE_SCENES, frames: int = 9) -> Path:
    """A tiny archive in the official layout (norm.csv, train/, test/) under ``root``."""
    for k, (split, band, name) in enumerate(scenes):
        write_scene(fake_scene(split, band, name, frames, seed=k), root)
    write_norm(root / "norm.csv", {name: 50.0 + k for k, (_, _, name) in enumerate(scenes)})
    (root / "train").mkdir(exist_ok=True)
    (root / "test").mkdir(exist_ok=True)
    return root


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    return fake_raw(tmp_path / "raw")


SCENE = "train/RED/imgset0000"


def corrupt_png(raw: Path) -> str:
    (raw / SCENE / "LR003.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return "LR003.png"


def remove_qm(raw: Path) -> str:
    (raw / SCENE / "QM004.png").unlink()
    return "QM004.png"


def wrong_size(raw: Path) -> str:
    write_png(raw / SCENE / "HR.png", np.zeros((300, 384), np.uint16))
    return "HR.png"


def too_few_frames(raw: Path) -> str:
    for i in (7, 8):
        (raw / SCENE / f"LR{i:03d}.png").unlink()
        (raw / SCENE / f"QM{i:03d}.png").unlink()
    return "imgset0000"


def eight_bit_lr(raw: Path) -> str:
    Image.fromarray(np.zeros((128, 128), np.uint8)).save(raw / SCENE / "LR002.png")
    return "LR002.png"


def missing_hr(raw: Path) -> str:
    (raw / SCENE / "HR.png").unlink()
    return "HR.png"


def orphan_qm(raw: Path) -> str:
    write_png(raw / SCENE / "QM020.png", np.ones((128, 128), bool))
    return "QM020.png"


def not_in_norm(raw: Path) -> str:
    write_norm(raw / "norm.csv", {"imgset0594": 50.0, "imgset1160": 51.0})
    return "norm.csv"


DAMAGES = {
    "corrupt png": (corrupt_png, "unreadable PNG"),
    "missing QM": (remove_qm, "missing quality mask"),
    "wrong image size": (wrong_size, "wrong image size"),
    "too few frames": (too_few_frames, "too few LR frames"),
    "8-bit LR": (eight_bit_lr, "16-bit"),
    "missing HR": (missing_hr, "missing HR"),
    "QM without LR": (orphan_qm, "without its image"),
    "not in norm.csv": (not_in_norm, "not listed"),
}


def test_good_scenes_give_the_index(raw: Path, tmp_path: Path):
    index_csv = tmp_path / "data" / "scenes.csv"
    table = check_scenes(raw, index_csv=index_csv)
    assert list(table.columns) == INDEX_COLUMNS
    assert (table["status"] == "ok").all()
    assert list(table["path"]) == ["train/RED/imgset0000", "train/NIR/imgset0594", "test/RED/imgset1160"]
    assert list(table["frames"]) == [9, 9, 9]
    assert table["mean_clearance"].between(0.85, 0.95).all()
    assert table["hr_clearance"].between(0.9, 1).all()  # from SM.png, which test scenes have too
    written = pd.read_csv(index_csv, dtype={"name": str})
    assert list(written.columns) == INDEX_COLUMNS and len(written) == 3
    assert not list(index_csv.parent.glob(".*tmp"))  # written atomically: no temporary left


@pytest.mark.parametrize("damage", DAMAGES, ids=list(DAMAGES))
def test_stop_names_the_file_and_the_problem(raw: Path, damage: str):
    make_damage, problem = DAMAGES[damage]
    bad_name = make_damage(raw)
    with pytest.raises(SceneCheckError) as caught:
        check_scenes(raw, on_bad_scene="stop")
    message = str(caught.value)
    assert bad_name in message and problem in message
    assert "on_bad_scene: skip" in message
    assert isinstance(caught.value, BadSceneError)


def test_skip_lists_every_bad_scene(tmp_path: Path, capsys):
    scenes = [("train", "RED", f"imgset{i:04d}") for i in range(4)] + [("test", "NIR", "imgset1306")]
    raw = fake_raw(tmp_path / "raw", scenes)
    (raw / "train/RED/imgset0001/LR000.png").write_bytes(b"garbage")
    (raw / "train/RED/imgset0002/QM005.png").unlink()
    write_png(raw / "train/RED/imgset0003/LR001.png", np.zeros((64, 64), np.uint16))
    index_csv = tmp_path / "scenes.csv"
    table = check_scenes(raw, on_bad_scene="skip", index_csv=index_csv)
    status = dict(zip(table["name"], table["status"]))
    assert status == {"imgset0000": "ok", "imgset0001": "skipped", "imgset0002": "skipped",
                      "imgset0003": "skipped", "imgset1306": "ok"}
    reasons = dict(zip(table["name"], table["reason"].fillna("")))
    assert reasons["imgset0001"].startswith("train/RED/imgset0001/LR000.png: unreadable PNG")
    assert reasons["imgset0002"].startswith("train/RED/imgset0002/QM005.png: missing quality mask")
    assert "wrong image size" in reasons["imgset0003"]
    out = capsys.readouterr().out
    assert "3 skipped" in out and "imgset0001/LR000.png" in out and "imgset0003/LR001.png" in out
    assert (pd.read_csv(index_csv)["status"] == "skipped").sum() == 3


def test_all_scenes_bad_is_an_error(raw: Path):
    for split, band, name in FAKE_SCENES:
        (raw / split / band / name / "LR000.png").write_bytes(b"garbage")
    with pytest.raises(BadSceneError, match="no usable scene"):
        check_scenes(raw, on_bad_scene="skip")


def test_missing_layout_is_an_error(raw: Path, tmp_path: Path):
    (raw / "norm.csv").unlink()
    with pytest.raises(BadSceneError, match="norm.csv"):
        check_scenes(raw)
    only_train = fake_raw(tmp_path / "only-train", FAKE_SCENES[:2])
    (only_train / "test").rmdir()
    with pytest.raises(BadSceneError, match="test/ folder is missing"):
        check_scenes(only_train)


def test_worker_processes_give_the_same_index(raw: Path, monkeypatch):
    monkeypatch.setattr(check_module, "POOL_MIN_SCENES", 0)
    corrupt_png(raw)
    in_process = check_scenes(raw, on_bad_scene="skip", workers=1)
    pooled = check_scenes(raw, on_bad_scene="skip", workers=2)
    pd.testing.assert_frame_equal(in_process, pooled)
    with pytest.raises(SceneCheckError, match="LR003.png"):
        check_scenes(raw, on_bad_scene="stop", workers=2)


def test_real_sample(probav_mini: Path, tmp_path: Path):
    table = check_scenes(probav_mini, index_csv=tmp_path / "scenes.csv")
    assert len(table) == 3 and (table["status"] == "ok").all()
    row = table.set_index("name").loc["imgset0000"]
    assert (row["split"], row["band"], row["path"], row["frames"]) == ("train", "RED", "train/RED/imgset0000", 17)
    assert 0 < row["hr_clearance"] <= 1 and 0 < row["mean_clearance"] <= 1
    assert set(table["path"]) == {"train/RED/imgset0000", "test/RED/imgset1160", "test/NIR/imgset1306"}
