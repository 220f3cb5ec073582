"""The reference frame: labels (PROBA-V-REF's reference.json: reading, checking against the data,
downloading with a checksum), the estimator (features, the hand-set rule, fitting, saving), the tracks,
and the reference stage."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from probav.data.check import check_scenes
from probav.data.download import ChecksumError, DataSourceError, DownloadError, prepare_labels
from probav.data.reference_labels import LabelsError, read_labels, reference_settings, write_labels
from probav.real import labelled_real_scenes, real_settings
from probav.reference import (FEATURES, ReferenceEstimator, feature_top1, frame_features, measure_on_real,
                              reference_weights, single_frame_cpsnr, with_track)
from probav.scene import Scene, read_scene, write_norm, write_scene

from test_download import FAST, Behaviour, serve  # noqa: F401  (the local HTTP server fixture)

SHARED_REF = Path(__file__).resolve().parents[2] / "shared" / "probav-ref" / "reference.json"
LR_ONLY = Path(__file__).resolve().parents[2] / "shared" / "probav-lr-only"


# --------------------------------------------------------------------------- labels

def test_parse_and_write_labels_round_trip(tmp_path):
    labels = {"imgset0000": ("RED", 4), "imgset0594": ("NIR", 12)}
    write_labels(tmp_path / "reference.json", labels)
    data = json.loads((tmp_path / "reference.json").read_text())
    assert data == {"RED": {"imgset0000": {"reference": "004"}}, "NIR": {"imgset0594": {"reference": "012"}}}
    assert read_labels(tmp_path / "reference.json") == labels


@pytest.mark.parametrize("data, problem", [
    ({"GREEN": {}}, "unknown band"),
    ({"RED": {"scene1": {"reference": "004"}}}, "not a scene name"),
    ({"RED": {"imgset0000": {"reference": 4}}}, "expected"),
    ({"RED": {"imgset0000": {"reference": "4"}}}, "expected"),
    ({"RED": {"imgset0000": {"reference": "004"}}, "NIR": {"imgset0000": {"reference": "001"}}}, "both bands"),
    ([], "expected"),
])
def test_bad_labels_name_the_file_and_the_problem(tmp_path, data, problem):
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(data))
    with pytest.raises(LabelsError, match=problem) as err:
        read_labels(path)
    assert str(path) in str(err.value)
    path.write_text("{not json")
    with pytest.raises(LabelsError, match="not valid JSON"):
        read_labels(path)
    with pytest.raises(LabelsError, match="missing"):
        read_labels(tmp_path / "nothing.json")


def test_the_real_probav_ref_labels():
    if not SHARED_REF.is_file():
        pytest.skip(f"PROBA-V-REF labels not found at {SHARED_REF}")
    data = SHARED_REF.read_bytes()
    assert hashlib.sha256(data).hexdigest() == reference_settings({})["sha256"]
    assert len(data) == reference_settings({})["size"]
    labels = read_labels(SHARED_REF)
    assert len(labels) == 1160 and labels["imgset0000"] == ("RED", 4) and labels["imgset0594"][0] == "NIR"


def test_reference_settings_are_checked():
    assert reference_settings({})["track"] == "challenge"
    assert reference_settings({"reference": {"labels": None}})["labels"] == "none"
    for bad in ({"track": "given"}, {"estimator": "oracle"}, {"l2": -1}, {"labls": "none"}):
        with pytest.raises(ValueError):
            reference_settings({"reference": bad})


def tiny_raw(root: Path, frames: int = 9) -> Path:
    """Two train scenes and one test scene of random frames in the official layout."""
    rng = np.random.default_rng(0)
    for split, band, name in [("train", "RED", "imgset0000"), ("train", "NIR", "imgset0594"),
                              ("test", "RED", "imgset1160")]:
        hr = (rng.integers(0, 1024, (384, 384)) * 16).astype(np.uint16) if split == "train" else None
        write_scene(Scene(name=name, band=band, split=split,
                          lr=(rng.integers(0, 1024, (frames, 128, 128)) * 16).astype(np.uint16),
                          qm=np.ones((frames, 128, 128), bool), hr=hr, sm=np.ones((384, 384), bool)), root)
    write_norm(root / "norm.csv", {"imgset0000": 50.0, "imgset0594": 45.0, "imgset1160": 48.0})
    return root


def test_the_check_puts_labels_in_the_index_and_rejects_wrong_ones(tmp_path):
    raw = tiny_raw(tmp_path / "raw")
    write_labels(raw / "reference.json", {"imgset0000": ("RED", 4), "imgset0594": ("NIR", 8),
                                          "imgset0001": ("RED", 2)})  # a scene not in this data: ignored
    table = check_scenes(raw, workers=1)
    assert dict(zip(table["name"], table["reference"].astype(object))) == {
        "imgset0000": 4, "imgset0594": 8, "imgset1160": pd.NA}
    write_labels(raw / "reference.json", {"imgset0000": ("RED", 9)})   # LR009 does not exist
    with pytest.raises(Exception, match="LR009.png is not among"):
        check_scenes(raw, workers=1)
    write_labels(raw / "reference.json", {"imgset0000": ("NIR", 1)})   # wrong band
    with pytest.raises(Exception, match="labelled as a NIR scene"):
        check_scenes(raw, workers=1)
    write_labels(raw / "reference.json", {"imgset0042": ("RED", 1)})   # none of the data's scenes
    with pytest.raises(Exception, match="name none of the"):
        check_scenes(raw, workers=1)


# --------------------------------------------------------------------------- the labels in the download stage

def _params(labels, url=None, sha256=None, size=None, source="folder"):
    return {"data": {"source": source, **FAST},
            "reference": {"labels": labels, "url": url or "http://127.0.0.1:9/reference.json",
                          "sha256": sha256, "size": size}}


def test_labels_download_with_a_checksum(serve, tmp_path, capsys):
    raw = tiny_raw(tmp_path / "raw")
    body = json.dumps({"RED": {"imgset0000": {"reference": "003"}}}).encode()
    url = serve(Behaviour(body, content_type="application/json"))
    good = _params("download", url, hashlib.sha256(body).hexdigest(), len(body))
    path = prepare_labels(good, raw, tmp_path / "cache")
    assert path == raw / "reference.json" and read_labels(path) == {"imgset0000": ("RED", 3)}
    assert "reference labels" in capsys.readouterr().out
    # A file that is not the pinned one is rejected and deleted, with what to do.
    bad = _params("download", url, "0" * 64, len(body))
    shutil.rmtree(tmp_path / "cache")
    with pytest.raises(ChecksumError, match="reference.size and reference.sha256") as err:
        prepare_labels(bad, raw, tmp_path / "cache")
    assert "sha256" in str(err.value) and not (tmp_path / "cache" / "reference.json").exists()


def test_labels_download_failure_and_missing_file_say_what_to_do(serve, tmp_path):
    raw = tiny_raw(tmp_path / "raw")
    url = serve(Behaviour(b"", fail_status=404))
    with pytest.raises(DownloadError, match="reference.labels"):
        prepare_labels(_params("download", url), raw, tmp_path / "cache")
    with pytest.raises(DataSourceError, match="not found"):
        prepare_labels(_params(str(tmp_path / "nowhere.json")), raw, tmp_path / "cache")
    given = tmp_path / "mine.json"
    given.write_text(json.dumps({"RED": {"not_a_scene": {"reference": "001"}}}))
    with pytest.raises(LabelsError, match="not a scene name"):
        prepare_labels(_params(str(given)), raw, tmp_path / "cache")
    assert not (raw / "reference.json").exists()
    assert prepare_labels(_params("none"), raw, tmp_path / "cache") is None


# --------------------------------------------------------------------------- the estimator

def _synthetic_scenes(n: int, seed: int = 0, **settings) -> list[Scene]:
    from probav.data.synthetic import resolve_settings, simulate_scene

    cfg = resolve_settings({"synthetic": {"min_frames": 9, "max_frames": 12, "mean_frames": 10}})
    cfg.update(settings)
    scenes = []
    for i in range(n):
        scene, truth = simulate_scene(np.random.default_rng(seed + i), ("RED", "NIR")[i % 2], f"imgset{i:04d}",
                                      "train", cfg)
        scene.reference = truth["reference"]
        scenes.append(scene)
    return scenes


@pytest.fixture(scope="module")
def cloudy_hr_scenes():
    return _synthetic_scenes(4, seed=100, hr_cloud_prob=1.0, hr_max_cloud=0.2)


def test_features_are_relative_and_finite(cloudy_hr_scenes):
    for scene in cloudy_hr_scenes:
        f = frame_features(scene)
        assert f.shape == (scene.frames, len(FEATURES)) and np.isfinite(f).all()
        col = {name: i for i, name in enumerate(FEATURES)}
        assert f[:, col["clearance"]].max() == 0.0 and f[:, col["sm_mismatch"]].min() == 0.0


def test_where_the_hr_has_clouds_their_pattern_finds_the_reference(cloudy_hr_scenes):
    """The HR's clouds are the reference frame's: with a cloudy SM the hand-set rule finds it."""
    for scene in cloudy_hr_scenes:
        p = ReferenceEstimator.rule().probabilities(scene)
        assert np.argmax(p) == scene.reference, (scene.name, np.round(p, 2))
        assert p.sum() == pytest.approx(1.0)


def test_fitting_learns_from_labels_and_saves(tmp_path):
    """A fit on labelled synthetic scenes beats chance on others, and round-trips through JSON."""
    train, test = _synthetic_scenes(10, seed=200), _synthetic_scenes(6, seed=300)
    fitted = ReferenceEstimator.fit([frame_features(s) for s in train], [s.reference for s in train], l2=0.1)
    assert fitted.kind == "fitted" and fitted.info["scenes"] == 10
    hits = [np.argmax(fitted.probabilities(s)) == s.reference for s in test]
    chance = np.mean([1 / s.frames for s in test])
    assert np.mean(hits) > 3 * chance, hits
    fitted.save(tmp_path / "estimator.json")
    again = ReferenceEstimator.load(tmp_path / "estimator.json")
    np.testing.assert_allclose(again.probabilities(test[0]), fitted.probabilities(test[0]))
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a reference estimator"):
        ReferenceEstimator.load(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="reference stage|dvc repro reference"):
        ReferenceEstimator.load(tmp_path / "none.json")


def test_tracks_give_one_hot_or_probabilities(cloudy_hr_scenes):
    scene = cloudy_hr_scenes[0]
    np.testing.assert_array_equal(reference_weights(scene, "ref"), np.eye(scene.frames)[scene.reference])
    p = reference_weights(scene, "challenge")
    assert p.shape == (scene.frames,) and 0.99 < p.sum() < 1.01 and p.max() < 1.0
    unlabelled = Scene(scene.name, scene.band, scene.lr, scene.qm, sm=scene.sm)
    np.testing.assert_allclose(reference_weights(unlabelled, "ref"), p)  # no label: estimated
    assert with_track(scene, "ref").reference_weights[scene.reference] == 1.0
    with pytest.raises(ValueError, match="track"):
        reference_weights(scene, "oracle")


def test_single_frame_scores_rank_the_reference_first(cloudy_hr_scenes):
    scene = cloudy_hr_scenes[1]
    single = single_frame_cpsnr(scene)
    assert single.shape == (scene.frames,) and np.argmax(single) == scene.reference


def test_real_labelled_scenes(probav_mini):
    """On imgset0000 (real) the reference LR004 is the best single frame by 1.3 dB; the estimators rank
    every frame; the rule does not find LR004 (nothing visible singles it out: the figure is reported)."""
    scene = read_scene(probav_mini / "train" / "RED" / "imgset0000")
    scene.reference = scene.frame_index(4)
    single = single_frame_cpsnr(scene)
    assert np.argmax(single) == scene.reference
    assert single[scene.reference] == pytest.approx(54.17, abs=0.01)
    assert single[scene.reference] - np.delete(single, scene.reference).max() > 1.2
    p = ReferenceEstimator.rule().probabilities(scene)
    assert p.shape == (17,) and np.isfinite(p).all() and p[scene.reference] > 0.02


def test_feature_top1_counts_ties_as_shares():
    """Hand-computed: a feature that ranks the reference alone first counts 1, one tied with another frame
    1/2, one that ties all frames 1/T, one that ranks it second 0; signs follow the rule (``gain`` lower is
    better)."""
    col = {name: i for i, name in enumerate(FEATURES)}
    f = np.zeros((4, len(FEATURES)))
    f[:, col["clearance"]] = [0.0, -1.0, -1.0, -2.0]          # reference 0 alone first: 1
    f[:, col["sm_mismatch"]] = [0.0, 0.0, 1.0, 1.0]           # lower is better, tied with frame 1: 1/2
    f[:, col["median_distance"]] = [0.5, 0.1, 0.9, 0.9]       # lower is better, frame 1 beats it: 0
    f[:, col["gain"]] = [0.0, 0.0, 0.0, 0.0]                  # all tied: 1/4
    f[:, col["sharpness"]] = [1.0, 0.0, 0.0, 0.0]             # higher is better: 1
    f[:, col["median_distance_raw"]] = [0.2, 0.1, 0.3, 0.4]   # 0
    shares = feature_top1([{"features": f, "reference": 0}, {"features": f[[1, 0, 2, 3]], "reference": 1}])
    assert shares == {"clearance": 1.0, "sm_mismatch": 0.5, "median_distance": 0.0, "median_distance_raw": 0.0,
                      "sharpness": 1.0, "gain": 0.25}


def test_the_estimator_measured_on_labelled_real_scenes(probav_mini):
    """Every real scene with a PROBA-V-REF label is read (imgset0000 with its QMs and HR, the LR-only ones
    without) and ranked; the figures per scene are the real ones."""
    if not SHARED_REF.is_file() or not LR_ONLY.is_dir():
        pytest.skip(f"PROBA-V-REF labels or LR-only scenes not found beside the repo ({SHARED_REF}, {LR_ONLY})")
    cfg = real_settings({"real": {"folder": str(probav_mini), "labels": str(SHARED_REF), "lr_only": str(LR_ONLY)}})
    scenes, why = labelled_real_scenes(cfg)
    assert why is None and len(scenes) == 7      # imgset0000 (train) + 6 LR-only; the test scenes have no label
    metrics, table = measure_on_real(ReferenceEstimator.rule(), scenes)
    assert metrics["scenes"] == 7 and metrics["without_masks"] == 6 and len(table) == 7
    row = table.set_index("scene").loc["imgset0000"]
    assert row["masks"] and row["reference"] == 4 and row["cpsnr_reference_frame"] == pytest.approx(54.17, abs=0.01)
    assert row["cpsnr_next_best_frame"] == pytest.approx(52.89, abs=0.01)
    assert table.loc[~table["masks"], "cpsnr_reference_frame"].isna().all()
    # Without QMs every frame ties on clearance (1/T each); imgset0000's reference is one of its clearest frames.
    mini = next(s for s in scenes if s.has_qm)
    clear = mini.qm.reshape(mini.frames, -1).sum(axis=1)
    assert clear[mini.reference] == clear.max()
    expected = (sum(1 / s.frames for s in scenes if not s.has_qm) + 1 / (clear == clear.max()).sum()) / 7
    assert metrics["feature_top1"]["clearance"] == pytest.approx(expected)
    assert metrics["top1"] == (table["rank"] == 1).mean() and 0 < metrics["chance_top1"] < 0.1


def test_labelled_real_scenes_say_why_they_are_missing(tmp_path):
    scenes, why = labelled_real_scenes(real_settings({"real": {"folder": None, "labels": None}}))
    assert scenes == [] and "labels" in why
    write_labels(tmp_path / "reference.json", {"imgset0001": ("RED", 3)})
    cfg = real_settings({"real": {"folder": "nowhere", "labels": "reference.json", "lr_only": None}}, tmp_path)
    scenes, why = labelled_real_scenes(cfg)
    assert scenes == [] and "nowhere" in why
