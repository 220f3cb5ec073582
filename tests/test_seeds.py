"""The seed study (probav/seeds.py): the spread over seeds, and a finished run kept when the study runs
again with the same settings (an interrupted study resumes without training again)."""
from __future__ import annotations

import json
import math

import pytest

from probav.seeds import _fingerprint, seed_study, spread


def test_spread_is_the_sample_mean_and_sd():
    assert spread([1.0, 2.0, 4.0]) == {"runs": 3, "mean": pytest.approx(7 / 3),
                                       "sd": pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2
                                                                      + (4 - 7 / 3) ** 2) / 2))}
    assert spread([5.0]) == {"runs": 1, "mean": 5.0, "sd": None}
    assert spread([None, float("nan")]) == {"runs": 0, "mean": None, "sd": None}


def _summary(cpsnr: float) -> dict:
    return {"tracks": {"challenge": {"mean_cpsnr": cpsnr, "mean_score": 40 / cpsnr},
                       "ref": {"mean_cpsnr": cpsnr + 1, "mean_score": 40 / (cpsnr + 1)}}}


def test_finished_runs_are_kept_and_the_pipeline_run_counts(tmp_path):
    params = {"seed": 2019, "reference": {"track": "challenge"}, "train": {"epochs": 1}}
    (tmp_path / "tfrecords").mkdir()
    (tmp_path / "tfrecords" / "meta.json").write_text("{}")
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "net.json").write_text(json.dumps(_summary(40.0)))
    (tmp_path / "metrics" / "real").mkdir()
    (tmp_path / "metrics" / "real" / "net.json").write_text(json.dumps({"scenes": 1, **_summary(50.0)}))
    paths = {"raw": tmp_path, "scenes": tmp_path, "split": tmp_path, "tfrecords": tmp_path / "tfrecords",
             "estimator": tmp_path, "out": tmp_path / "runs"}
    for seed, cpsnr in ((1, 40.2), (2, 40.4)):
        run = tmp_path / "runs" / f"net-seed{seed}"
        run.mkdir(parents=True)
        fp = _fingerprint(params, "net", seed, tmp_path / "tfrecords")
        real = {"scenes": 1, **_summary(cpsnr + 10 + seed / 10)}
        (run / "summary.json").write_text(json.dumps({"fingerprint": fp,
                                                      "summary": {"dev": _summary(cpsnr), "real": real}}))
    # Every run is there with its fingerprint: nothing is trained (no TensorFlow, no data needed).
    result = seed_study(params, paths, ["net"], [1, 2, 2019], tmp_path / "metrics", progress=False)
    entry = result["models"]["net"]
    assert result["seeds"] == [2019, 1, 2] and entry["seeds"] == [1, 2, 2019]
    assert entry["challenge"]["mean_cpsnr"]["mean"] == pytest.approx(40.2)
    assert entry["challenge"]["mean_cpsnr"]["sd"] == pytest.approx(0.2)
    assert entry["ref"]["per_seed_cpsnr"] == {"1": 41.2, "2": 41.4, "2019": 41.0}
    # The real scenes: the pipeline's own run (metrics/real/net.json) and each seed's, 50.0, 50.3, 50.6.
    assert entry["real"]["scenes"] == 1
    assert entry["real"]["challenge"]["mean_cpsnr"]["mean"] == pytest.approx(50.3)
    assert entry["real"]["challenge"]["mean_cpsnr"]["sd"] == pytest.approx(0.3)
    assert entry["real"]["ref"]["per_seed_cpsnr"] == {"1": pytest.approx(51.3), "2": pytest.approx(51.6), "2019": 51.0}
    # Without the pipeline's real run (no real sample), the study has no real entry.
    (tmp_path / "metrics" / "real" / "net.json").unlink()
    assert "real" not in seed_study(params, paths, ["net"], [1, 2], tmp_path / "metrics", progress=False)["models"]["net"]
    # Other settings: the run no longer counts (it would be trained again).
    assert _fingerprint({**params, "train": {"epochs": 2}}, "net", 1, tmp_path / "tfrecords") != \
        _fingerprint(params, "net", 1, tmp_path / "tfrecords")
    # Other data (a TFRecord file's content changed): the run no longer counts either.
    before = _fingerprint(params, "net", 1, tmp_path / "tfrecords")
    (tmp_path / "tfrecords" / "train-00000-of-00001.tfrecord.gz").write_bytes(b"other scenes")
    assert _fingerprint(params, "net", 1, tmp_path / "tfrecords") != before
    with pytest.raises(FileNotFoundError, match="pipeline's run of other"):
        seed_study(params, paths, ["other"], [1], tmp_path / "metrics", progress=False)


def test_a_study_is_from_this_run_only_where_its_entry_for_this_seed_is_this_runs_figure():
    from probav.seeds import from_this_run

    figures = {"per_seed_cpsnr": {"1": 48.7, "2019": 48.75}}
    assert from_this_run(figures, 2019, 48.75) and from_this_run(figures, 2019, 48.75 + 5e-7)
    assert not from_this_run(figures, 2019, 48.9)  # made from another run: stale
    assert not from_this_run(figures, 7, 48.75)  # this run's seed was not studied
    assert not from_this_run(figures, 2019, None) and not from_this_run({}, 2019, 48.75)
