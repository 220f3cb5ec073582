"""The val tuning study of shift_and_add (probav/tuning.py, stage `tune`): the coordinate search finds a known
optimum, the grid in params.yaml is checked with clear errors, the stage selects on val only and writes its
outputs atomically, and the real scenes are scored beside val, never used to select."""
from __future__ import annotations

import importlib.util
import json
import math
import os

import pandas as pd
import pytest
import yaml

from probav.data.check import check_scenes
from probav.tuning import (TABLE_COLUMNS, at_edge, coordinate_search, effective_key, run_tuning, search_grid,
                           shipped_settings, tune_settings)

GRID = {"sharpen": [0.0, 1.5], "sharpen_sigma": [1.0, 2.0], "consistency": [0, 10]}
PARAMS = {"seed": 2019, "synthetic": {"train_scenes_per_band": 2, "test_scenes_per_band": 0, "workers": 1,
                                      "max_frames": 12, "mean_frames": 10},
          "studies": {"tune": {"passes": 2, "workers": 1, "grid": GRID, "joint": [["sharpen", "sharpen_sigma"]]}}}


# --------------------------------------------------------------------------- the search

def _quadratic(optimum: dict, cross: float = 0.0):
    """A fake val score with a known maximum at ``optimum`` (``cross`` couples x and y), and a log of calls."""
    calls = []

    def objective(configs):
        calls.append(configs)
        return [-(c["x"] - optimum["x"]) ** 2 - (c["y"] - optimum["y"]) ** 2
                - cross * (c["x"] - optimum["x"]) * (c["y"] - optimum["y"]) for c in configs]
    return objective, calls


def test_coordinate_search_finds_the_known_optimum():
    objective, calls = _quadratic({"x": 3, "y": -1})
    point, steps = coordinate_search({"x": 0, "y": 0, "z": "kept"}, {"x": [0, 1, 3, 5], "y": [-2, -1, 0, 2]},
                                     objective, passes=3)
    assert point == {"x": 3, "y": -1, "z": "kept"}
    # One setting at a time, the others held at the current point. x then y changed; x swept again at the new
    # point keeps its value: both are settled, and the search ends without sweeping y again.
    assert [(s["pass"], s["parameter"], s["selected"], s["settled"]) for s in steps] == \
        [(1, "x", 3, 1), (1, "y", -1, 1), (2, "x", 3, 2)]
    assert calls[1] == [{"x": 3, "y": v, "z": "kept"} for v in (-2, -1, 0, 2)]
    assert steps[1]["point"] == {"x": 3, "y": 0, "z": "kept"} and steps[1]["current"] == 0


def test_a_second_pass_follows_coupled_settings():
    # y's best value follows x: one pass stops short of the optimum (3, 3), a second reaches it, a third changes
    # nothing and ends the search.
    def objective(configs):
        return [-(c["x"] - 3) ** 2 - 0.25 * (c["y"] - c["x"]) ** 2 for c in configs]

    grid = {"x": [0, 1, 2, 3, 4], "y": [0, 1, 2, 3, 4]}
    one, _ = coordinate_search({"x": 0, "y": 0}, grid, objective, passes=1)
    best, steps = coordinate_search({"x": 0, "y": 0}, grid, objective, passes=5)
    assert one == {"x": 2, "y": 2} and best == {"x": 3, "y": 3}
    assert max(s["pass"] for s in steps) == 3 and steps[-1]["settled"] == 2
    # Stopped by the pass limit before settling: the last record says so.
    assert coordinate_search({"x": 0, "y": 0}, grid, objective, passes=1)[1][-1]["settled"] == 1


def test_coupled_settings_swept_jointly_escape_where_one_at_a_time_sticks():
    # A ridge along x = y with its top at (3, 3): one setting at a time, every move off the ridge loses, so the
    # search stays where it starts; swept together it finds the top.
    def objective(configs):
        return [-(c["x"] - c["y"]) ** 2 * 10 - (c["x"] + c["y"] - 6) ** 2 for c in configs]

    grid = {"x": [0, 1, 2, 3, 4], "y": [0, 1, 2, 3, 4], "z": ["a", "b"]}
    alone, _ = coordinate_search({"x": 1, "y": 1, "z": "a"}, search_grid(grid), objective, passes=5)
    assert alone == {"x": 1, "y": 1, "z": "a"}
    coordinates = search_grid(grid, [("x", "y")])
    assert list(coordinates) == [("x", "y"), "z"] and len(coordinates[("x", "y")]) == 25
    together, steps = coordinate_search({"x": 1, "y": 1, "z": "a"}, coordinates, objective, passes=5)
    assert together == {"x": 3, "y": 3, "z": "a"}
    assert steps[0]["parameter"] == ("x", "y") and steps[0]["current"] == (1, 1) and steps[0]["selected"] == (3, 3)


def test_ties_and_small_gains_keep_the_current_value_and_nan_is_worst():
    flat = lambda configs: [1.0 for _ in configs]                 # noqa: E731  every value scores the same
    point, steps = coordinate_search({"x": 2}, {"x": [1, 2, 3]}, flat, passes=2)
    assert point == {"x": 2} and len(steps) == 1                  # a tie keeps the current value: settled at once
    small = lambda configs: [10.0 + 0.0005 * c["x"] for c in configs]   # noqa: E731
    assert coordinate_search({"x": 2}, {"x": [1, 2, 3]}, small, min_gain=0.001)[0] == {"x": 2}
    assert coordinate_search({"x": 2}, {"x": [1, 2, 3]}, small, min_gain=0.0)[0] == {"x": 3}
    broken = lambda configs: [math.nan if c["x"] == 3 else -c["x"] for c in configs]   # noqa: E731
    assert coordinate_search({"x": 2}, {"x": [1, 3]}, broken)[0] == {"x": 1}   # the current value is added to the sweep


# --------------------------------------------------------------------------- settings

def test_settings_add_the_shipped_value_and_sort():
    params = {"classical": {"shift_and_add": {"sharpen": 1.5, "max_frames": 12}},
              "studies": {"tune": {"grid": {"sharpen": [3, 0, 1], "max_frames": [0, 5], "fusion": ["splat"]}}}}
    cfg = tune_settings(params)
    assert cfg["grid"] == {"sharpen": [0.0, 1.0, 1.5, 3.0], "max_frames": [5, 12, 0], "fusion": ["splat", "upscale"]}
    assert cfg["passes"] == 2 and cfg["workers"] == 2 and cfg["min_gain"] == 0.001 and cfg["joint"] == []
    assert isinstance(cfg["grid"]["sharpen"][0], float) and isinstance(shipped_settings(params)["consistency"], int)


@pytest.mark.parametrize("tune, message", [
    ({"grid": {"sharpness": [1, 2]}}, "studies.tune.grid.sharpness: not a tunable classical.shift_and_add setting"),
    ({"grid": {"registration": [{}]}}, "studies.tune.grid.registration: not a tunable"),
    ({"grid": {"fusion": ["nearest"]}}, "studies.tune.grid.fusion: 'nearest' is not one of upscale, splat"),
    ({"grid": {"candidates": [0.5, 1.5]}}, r"studies.tune.grid.candidates: 1.5 is outside \(0.0, 1.0\]"),
    ({"grid": {"max_frames": [2.5]}}, "studies.tune.grid.max_frames: 2.5 is not a whole number"),
    ({"grid": {"sharpen": ["a lot"]}}, "studies.tune.grid.sharpen: 'a lot' is not a number"),
    ({"grid": {"sharpen": []}}, "studies.tune.grid.sharpen must be a non-empty list"),
    ({"grid": {}}, "studies.tune.grid must map"),
    ({"grid": {"sharpen": [1]}, "pases": 2}, r"unknown studies.tune settings \['pases'\]"),
    ({"grid": {"sharpen": [1]}, "passes": 0}, "studies.tune.passes must be a whole number ≥ 1"),
    ({"grid": {"sharpen": [1]}, "min_gain": -1}, "studies.tune.min_gain must be a number of dB ≥ 0"),
    ({"grid": {"sharpen": [1]}, "joint": [["sharpen", "sharpen_sigma"]]},
     "studies.tune.joint: 'sharpen_sigma' is not a setting of studies.tune.grid"),
    ({"grid": {"sharpen": [1], "sharpen_sigma": [1]}, "joint": [["sharpen"]]}, "is not a list of two or more"),
    ({"grid": {"sharpen": [1], "sharpen_sigma": [1], "consistency": [3]},
      "joint": [["sharpen", "sharpen_sigma"], ["consistency", "sharpen"]]}, "'sharpen' is in more than one group"),
])
def test_settings_errors_name_the_setting(tune, message):
    with pytest.raises(ValueError, match=message):
        tune_settings({"studies": {"tune": tune}})


def test_settings_are_required_and_the_shipped_ones_checked():
    with pytest.raises(ValueError, match="set studies.tune"):
        tune_settings({"studies": {"seeds": [1]}})
    with pytest.raises(ValueError, match="unknown classical.shift_and_add settings"):
        tune_settings({"classical": {"shift_and_add": {"sharpn": 1}}, "studies": {"tune": {"grid": GRID}}})


def test_the_shipped_params_file_is_valid(repo_root):
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    cfg = tune_settings(params)
    shipped = shipped_settings(params)
    assert all(shipped[name] in values for name, values in cfg["grid"].items())


def test_settings_without_effect_share_a_key_and_grid_edges():
    base = shipped_settings({})
    assert effective_key({**base, "kernel_sigma": 0.7}) == effective_key(base)          # upscale fusion
    assert effective_key({**base, "fusion": "splat", "kernel_sigma": 0.7}) != effective_key({**base, "fusion": "splat"})
    assert effective_key({**base, "sharpen": 0.0, "sharpen_sigma": 2.0}) == effective_key({**base, "sharpen": 0.0})
    assert at_edge("sharpen", 3.0, [0.0, 1.5, 3.0]) and not at_edge("sharpen", 0.0, [0.0, 1.5, 3.0])
    assert at_edge("min_clearance", 0.4, [0.4, 0.6]) and not at_edge("max_frames", 0, [5, 12, 0])
    assert not at_edge("fusion", "splat", ["upscale", "splat"])


# --------------------------------------------------------------------------- the study

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Four simulated scenes: three val, one dev (the dev scene must never be scored)."""
    from probav.data import synthetic

    root = tmp_path_factory.mktemp("tuning")
    raw = root / "raw"
    synthetic.generate(raw, PARAMS, progress=False)
    check_scenes(raw, workers=1, index_csv=root / "scenes.csv")
    index = pd.read_csv(root / "scenes.csv", dtype={"name": str})
    subsets = ["val", "val", "val", "dev"]
    pd.DataFrame({"name": index["name"], "band": index["band"], "subset": subsets}).to_csv(root / "split.csv",
                                                                                         index=False)
    return root


def _stage(repo_root):
    spec = importlib.util.spec_from_file_location("tune_stage", repo_root / "stages" / "tune.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    return stage


def _args(tiny, tmp_path, params_path):
    return ["--params", str(params_path), "--raw", str(tiny / "raw"), "--scenes", str(tiny / "scenes.csv"),
            "--split", str(tiny / "split.csv"), "--out", str(tmp_path / "tuning.json"),
            "--table", str(tmp_path / "tuning" / "scenes.csv"), "--no-progress"]


def test_tune_stage_selects_on_val_and_writes_atomically(tiny, repo_root, tmp_path, monkeypatch, capsys):
    stage = _stage(repo_root)
    params_path = tmp_path / "params.yaml"
    params_path.write_text(json.dumps(PARAMS))          # no `real` group: the real scenes are left out, said why
    import probav.data.index as index

    renames = []
    real_replace = os.replace
    monkeypatch.setattr(index.os, "replace", lambda a, b: (renames.append((str(a), str(b))), real_replace(a, b))[1])
    assert stage.main(_args(tiny, tmp_path, params_path)) == 0
    # Written under a temporary name in the same folder, then renamed: never a half-written output.
    # (Only the stage's own outputs count: numba writes its compilation cache by renaming too.)
    renames = [(a, b) for a, b in renames if b.startswith(str(tmp_path))]
    assert sorted(b for _, b in renames) == sorted([str(tmp_path / "tuning.json"),
                                                    str(tmp_path / "tuning" / "scenes.csv")])
    assert all(os.path.dirname(a) == os.path.dirname(b) and a.endswith(".tmp") for a, b in renames)
    assert not list(tmp_path.rglob("*.tmp"))

    summary = json.loads((tmp_path / "tuning.json").read_text())
    table = pd.read_csv(tmp_path / "tuning" / "scenes.csv", dtype={"scene": str})
    assert list(table.columns) == TABLE_COLUMNS
    val = pd.read_csv(tiny / "split.csv", dtype={"name": str}).query("subset == 'val'")["name"]
    assert set(table["scene"]) == set(val) and set(table["subset"]) == {"val"}   # dev never scored
    assert summary["scenes"] == 3 and summary["subset"] == "val" and summary["track"] == "challenge"
    assert summary["real"]["scenes"] == [] and "real" in summary["real"]["skipped"]
    assert set(summary["parameters"]) == set(GRID)
    # The selection is the val mean of the headline track: the selected value has the best objective of its sweep.
    for step in summary["steps"]:
        best = max(step["scores"])
        assert step["scores"][step["values"].index(step["selected"])] >= best - summary["min_gain"]
    consistency = summary["parameters"]["consistency"]
    values = {v["value"]: v for v in consistency["values"]}
    assert set(values) == {0, 10} and "vs_shipped" not in values[10]["val"]["challenge"]
    zero = values[0]["val"]["challenge"]
    assert zero["mean_cpsnr"] < values[10]["val"]["challenge"]["mean_cpsnr"]     # back-projection matters
    assert zero["vs_shipped"]["better"] + zero["vs_shipped"]["worse"] <= 3
    assert consistency["selected"] == 10 and consistency["equals_shipped"] and not consistency["detectable"]
    # The per-scene table holds exactly the val figures the summary reports.
    rows = table[(table["parameter"] == "consistency") & (table["value"].astype(str) == "0")
                 & (table["pass"] == consistency["pass"])]
    assert rows["cpsnr_challenge"].mean() == pytest.approx(zero["mean_cpsnr"])
    # The joint pair: every combination in joint_sweeps; each member's values are a slice of them.
    pair = summary["joint_sweeps"]["sharpen+sharpen_sigma"]
    assert len(pair["combinations"]) == 4 and pair["shipped"] == {"sharpen": 1.5, "sharpen_sigma": 1.0}
    sharpen = summary["parameters"]["sharpen"]
    assert sharpen["joint_with"] == ["sharpen_sigma"] and [v["value"] for v in sharpen["values"]] == [0.0, 1.5]
    assert sharpen["val"] == summary["parameters"]["sharpen_sigma"]["val"]          # the decision is the pair's
    combos = {(c["value"]["sharpen"], c["value"]["sharpen_sigma"]): c for c in pair["combinations"]}
    # Without sharpening, its sigma changes nothing: the same prediction, scored once.
    assert combos[(0.0, 1.0)]["val"]["challenge"]["mean_cpsnr"] == combos[(0.0, 2.0)]["val"]["challenge"]["mean_cpsnr"]
    assert summary["selected"] == {**summary["shipped"], **{k: v["selected"] for k, v in
                                                            summary["overall"]["changed"].items()}}
    assert "consistency: shipped 10, val-selected 10" in capsys.readouterr().out


def test_tune_stage_fails_clearly_and_keeps_the_old_outputs(tiny, repo_root, tmp_path, capsys):
    stage = _stage(repo_root)
    params_path = tmp_path / "params.yaml"
    params_path.write_text(json.dumps({**PARAMS, "studies": {"tune": {"grid": {"sharpness": [1]}}}}))
    (tmp_path / "tuning.json").write_text("{\"old\": true}")
    assert stage.main(_args(tiny, tmp_path, params_path)) == 1
    assert "tune failed: studies.tune.grid.sharpness: not a tunable" in capsys.readouterr().err
    assert json.loads((tmp_path / "tuning.json").read_text()) == {"old": True}
    assert not (tmp_path / "tuning" / "scenes.csv").exists()


def test_real_scenes_are_scored_beside_val_never_selecting(tiny, probav_mini):
    params = {**PARAMS, "real": {"folder": str(probav_mini), "labels": None},
              "studies": {"tune": {"passes": 1, "workers": 1, "grid": {"sharpen": [0.0, 1.5]}}}}
    summary, table = run_tuning(tiny / "raw", tiny / "scenes.csv", tiny / "split.csv", params, limit=1,
                                progress=False)
    assert summary["real"]["scenes"] == ["imgset0000"] and summary["real"]["skipped"] is None
    assert set(table["subset"]) == {"val", "real"}
    sharpen = summary["parameters"]["sharpen"]
    assert all(v["real"]["challenge"] > 40 for v in sharpen["values"]) and sharpen["real"]["challenge"]["shipped"] > 40
    assert sharpen["real"]["ref"]["shipped"] is None                            # no labels given: no ref track there
    # The objective is the val mean: recomputed from the table's val rows alone.
    step = summary["steps"][0]
    for value, score in zip(step["values"], step["scores"]):
        rows = table[(table["value"] == value) & (table["subset"] == "val")]
        assert score == pytest.approx(rows["cpsnr_challenge"].mean())
