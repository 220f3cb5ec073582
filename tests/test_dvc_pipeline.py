"""The pipeline itself: copy the repo to a temporary folder, shrink params.yaml to tiny sizes,
run `dvc repro` there and check every stage's outputs, so a broken dvc.yaml never lands."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from probav.scene import read_png

pytestmark = pytest.mark.slow

# Dotted keys of params.yaml set to tiny values (only those present are changed).
TINY = {
    "synthetic.train_scenes_per_band": 5,
    "synthetic.test_scenes_per_band": 2,
    "synthetic.max_frames": 12,
    "synthetic.mean_frames": 10,
    "split.dev_fraction": 0.4,
    "tfrecords.scenes_per_shard": 3,
    "input.frames": 4,
    "input.batch_size": 4,
    "model.blocks": 1,
    "model.filters": 8,
    "train.epochs": 2,
    "train.steps_per_epoch": 3,
    "train.validation_scenes": 2,
    "report.stale_prose": "omit",     # the template's hand-written numbers are the default run's
}
COPY = ["dvc.yaml", "params.yaml", "pyproject.toml", "stages", "src", "reports", "Makefile", ".dvcignore"]


def _set(params: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    node = params
    for key in parents:
        node = node.get(key)
        if not isinstance(node, dict):
            return
    if leaf in node:
        node[leaf] = value


def runner(work: Path):
    """A function running a command in ``work`` with the project's source and the venv's tools, failing
    the test with its output when the command fails."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=str(work / "src"), DVC_NO_ANALYTICS="1", TF_CPP_MIN_LOG_LEVEL="2")

    def run(*cmd):
        done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-6000:]}"
        return done

    return run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, repo_root: Path) -> Path:
    work = tmp_path_factory.mktemp("pipeline")
    for name in COPY:
        src = repo_root / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif src.exists():
            shutil.copy2(src, work / name)
    (work / "data").mkdir()
    shutil.copy2(repo_root / "data" / ".gitignore", work / "data" / ".gitignore")
    shutil.copy2(repo_root / ".gitignore", work / ".gitignore")
    params = yaml.safe_load((work / "params.yaml").read_text())
    for key, value in TINY.items():
        _set(params, key, value)
    # Per-model training overrides (train.<model>: {...}) would undo the tiny sizes.
    for name in params.get("deep_models", []):
        params.get("train", {}).pop(name, None)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    run = runner(work)

    # DVC and DVCLive need a git repository with a commit.
    run("git", "init", "-q")
    run("git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A")
    run("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "tiny")
    run(sys.executable, "-m", "dvc", "init", "-q", "--force")
    # The project's DVC settings (cache.type: links, not copies): every stage runs with read-only linked outputs.
    shutil.copy2(repo_root / ".dvc" / "config", work / ".dvc" / "config")
    run(sys.executable, "-m", "dvc", "repro")
    return work


def test_data_stages(tiny_run: Path):
    raw = tiny_run / "data" / "raw"
    assert (raw / "norm.csv").is_file()
    scenes = pd.read_csv(tiny_run / "data" / "scenes.csv")
    assert set(scenes["split"]) == {"train", "test"}
    assert (scenes["status"] == "ok").all()
    split = pd.read_csv(tiny_run / "data" / "split.csv")
    assert set(split["subset"]) == {"train", "val", "dev"}     # val: model selection, apart from dev
    meta = json.loads((tiny_run / "data" / "tfrecords" / "meta.json").read_text())
    assert meta
    for subset in ("train", "val", "dev", "test"):
        assert list((tiny_run / "data" / "tfrecords").glob(f"{subset}-*.tfrecord.gz")), subset


def test_persist_stages_run_again_reuse_their_work_and_stay_linked(tiny_run: Path):
    """data/raw and data/tfrecords are persist outputs: DVC keeps them even for `dvc repro -f`, unprotects
    them (copies of the linked files) and the stage reuses everything made under the same settings; the
    outputs come back with the same hashes and linked to the cache again (no second copy)."""
    def lock_hashes():
        lock = yaml.safe_load((tiny_run / "dvc.lock").read_text())["stages"]
        return {o["path"]: o["md5"] for stage in ("download", "tfrecords") for o in lock[stage]["outs"]}

    before = lock_hashes()
    download = runner(tiny_run)(sys.executable, "-m", "dvc", "repro", "-f", "-s", "download")
    assert "synthetic scenes (14 reused)" in download.stdout + download.stderr
    shards = runner(tiny_run)(sys.executable, "-m", "dvc", "repro", "-f", "-s", "tfrecords")
    assert "shards reused)" in shards.stdout + shards.stderr
    assert lock_hashes() == before
    for folder in ("data/raw", "data/tfrecords"):
        files = [p for p in (tiny_run / folder).rglob("*") if p.is_file()]
        assert files and all(p.is_symlink() or p.stat().st_nlink > 1 for p in files), folder
    status = runner(tiny_run)(sys.executable, "-m", "dvc", "status")
    assert "up to date" in status.stdout


def test_every_model_scored_in_both_tracks(tiny_run: Path):
    params = yaml.safe_load((tiny_run / "params.yaml").read_text())
    n_dev = (pd.read_csv(tiny_run / "data" / "split.csv")["subset"] == "dev").sum()
    for name in params["models"] + params.get("deep_models", []):
        metrics = json.loads((tiny_run / "metrics" / f"{name}.json").read_text())
        assert metrics["scenes"] == n_dev, name
        assert 0 < metrics["mean_score"] < 2, name
        assert metrics["track"] == params["reference"]["track"]
        # The simulator labels every scene: both tracks are scored on every dev scene.
        for track in ("challenge", "ref"):
            assert metrics["tracks"][track]["scenes"] == n_dev, (name, track)
        table = pd.read_csv(tiny_run / "metrics" / "scenes" / f"{name}.csv")
        assert len(table) == n_dev and table["cpsnr_ref"].notna().all() and table["reference"].notna().all()


def test_reference_estimator_fitted_and_measured(tiny_run: Path):
    estimator = json.loads((tiny_run / "models" / "reference" / "estimator.json").read_text())
    assert estimator["kind"] == "fitted" and set(estimator["weights"]) >= {"sm_mismatch", "median_distance"}
    metrics = json.loads((tiny_run / "metrics" / "reference.json").read_text())
    assert 0 <= metrics["dev"]["top1"] <= 1 and metrics["dev"]["rule"]["scenes"] == metrics["dev"]["scenes"] > 0
    assert metrics["single_frame"]["margin_db"]["median"] > 0  # the reference frame is the best single frame
    table = pd.read_csv(tiny_run / "metrics" / "scenes" / "reference.csv")
    assert len(table) == metrics["dev"]["scenes"]


def test_models_trained(tiny_run: Path):
    params = yaml.safe_load((tiny_run / "params.yaml").read_text())
    for name in params.get("deep_models", []):
        assert (tiny_run / "models" / name).is_dir(), name
        assert (tiny_run / "dvclive" / name).is_dir(), name
        training = json.loads((tiny_run / "models" / name / "training.json").read_text())
        assert training["monitor"] == "val_cpsnr" and training["best_val_cpsnr"] is not None, name   # on val


def test_submission_scored_once_on_the_hidden_test_hrs(tiny_run: Path):
    test = json.loads((tiny_run / "metrics" / "test.json").read_text())
    scenes = pd.read_csv(tiny_run / "data" / "scenes.csv")
    assert test["scenes"] == int((scenes["split"] == "test").sum()) and 0 < test["mean_score"] < 2


def test_submission(tiny_run: Path):
    scenes = pd.read_csv(tiny_run / "data" / "scenes.csv")
    expected = set(scenes.loc[scenes["split"] == "test", "name"] + ".png")
    with zipfile.ZipFile(tiny_run / "submission" / "submission.zip") as zf:
        assert set(zf.namelist()) == expected
        name = sorted(expected)[0]
        zf.extract(name, tiny_run / "unzipped")
    image = read_png(tiny_run / "unzipped" / name)
    assert image.shape == (384, 384) and image.dtype.name == "uint16"


def test_dvc_status_clean(tiny_run: Path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=tiny_run, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0 and "up to date" in done.stdout, done.stdout + done.stderr
