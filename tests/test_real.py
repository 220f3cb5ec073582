"""Real scenes in the pipeline: the evaluate_real stage (a tiny folder of two scenes, the skip path), finding
and reading scenes in every layout (bad layouts named), and the no-HR quality check (a better SR scores
better; its validation statistics; the command line)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import ndimage as ndi

from probav.consistency import frame_consistency, held_out_frames, scene_consistency, validate, without_frame
from probav.data.reference_labels import write_labels
from probav.models.registry import load_model
from probav.real import find_scene_folders, read_any_scene, real_settings
from probav.scene import BadSceneError, read_scene, write_norm, write_scene

REPO = Path(__file__).resolve().parents[1]
LR_ONLY = REPO.parent / "shared" / "probav-lr-only"


def _simulated(seed: int, band: str, name: str, split: str = "train"):
    from probav.data.synthetic import resolve_settings, simulate_scene

    settings = resolve_settings({"synthetic": {"min_frames": 9, "max_frames": 11, "mean_frames": 10}})
    return simulate_scene(np.random.default_rng(seed), band, name, split, settings)


@pytest.fixture(scope="module")
def real_folder(tmp_path_factory) -> Path:
    """A 'real' folder in the official layout: two train scenes with an HR, one test scene; their labels."""
    root = tmp_path_factory.mktemp("real") / "probav"
    labels, norms = {}, {}
    for seed, band, name, split in ((1, "RED", "imgset0000", "train"), (2, "NIR", "imgset0594", "train"),
                                    (3, "RED", "imgset1160", "test")):
        scene, truth = _simulated(seed, band, name, split)
        write_scene(scene, root)
        norms[name] = scene.norm
        if split == "train":
            labels[name] = (band, truth["reference"])
    write_norm(root / "norm.csv", norms)
    write_labels(root.parent / "reference.json", labels)
    return root


def _stage():
    spec = importlib.util.spec_from_file_location("evaluate_real_stage", REPO / "stages" / "evaluate_real.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    return stage


def _params(tmp_path: Path, real: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"seed": 1, "reference": {"track": "challenge"}, "real": real}))
    return path


def test_the_stage_scores_a_tiny_real_folder_in_both_tracks(real_folder: Path, tmp_path: Path):
    params = _params(tmp_path, {"folder": str(real_folder), "labels": str(real_folder.parent / "reference.json")})
    out = tmp_path / "metrics"
    for name in ("baseline", "shift_and_add"):
        assert _stage().main([name, "--params", str(params), "--metrics", str(out / f"{name}.json"),
                              "--table", str(out / "scenes" / f"{name}.csv"), "--no-progress"]) == 0
    metrics = json.loads((out / "shift_and_add.json").read_text())
    assert metrics["scenes"] == 2 and metrics["subset"] == "real" and metrics["track"] == "challenge"
    assert metrics["tracks"]["ref"]["scenes"] == 2 and metrics["tracks"]["challenge"]["scenes"] == 2
    assert "mean_gain_db" in metrics["tracks"]["ref"]
    table = pd.read_csv(out / "scenes" / "shift_and_add.csv")
    assert list(table["scene"]) == ["imgset0000", "imgset0594"] and table["cpsnr_ref"].notna().all()
    base = json.loads((out / "baseline.json").read_text())
    assert metrics["tracks"]["ref"]["mean_cpsnr"] > base["mean_cpsnr"]  # given the reference, it beats the baseline


def test_the_stage_skips_cleanly_without_the_real_folder(tmp_path: Path, capsys):
    params = _params(tmp_path, {"folder": str(tmp_path / "nowhere")})
    out = tmp_path / "metrics"
    assert _stage().main(["baseline", "--params", str(params), "--metrics", str(out / "baseline.json"),
                          "--table", str(out / "scenes" / "baseline.csv")]) == 0
    metrics = json.loads((out / "baseline.json").read_text())
    assert metrics["scenes"] == 0 and "not found" in metrics["skipped"]
    assert pd.read_csv(out / "scenes" / "baseline.csv").empty
    assert "skipped" in capsys.readouterr().out
    params = _params(tmp_path, {"folder": None})
    assert _stage().main(["baseline", "--params", str(params), "--metrics", str(out / "b.json"),
                          "--table", str(out / "b.csv")]) == 0
    assert "no real scenes folder configured" in json.loads((out / "b.json").read_text())["skipped"]


def test_real_settings_are_checked(tmp_path: Path):
    cfg = real_settings({"real": {"folder": "data", "lr_only": None}}, tmp_path)
    assert cfg["folder"] == tmp_path / "data" and cfg["lr_only"] is None and cfg["held_out"] == 2
    with pytest.raises(ValueError, match="unknown real"):
        real_settings({"real": {"fodler": "x"}})
    with pytest.raises(ValueError, match="held_out"):
        real_settings({"real": {"held_out": 0}})


# --------------------------------------------------------------------------- layouts

def test_every_layout_is_found_and_a_wrong_one_named(real_folder: Path, tmp_path: Path):
    assert [d.name for d in find_scene_folders(real_folder)] == ["imgset0000", "imgset1160", "imgset0594"]
    assert [d.name for d in find_scene_folders(real_folder, "test")] == ["imgset1160"]
    assert [d.name for d in find_scene_folders(real_folder / "train")] == ["imgset0000", "imgset0594"]
    one = real_folder / "train" / "RED" / "imgset0000"
    assert find_scene_folders(one) == [one]
    # An LR-only copy: no QM, HR or SM.
    lr_only = tmp_path / "lr_only" / "RED" / "imgset0000"
    lr_only.mkdir(parents=True)
    for p in one.glob("LR*.png"):
        (lr_only / p.name).write_bytes(p.read_bytes())
    scene = read_any_scene(find_scene_folders(tmp_path / "lr_only")[0])
    assert scene.qm.all() and scene.hr is None and scene.band == "RED" and scene.frames == len(list(one.glob("LR*")))
    with pytest.raises(BadSceneError, match="missing quality mask"):
        read_scene(lr_only)
    for bad in (tmp_path / "empty", tmp_path / "nowhere"):
        if bad.name == "empty":
            bad.mkdir()
        with pytest.raises(BadSceneError) as err:
            find_scene_folders(bad)
        assert str(bad) in str(err.value)


@pytest.mark.skipif(not LR_ONLY.is_dir(), reason=f"real LR-only scenes not found at {LR_ONLY}")
def test_the_real_lr_only_scenes_read():
    folders = find_scene_folders(LR_ONLY)
    assert len(folders) == 6
    scene = read_any_scene(LR_ONLY / "NIR" / "imgset0595")
    assert scene.band == "NIR" and scene.frames == 10 and scene.qm.all()


# --------------------------------------------------------------------------- the no-HR check

def test_a_better_sr_is_more_consistent_with_a_held_out_frame():
    """The true HR, shifted and binned like a frame, predicts that frame better than a blurred HR does."""
    rng = np.random.default_rng(0)
    big = ndi.gaussian_filter(rng.standard_normal((420, 420)), 2.0)
    big = 0.05 + 0.01 * big / big.std()
    hr = big[18:402, 18:402]
    moved = ndi.shift(big, (1.4, -0.8), order=3, mode="nearest")[18:402, 18:402]  # a sub-pixel shifted pass
    frame = ndi.gaussian_filter(moved, 0.5).reshape(128, 3, 128, 3).mean(axis=(1, 3))
    frame = 0.97 * frame + 0.002 + rng.normal(0, 2e-4, frame.shape)
    clear = np.ones(frame.shape, bool)
    good = frame_consistency(hr, frame, clear)
    blurred = frame_consistency(ndi.gaussian_filter(hr, 2.5), frame, clear)
    upscaled = frame_consistency(np.repeat(np.repeat(hr.reshape(128, 3, 128, 3).mean(axis=(1, 3)), 3, 0), 3, 1),
                                 frame, clear)
    assert good.cpsnr > blurred.cpsnr + 1.0 and good.cpsnr > upscaled.cpsnr + 1.0
    np.testing.assert_allclose(good.shift, (-1.4 / 3, 0.8 / 3), atol=0.05)


def test_scene_consistency_holds_out_clear_typical_frames_not_the_reference():
    scene, truth = _simulated(7, "RED", "imgset0000")
    scene.reference = truth["reference"]
    scene.reference_weights = np.eye(scene.frames)[scene.reference]
    chosen = held_out_frames(scene, 3)
    assert len(chosen) == 3 and scene.reference not in chosen
    assert all(scene.clearance[i] >= 0.9 for i in chosen)
    rest = without_frame(scene, chosen[0])
    assert rest.frames == scene.frames - 1 and rest.ids.tolist() == [i for i in scene.ids if i != chosen[0]]
    assert rest.lr[rest.reference].tobytes() == scene.lr[scene.reference].tobytes()
    fused = scene_consistency(load_model("shift_and_add"), scene, "ref")
    base = scene_consistency(load_model("baseline"), scene, "ref")
    assert len(fused["frames"]) == 2 and fused["cpsnr"] > base["cpsnr"]


def test_validation_statistics_on_known_rankings():
    rows = [{"scene": s, "model": m, "consistency": c, "cpsnr": c + 3 * (s == "b")}
            for s in ("a", "b", "c") for m, c in (("x", 40.0), ("y", 42.0), ("z", 45.0))]
    result = validate(rows)
    assert result["rho_per_scene_mean"] == pytest.approx(1.0) and result["rho_model_means"] == pytest.approx(1.0)
    reversed_rows = [{**r, "cpsnr": -r["cpsnr"]} for r in rows]
    assert validate(reversed_rows)["rho_model_means"] == pytest.approx(-1.0)
    assert validate([])["scenes"] == 0


def test_the_command_line_check(real_folder: Path, tmp_path: Path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "probav.cli", *map(str, args)], capture_output=True, text=True,
                              timeout=300)

    done = run("consistency", real_folder, "--model", "baseline", "--split", "test", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert list(result["scenes"]) == ["imgset1160"] and result["mean_cpsnr"] > 30
    assert len(result["scenes"]["imgset1160"]["held_out"]) == 2
    done = run("consistency", real_folder, "--model", "baseline", "--scenes", "imgset1160")
    assert done.returncode == 0 and "mean leave-one-frame-out consistency" in done.stdout
    (tmp_path / "empty").mkdir()
    done = run("consistency", tmp_path / "empty", "--model", "baseline")
    assert done.returncode == 1 and "no scene folders" in done.stderr and str(tmp_path / "empty") in done.stderr
    done = run("consistency", real_folder, "--model", "baseline", "--scenes", "imgset9999")
    assert done.returncode == 1 and "imgset9999" in done.stderr
