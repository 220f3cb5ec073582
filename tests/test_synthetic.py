"""The built-in PROBA-V simulator (probav.data.synthetic): layout, value rules, determinism,
true shifts, and that its scenes behave like real ones for the official score."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from skimage.registration import phase_cross_correlation

from probav.data import synthetic
from probav.data.synthetic import (CLASS_NAMES, DEFAULT_SETTINGS, generate, read_truth, resolve_settings,
                                   scene_plan, simulate_scene)
from probav.metrics.score import shifted_cpsnr
from probav.models.baseline import bicubic_upscale
from probav.scene import HR_SIZE, LR_SIZE, NO_DATA, read_norm, read_scene, scene_dirs, to_uint16

TINY = {"seed": 7, "synthetic": {"profile": "default", "train_scenes_per_band": 2, "test_scenes_per_band": 1,
                                 "min_frames": 9, "max_frames": 11, "mean_frames": 9.5, "workers": 1}}
CLEAR_SKY = {"clear_frame_prob": 1.0, "hr_cloud_prob": 0.0, "swath_prob": 0.0, "water_flag_prob": 0.0,
             "stripe_prob": 0.0}


def _params(**synthetic_overrides) -> dict:
    return {"seed": TINY["seed"], "synthetic": {**TINY["synthetic"], **synthetic_overrides}}


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "raw"
    generate(root, _params(), progress=False)
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _all_scenes(root: Path):
    return [read_scene(d) for split in ("train", "test") for d in scene_dirs(root, split)]


# --------------------------------------------------------------------------- layout

def test_layout_numbering_and_files(archive: Path):
    names = {split: {band: sorted(p.name for p in (archive / split / band).iterdir()) for band in ("RED", "NIR")}
             for split in ("train", "test")}
    assert names == {"train": {"RED": ["imgset0000", "imgset0001"], "NIR": ["imgset0002", "imgset0003"]},
                     "test": {"RED": ["imgset0004"], "NIR": ["imgset0005"]}}
    for d in scene_dirs(archive, "train"):
        assert (d / "HR.png").is_file() and (d / "SM.png").is_file()
    for d in scene_dirs(archive, "test"):
        assert not (d / "HR.png").exists(), "test scenes must not have HR.png"
        assert (d / "SM.png").is_file()
        hidden = archive / "synthetic" / "test_hr" / d.name
        assert (hidden / "HR.png").is_file() and (hidden / "SM.png").is_file()
    text = (archive / "norm.csv").read_text()
    assert not text.endswith("\n") and "," not in text
    norms = read_norm(archive / "norm.csv")
    assert sorted(norms) == [f"imgset{i:04d}" for i in range(6)]
    settings = json.loads((archive / "synthetic" / "settings.json").read_text())
    assert settings["seed"] == 7 and settings["profile"] == "default"
    assert settings["settings"]["max_frames"] == 11


def test_scene_arrays_and_value_rules(archive: Path):
    for scene in _all_scenes(archive):
        t = scene.frames
        assert 9 <= t <= 11
        assert scene.lr.shape == (t, LR_SIZE, LR_SIZE) and scene.lr.dtype == np.uint16
        assert scene.qm.shape == (t, LR_SIZE, LR_SIZE) and scene.qm.dtype == bool
        assert scene.sm.shape == (HR_SIZE, HR_SIZE)
        assert (scene.lr % 16 == 0).all()
        assert not (scene.lr[scene.qm] == NO_DATA).any(), "65520 must always be masked"
        assert scene.lr[scene.lr != NO_DATA].max() < 33000
        assert (scene.clearance >= 0.6).all()
        assert scene.hr_clearance >= 0.75
        clear = scene.lr[scene.qm]
        lo, hi = (800, 9000) if scene.band == "RED" else (2500, 16000)
        assert lo < np.median(clear) < hi, (scene.name, scene.band, np.median(clear))
        if scene.split == "train":
            assert scene.hr.shape == (HR_SIZE, HR_SIZE) and scene.hr.dtype == np.uint16
            assert (scene.hr % 16 == 0).all() and scene.hr.max() < NO_DATA
        else:
            assert scene.hr is None


def test_truth_tables(archive: Path):
    truth = read_truth(archive)
    scenes = {s.name: s for s in _all_scenes(archive)}
    assert set(truth) == set(scenes)
    for name, rows in truth.items():
        assert [r["frame"] for r in rows] == list(range(scenes[name].frames))
        for r in rows:
            assert abs(r["dy"]) <= 2 and abs(r["dx"]) <= 2
            assert -30 <= r["days"] <= 30
            assert 0.8 < r["gain"] < 1.2
            assert r["band"] == scenes[name].band
            assert r["clearance"] == pytest.approx(scenes[name].qm[r["frame"]].mean(), abs=1e-5)
    with (archive / "synthetic" / "scenes.csv").open() as f:
        rows = list(csv.DictReader(f))
    norms = read_norm(archive / "norm.csv")
    for row in rows:
        assert float(row["norm"]) == pytest.approx(norms[row["name"]], abs=1e-4)


def test_norm_is_the_projects_baseline_cpsnr(archive: Path):
    from probav.models.baseline import baseline_sr

    norms = read_norm(archive / "norm.csv")
    for scene in _all_scenes(archive):
        if scene.split == "train":
            assert norms[scene.name] == pytest.approx(
                shifted_cpsnr(to_uint16(baseline_sr(scene.lr, scene.qm)), scene.hr, scene.sm), abs=1e-9)
        assert 30 < norms[scene.name] < 65


# --------------------------------------------------------------------------- determinism

def test_deterministic_and_independent_of_workers(archive: Path, tmp_path: Path):
    again = tmp_path / "again"
    generate(again, _params(workers=2), progress=False)
    first, second = _files(archive), _files(again)
    first.pop("synthetic/settings.json"), second.pop("synthetic/settings.json")
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []


def test_refuses_a_non_empty_folder(archive: Path):
    with pytest.raises(FileExistsError, match="not empty"):
        generate(archive, _params(), progress=False)


def test_seed_changes_the_scenes(tmp_path: Path):
    rng_a = np.random.default_rng(1)
    rng_b = np.random.default_rng(2)
    settings = resolve_settings(_params())
    a, _ = simulate_scene(rng_a, "RED", "imgset0000", "train", settings)
    b, _ = simulate_scene(rng_b, "RED", "imgset0000", "train", settings)
    assert a.frames != b.frames or not np.array_equal(a.lr, b.lr)
    plan_a = scene_plan(_params())
    plan_b = scene_plan({**_params(), "seed": 8})
    assert [p[:3] for p in plan_a] == [p[:3] for p in plan_b]
    assert all(x[3] != y[3] for x, y in zip(plan_a, plan_b))


# --------------------------------------------------------------------------- params

def test_profiles_and_params_checks():
    large = scene_plan({"seed": 1, "synthetic": {"profile": "large"}})
    assert len(large) == 1450
    assert large[0][:3] == ("train", "RED", "imgset0000")
    assert large[593][:2] == ("train", "RED") and large[594][:3] == ("train", "NIR", "imgset0594")
    assert large[1160][:3] == ("test", "RED", "imgset1160") and large[1306][:3] == ("test", "NIR", "imgset1306")
    default = scene_plan({"seed": 1, "synthetic": {"train_scenes_per_band": 48, "test_scenes_per_band": 8}})
    assert len(default) == 112
    with pytest.raises(ValueError, match="profile"):
        scene_plan({"synthetic": {"profile": "huge"}})
    with pytest.raises(ValueError, match="min_frames"):
        resolve_settings({"synthetic": {"min_frames": 9, "max_frames": 35, "mean_frames": 40}})


def test_frame_count_distribution():
    settings = resolve_settings({"synthetic": {"min_frames": 9, "max_frames": 35, "mean_frames": 19}})
    rng = np.random.default_rng(0)
    counts = np.array([synthetic._frame_count(rng, settings) for _ in range(4000)])
    assert counts.min() >= 9 and counts.max() <= 35
    assert abs(counts.mean() - 19) < 0.6
    assert counts.max() >= 30  # the long tail exists


# --------------------------------------------------------------------------- physics

def test_rules_hold_under_heavy_clouds_and_no_data():
    settings = resolve_settings(_params())
    settings.update(clear_frame_prob=0.0, light_cloud_prob=0.0, hr_cloud_prob=1.0, swath_prob=0.5,
                    cloud_nodata_prob=1.0, water_flag_prob=1.0)
    saw_no_data = saw_bright = False
    for seed in range(3):
        scene, truth = simulate_scene(np.random.default_rng(seed), "NIR", "imgset0000", "train", settings)
        assert (scene.clearance >= 0.6).all()
        assert scene.hr_clearance >= 0.75
        assert not (scene.lr[scene.qm] == NO_DATA).any()
        assert (scene.lr % 16 == 0).all() and (scene.hr % 16 == 0).all()
        saw_no_data |= bool((scene.lr == NO_DATA).any())
        saw_bright |= bool(scene.lr[scene.lr != NO_DATA].max() > 16383)
        assert (~scene.qm).any(axis=(1, 2)).all()  # every frame has clouds (or flagged water) masked
        assert [f["nodata"] for f in truth["frames"]] == list((scene.lr == NO_DATA).sum(axis=(1, 2)))
    assert saw_no_data and saw_bright


def test_band_physics_of_the_landscape():
    """NIR/RED ratios by land class, per scene: vegetation bright in NIR and dark in RED, water
    darkest in NIR, bare soil in between (medium in both bands)."""
    settings = resolve_settings(_params())
    seen = set()
    for seed in range(3):
        _, truth = simulate_scene(np.random.default_rng(seed), "RED", "imgset0000", "train", settings)
        land = truth["landscape"]
        ratio = {}
        for name in ("crop", "forest", "water", "soil"):
            where = land["classes"] == CLASS_NAMES.index(name)
            if where.sum() > 200:
                ratio[name] = np.median(land["nir"][where]) / np.median(land["red"][where])
                seen.add(name)
        vegetation = [ratio[k] for k in ("crop", "forest") if k in ratio]
        assert all(r > 2.0 for r in vegetation), ratio
        if "water" in ratio:  # clear water reflects less NIR than red; turbid water about as much
            assert ratio["water"] < 1.1, ratio
            water_nir = np.median(land["nir"][land["classes"] == CLASS_NAMES.index("water")])
            assert water_nir < 0.3 * np.median(land["nir"]), water_nir
        if "soil" in ratio:
            assert 1.0 < ratio["soil"] < 3.0, ratio
            assert all(r > ratio["soil"] + 0.3 for r in vegetation), ratio
    assert {"water", "soil"} <= seen and seen & {"crop", "forest"}


def test_phase_correlation_recovers_true_shifts():
    settings = resolve_settings(_params())
    settings.update(CLEAR_SKY)
    errors = []
    for seed in (11, 12):
        scene, truth = simulate_scene(np.random.default_rng(seed), "RED" if seed % 2 else "NIR", "imgset0000",
                                      "train", settings)
        frames = truth["frames"]
        ref = 0
        for j in range(1, min(scene.frames, 7)):
            shift, _, _ = phase_cross_correlation(scene.lr[ref].astype(np.float64), scene.lr[j].astype(np.float64),
                                                  upsample_factor=20)
            expected = np.array([frames[ref]["dy"] - frames[j]["dy"], frames[ref]["dx"] - frames[j]["dx"]])
            errors.append(np.abs(shift - expected).max())
    assert np.max(errors) < 0.15, errors
    assert np.mean(errors) < 0.08, errors


def test_single_frames_spread_and_the_reference_frame_is_the_best():
    settings = resolve_settings({"synthetic": {"min_frames": 9, "max_frames": 15, "mean_frames": 12}})
    settings.update(CLEAR_SKY)
    spreads, margins = [], []
    for seed, band in ((3, "RED"), (4, "NIR"), (5, "RED")):
        scene, truth = simulate_scene(np.random.default_rng(seed), band, "imgset0000", "train", settings)
        assert 35 < scene.norm < 60
        single = np.array([shifted_cpsnr(to_uint16(bicubic_upscale(f / 65535.0)), scene.hr, scene.sm)
                           for f in scene.lr])
        spreads.append(single.max() - single.min())
        ref = truth["reference"]
        margins.append(single[ref] - np.delete(single, ref).max())
        assert 30 < single.min() and single.max() < 65
    assert np.mean(spreads) > 1.5, spreads        # frames differ from the HR by a few dB
    assert min(margins) > 0.2, margins            # the frame of the HR's pass is the best, as on real scenes
    assert np.mean(margins) > 0.5, margins


def test_the_reference_frame_is_the_binned_hr_with_its_clouds():
    """One frame per scene is the HR's pass: the HR binned 3×3 at a whole-pixel offset (to noise and a
    slight blur), brightness unchanged, its QM matching the SM's clouds; the others are not."""
    settings = resolve_settings({"synthetic": {"min_frames": 9, "max_frames": 12, "mean_frames": 10}})
    settings.update(hr_cloud_prob=1.0, hr_max_cloud=0.2)
    positions = set()
    for seed, band in ((11, "RED"), (12, "NIR"), (13, "RED")):
        scene, truth = simulate_scene(np.random.default_rng(seed), band, "imgset0000", "train", settings)
        ref = truth["reference"]
        positions.add(ref)
        row = truth["frames"][ref]
        assert row["days"] == 0 and [d["days"] for d in truth["frames"]].count(0) == 1
        assert row["dy"] in (-1.0, 0.0, 1.0) and row["dx"] in (-1.0, 0.0, 1.0)
        binned = np.roll(scene.hr.astype(float).reshape(128, 3, 128, 3).mean(axis=(1, 3)),
                         (int(row["dy"]), int(row["dx"])), axis=(0, 1))
        clear = scene.sm.reshape(128, 3, 128, 3).all(axis=(1, 3)) & scene.qm[ref]
        clear[:2], clear[-2:], clear[:, :2], clear[:, -2:] = False, False, False, False
        rms = [np.sqrt(np.mean((scene.lr[k].astype(float) - binned)[clear & scene.qm[k]] ** 2))
               for k in range(scene.frames)]
        level = np.median(scene.hr[scene.sm])
        assert rms[ref] < 0.02 * level, (rms[ref], level)
        assert rms[ref] < 0.5 * min(np.delete(rms, ref))
        sm_lr = scene.sm.reshape(128, 3, 128, 3).mean(axis=(1, 3)) > 0.5
        sm_lr = np.roll(sm_lr, (int(row["dy"]), int(row["dx"])), axis=(0, 1))
        mismatch = [(scene.qm[k] != sm_lr)[2:-2, 2:-2].mean() for k in range(scene.frames)]
        assert mismatch[ref] == min(mismatch) and mismatch[ref] < 0.05
    assert len(positions) > 1  # the frame number says nothing about which frame it is


def test_reference_labels_are_written_like_probav_ref(archive: Path):
    from probav.data.reference_labels import read_labels

    labels = read_labels(archive / "reference.json")
    truth = read_truth(archive)
    train = {d.name for d in scene_dirs(archive, "train")}
    assert set(labels) == train
    hidden = read_labels(archive / "synthetic" / "test_reference.json")
    assert set(hidden) == {d.name for d in scene_dirs(archive, "test")}
    for name, (band, frame) in {**labels, **hidden}.items():
        rows = truth[name]
        assert rows[frame]["days"] == 0 and rows[frame]["band"] == band


def test_default_settings_are_json_serialisable():
    json.dumps(DEFAULT_SETTINGS)
