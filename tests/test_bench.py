"""The benchmark (probav.bench, stages/bench.py): a --quick run on tiny sizes writes the JSON and the
markdown table with the expected structure. No timing is asserted: only that measurements are there
(or recorded as skipped, with a reason) and are positive, finite numbers."""
from __future__ import annotations

import json
import math

import pytest
import yaml

from probav import bench
from probav.bench import common
from probav.bench.common import QUICK


def _is_summary(entry) -> bool:
    return (isinstance(entry, dict) and {"median", "min", "max", "q1", "q3", "repeats"} <= set(entry)
            and entry["repeats"] >= 1 and all(math.isfinite(entry[k]) and entry[k] > 0
                                              for k in ("median", "min", "max", "q1", "q3")))


def _measured_or_skipped(entry) -> bool:
    """A part either ran or says why not (a module not written yet)."""
    return isinstance(entry, dict) and ("skipped" in entry or "error" not in entry)


# --------------------------------------------------------------------------- helpers

def test_summary_and_rates():
    s = common.summary([3.0, 1.0, 2.0])
    assert s["median"] == 2.0 and s["min"] == 1.0 and s["max"] == 3.0 and s["repeats"] == 3
    r = common.rate([1.0, 2.0, 4.0], 8.0)  # 8 items in 1, 2, 4 s
    assert r["median"] == 4.0 and r["min"] == 2.0 and r["max"] == 8.0
    assert common.summary([])["median"] is None


def test_measure_respects_repeats_and_budget():
    calls = []
    times = common.measure(lambda: calls.append(1), repeats=4, warmup=2)
    assert len(times) == 4 and len(calls) == 6
    calls.clear()
    times = common.measure(lambda: calls.append(1), repeats=50, warmup=0, min_repeats=3, budget_s=0.0)
    assert len(times) == 3


def test_growth_exponent():
    assert common.growth_exponent([1, 4, 16], [2.0, 8.0, 32.0]) == pytest.approx(1.0)
    assert common.growth_exponent([1, 4, 16], [5.0, 5.0, 5.0]) == pytest.approx(0.0)
    assert common.growth_exponent([4], [1.0]) is None


def test_worker_counts_stay_within_the_cores():
    assert common.worker_counts([1, 2, 4, 8], cpus=2) == [1, 2]
    assert common.worker_counts([1, 2, 4, 8, 16], cpus=8) == [1, 2, 4, 8]
    assert common.worker_counts([3], cpus=16) == [1, 2, 3]


def test_quick_settings_override_params():
    params = {"bench": {"repeats": 9, "scorer": {"scenes": 32}}}
    full = common.bench_settings(params)
    assert full["repeats"] == 9 and full["scorer"]["scenes"] == 32 and not full["quick"]
    quick = common.bench_settings(params, quick=True)
    assert quick["quick"] and quick["scorer"]["scenes"] == QUICK["scorer"]["scenes"]
    assert quick["hardware"]["copy_mb"] < full["hardware"]["copy_mb"]


def test_unknown_model_is_skipped_with_a_reason(tmp_path):
    settings = common.bench_settings({}, quick=True)
    settings["models"]["deep"] = []
    result = bench.run_part("model:no_such_model", settings, {}, tmp_path)
    assert "skipped" in result and "no_such_model" in result["skipped"]
    assert "error" in bench.run_part("no_such_part", settings, {}, tmp_path)


def test_table_reports_skipped_parts():
    report = {"meta": {"cpu": "x", "cpu_count": 2, "quick": True},
              "pipeline": {"skipped": "probav.data.pipeline.training_dataset does not exist yet"},
              "models": {"m": {"error": "ValueError: boom"}}}
    table = bench.markdown_table(report)
    assert "skipped: probav.data.pipeline" in table and "error: ValueError: boom" in table


# --------------------------------------------------------------------------- a whole --quick run

@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, repo_root):
    """stages/bench.py --quick with one classical pair and one deep model (kept under a minute)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("stage_bench", repo_root / "stages" / "bench.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    tmp = tmp_path_factory.mktemp("bench")
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    deep = [m for m in params.get("deep_models", []) if (repo_root / "src/probav/models" / f"{m}.py").is_file()][:1]
    params["bench"] = {"models": {"classical": ["baseline", "median"], "deep": deep}}
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    out, table = tmp / "metrics" / "bench.json", tmp / "reports" / "bench.md"
    assert stage.main(["--params", str(tmp / "params.yaml"), "--out", str(out), "--table", str(table),
                       "--quick"]) == 0
    return json.loads(out.read_text()), table.read_text(), deep


def test_quick_run_structure(quick_run):
    report, table, deep = quick_run
    assert {"meta", "hardware", "scorer", "simulator", "check", "tfrecords", "pipeline", "models", "growth",
            "derived"} <= set(report)
    assert report["meta"]["quick"] is True and report["meta"]["cpu_count"] >= 1
    assert report["meta"]["duration_s"] > 0

    hw = report["hardware"]
    assert _is_summary(hw["memory_bandwidth_gb_s"]) and _is_summary(hw["numpy_matmul_float32_gflop_s"])
    assert _is_summary(hw["tensorflow"]["tf_matmul_float32_gflop_s"])

    scorer = report["scorer"]
    for key in ("fast_ms_per_scene", "naive_ms_per_scene", "ratio"):
        assert scorer[key] > 0
    assert scorer["max_abs_diff_db"] < 1e-6  # the two scorers agree
    folder = scorer["folder"]  # a folder scored end to end, against the organisers' scorer
    assert folder["scenes"] == QUICK["scorer"]["folder_scenes"] and folder["ratio"] > 0
    assert folder["max_abs_score_diff"] < 1e-9 and folder["mean_score_diff"] < 1e-9
    assert all(_is_summary(folder[k]["scenes_per_s"]) for k in ("probav", "probav_1thread", "organisers"))
    assert [r["scenes"] for r in scorer["growth"]["rows"]] == QUICK["scorer"]["growth"]

    sim = report["simulator"]
    assert _is_summary(sim["compute"]["scenes_per_s"])
    assert set(sim["generate"]["workers"]) >= {"1", "2"}
    for r in sim["generate"]["workers"].values():
        assert _is_summary(r["scenes_per_s"]) and _is_summary(r["png_mb_per_s"])

    check = report["check"]
    assert set(check["workers"]) >= {"1", "2"} and check["scenes"] >= 1
    for r in check["workers"].values():
        assert _is_summary(r["scenes_per_s"]) and _is_summary(r["png_mb_per_s"])

    for part in ("tfrecords", "pipeline"):  # measured once their modules exist, skipped before
        assert _measured_or_skipped(report[part]), report[part]
    if "skipped" not in report["tfrecords"]:
        assert all(_is_summary(r["scenes_per_s"]) for r in report["tfrecords"]["workers"].values())
    if "skipped" not in report["pipeline"]:
        assert _is_summary(report["pipeline"]["batches_per_s"])


def test_quick_run_models(quick_run):
    report, table, deep = quick_run
    models = report["models"]
    assert set(models) == {"baseline", "median", *deep}
    for name in ("baseline", "median"):
        m = models[name]
        assert m["kind"] == "classical" and _is_summary(m["inference"]["scenes_per_s"])
        assert [r["scenes"] for r in m["inference_growth"]["rows"]] == QUICK["models"]["growth"]
        assert m["peak_memory_mb"]["tracemalloc_one_scene"] > 0
    for name in deep:
        m = models[name]
        assert "error" not in m, m.get("error")
        assert m["kind"] == "deep" and m["parameters"] > 0
        assert _is_summary(m["inference"]["scenes_per_s"]) and _is_summary(m["train"]["steps_per_s"])
        assert m["train"]["flops_per_step"] is None or m["train"]["flops_per_step"] > 0
        assert [r["frames"] for r in m["train_growth"]["rows"]] == QUICK["models"]["frames"]
        assert m["peak_memory_mb"]["train_one_step"] >= 0 and m["peak_memory_mb"]["inference_one_scene"] >= 0
        assert name in report["growth"]["train_frames"]
    assert set(report["growth"]["inference"]) == set(models)
    assert report["derived"]["memory_bandwidth_gb_s"] > 0
    assert "fast" in report["derived"]["scorer"]
    # the markdown table names every part and model
    for word in ("hardware", "scorer", "simulator", "data check", "model baseline", *[f"model {m}" for m in deep]):
        assert word in table


# --------------------------------------------------------------------------- a model against its earlier self

def test_a_model_against_its_earlier_version(tmp_path, probav_mini):
    # The package as at a commit (here HEAD, whose baseline is the working tree's) exported with git
    # archive and run in its own process beside the current one, on the same real scenes.
    from probav.bench.history import bench_earlier_version, repository_root
    from probav.scene import scene_dirs

    if repository_root() is None:
        pytest.skip("not a git checkout: the earlier version cannot be exported")
    settings = common.bench_settings({}, quick=True)
    settings["repeats"] = 1
    dirs = scene_dirs(probav_mini, "train")
    result = bench_earlier_version("baseline", "HEAD", settings, {}, tmp_path, dirs)
    assert result["scenes"] == len(dirs) >= 1
    assert result["identical_scenes"] == len(dirs) and result["max_abs_diff_dn"] == 0
    assert _is_summary(result["earlier_scenes_per_s"]) and _is_summary(result["now_scenes_per_s"])
    assert result["ratio"] > 0
    missing = bench_earlier_version("baseline", "no-such-commit", settings, {}, tmp_path, dirs)
    assert "no-such-commit" in missing["skipped"] and "git archive" in missing["skipped"]


def test_repeated_scenes_are_timed_without_their_caches():
    # The bench predicts copies of one Scene: each prediction starts from an empty cache (a Scene keeps
    # its registration in ``extra``), as a user's single prediction would.
    from probav.bench.models import _uncached

    class Scene:
        def __init__(self):
            self.extra = {"alignment": "cached"}

    scene = Scene()
    seen = []
    for s in _uncached([scene, scene]):
        seen.append(dict(s.extra))
        s.extra["alignment"] = "cached again"
    assert seen == [{}, {}]
