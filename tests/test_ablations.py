"""The one-factor ablations (probav/ablations.py, stage `ablations`) on a tiny simulated data set: every
variant scored in both tracks, the shipped variant identical wherever it appears, the true shifts known."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest

from probav.ablations import TABLE_COLUMNS, run_ablations, true_positions
from probav.data.check import check_scenes
from probav.data.index import iter_scenes, subset_table
from probav.registration import Alignment

PARAMS = {"seed": 2019, "synthetic": {"train_scenes_per_band": 2, "test_scenes_per_band": 0, "workers": 1,
                                      "max_frames": 12, "mean_frames": 10}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from probav.data import synthetic

    root = tmp_path_factory.mktemp("ablations")
    raw = root / "raw"
    synthetic.generate(raw, PARAMS, progress=False)
    check_scenes(raw, workers=1, index_csv=root / "scenes.csv")
    index = pd.read_csv(root / "scenes.csv", dtype={"name": str})
    pd.DataFrame({"name": index["name"], "band": index["band"], "subset": "dev"}).to_csv(root / "split.csv",
                                                                                     index=False)
    return root


def test_true_positions_are_what_registration_finds(tiny):
    """The simulator's positions, as an Alignment's shifts, match the registered ones to a small fraction of a
    pixel (the sign convention of ``Alignment.with_shifts``)."""
    positions = true_positions(tiny / "raw")
    table = subset_table(tiny / "scenes.csv", tiny / "split.csv", "dev")
    scene = next(iter_scenes(tiny / "raw", table))
    lr, qm = scene.lr / 65535.0, scene.qm.astype(bool)
    registered = Alignment.to(lr, qm, 0, range(scene.frames))
    true = registered.with_shifts(np.array([positions[scene.name][int(i)] for i in scene.ids]))
    errors = [np.abs(registered.results[k].shift - true.results[k].shift).max() for k in registered.frames]
    assert np.median(errors) < 0.1 and true.results[0].shift.tolist() == [0.0, 0.0]
    assert true.results[1].gain == registered.results[1].gain     # only the shifts change


def test_ablations_stage(tiny, repo_root, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("ablations_stage", repo_root / "stages" / "ablations.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    (tmp_path / "params.yaml").write_text(json.dumps(PARAMS))
    out, table_path = tmp_path / "ablations.json", tmp_path / "ablations" / "scenes.csv"
    assert stage.main(["--params", str(tmp_path / "params.yaml"), "--raw", str(tiny / "raw"),
                       "--scenes", str(tiny / "scenes.csv"), "--split", str(tiny / "split.csv"),
                       "--models-dir", str(tmp_path / "models"), "--out", str(out), "--table", str(table_path),
                       "--no-progress"]) == 0
    summary = json.loads(out.read_text())
    table = pd.read_csv(table_path)
    assert list(table.columns) == TABLE_COLUMNS and summary["scenes"] == 4 and summary["true_shifts"]
    assert "misr_net" in summary["skipped_models"]           # not trained here: left out, said why
    assert table["cpsnr_challenge"].notna().all() and table["cpsnr_ref"].notna().all()
    # The shipped shift_and_add is the same prediction in every factor (registered, QMs used, K = 12).
    shipped = table[table["shipped"]].pivot_table(index="scene", columns="factor", values="cpsnr_ref")
    assert np.allclose(shipped.to_numpy(), shipped.to_numpy()[:, :1])
    shifts = summary["factors"]["shift_and_add_shifts"]
    assert shifts["shipped"] == "registered" and set(shifts["variants"]) == {"registered", "true", "zero"}
    zero = shifts["variants"]["zero"]["ref"]
    assert zero["mean_cpsnr"] < shifts["variants"]["registered"]["ref"]["mean_cpsnr"]   # registration matters
    assert zero["vs_shipped"]["better"] + zero["vs_shipped"]["worse"] <= 4 and "verdict" in zero["vs_shipped"]
    frames = summary["factors"]["shift_and_add_frames"]["variants"]
    assert set(frames) == {"k1", "k5", "k9", "k12", "k16", "k24", "k_all"} and frames["k_all"]["label"] == "K = all"
    assert "shift_and_add_shifts (challenge track, mean dB)" in capsys.readouterr().out
