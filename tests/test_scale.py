"""The archive-size measurement (probav.scale): memory of a process tree, disk counted once, DVC's
stage order, the growth figures, and a whole run on a two-stage toy pipeline."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from probav import scale

pytestmark = pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc")

# A child that holds ~120 MB and starts a grandchild holding ~80 MB: the tree's peak is their sum.
HOG = """
import subprocess, sys, time
block = bytearray({mb} * 1000 * 1000)
for i in range(0, len(block), 4096): block[i] = 1
if {child}:
    subprocess.run([sys.executable, "-c", {grandchild!r}])
else:
    time.sleep(1.5)
"""


def test_measure_command_counts_the_whole_process_tree(tmp_path):
    grandchild = HOG.format(mb=80, child=False, grandchild="")
    script = HOG.format(mb=120, child=True, grandchild=grandchild)
    row = scale.measure_command([sys.executable, "-c", script], tmp_path, dict(os.environ), tmp_path / "log",
                                interval=0.1)
    assert row["returncode"] == 0 and row["seconds"] >= 1.5
    assert 190 <= row["peak_rss_mb"] <= 400           # both processes at once
    # The largest process's high-water mark: the 120 MB one, not both, and not the image of the process that
    # forked it (this test's worker, over 1 GB once TensorFlow is loaded, which wait4's count included).
    assert 110 <= row["peak_process_rss_mb"] <= 180
    failed = scale.measure_command([sys.executable, "-c", "raise SystemExit(3)"], tmp_path, dict(os.environ),
                                   tmp_path / "log")
    assert failed["returncode"] == 3
    # A command much shorter than the sampling interval is measured too (it is sampled once at its start).
    short = scale.measure_command([sys.executable, "-c", "import time; time.sleep(0.2)"], tmp_path,
                                  dict(os.environ), tmp_path / "log", interval=5.0)
    assert short["seconds"] < 5.0 and short["peak_rss_mb"] and short["peak_process_rss_mb"]


def test_disk_counts_hard_links_once(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 1_000_000)
    os.link(tmp_path / "a", tmp_path / "b")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "big").write_bytes(b"x" * 3_000_000)
    assert 0.99 <= scale.disk_mb(tmp_path) <= 1.1


def test_growth_against_the_scene_ratio():
    small = {"scenes": 100, "stages": {"a": {"seconds": 10.0, "peak_rss_mb": 100.0},
                                       "b": {"seconds": 5.0, "peak_rss_mb": 50.0}}}
    large = {"scenes": 1000, "stages": {"a": {"seconds": 100.0, "peak_rss_mb": 100.0},
                                        "b": {"seconds": 500.0, "peak_rss_mb": 500.0}, "c": {"seconds": 1.0}}}
    out = scale.growth(small, large)
    assert set(out) == {"a", "b"}
    assert out["a"]["relative"] == pytest.approx(1.0) and out["a"]["memory_ratio"] == pytest.approx(1.0)
    assert out["b"]["time_ratio"] == pytest.approx(100.0) and out["b"]["relative"] == pytest.approx(10.0)
    assert scale.growth({"scenes": None, "stages": {}}, large) == {}


@pytest.fixture
def toy_repo(tmp_path):
    """A git repository with a two-stage DVC pipeline whose size comes from params.yaml."""
    if shutil.which("dvc") is None and not (Path(sys.executable).parent / "dvc").exists():
        pytest.skip("dvc is not installed")
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    (repo / "params.yaml").write_text("size:\n  scenes: 3\n")
    (repo / "make.py").write_text(
        "import yaml, pathlib\n"
        "n = yaml.safe_load(open('params.yaml'))['size']['scenes']\n"
        "pathlib.Path('data').mkdir(exist_ok=True)\n"
        "pathlib.Path('data/scenes.csv').write_text('scene\\n' + ''.join(f'imgset{i:04d}\\n' for i in range(n)))\n")
    (repo / "dvc.yaml").write_text(
        "stages:\n"
        "  count:\n    cmd: python -c \"open('data/count.txt','w').write(str(len(open('data/scenes.csv').readlines())))\"\n"
        "    deps: [data/scenes.csv]\n    outs: [data/count.txt]\n"
        "  make:\n    cmd: python make.py\n    deps: [make.py]\n    params: [size]\n    outs: [data/scenes.csv]\n")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    run = lambda *cmd: subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True)  # noqa: E731
    (repo / "study").mkdir()  # a second pipeline file (like studies/dvc.yaml): not part of dvc repro
    (repo / "study" / "dvc.yaml").write_text("stages:\n  extra:\n    cmd: python -c pass\n")
    run("git", "init", "-q")
    run("git", "config", "user.email", "t@example.org")
    run("git", "config", "user.name", "t")
    run("dvc", "init", "-q")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "toy")
    return repo, env


def test_stage_order_and_a_whole_run(toy_repo, tmp_path):
    repo, env = toy_repo
    assert scale.stage_order(repo) == ["make", "count"]
    rows = []
    run = scale.run_pipeline(repo, "big", {"size": {"scenes": 30}}, tmp_path / "work", on_stage=rows.append,
                             log=None)
    assert "failed" not in run and run["order"] == ["make", "count"] and run["scenes"] == 30
    assert set(run["stages"]) == {"make", "count"} and len(rows) == 2
    for row in run["stages"].values():
        assert row["returncode"] == 0 and row["seconds"] > 0 and row["peak_process_rss_mb"] > 0
    clone = tmp_path / "work" / "big"
    assert (clone / "data" / "count.txt").read_text() == "31"  # header + 30 scenes: the profile was applied
    assert "scenes: 3\n" in (repo / "params.yaml").read_text()  # the repository itself is untouched
    json.dumps(run)  # JSON-able


def test_a_clone_runs_every_stage_even_when_its_committed_outputs_look_up_to_date(toy_repo, tmp_path):
    """Outputs tracked in git (metrics, cache: false) come with a clone; with the committed dvc.lock, DVC
    would skip their stage when its dependencies hash the same. The measured run must not skip it."""
    repo, env = toy_repo
    dvc_yaml = repo / "dvc.yaml"
    dvc_yaml.write_text(dvc_yaml.read_text().replace("outs: [data/count.txt]", "metrics: [{data/count.txt: {cache: false}}]"))
    run = lambda *cmd: subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True)  # noqa: E731
    run("dvc", "repro", "-q")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "outputs of count tracked in git")
    result = scale.run_pipeline(repo, "default", None, tmp_path / "work", log=None)
    assert "failed" not in result and set(result["stages"]) == {"make", "count"}
    log = Path(result["log"]).read_text()
    assert "skipping" not in log and "Running stage 'count'" in log


def test_markdown_table_names_every_stage_and_a_stopped_run():
    small = {"scenes": 100, "order": ["a", "b"], "seconds": 15.0,
             "stages": {"a": {"seconds": 10.0, "peak_rss_mb": 100.0, "disk_mb": 5.0},
                        "b": {"seconds": 5.0, "peak_rss_mb": 50.0, "disk_mb": 1.0}}}
    large = {"scenes": 1000, "order": ["a", "b"], "seconds": 200.0, "disk_mb": 60.0, "failed": "b exited with status 1",
             "stages": {"a": {"seconds": 200.0, "peak_rss_mb": 300.0, "disk_mb": 50.0}}}
    report = {"commit": "abcdef0123", "cpu_count": 2, "profile": "profiles/archive-cpu.yaml",
              "runs": {"default": small, "archive": large}, "growth": scale.growth(small, large)}
    table = scale.markdown_table(report)
    assert "| a | 10 s | 3.3 min | 2.00 | 300 | 50 |" in table
    assert "| b | 5 s | – | – | – | – |" in table
    assert "stopped: b exited with status 1" in table and "`abcdef0`" in table
    assert scale.markdown_table({}) == "No stage measured yet."


def test_an_in_place_run_forces_every_stage_of_the_repository(toy_repo):
    repo, env = toy_repo
    subprocess.run(["dvc", "repro", "-q"], cwd=repo, env=env, check=True, capture_output=True)
    lines = []
    run = scale.run_pipeline(repo, "default", None, None, log=lines.append)  # up to date, yet every stage runs
    assert "failed" not in run and run["in_place"] and set(run["stages"]) == {"make", "count"}
    assert all(row["seconds"] > 0.2 and row["disk_mb"] is None for row in run["stages"].values())
    assert run["scenes"] == 3 and (repo / "dvc.lock").is_file() and "make" in lines[0]
    with pytest.raises(ValueError, match="no profile"):
        scale.run_pipeline(repo, "default", {"size": {"scenes": 4}}, None, log=None)


def test_an_in_place_run_starts_persistent_outputs_from_nothing(toy_repo):
    """A persist output (kept by DVC even for dvc repro -f, so that a stage resumes) is deleted before an
    in-place run measures its stage: the stage does all its work, as in a fresh clone."""
    repo, env = toy_repo
    (repo / "append.py").write_text(
        "import pathlib\n"
        "p = pathlib.Path('data/grown.txt')\n"
        "p.write_text((p.read_text() if p.exists() else '') + 'run\\n')\n")
    dvc_yaml = repo / "dvc.yaml"
    dvc_yaml.write_text(dvc_yaml.read_text() + "  grow:\n    cmd: python append.py\n    deps: [append.py]\n"
                                              "    outs:\n      - data/grown.txt:\n          persist: true\n")
    subprocess.run(["dvc", "repro", "-q", "grow"], cwd=repo, env=env, check=True, capture_output=True)
    subprocess.run(["dvc", "repro", "-q", "-f", "grow"], cwd=repo, env=env, check=True, capture_output=True)
    assert (repo / "data" / "grown.txt").read_text() == "run\nrun\n"  # DVC kept it: the stage appended
    assert {k: [p.name for p in v] for k, v in scale.persist_outputs(repo).items()} == {"grow": ["grown.txt"]}
    run = scale.run_pipeline(repo, "default", None, None, log=None)
    assert "failed" not in run and "grow" in run["stages"]
    assert (repo / "data" / "grown.txt").read_text() == "run\n"
