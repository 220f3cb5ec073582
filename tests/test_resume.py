"""Resuming the long data stages: an interrupted run, run again, writes the bytes of an uninterrupted
one; a run under other settings reuses nothing (probav.data.resume, synthetic.generate(resume=True),
tfrecords.write_tfrecords)."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from probav.data import synthetic
from probav.data import tfrecords as tfr
from probav.data.synthetic import generate

TINY = {"seed": 7, "synthetic": {"profile": "default", "train_scenes_per_band": 3, "test_scenes_per_band": 1,
                                 "min_frames": 9, "max_frames": 11, "mean_frames": 9.5, "workers": 1}}
SCENES = 8  # 3 + 3 train, 1 + 1 test


def params(seed: int = 7, **synthetic_overrides) -> dict:
    return {"seed": seed, "synthetic": {**TINY["synthetic"], **synthetic_overrides}}


def hashes(root: Path) -> dict[str, str]:
    """sha256 of every file below ``root`` (what DVC would hash), by relative path."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    """An uninterrupted run into an empty folder."""
    root = tmp_path_factory.mktemp("clean") / "raw"
    assert generate(root, params(), progress=False) == {"scenes": SCENES, "reused": 0, "generated": SCENES}
    return root


def records(root: Path) -> list[str]:
    folder = root / "synthetic" / "resume" / "scenes"
    return sorted(p.name for p in folder.glob("imgset*.json")) if folder.is_dir() else []


# --------------------------------------------------------------------------- the simulator

def test_a_killed_run_resumes_to_the_bytes_of_an_uninterrupted_one(clean: Path, tmp_path: Path):
    """A real interruption: the process group of a two-worker run is killed (SIGKILL) once a few scenes are
    done; the run again reuses exactly those, remakes the rest, and every byte equals the clean run's."""
    root = tmp_path / "raw"
    script = textwrap.dedent(f"""
        from probav.data.synthetic import generate
        generate({str(root)!r}, {params(workers=2)!r}, progress=False, resume=True)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(records(root)) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = records(root)
    assert 2 <= len(done) < SCENES, f"the run was not interrupted part way ({len(done)} scenes done)"
    assert not (root / "norm.csv").exists()  # written last: the killed run is visibly incomplete

    stats = generate(root, params(workers=2), progress=False, resume=True)
    assert stats == {"scenes": SCENES, "reused": len(done), "generated": SCENES - len(done)}
    assert hashes(root) == hashes(clean)


def test_half_written_and_damaged_scenes_are_made_again(clean: Path, tmp_path: Path):
    import shutil

    root = tmp_path / "raw"
    shutil.copytree(clean, root)
    # A scene being written when the run stopped (temporary folder), a scene renamed into place whose
    # record was never written, a truncated PNG, an output file of the last step, a stray scene folder.
    partial = root / ".partial" / "imgset0002-123-abcdef01" / "train" / "RED" / "imgset0002"
    partial.mkdir(parents=True)
    (partial / "LR000.png").write_bytes(b"half")
    (root / "synthetic" / "resume" / "scenes" / "imgset0003.json").unlink()
    png = root / "train" / "NIR" / "imgset0004" / "LR001.png"
    png.write_bytes(png.read_bytes()[:100])
    (root / "norm.csv").write_text("imgset0000 1.0")
    (root / "train" / "RED" / "imgset0099").mkdir()

    stats = generate(root, params(), progress=False, resume=True)
    assert stats == {"scenes": SCENES, "reused": SCENES - 2, "generated": 2}
    assert hashes(root) == hashes(clean)


def test_workers_do_not_count_as_a_setting(clean: Path, tmp_path: Path):
    import shutil

    root = tmp_path / "raw"
    shutil.copytree(clean, root)
    assert generate(root, params(workers=2), progress=False, resume=True)["reused"] == SCENES
    assert hashes(root) == hashes(clean)


@pytest.mark.parametrize("change", ["seed", "frames", "code"])
def test_other_settings_reuse_nothing(clean: Path, tmp_path: Path, monkeypatch, change: str, capsys):
    """A run under other settings over an earlier run's folder reuses no scene and writes what a run
    into an empty folder writes."""
    import shutil

    new = {"seed": params(seed=8), "frames": params(mean_frames=10.0), "code": params()}[change]
    if change == "code":  # an edit of the simulator's source: its sha256 in the fingerprint changes
        real = synthetic.code_fingerprint
        monkeypatch.setattr(synthetic, "code_fingerprint",
                            lambda modules: {**real(modules), "probav.data.synthetic": "0" * 64})
    root = tmp_path / "raw"
    shutil.copytree(clean, root)
    stats = generate(root, new, progress=False, resume=True)
    assert stats == {"scenes": SCENES, "reused": 0, "generated": SCENES}
    assert "made under other settings" in capsys.readouterr().out
    fresh = tmp_path / "fresh"
    generate(fresh, new, progress=False)
    assert hashes(root) == hashes(fresh)
    if change != "code":
        assert hashes(root) != hashes(clean)


def test_a_folder_without_fingerprint_is_emptied(tmp_path: Path, clean: Path):
    root = tmp_path / "raw"
    (root / "train" / "RED" / "imgset0000").mkdir(parents=True)
    (root / "train" / "RED" / "imgset0000" / "LR000.png").write_bytes(b"from an unpacked archive")
    (root / "norm.csv").write_text("imgset0000 50.0")
    assert generate(root, params(), progress=False, resume=True)["reused"] == 0
    assert hashes(root) == hashes(clean)


def test_without_resume_a_non_empty_folder_is_refused(clean: Path):
    with pytest.raises(FileExistsError, match="resume=True"):
        generate(clean, params(), progress=False)


# --------------------------------------------------------------------------- TFRecords

@pytest.fixture(scope="module")
def raw(clean: Path, tmp_path_factory) -> tuple[Path, Path, Path]:
    """The clean archive with its index and a split (two shards of two scenes per subset at most)."""
    from probav.data.check import check_scenes

    work = tmp_path_factory.mktemp("index")
    check_scenes(clean, workers=1, index_csv=work / "scenes.csv")
    train = pd.read_csv(work / "scenes.csv").query("split == 'train'")
    subsets = ["dev" if i % 3 == 2 else "train" for i in range(len(train))]
    pd.DataFrame({"name": train["name"], "band": train["band"], "subset": subsets}).to_csv(work / "split.csv",
                                                                                          index=False)
    return clean, work / "scenes.csv", work / "split.csv"


TFR_PARAMS = {"tfrecords": {"scenes_per_shard": 2, "workers": 1, "prior": "median"}}


@pytest.fixture(scope="module")
def clean_records(raw, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tfr") / "tfrecords"
    tfr.write_tfrecords(*raw, out, TFR_PARAMS, progress=False)
    return out


def test_interrupted_tfrecords_resume_to_the_same_bytes(raw, clean_records: Path, tmp_path: Path, monkeypatch):
    """A failure in the middle of the third shard: two shards complete and recorded, a partial one removed;
    the run again rewrites only the missing shards, and every byte equals the clean run's."""
    out = tmp_path / "tfrecords"
    real, calls = tfr.serialize_record, []

    def failing(record):
        calls.append(record["name"])
        if len(calls) == 6:
            raise KeyboardInterrupt("interrupted")
        return real(record)

    monkeypatch.setattr(tfr, "serialize_record", failing)
    with pytest.raises(KeyboardInterrupt):
        tfr.write_tfrecords(*raw, out, TFR_PARAMS, progress=False)
    assert not (out / "meta.json").exists()
    assert len(list((out / "resume").glob("*.json"))) == 2
    monkeypatch.setattr(tfr, "serialize_record", real)
    (out / ".train-00001-of-00002.tfrecord.gz.partial").write_bytes(b"left by a killed run")

    calls.clear()
    monkeypatch.setattr(tfr, "serialize_record", lambda record: calls.append(record["name"]) or real(record))
    meta = tfr.write_tfrecords(*raw, out, TFR_PARAMS, progress=False)
    assert len(calls) == meta["scenes"] - 4  # two shards of two scenes reused
    assert hashes(out) == hashes(clean_records)


def test_tfrecords_of_changed_scenes_or_settings_are_rewritten(raw, clean_records: Path, tmp_path: Path):
    import shutil

    raw_root, scenes_csv, split_csv = raw
    # Another prior: every shard's key changes, nothing is reused.
    out = tmp_path / "tfrecords"
    shutil.copytree(clean_records, out)
    other = {"tfrecords": {**TFR_PARAMS["tfrecords"], "prior": "baseline"}}
    tfr.write_tfrecords(raw_root, scenes_csv, split_csv, out, other, progress=False)
    fresh = tmp_path / "fresh"
    tfr.write_tfrecords(raw_root, scenes_csv, split_csv, fresh, other, progress=False)
    assert hashes(out) == hashes(fresh) and hashes(out) != hashes(clean_records)

    # One scene's frame changed on disk (same settings): only its shard is rewritten.
    changed = tmp_path / "raw"
    shutil.copytree(raw_root, changed)
    table = pd.read_csv(scenes_csv)
    first_test = table.query("split == 'test'").iloc[0]["path"]
    png = changed / first_test / "LR000.png"
    from probav.scene import read_png, write_png
    image = read_png(png)
    write_png(png, (image.astype(np.int64) + 16).clip(0, 65504).astype(np.uint16))
    out2 = tmp_path / "tfrecords2"
    shutil.copytree(clean_records, out2)
    tfr.write_tfrecords(changed, scenes_csv, split_csv, out2, TFR_PARAMS, progress=False)
    before, after = hashes(clean_records), hashes(out2)
    differ = sorted(k for k in before if before[k] != after.get(k))
    assert differ == ["meta.json", "resume/test-00000-of-00001.tfrecord.gz.json", "test-00000-of-00001.tfrecord.gz"]


def test_fingerprint_covers_the_stage_code_dvc_tracks(repo_root: Path):
    """Every library file dvc.yaml lists as a dependency of a resumable stage's work is in its fingerprint
    (an edit DVC re-runs the stage for is also an edit that stops the reuse)."""
    stages = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]

    def module_files(modules):
        return {"src/" + m.replace(".", "/") + ".py" for m in modules}

    tfr_deps = {d for d in stages["tfrecords"]["deps"] if str(d).startswith("src/")}
    assert tfr_deps <= module_files(tfr.fingerprint_modules({"model": "shift_and_add"}))
    simulator = {"src/probav/data/synthetic.py", "src/probav/scene.py", "src/probav/models/baseline.py",
                 "src/probav/metrics/score.py"}
    assert simulator <= set(stages["download"]["deps"])
    assert simulator <= module_files(synthetic.FINGERPRINT_MODULES)
