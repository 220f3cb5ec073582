"""Evaluation (per-scene table, summary, stage) and the submission package (zip, validation, stage)."""
from __future__ import annotations

import importlib.util
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from probav.evaluate import COLUMNS, evaluate_model, summarise
from probav.metrics.score import shifted_cpsnr
from probav.models.baseline import baseline_sr
from probav.models.registry import load_model
from probav.scene import to_uint16, write_norm, write_png, write_scene
from probav.submission import encode_png, validate_submission, write_submission
from test_classical import make_scene

TRAIN = [("imgset0000", "RED", "dev"), ("imgset0001", "RED", "dev"), ("imgset0594", "NIR", "dev"),
         ("imgset0002", "RED", "train")]
TEST = [("imgset1160", "RED"), ("imgset1306", "NIR")]


def make_data_root(root: Path, with_norm: bool = True) -> Path:
    """A tiny data set in the official layout with data/scenes.csv and data/split.csv beside it.

    Scenes are small synthetic ones (9 frames); norm.csv holds each train scene's baseline cPSNR."""
    raw = root / "raw"
    rows, norms, split = [], {}, []
    for i, (name, band, subset) in enumerate(TRAIN):
        scene = make_scene(300 + i, frames=9, name=name, band=band, undetected=True)
        scene.split = "train"
        write_scene(scene, raw)
        norms[name] = scene.norm
        split.append({"name": name, "band": band, "subset": subset})
        rows.append({"split": "train", "band": band, "name": name, "path": f"train/{band}/{name}",
                     "frames": scene.frames, "mean_clearance": float(scene.clearance.mean()),
                     "hr_clearance": scene.hr_clearance, "status": "ok", "reason": ""})
    for i, (name, band) in enumerate(TEST):
        scene = make_scene(400 + i, frames=9, name=name, band=band)
        scene.split, scene.hr = "test", None
        write_scene(scene, raw)
        norms[name] = 50.0
        rows.append({"split": "test", "band": band, "name": name, "path": f"test/{band}/{name}",
                     "frames": scene.frames, "mean_clearance": float(scene.clearance.mean()),
                     "hr_clearance": float("nan"), "status": "ok", "reason": ""})
    if with_norm:
        write_norm(raw / "norm.csv", norms)
    pd.DataFrame(rows).to_csv(root / "scenes.csv", index=False)
    pd.DataFrame(split).to_csv(root / "split.csv", index=False)
    (root / "params.yaml").write_text(yaml.safe_dump({"seed": 1, "submission": {"model": "baseline"},
                                                      "classical": {"shift_and_add": {"max_frames": 9}}}))
    return root


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_data_root(tmp_path_factory.mktemp("data"))


def load_stage(repo_root: Path, name: str):
    spec = importlib.util.spec_from_file_location(f"stage_{name}", repo_root / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- evaluate_model / summarise -----------------------------------------------------------------

def test_evaluate_table_and_summary():
    scenes = [make_scene(10, frames=9, name="imgset0000"), make_scene(11, frames=9, name="imgset0001"),
              make_scene(12, frames=9, name="imgset0594", band="NIR")]
    scenes[2].norm = None  # no norm.csv value: the baseline's cPSNR is computed
    table = evaluate_model(load_model("baseline"), scenes, progress=False)
    assert list(table.columns) == COLUMNS
    assert table["scene"].tolist() == ["imgset0000", "imgset0001", "imgset0594"]
    assert table["band"].tolist() == ["RED", "RED", "NIR"]
    assert (table["frames"] == 9).all()
    np.testing.assert_allclose(table["clearance"], [s.clearance.mean() for s in scenes])
    np.testing.assert_allclose(table["hr_clearance"], [s.sm.mean() for s in scenes])
    expected = [shifted_cpsnr(baseline_sr(s.lr, s.qm), s.hr, s.sm) for s in scenes]
    np.testing.assert_allclose(table["cpsnr"], expected, atol=0.01)  # uint16 rounding of the prediction
    np.testing.assert_allclose(table["norm"], expected, rtol=1e-9)
    np.testing.assert_allclose(table["score"], table["norm"] / table["cpsnr"])
    np.testing.assert_allclose(table["score"], 1.0, atol=5e-4)  # the baseline scores 1 against its own norm
    assert (table["seconds"] > 0).all()

    summary = summarise(table, "baseline", {"subset": "dev"})
    json.dumps(summary, allow_nan=False)
    assert summary["model"] == "baseline" and summary["subset"] == "dev" and summary["scenes"] == 3
    assert summary["mean_score"] == pytest.approx(table["score"].mean())
    assert summary["mean_cpsnr"] == pytest.approx(table["cpsnr"].mean())
    assert summary["bands"]["RED"] == {"scenes": 2, "mean_score": pytest.approx(table["score"][:2].mean()),
                                       "mean_cpsnr": pytest.approx(table["cpsnr"][:2].mean())}
    assert summary["bands"]["NIR"]["scenes"] == 1
    assert summary["scenes_per_second"] == pytest.approx(3 / table["seconds"].sum())


def test_evaluate_refuses_scenes_without_hr():
    scene = make_scene(13, frames=9)
    scene.hr = scene.sm = None
    with pytest.raises(ValueError, match="no HR"):
        evaluate_model(load_model("baseline"), [scene], progress=False)
    with pytest.raises(ValueError, match="no scene"):
        summarise(pd.DataFrame(columns=COLUMNS), "baseline")


def test_summary_of_perfect_prediction_is_json_safe():
    table = pd.DataFrame([{"scene": "imgset0000", "band": "RED", "frames": 9, "clearance": 1.0, "hr_clearance": 1.0,
                           "norm": 50.0, "cpsnr": float("inf"), "score": 0.0, "seconds": 0.1}])
    summary = summarise(table, "oracle")
    assert summary["mean_score"] == 0.0 and summary["mean_cpsnr"] is None
    json.dumps(summary, allow_nan=False)


# --- evaluate stage -----------------------------------------------------------------------------

def test_evaluate_stage(data_root, repo_root, tmp_path, capsys):
    stage = load_stage(repo_root, "evaluate")
    metrics, table_path = tmp_path / "metrics" / "median.json", tmp_path / "metrics" / "scenes" / "median.csv"
    code = stage.main(["median", "--params", str(data_root / "params.yaml"), "--raw", str(data_root / "raw"),
                       "--scenes", str(data_root / "scenes.csv"), "--split", str(data_root / "split.csv"),
                       "--models-dir", str(tmp_path / "models"), "--metrics", str(metrics),
                       "--table", str(table_path), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads(metrics.read_text())
    table = pd.read_csv(table_path, dtype={"scene": str})
    assert sorted(table["scene"]) == ["imgset0000", "imgset0001", "imgset0594"]  # the dev scenes only
    assert summary["scenes"] == 3 and summary["model"] == "median"
    assert summary["mean_score"] == pytest.approx(table["score"].mean(), abs=1e-5)
    assert set(summary["bands"]) == {"RED", "NIR"}
    assert not list(metrics.parent.rglob(".*.tmp"))
    assert "mean score" in capsys.readouterr().out


def test_evaluate_stage_unknown_model(data_root, repo_root, tmp_path, capsys):
    stage = load_stage(repo_root, "evaluate")
    code = stage.main(["no_such_model", "--params", str(data_root / "params.yaml"), "--raw", str(data_root / "raw"),
                       "--scenes", str(data_root / "scenes.csv"), "--split", str(data_root / "split.csv"),
                       "--metrics", str(tmp_path / "m.json"), "--table", str(tmp_path / "t.csv")])
    assert code == 1
    assert "unknown model 'no_such_model'" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()


# --- submission ---------------------------------------------------------------------------------

def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_package_stage_writes_a_valid_zip(data_root, repo_root, tmp_path, capsys):
    stage = load_stage(repo_root, "package")
    out = tmp_path / "submission" / "submission.zip"
    code = stage.main(["--params", str(data_root / "params.yaml"), "--raw", str(data_root / "raw"),
                       "--scenes", str(data_root / "scenes.csv"), "--split", str(data_root / "split.csv"),
                       "--models-dir", str(tmp_path / "models"), "--out", str(out), "--no-progress",
                       "--metrics", str(tmp_path / "test.json")])
    assert code == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "test.json").read_text())["skipped"].startswith("the test scenes' HRs are not public")
    with zipfile.ZipFile(out) as archive:
        assert sorted(archive.namelist()) == ["imgset1160.png", "imgset1306.png"]
        image = np.array(Image.open(io.BytesIO(archive.read("imgset1160.png"))))
    assert image.shape == (384, 384) and image.dtype == np.uint16
    assert validate_submission(out, ["imgset1160", "imgset1306"]) == []
    assert validate_submission(out) == []
    assert not list(out.parent.glob(".*.tmp"))
    assert "valid" in capsys.readouterr().out


def test_package_stage_scores_the_hidden_test_hrs_once(tmp_path, repo_root, capsys):
    """With the simulator's hidden test HRs beside the data, the package stage scores its zip on them: the
    official score of each prediction against its hidden HR, by band and overall."""
    root = make_data_root(tmp_path / "data")
    expected = {}
    for i, (name, band) in enumerate(TEST):
        scene = make_scene(400 + i, frames=9, name=name, band=band)   # as make_data_root made it, with its HR
        hidden = root / "raw" / "synthetic" / "test_hr" / name
        hidden.mkdir(parents=True)
        write_png(hidden / "HR.png", scene.hr)
        write_png(hidden / "SM.png", scene.sm)
        expected[band] = 50.0 / shifted_cpsnr(to_uint16(baseline_sr(scene.lr, scene.qm)), scene.hr, scene.sm)
    stage = load_stage(repo_root, "package")
    metrics = tmp_path / "metrics" / "test.json"
    assert stage.main(["--params", str(root / "params.yaml"), "--raw", str(root / "raw"),
                       "--scenes", str(root / "scenes.csv"), "--split", str(root / "split.csv"),
                       "--out", str(tmp_path / "s.zip"), "--metrics", str(metrics), "--no-progress"]) == 0
    test = json.loads(metrics.read_text())
    assert test["model"] == "baseline" and test["scenes"] == 2
    assert test["bands"]["RED"]["mean_score"] == pytest.approx(expected["RED"], rel=1e-9)
    assert test["mean_score"] == pytest.approx((expected["RED"] + expected["NIR"]) / 2, rel=1e-9)
    assert "hidden test HRs" in capsys.readouterr().out
    # a hidden HR missing is named
    (root / "raw" / "synthetic" / "test_hr" / "imgset1306" / "HR.png").unlink()
    assert stage.main(["--params", str(root / "params.yaml"), "--raw", str(root / "raw"),
                       "--scenes", str(root / "scenes.csv"), "--split", str(root / "split.csv"),
                       "--out", str(tmp_path / "s.zip"), "--metrics", str(metrics), "--no-progress"]) == 1
    assert "imgset1306/HR.png" in capsys.readouterr().err


def test_package_stage_unknown_model(data_root, repo_root, tmp_path, capsys):
    stage = load_stage(repo_root, "package")
    out = tmp_path / "submission.zip"
    code = stage.main(["--params", str(data_root / "params.yaml"), "--raw", str(data_root / "raw"),
                       "--scenes", str(data_root / "scenes.csv"), "--split", str(data_root / "split.csv"),
                       "--out", str(out), "--model", "nope"])
    assert code == 1 and "unknown model 'nope'" in capsys.readouterr().err
    assert not out.exists()


def test_broken_submissions_are_reported(tmp_path):
    good = np.full((384, 384), 3000, np.uint16)
    names = ["imgset1160", "imgset1306", "imgset1307"]

    path = write_submission([("imgset1160", good), ("imgset1306", good)], tmp_path / "ok.zip")
    assert validate_submission(path, names[:2]) == []
    problems = validate_submission(path, names)
    assert problems == ["1 expected scene(s) missing: imgset1307"]

    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(broken, "w") as archive:
        archive.writestr("imgset1160.png", _png(good[:380, :384]))            # wrong size
        archive.writestr("imgset1306.png", _png((good // 256).astype(np.uint8)))  # 8-bit
        archive.writestr("imgset1307.png", b"\x89PNG\r\n\x1a\n garbage")        # corrupt
        archive.writestr("sub/imgset1308.png", encode_png(good))                 # not at the root
        archive.writestr("readme.txt", "hello")
        archive.writestr("imgset9999.png", encode_png(good))                     # not a test scene
    problems = validate_submission(broken, names)
    text = "\n".join(problems)
    assert "imgset1160.png: wrong image size 384x380, expected 384x384" in text
    assert "imgset1306.png: 8-bit PNG, expected 16-bit" in text
    assert "imgset1307.png: not a PNG file" in text
    assert "sub/imgset1308.png: not named imgsetNNNN.png (not at the root of the zip)" in text
    assert "readme.txt: not named imgsetNNNN.png" in text
    assert "scene(s) not in the test set: imgset9999" in text

    not_zip = tmp_path / "not.zip"
    not_zip.write_bytes(b"this is no zip")
    assert "not a readable zip" in validate_submission(not_zip)[0]
    assert "not found" in validate_submission(tmp_path / "absent.zip")[0]
    with pytest.raises(ValueError, match="uint16"):
        write_submission([("imgset1160", good.astype(np.float32))], tmp_path / "bad.zip")
    assert not (tmp_path / "bad.zip").exists() and not list(tmp_path.glob(".*.tmp"))
