"""Params profiles: the shipped profile only changes existing keys, the `dvc exp run` arguments, the
deep merge, and the training-time estimate (traced FLOPs ÷ an assumed throughput; no timing)."""
from __future__ import annotations

import json

import pytest
import yaml

from probav.cli import main
from probav.profiles import apply_profile, estimate_training, exp_run_args, flatten, load_profile

PARAMS = {"data": {"source": "synthetic", "archive": None}, "input": {"frames": 9},
          "train": {"epochs": 6, "misr_net": {"epochs": 15, "steps_per_epoch": 60}}}


def test_the_shipped_profile_only_changes_existing_keys(repo_root):
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    overrides = load_profile(repo_root / "profiles" / "gpu-real.yaml", params)
    merged = apply_profile(params, overrides)
    assert merged["data"]["source"] == "kelvins" and merged["model"]["blocks"] > params["model"]["blocks"]
    # The per-model override is replaced too, or misr_net would stay at CPU size.
    assert merged["train"]["misr_net"]["epochs"] == merged["train"]["epochs"]


def test_flatten_and_exp_run_args():
    overrides = {"data": {"source": "kelvins", "archive": None}, "input": {"frames": 16},
                 "train": {"misr_net": {"epochs": 100}}}
    assert flatten(overrides) == [("data.source", "kelvins"), ("data.archive", None), ("input.frames", 16),
                                  ("train.misr_net.epochs", 100)]
    assert exp_run_args(overrides) == ["-S", "data.source=kelvins", "-S", "data.archive=null",
                                       "-S", "input.frames=16", "-S", "train.misr_net.epochs=100"]


def test_unknown_key_missing_file_and_bad_yaml_are_clear_errors(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ValueError, match=r"typo\.yaml: train\.epoch not in params\.yaml"):
        load_profile(path, PARAMS)
    with pytest.raises(FileNotFoundError, match="nothere.yaml"):
        load_profile(tmp_path / "nothere.yaml", PARAMS)
    path.write_text("train: [1,\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_profile(path, PARAMS)


def test_apply_profile_deep_merges_without_mutating():
    merged = apply_profile(PARAMS, {"train": {"misr_net": {"epochs": 100}}})
    assert merged["train"] == {"epochs": 6, "misr_net": {"epochs": 100, "steps_per_epoch": 60}}
    assert PARAMS["train"]["misr_net"]["epochs"] == 15


def test_estimate_is_traced_flops_over_the_assumed_throughput():
    params = {"seed": 1, "input": {"frames": 4, "batch_size": 2, "patch_size": 8},
              "model": {"blocks": 1, "filters": 8},
              "train": {"epochs": 2, "steps_per_epoch": 3, "validation_scenes": 5}}
    rows = estimate_training(params, ["residual_single", "misr_net"], tflops=10.0, dev_scenes=7,
                             input_examples_per_s=1e9)
    for row in rows:
        assert row["gflop_per_step"] > 0 and row["gflop_per_dev_scene"] > 0
        assert row["steps"] == 6 and row["validation_passes"] == 10        # min(5, 7) scenes × 2 epochs
        flops = row["gflop_per_step"] * 1e9 * 6 + row["gflop_per_dev_scene"] * 1e9 * 10
        assert row["compute_hours"] == pytest.approx(flops / 10e12 / 3600, rel=1e-12)
        assert row["hours"] == row["compute_hours"]                        # input far faster here
    slow_input = estimate_training(params, ["residual_single"], tflops=10.0, input_examples_per_s=1.0)[0]
    assert slow_input["input_hours"] == pytest.approx(6 * 2 / 3600) and slow_input["hours"] == slow_input["input_hours"]
    with pytest.raises(ValueError, match="positive"):
        estimate_training(params, ["residual_single"], tflops=0)


def test_cli_prints_the_exp_args_and_the_changes(tmp_path, capsys):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    (tmp_path / "p.yaml").write_text("input:\n  frames: 16\ntrain:\n  misr_net:\n    epochs: 100\n")
    args = ["profile", str(tmp_path / "p.yaml"), "--params", str(tmp_path / "params.yaml")]
    assert main(args + ["--exp-args"]) == 0
    assert capsys.readouterr().out.strip() == "-S input.frames=16 -S train.misr_net.epochs=100"
    assert main(args) == 0
    assert capsys.readouterr().out.splitlines() == ["input.frames: 9 -> 16", "train.misr_net.epochs: 15 -> 100"]
    (tmp_path / "p.yaml").write_text("input:\n  frame: 16\n")
    assert main(args) == 1
    assert "input.frame not in params.yaml" in capsys.readouterr().err


def test_cli_estimate_json(tmp_path, capsys):
    params = {"seed": 1, "deep_models": ["residual_single"], "input": {"frames": 4, "batch_size": 2, "patch_size": 8},
              "model": {"blocks": 1, "filters": 8}, "train": {"epochs": 2, "steps_per_epoch": 3}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "p.yaml").write_text("train:\n  epochs: 4\n")
    assert main(["profile", str(tmp_path / "p.yaml"), "--params", str(tmp_path / "params.yaml"), "--estimate",
                 "--json", "--bench", str(tmp_path / "none.json")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in out["models"]] == ["residual_single"] and out["models"][0]["steps"] == 12
    assert out["prior"] is None and out["models"][0]["input_hours"] is None
    # --out and --json-out: the Markdown table and the same JSON object, each written whole.
    md, js = tmp_path / "estimate.md", tmp_path / "estimate.json"
    assert main(["profile", str(tmp_path / "p.yaml"), "--params", str(tmp_path / "params.yaml"), "--estimate",
                 "--bench", str(tmp_path / "none.json"), "--out", str(md), "--json-out", str(js)]) == 0
    assert "| residual_single |" in md.read_text()
    assert json.loads(js.read_text())["models"] == out["models"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
