"""Scoring a folder (probav.metrics.scoring): only SR, HR and SM are read, errors name the file,
threads do not change the result, and the score equals the organisers' procedure (probav.bench.scoring)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from probav.bench.scoring import organisers_score_folder, write_scoring_folder
from probav.metrics.reference import shifted_cpsnr_naive
from probav.metrics.scoring import BLOCK, ScoringError, Truth, read_truth, score_folder, score_predictions
from probav.scene import BadSceneError, read_image, read_mask, write_png
from probav.submission import SubmissionError


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A data folder of BLOCK + 3 scenes (HR, SM, norm.csv; no LR frames) and a prediction of each."""
    return write_scoring_folder(tmp_path_factory.mktemp("scoring"), BLOCK + 3, seed=5, unique=6)


def _copy(folder, tmp_path):
    data, predictions, names = folder
    shutil.copytree(data, tmp_path / "data")
    shutil.copytree(predictions, tmp_path / "predictions")
    return tmp_path / "data", tmp_path / "predictions", names


def test_score_folder_matches_the_organisers_scorer_and_the_naive_loop(folder):
    data, predictions, names = folder
    result = score_folder(predictions, data, workers=1)
    theirs = organisers_score_folder(predictions, data, names)
    assert sorted(result["scenes"]) == names
    for name in names:
        row = result["scenes"][name]
        assert row["score"] == pytest.approx(theirs[name], abs=1e-12)
        scene_dir = next(data.glob(f"*/*/{name}"))
        sr = read_image(predictions / f"{name}.png", (384, 384))
        hr, sm = read_image(scene_dir / "HR.png", (384, 384)), read_mask(scene_dir / "SM.png", (384, 384))
        assert row["cpsnr"] == pytest.approx(shifted_cpsnr_naive(sr, hr, sm), abs=1e-9)
        assert row["band"] == scene_dir.parent.name
    assert result["mean_score"] == pytest.approx(np.mean(list(theirs.values())), abs=1e-12)


def test_threads_and_blocks_do_not_change_the_scores(folder):
    data, predictions, names = folder
    one = score_folder(predictions, data, workers=1)
    two = score_folder(predictions, data, workers=2)
    assert one == two  # same floats, same order
    subset = score_folder(predictions, data, names=names[:2], workers=2)
    assert list(subset["scenes"]) == names[:2]
    assert subset["scenes"][names[1]] == one["scenes"][names[1]]


def test_score_predictions_in_memory(folder):
    data, predictions, names = folder
    truths = [read_truth(next(data.glob(f"*/*/{n}")), {n: 50.0}) for n in names[:3]]
    rows = score_predictions([t.hr for t in truths], truths)  # SR = HR: perfect
    assert [r["scene"] for r in rows] == names[:3]
    assert all(r["cpsnr"] == np.inf and r["score"] == 0.0 and r["norm"] == 50.0 for r in rows)
    with pytest.raises(ValueError, match="2 predictions for 3 scenes"):
        score_predictions([t.hr for t in truths[:2]], truths)


def test_only_hr_and_sm_are_read(folder, tmp_path):
    """The scene folders hold no LR frame at all: scoring does not need them when norm.csv has the norm."""
    data, predictions, _ = folder
    assert not list(data.glob("*/*/*/LR*.png"))
    assert score_folder(predictions, data)["mean_score"] > 0


def test_missing_norm_falls_back_to_the_baseline(probav_mini, tmp_path):
    """A scene without a norm.csv entry gets the baseline's cPSNR (its frames are read for that alone)."""
    scene_dir = probav_mini / "train" / "RED" / "imgset0000"
    truth = read_truth(scene_dir, {})
    assert truth.norm == pytest.approx(52.50, abs=0.01)  # our baseline; norm.csv says 52.35
    assert read_truth(scene_dir, {"imgset0000": 52.35}).norm == 52.35
    assert isinstance(truth, Truth) and truth.band == "RED" and truth.hr.dtype == np.uint16


@pytest.mark.parametrize("damage, file, message", [
    ("delete", "HR.png", "missing HR image"),
    ("delete", "SM.png", "missing status mask"),
    ("corrupt", "HR.png", "unreadable PNG"),
    ("corrupt", "SM.png", "unreadable PNG"),
    ("small", "HR.png", "wrong image size 128x128"),
    ("small", "SM.png", "wrong image size 128x128"),
    ("cloudy", "SM.png", "no clear pixel"),
])
def test_bad_ground_truth_is_named(folder, tmp_path, damage, file, message):
    data, predictions, names = _copy(folder, tmp_path)
    scene_dir = next(data.glob(f"*/*/{names[4]}"))
    path = scene_dir / file
    if damage == "delete":
        path.unlink()
    elif damage == "corrupt":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "small":
        write_png(path, np.zeros((128, 128), np.uint16) if file == "HR.png" else np.ones((128, 128), bool))
    else:
        write_png(path, np.zeros((384, 384), bool))
    if damage == "delete" and file == "HR.png":  # the scene is then not scorable: its prediction is unexpected
        with pytest.raises(ScoringError, match=f"not in {data} with an HR: {names[4]} .*no HR.png"):
            score_folder(predictions, data, workers=2)
        return
    with pytest.raises(BadSceneError, match=message) as err:
        score_folder(predictions, data, workers=2)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("damage, message", [
    ("corrupt", "unreadable PNG"),
    ("small", "wrong image size 128x128"),
])
def test_bad_prediction_is_named(folder, tmp_path, damage, message):
    data, predictions, names = _copy(folder, tmp_path)
    path = predictions / f"{names[9]}.png"
    if damage == "corrupt":
        path.write_bytes(path.read_bytes()[:300])
    else:
        write_png(path, np.zeros((128, 128), np.uint16))
    with pytest.raises(SubmissionError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        score_folder(predictions, data, workers=2)
    assert names[9] in str(err.value)


def test_missing_and_unexpected_predictions_are_named(folder, tmp_path):
    data, predictions, names = _copy(folder, tmp_path)
    (predictions / f"{names[9]}.png").rename(predictions / "imgset0999.png")
    with pytest.raises(ScoringError, match="imgset0999"):
        score_folder(predictions, data)
    (predictions / "imgset0999.png").unlink()
    with pytest.raises(ScoringError, match=f"missing prediction\\(s\\) for {names[9]}"):
        score_folder(predictions, data)
    assert score_folder(predictions, data, names=names[:3])["scenes"]  # a subset needs only its own
    with pytest.raises(ScoringError, match="not found"):
        score_folder(predictions, tmp_path / "nowhere")
