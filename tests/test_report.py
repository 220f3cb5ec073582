"""The report stage on a tiny fake run built in tmp_path: a few small scenes in the official layout,
the scene index and split, metrics and per-scene tables in the evaluate stage's format (two models
really evaluated, one deep model with made-up numbers and a DVCLive log, one model not run)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import ndimage as ndi

from probav.data.index import iter_scenes, subset_table
from probav.evaluate import evaluate_model, summarise
from probav.metrics.paired import compare_tables
from probav.models.registry import load_model
from probav.params import derive_seed
from probav.report import (build, conclusions_section, data_section, effects_section, markdown, problem_section,
                           readme, results_section, summary_section)
from probav.report.citations import resolve_citations
from probav.report.inputs import ModelRun
from probav.scene import NO_DATA, Scene, write_norm, write_scene

REPO = Path(__file__).resolve().parents[1]
MAX_PNG_BYTES = 300_000
README = """# Project

Intro text that must survive.

## Results

<!-- results:start -->
old block
<!-- results:end -->

More text after the block.
"""


def _scene(rng: np.random.Generator, name: str, band: str, split: str, frames: int = 9) -> tuple[Scene, list]:
    level = 3000.0 if band == "RED" else 9000.0
    field = ndi.gaussian_filter(rng.standard_normal((384, 384)), 4)
    hr = level + 800.0 * field / field.std()
    shifts, lr, qm = [], [], []
    for k in range(frames):
        sy, sx = int(rng.integers(-2, 3)), int(rng.integers(-2, 3))
        moved = np.roll(hr, (sy, sx), axis=(0, 1))
        frame = moved.reshape(128, 3, 128, 3).mean(axis=(1, 3)) + rng.normal(0, 10, (128, 128))
        clear = np.ones((128, 128), bool)
        if k % 3 == 1:  # a bright cloud above 14 bits, masked
            frame[20:40, 30:60] = 24000
            clear[18:42, 28:62] = False
        if k == frames - 1:  # a no-data strip, masked
            frame[:, :6] = NO_DATA
            clear[:, :6] = False
        lr.append(np.clip(np.round(frame / 16) * 16, 0, 65535).astype(np.uint16))
        qm.append(clear)
        shifts.append({"name": name, "frame": k, "dy": sy / 3, "dx": sx / 3})
    hr16 = np.clip(np.round(hr / 16) * 16, 0, 65504).astype(np.uint16) if split == "train" else None
    sm = np.ones((384, 384), bool) if split == "train" else None
    if sm is not None:
        sm[300:330, 40:90] = False
    return Scene(name, band, np.stack(lr), np.stack(qm), hr16, sm, split=split), shifts


def _evaluated(model_name: str, params: dict, root: Path, metrics: Path) -> dict:
    model = load_model(model_name, params)
    table = evaluate_model(model, iter_scenes(root / "data/raw", subset_table(root / "data/scenes.csv",
                                                                              root / "data/split.csv", "dev")),
                           progress=False)
    summary = summarise(table, model_name, {"subset": "dev"})
    (metrics / "scenes").mkdir(parents=True, exist_ok=True)
    table.to_csv(metrics / "scenes" / f"{model_name}.csv", index=False, float_format="%.6f")
    (metrics / f"{model_name}.json").write_text(json.dumps(summary, indent=2))
    return summary


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("run")
    raw = root / "data" / "raw"
    rng = np.random.default_rng(7)
    plan = [("imgset0000", "RED", "train"), ("imgset0001", "RED", "train"), ("imgset0002", "NIR", "train"),
            ("imgset0003", "NIR", "train"), ("imgset0004", "RED", "test")]
    rows, truth, norms = [], [], {}
    for name, band, split in plan:
        scene, shifts = _scene(rng, name, band, split)
        write_scene(scene, raw)
        truth += shifts
        norms[name] = 45.0 + rng.uniform(-2, 2)
        rows.append({"split": split, "band": band, "name": name, "path": f"{split}/{band}/{name}",
                     "frames": scene.frames, "mean_clearance": float(scene.clearance.mean()),
                     "hr_clearance": scene.hr_clearance if scene.sm is not None else "", "status": "ok",
                     "reason": ""})
    write_norm(raw / "norm.csv", norms)
    (raw / "synthetic").mkdir()
    pd.DataFrame(truth).to_csv(raw / "synthetic" / "shifts.csv", index=False)
    pd.DataFrame(rows).to_csv(root / "data" / "scenes.csv", index=False)
    pd.DataFrame({"name": ["imgset0000", "imgset0001", "imgset0002", "imgset0003"],
                  "band": ["RED", "RED", "NIR", "NIR"], "subset": ["train", "dev", "train", "dev"]}).to_csv(
        root / "data" / "split.csv", index=False)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["source"] = "synthetic"
    params["models"] = ["baseline", "median", "shift_and_add"]
    params["deep_models"] = ["residual_single", "misr_net"]
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    metrics = root / "metrics"
    for name in ("baseline", "median", "shift_and_add"):
        _evaluated(name, params, root, metrics)
    # A deep model with made-up results (no saved network): evaluate's format, a training.json, a DVCLive log.
    table = pd.read_csv(metrics / "scenes" / "baseline.csv")
    table["cpsnr"] += 0.25
    table["score"] = table["norm"] / table["cpsnr"]
    table["seconds"] = 0.8
    table.to_csv(metrics / "scenes" / "misr_net.csv", index=False, float_format="%.6f")
    (metrics / "misr_net.json").write_text(json.dumps(summarise(table, "misr_net", {"subset": "dev"}), indent=2))
    model_dir = root / "models" / "misr_net"
    training = {"parameters": 97358, "training_seconds": 812.5, "best_dev_cpsnr": 46.1}
    live = root / "dvclive" / "misr_net" / "plots" / "metrics"
    (live / "train").mkdir(parents=True)
    (live / "eval").mkdir(parents=True)
    (live / "train" / "loss.tsv").write_text("timestamp\tstep\tloss\n1\t0\t0.02\n2\t1\t0.012\n3\t2\t0.009\n")
    (live / "eval" / "cpsnr.tsv").write_text("timestamp\tstep\tcpsnr\n1\t0\t44.1\n2\t1\t45.3\n3\t2\t46.1\n")
    # training.json lives beside the (absent) saved network: keep the folder without a model file.
    model_dir.mkdir(parents=True)
    (model_dir / "training.json").write_text(json.dumps(training))
    # The reference stage's outputs (its format, made-up numbers): not a model, a section of its own.
    reference = {"track": "challenge", "estimator": "fitted", "weights": {"sm_mismatch": -40.0, "clearance": 6.0},
                 "train_scenes": 3, "labelled": {"train": 3, "dev": 2},
                 "dev": {"scenes": 2, "top1": 0.5, "top3": 1.0, "mean_probability": 0.4, "log_loss": 0.9,
                         "rule": {"scenes": 2, "top1": 0.5, "top3": 0.5, "mean_probability": 0.3, "log_loss": 1.2},
                         "unmasked": {"scenes": 2, "top1": 0.0, "top3": 0.5, "mean_probability": 0.2, "log_loss": 2.0},
                         "feature_top1": {"clearance": 0.5, "sm_mismatch": 1.0}, "chance_top1": 0.1},
                 "real": {"scenes": 4, "top1": 0.25, "top3": 0.75, "mean_probability": 0.3, "log_loss": 1.5,
                          "rule": {"scenes": 4, "top1": 0.25, "top3": 0.5, "mean_probability": 0.2, "log_loss": 1.7},
                          "feature_top1": {"clearance": 0.1, "sm_mismatch": 0.1}, "without_masks": 3,
                          "chance_top1": 0.06},
                 "single_frame": {"reference_cpsnr": 47.0, "estimated_cpsnr": 46.5, "mistakes": 1,
                                  "mistake_cost_db": 1.1, "margin_db": {"min": 0.4, "p10": 0.5, "median": 1.2,
                                                                        "p90": 2.0, "max": 2.2, "mean": 1.3}}}
    (metrics / "reference.json").write_text(json.dumps(reference))
    pd.DataFrame({"scene": ["imgset0000", "imgset0001"], "margin": [0.4, 2.2]}).to_csv(
        metrics / "scenes" / "reference.csv", index=False)
    (metrics / "bench.json").write_text(json.dumps(
        {"models": {"median": {"inference": {"ms_per_scene": {"median": 12.5, "min": 11.0, "max": 14.0}}}}}))
    (root / "README.md").write_text(README)
    return root


def _template_for_this_run(root: Path) -> Path:
    """The committed template without its hand-checked numbers' markers (typed numbers as plain text): its
    hand-written paragraph is about the committed run, not this fake one (tests/test_report_citations.py
    checks the markers)."""
    path = root / "template.md"
    text = (REPO / "reports" / "template.md").read_text()
    path.write_text(re.sub(r"\{\{check:([-+]?[\d.]+):[^}]+\}\}", r"\1", text))
    return path


def test_committed_template_agrees_with_the_committed_metrics():
    """The hand-written numbers of reports/template.md are those of the metrics committed beside it."""
    template = (REPO / "reports" / "template.md").read_text()
    assert "{{check:" in template
    resolve_citations(template, REPO / "metrics", REPO)


def _build(root: Path, real: Path | None, **options) -> str:
    params = yaml.safe_load((root / "params.yaml").read_text())
    paths = build.Paths(raw=root / "data/raw", scenes=root / "data/scenes.csv", split=root / "data/split.csv",
                        metrics=root / "metrics", models=root / "models", live=root / "dvclive",
                        template=_template_for_this_run(root), out=root / "reports" / "report.md",
                        readme=root / "README.md", real=real, repo=root)
    opts = dict(sample_scenes=3, shift_scenes=1, sweep_scenes=1, experiments=False, progress=False)
    opts.update(options)
    build.build_report(params, paths, build.Options(**opts))
    return (root / "reports" / "report.md").read_text()


def _table_after(text: str, heading: str) -> pd.DataFrame:
    """The first markdown table after a heading, as strings (bold markers removed)."""
    lines = text[text.index(heading):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip().replace("**", "") for c in line.strip().strip("|").split("|")])
    return pd.DataFrame(rows[2:], columns=rows[0])


@pytest.fixture(scope="module")
def report(fake_run: Path) -> str:
    return _build(fake_run, real=None)


def test_banner_names_the_data_source(report: str):
    first = report.strip().splitlines()[0]
    assert "synthetic data" in first and "⚠" in first
    assert "data.source: synthetic" in first
    official = summary_section.banner("folder", {"data": {"source": "folder", "folder": "/data/probav"}})
    assert "official PROBA-V" in official and "folder" in official


def test_every_linked_figure_exists_and_is_small(fake_run: Path, report: str):
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert len(links) >= 8
    for link in links:
        png = fake_run / "reports" / link
        assert png.is_file(), link
        assert png.stat().st_size < MAX_PNG_BYTES, (link, png.stat().st_size)
    on_disk = {p.name for p in (fake_run / "reports" / "figures").glob("*.png")}
    assert on_disk == {Path(link).name for link in links}, "every figure written is linked, and only those"
    for name in ("compare_best.png", "results_scores.png", "data_shifts.png", "training_curves.png",
                 "effect_frames.png", "data_values.png"):
        assert name in on_disk


def test_results_table_matches_metrics(fake_run: Path, report: str):
    table = _table_after(report, "## 4. Results").set_index("model")
    for name in ("baseline", "median", "shift_and_add", "misr_net"):
        metrics = json.loads((fake_run / "metrics" / f"{name}.json").read_text())
        row = table.loc[name]
        assert float(row["mean score, challenge ↓"]) == pytest.approx(round(metrics["mean_score"], 4), abs=1e-9)
        assert float(row["mean cPSNR (dB)"]) == pytest.approx(round(metrics["mean_cpsnr"], 2), abs=1e-9)
        for band in ("RED", "NIR"):
            assert float(row[f"cPSNR {band} (dB)"]) == pytest.approx(
                round(metrics["bands"][band]["mean_cpsnr"], 2), abs=1e-9)
        assert float(row["scenes better than baseline"].rstrip(" %")) == round(100 * metrics["beats_baseline"])
        per_scene = metrics["seconds"] / metrics["scenes"]
        assert float(row["evaluate stage (s/scene)"]) == pytest.approx(per_scene, rel=5e-3)
    # the bench's prediction time, where make bench measured the model (the fake bench.json: median only)
    assert table.loc["median", "prediction (ms/scene, bench)"] == "12.5"
    assert table.loc["baseline", "prediction (ms/scene, bench)"] == "n/a"
    assert table.loc["misr_net", "parameters"] == "97,358"
    assert table.loc["misr_net", "training time"] == "13.5 min"
    assert table.loc["residual_single", "mean score, challenge ↓"] == "not run"  # in params.yaml, without metrics
    scores = [float(v) for v in table["mean score, challenge ↓"] if v != "not run"]
    assert scores == sorted(scores), "models are ranked by mean score"
    # The best model is named consistently with the numbers.
    best = min(("baseline", "median", "shift_and_add", "misr_net"),
               key=lambda n: json.loads((fake_run / "metrics" / f"{n}.json").read_text())["mean_score"])
    assert f"The best model on the 2 dev scenes is **{best}**" in report


def test_generated_sentences_agree_with_the_numbers(fake_run: Path, report: str):
    tables = {n: pd.read_csv(fake_run / "metrics" / "scenes" / f"{n}.csv", dtype={"scene": str})
              for n in ("baseline", "median")}
    c = compare_tables("median", tables["median"], "baseline", tables["baseline"], conclusions_section.RESAMPLES,
                       derive_seed(yaml.safe_load((fake_run / "params.yaml").read_text()), "report", "paired",
                                   "median", "baseline"))
    row = _table_after(report, "**Every model against the baseline**").set_index("comparison")
    assert row.loc["`median` − `baseline`", "mean difference (dB)"] == conclusions_section.db(c.mean)
    assert row.loc["`median` − `baseline`", "scenes better / worse"] == f"{c.better} / {c.worse}"
    if not c.detectable:
        assert "No detectable difference between the per-pixel median of all clear frames and the baseline" in report
    elif c.mean > 0:
        assert "(`median`) beats the baseline" in report
    else:
        assert "(`median`) does not beat the baseline" in report
    assert "Not measured in this run" in report and "`residual_single` against `median`" in report
    # what did not work: every number from this run's outputs (the fake reference.json's margin and mistakes)
    did_not_work = report[report.index("**What did not work"):report.index("**Open problems")]
    assert "by a median 1.20 dB over the next-best frame" in did_not_work
    assert "1 wrong picks on the dev scenes cost 1.10 dB" in did_not_work
    assert f"gains {conclusions_section.db(c.mean)} dB over the baseline on the dev scenes" in did_not_work
    assert "{{" not in report and "}}" not in report
    assert "not present on this machine" in report  # no real sample given
    assert "Against the simulator's true shifts" in report
    assert "```yaml\nseed:" in report


def test_readme_block_rewritten(fake_run: Path, report: str):
    text = (fake_run / "README.md").read_text()
    assert "Intro text that must survive." in text and "More text after the block." in text
    assert "old block" not in text
    block = text[text.index("<!-- results:start -->"):text.index("<!-- results:end -->")]
    assert "synthetic data" in block
    assert "[reports/report.md](reports/report.md)" in block
    image = re.search(r"!\[[^\]]*\]\(([^)]+)\)", block).group(1)
    assert (fake_run / image).is_file()
    table = _table_after(block, "| model").set_index("model")
    metrics = json.loads((fake_run / "metrics" / "median.json").read_text())
    assert float(table.loc["median", "mean score, challenge ↓"]) == round(metrics["mean_score"], 4)
    # Rewriting is idempotent.
    assert readme.update_readme(fake_run / "README.md", block.split("\n", 1)[1]) is True
    assert readme.update_readme(fake_run / "nothing.md", "x") is False


def test_render_rejects_unknown_placeholders():
    assert markdown.render("a {{x}} b {{ model_zzz }}", {"x": "1"}).startswith("a 1 b")
    with pytest.raises(KeyError, match="nope"):
        markdown.render("{{nope}}", {})


def test_real_sample_section(fake_run: Path, probav_mini: Path, tmp_path: Path):
    """With the real sample: its statistics, the real-against-run figures and the baseline-against-norm.csv
    sentence (the parts of the report that only exist where the sample is present)."""
    from probav.data import stats as data_stats
    from probav.scene import read_scene

    paths = build.Paths(raw=fake_run / "data/raw", out=tmp_path / "report.md", real=probav_mini)
    real = data_stats.collect(probav_mini, data_stats.folder_sample(probav_mini), shift_scenes=1)
    assert real["RED"].scenes == ["imgset0000", "imgset1160"] and real["NIR"].scenes == ["imgset1306"]
    assert real["RED"].not_multiple_16 == 0 and real["RED"].nodata_clear == 0
    assert real["RED"].shift_table()["ok"].any()
    index = pd.read_csv(fake_run / "data/scenes.csv")
    run = data_stats.collect(paths.raw, data_stats.index_sample(paths.raw, index, 2), shift_scenes=0)
    text = data_section.real_section(run, real, read_scene(paths.raw / "train/RED/imgset0000"),
                              read_scene(probav_mini / "train/RED/imgset0000"),
                              data_stats.norms_by_band(paths.raw / "norm.csv", index),
                              data_stats.norms_by_band(probav_mini / "norm.csv"), paths, "synthetic", "summary")
    for name in ("data_real_vs_run.png", "data_distributions.png"):
        assert f"figures/{name}" in text
        assert (tmp_path / "figures" / name).is_file()
        assert (tmp_path / "figures" / name).stat().st_size < MAX_PNG_BYTES
    assert "(official, 740 scenes)" in text and "(official, 710 scenes)" in text  # norm.csv split by band
    sentence = problem_section.baseline_vs_norm([], probav_mini, "synthetic")
    assert "on the real scene imgset0000 against 52.35 dB in `norm.csv`" in sentence


def test_experiments_table(monkeypatch):
    """`dvc exp show --json` entries → the effect of model.blocks, per deep model."""
    def entry(name, blocks, score):
        return {"rev": "abc", "name": name, "data": {
            "params": {"params.yaml": {"data": {"model": {"blocks": blocks}, "input": {"frames": 9}}}},
            "metrics": {"metrics/misr_net.json": {"data": {"model": "misr_net", "mean_score": score}},
                        "metrics/baseline.json": {"data": {"model": "baseline", "mean_score": 1.0}}}}}
    data = [dict(entry("workspace", 4, 0.99), experiments=[{"revs": [entry("exp-a", 8, 0.97)]},
                                                             {"revs": [entry("exp-b", 2, 1.01)]}])]
    rows = effects_section.parse_experiments(data)
    assert set(rows["experiment"]) == {"workspace", "exp-a", "exp-b"}
    monkeypatch.setattr(effects_section, "experiments", lambda repo, options: rows)
    params = {"deep_models": ["misr_net"]}
    text = effects_section.effects_section([], params, build.Paths(), None, build.Options(sweep_scenes=0, progress=False))
    table = _table_after(text, "**model.blocks**").set_index("model")
    assert list(table.index) == ["misr_net"]  # classical models do not read model.blocks
    assert table.loc["misr_net", "model.blocks = 2"] == "1.0100"
    assert table.loc["misr_net", "model.blocks = 8"] == "0.9700"
    assert effects_section.parse_experiments({"not": "a list"}) is None


def test_experiments_table_of_misr_base_lists_only_misr_net(monkeypatch):
    def entry(name, base, misr, single):
        return {"rev": "abc", "name": name, "data": {
            "params": {"params.yaml": {"data": {"model": {"blocks": 4, "misr_base": base}}}},
            "metrics": {"metrics/misr_net.json": {"data": {"model": "misr_net", "mean_score": misr}},
                        "metrics/residual_single.json": {"data": {"model": "residual_single",
                                                                  "mean_score": single}}}}}
    data = [dict(entry("main", "prior", 0.96, 0.99), experiments=[{"revs": [entry("exp-m", "median", 0.98, 0.99)]}])]
    rows = effects_section.parse_experiments(data)
    monkeypatch.setattr(effects_section, "experiments", lambda repo, options: rows)
    params = {"deep_models": ["residual_single", "misr_net"]}
    text = effects_section.effects_section([], params, build.Paths(), None, build.Options(sweep_scenes=0, progress=False))
    table = _table_after(text, "**model.misr_base**").set_index("model")
    assert list(table.index) == ["misr_net"]   # the other networks do not read model.misr_base
    assert table.loc["misr_net", "model.misr_base = median"] == "0.9800"
    assert table.loc["misr_net", "model.misr_base = prior"] == "0.9600"
    assert "**model.blocks**" not in text      # one value only: no table


def test_experiments_tables_vary_one_setting_at_a_time(monkeypatch):
    """An experiment that changes two settings is in neither setting's table; repeats are averaged."""
    def entry(name, blocks, frames, score):
        return {"rev": "abc", "name": name, "data": {
            "params": {"params.yaml": {"data": {"model": {"blocks": blocks}, "input": {"frames": frames}}}},
            "metrics": {"metrics/misr_net.json": {"data": {"model": "misr_net", "mean_score": score}}}}}
    data = [dict(entry("workspace", 4, 9, 0.96), experiments=[
        {"revs": [entry("blocks8", 8, 9, 0.95)]}, {"revs": [entry("blocks8-again", 8, 9, 0.97)]},
        {"revs": [entry("frames16", 4, 16, 0.99)]}, {"revs": [entry("both", 8, 16, 0.90)]}])]
    rows = effects_section.parse_experiments(data)
    monkeypatch.setattr(effects_section, "experiments", lambda repo, options: rows)
    params = {"deep_models": ["misr_net"], "model": {"blocks": 4}, "input": {"frames": 9}}
    text = effects_section.effects_section([], params, build.Paths(), None, build.Options(sweep_scenes=0, progress=False))
    blocks = _table_after(text, "**model.blocks**").set_index("model")
    assert blocks.loc["misr_net", "model.blocks = 4"] == "0.9600"
    assert blocks.loc["misr_net", "model.blocks = 8"] == "0.9600 (mean of 2)"   # not 0.90: 'both' changed frames too
    frames = _table_after(text, "**input.frames**").set_index("model")
    assert frames.loc["misr_net", "input.frames = 16"] == "0.9900"
    assert "other settings are this run's: input.frames = 9" in text


def test_empty_run(tmp_path: Path):
    """Nothing but params.yaml and a README: the report still builds and says what is missing."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["source"] = "kelvins"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "README.md").write_text(README)
    text = _build(tmp_path, real=None)
    assert "official PROBA-V" in text.splitlines()[0]
    table = _table_after(text, "## 4. Results")
    assert set(table["mean score, challenge ↓"]) == {"not run"}
    assert "No model has been scored yet." in text
    assert "synthetic" not in (tmp_path / "README.md").read_text().split("<!-- results:start -->")[1]


def test_reference_section_reads_the_reference_stage_and_is_not_a_model(report: str):
    section = report[report.index("### The reference frame: estimated or given"):report.index("### Score per scene")]
    estimator = _table_after(section, "**The estimator on the 2 labelled dev scenes**")
    assert list(estimator["top-1"]) == ["50 %", "50 %"] and list(estimator["top-3"]) == ["100 %", "50 %"]
    assert "median 1.20 dB" in section and "wrong picks cost 1.10 dB" in section
    both = _table_after(section, "**The estimator on the simulator and on real scenes**")
    assert list(both["top-1"]) == ["50 %", "0 %", "25 %"] and list(both["chance top-1"]) == ["10 %", "10 %", "6 %"]
    assert "4 scenes: 1 with QMs, 3 LR frames only" in both["scenes"].iloc[2]
    alone = _table_after(section, "Each feature alone").set_index("scenes")
    assert alone.loc["real", "`clearance`"] == "10 %" and alone.loc["simulator, dev", "`sm_mismatch`"] == "100 %"
    tracks = _table_after(section, "**Both tracks, every model**").set_index("model")
    assert "shift_and_add" in tracks.index and "reference" not in tracks.index
    models = _table_after(report, "## 3. The approaches")
    assert "`reference`" not in set(models["model"])


def _run(name: str, kind: str, cpsnr) -> ModelRun:
    table = pd.DataFrame({"scene": [f"imgset{i:04d}" for i in range(len(cpsnr))], "band": "RED",
                          "cpsnr": cpsnr, "norm": 45.0})
    table["score"] = table["norm"] / table["cpsnr"]
    return ModelRun(name, kind, True, True, metrics={"mean_score": float(table["score"].mean())}, table=table)


def test_findings_follow_the_paired_statistics():
    base = np.linspace(44.0, 48.0, 12)
    swing = np.array([0.4, -0.4] * 6)
    runs = [_run("baseline", "classical", base), _run("shift_and_add", "classical", base + 1.0),
            _run("misr_net", "deep", base + 1.0 + swing), _run("residual_single", "deep", base + 0.3)]
    text = conclusions_section.findings(runs, "synthetic", {"seed": 1, "model": {"misr_base": "prior"}})
    # a zero-mean swing: the interval includes zero, so no verdict either way, and no prior note
    assert "No detectable difference between the multi-frame network `misr_net` and the classical `shift_and_add`" \
        in text
    assert "learned to correct" not in text
    # a constant +0.3 dB on every scene: detected, with its exact interval and sign test (2 / 2^12)
    assert "`residual_single` beats the baseline (+0.30 dB, 95% interval +0.30 to +0.30; better on 12 and worse " \
           "on 0 of 12 scenes, sign test p < 0.001)" in text
    pairs = _table_after(text, "**The pairs this report discusses**").set_index("comparison")
    assert pairs.loc["`misr_net` − `shift_and_add`", "verdict"] == "no detectable difference"
    assert pairs.loc["`misr_net` − `shift_and_add`", "scenes better / worse"] == "6 / 6"
    assert pairs.loc["`misr_net` − `shift_and_add`", "sign test p"] == "1"
    assert "`residual_multi` against `residual_single`" in text   # not run: said so


def test_correlations_without_evidence_are_not_described_as_trends():
    assert results_section.correlation_phrase("the frames", "more", -0.12, 0.59, 24).startswith(
        "no detectable correlation with the frames (Spearman ρ = -0.12, p = 0.59, 24 scenes)")
    rho, p = results_section.spearman([1, 2, 3, 4, 5, 6, 7, 8], [8, 7, 6, 5, 4, 3, 2, 1])
    assert rho == pytest.approx(-1.0) and p < 1e-6
    assert results_section.correlation_phrase("the frames", "scenes with more frames", rho, p, 8).startswith(
        "a correlation with the frames (Spearman ρ = -1.00")


def test_studies_are_read_when_present_and_named_when_not(tmp_path: Path):
    from probav.report import studies_section as studies

    assert "`make seeds`" in studies.seeds(tmp_path) and "`make ablations`" in studies.ablations(tmp_path)
    assert "missing" in studies.held_out_test(tmp_path)
    (tmp_path / "test.json").write_text(json.dumps({"model": "shift_and_add", "track": "challenge", "skipped": "x"}))
    assert studies.held_out_test(tmp_path).endswith("x.")
    (tmp_path / "test.json").write_text(json.dumps(
        {"model": "shift_and_add", "track": "challenge", "scenes": 8, "mean_score": 0.9512, "mean_cpsnr": 47.1,
         "bands": {"RED": {"mean_score": 0.95}, "NIR": {"mean_score": 0.9524}}}))
    text = studies.held_out_test(tmp_path)
    assert "scores 0.9512 (mean cPSNR 47.10 dB) on the 8 test scenes" in text and "NIR 0.9524" in text
    (tmp_path / "seeds.json").write_text(json.dumps(
        {"track": "challenge", "seeds": [2019, 1, 2], "models": {"misr_net": {
            "seeds": [1, 2, 2019], "challenge": {"mean_cpsnr": {"runs": 3, "mean": 48.7, "sd": 0.05},
                                                 "per_seed_cpsnr": {"1": 48.7, "2": 48.65, "2019": 48.75}},
            "ref": {"mean_cpsnr": {"runs": 3, "mean": 49.2, "sd": 0.04}}}}}))
    table = _table_after(studies.seeds(tmp_path), "**Training noise**").set_index("model")
    assert table.loc["misr_net", "dev, challenge (dB)"] == "48.70 ± 0.05" and table.loc["misr_net", "runs"] == "3"
    # Seeds: this run's seed must be this run's figure (metrics/misr_net.json), else the table is flagged stale.
    (tmp_path / "misr_net.json").write_text(json.dumps({"tracks": {"challenge": {"mean_cpsnr": 48.75}}}))
    assert "earlier run" not in studies.seeds(tmp_path, 2019)
    (tmp_path / "misr_net.json").write_text(json.dumps({"tracks": {"challenge": {"mean_cpsnr": 48.9}}}))
    assert "not this run's for `misr_net`): `make seeds`" in studies.seeds(tmp_path, 2019)
    # The paired findings quote the spread only where the study is this run's (the same check as the tables).
    seeds = json.loads((tmp_path / "seeds.json").read_text())
    seeds["models"]["srgan"] = seeds["models"]["misr_net"]
    fresh = conclusions_section.seed_noise("misr_net", "srgan", seeds, "challenge", lambda name: 0.05)
    assert "Trained with 3 and 3 seeds" in fresh and "sd 0.05 (`misr_net`)" in fresh
    stale = conclusions_section.seed_noise("misr_net", "srgan", seeds, "challenge", lambda name: None)
    assert stale == conclusions_section.STALE_SEEDS
    assert conclusions_section.seed_noise("misr_net", "srgan", None, "challenge") == conclusions_section.TRAINED_ONCE
    (tmp_path / "ablations.json").write_text(json.dumps(
        {"scenes": 24, "resamples": 10000, "true_shifts": True, "skipped_models": {},
         "factors": {"shift_and_add_shifts": {"model": "shift_and_add", "shipped": "registered", "variants": {
             "registered": {"label": "registered", "challenge": {"scenes": 24, "mean_cpsnr": 48.43}},
             "zero": {"label": "zero", "challenge": {"scenes": 24, "mean_cpsnr": 47.0, "vs_shipped": {
                 "mean": -1.43, "low": -1.6, "high": -1.2, "better": 1, "worse": 23, "sign_p": 1e-6,
                 "verdict": "registered better"}}}}}}}))
    table = _table_after(studies.ablations(tmp_path), "**`shift_and_add`: the shifts").set_index("variant")
    assert table.loc["zero", "challenge track"] == "47.00 (-1.43 [-1.60, -1.20], 1↑ 23↓)"
    assert table.loc["registered", "challenge track"] == "48.43 (shipped)" and table.loc["zero", "ref track"] == "—"
    # Ablations: the shipped variant must score as this run's model does, else the tables are flagged stale.
    (tmp_path / "shift_and_add.json").write_text(json.dumps({"tracks": {"challenge": {"mean_cpsnr": 48.431}}}))
    assert "earlier run" not in studies.ablations(tmp_path)
    (tmp_path / "shift_and_add.json").write_text(json.dumps({"tracks": {"challenge": {"mean_cpsnr": 48.1}}}))
    assert "not this run's for `shift_and_add`): `make ablations`" in studies.ablations(tmp_path)


def test_every_network_figure_carries_its_seed_spread(tmp_path: Path):
    """± sd of ``make seeds`` beside a network's figures in the main, both-tracks, real-scene and paired tables;
    none for a deterministic model, and none where the study was made from another run than this one."""
    from types import SimpleNamespace

    from probav.report.inputs import ReportInputs
    from probav.report.reference_section import tracks_table

    base = np.linspace(44.0, 48.0, 12)
    runs = [_run("baseline", "classical", base), _run("misr_net", "deep", base + 1.0)]
    for r in runs:
        r.metrics.update(track="challenge", scenes=12, beats_baseline=0.5, mean_cpsnr=float(r.table["cpsnr"].mean()),
                         tracks={t: {"mean_cpsnr": float(r.table["cpsnr"].mean()), "mean_score": 1.0}
                                 for t in ("challenge", "ref")})
    own = runs[1].metrics["mean_cpsnr"]
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "misr_net.json").write_text(json.dumps({"tracks": {"challenge": {"mean_cpsnr": 53.4}}}))
    seeds = {"models": {"misr_net": {
        "challenge": {"mean_cpsnr": {"sd": 0.021}, "per_seed_cpsnr": {"7": own, "1": own + 0.03}},
        "ref": {"mean_cpsnr": {"sd": 0.05}, "per_seed_cpsnr": {"7": own}},
        "real": {"challenge": {"mean_cpsnr": {"sd": 0.11}, "per_seed_cpsnr": {"7": 53.4}}}}}}
    report = ReportInputs({"seed": 7}, SimpleNamespace(metrics=tmp_path), None, "synthetic", None, None, None, None,
                          runs, "", seeds)
    assert report.seed_sd("misr_net", "challenge") == 0.021 and report.seed_sd("baseline", "challenge") is None
    assert report.seed_sd("misr_net", "challenge", "real") == 0.11
    header, rows = results_section.results_rows(runs, {}, report.seed_sd)
    table = pd.DataFrame(rows, columns=header).set_index("model")
    assert table.loc["**misr_net**", "mean cPSNR (dB)"] == f"{own:.2f} ± 0.02"   # the best, in bold
    assert table.loc["baseline", "mean cPSNR (dB)"] == f"{base.mean():.2f}"
    header, rows = tracks_table(runs, report.seed_sd)
    by_model = {row[0]: row for row in rows}
    assert by_model["misr_net"][3:5] == [f"{own:.2f} ± 0.02", f"{own:.2f} ± 0.05"]
    assert by_model["baseline"][3] == f"{base.mean():.2f}"
    text = conclusions_section.findings(runs, "synthetic", {"seed": 1}, seeds,
                                        lambda name: report.seed_sd(name, "challenge"))
    against = _table_after(text, "**Every model against the baseline**")
    assert against["seed sd, first / second (dB)"].tolist() == ["0.02 / —"]
    # A study of another run (its entry for this run's seed is not this run's figure): no spread is quoted.
    seeds["models"]["misr_net"]["challenge"]["per_seed_cpsnr"]["7"] = own + 0.5
    assert report.seed_sd("misr_net", "challenge") is None
    assert markdown.fmt_sd(1.234, None) == "1.23" and markdown.fmt_sd(0.5, 0.04, sign=True) == "+0.50 ± 0.04"


def test_next_steps_quote_the_gpu_estimate(tmp_path: Path):
    assert "`make gpu-estimate`" in conclusions_section.gpu_plan(tmp_path)
    (tmp_path / "gpu-estimate.json").write_text(json.dumps({"tflops": 25.0, "models": [
        {"model": "a", "parameters": 900_000, "steps": 90_000, "hours": 0.25, "hours_range": [0.2, 0.5]},
        {"model": "b", "parameters": 1_000_000, "steps": 90_000, "hours": 0.5, "hours_range": [0.3, 1.0]}],
        "prior": {"scenes": 1450, "cores": 16, "hours": 0.004}}))
    text = conclusions_section.gpu_plan(tmp_path)
    assert text.startswith("90,000 training steps per network, 0.90–1.00 M parameters")
    assert "2 networks at 0.8 h on one GPU in all at an assumed 25 TFLOP/s sustained (0.5–1.5 h" in text
    assert "`a` 0.25 h" in text and "1,450 scenes at 0.2 min on 16 CPU cores" in text


def test_tuning_is_read_when_present_and_named_when_not(tmp_path: Path):
    from probav.report import studies_section as studies

    assert studies.tuning(tmp_path).startswith("Not run in this pipeline: `make tune`")
    assert "\n" not in studies.tuning(tmp_path)                    # one line, no table

    def paired(mean, low, high, better, worse):
        return {"scenes": 10, "mean": mean, "low": low, "high": high, "better": better, "worse": worse,
                "sign_p": 0.02, "detectable": low > 0 or high < 0}

    (tmp_path / "tuning.json").write_text(json.dumps({
        "subset": "val", "track": "challenge", "scenes": 10, "bands": {"RED": 5, "NIR": 5}, "passes_run": 2,
        "converged": True,
        "configurations": 40, "resamples": 10000, "rule": "highest val mean cPSNR",
        "real": {"scenes": ["imgset0000"], "skipped": None},
        "joint": [["sharpen", "sharpen_sigma"]],
        "parameters": {
            "sharpen": {"shipped": 1.5, "selected": 3.0, "equals_shipped": False, "at_edge": True, "detectable": True,
                        "joint_with": ["sharpen_sigma"],
                        "val": {"challenge": {"shipped": 48.194, "selected": 48.243,
                                              "vs_shipped": paired(0.049, 0.03, 0.07, 9, 1)}},
                        "real": {"challenge": {"shipped": 53.25, "selected": 53.20}}},
            "max_frames": {"shipped": 12, "selected": 0, "equals_shipped": False, "detectable": False,
                           "val": {"challenge": {"shipped": 48.2, "selected": 48.21,
                                                 "vs_shipped": paired(0.01, -0.01, 0.03, 6, 4)}},
                           "real": {"challenge": {"shipped": 53.25, "selected": 53.25}}},
            "fusion": {"shipped": "upscale", "selected": "upscale", "equals_shipped": True, "detectable": False,
                       "val": {"challenge": {"shipped": 48.2, "selected": 48.2, "vs_shipped": None}},
                       "real": {"challenge": {"shipped": 53.25, "selected": 53.25}}}},
        "overall": {"changed": {"sharpen": {"shipped": 1.5, "selected": 3.0}},
                    "shipped": {"val": {"challenge": {"mean_cpsnr": 48.194}}, "real": {"challenge": 53.25}},
                    "selected": {"val": {"challenge": {"mean_cpsnr": 48.243,
                                                       "vs_shipped": paired(0.049, 0.03, 0.07, 9, 1)}},
                                 "real": {"challenge": 53.2}}}}))
    text = studies.tuning(tmp_path)
    table = _table_after(text, "selected on the 10 val scenes").set_index("setting")
    assert list(table.columns) == ["shipped", "val-selected", "val shipped", "val selected", "difference [95%]", "real"]
    assert table.loc["`sharpen` (with `sharpen_sigma`)"].tolist() == ["1.5", "3 (grid edge)", "48.194", "48.243",
                                               "+0.049 [+0.030, +0.070], 9↑ 1↓", "53.25 → 53.20 (-0.05)"]
    assert table.loc["`max_frames`", "val-selected"] == "0 (all)"
    assert table.loc["`max_frames`", "difference [95%]"].endswith(", n.s.")
    assert table.loc["`fusion`", "difference [95%]"] == "same value" and table.loc["`fusion`", "real"] == "53.25"
    assert "**All changes together** (`sharpen` 1.5 → 3)" in text and "(imgset0000)" in text
    assert "challenge track 48.194 → 48.243 dB" in text and "2 pass(es), 40 configurations, converged" in text
    assert "Swept together (every combination of their values: their effects are coupled): `sharpen` with " \
           "`sharpen_sigma`." in text
    # Made from other settings than params.yaml's: flagged stale, naming the setting.
    shipped_params = {"classical": {"shift_and_add": {"sharpen": 1.5, "max_frames": 12, "fusion": "upscale"}}}
    assert "earlier run" not in studies.tuning(tmp_path, shipped_params)
    shipped_params["classical"]["shift_and_add"]["sharpen"] = 4.0
    assert "not `params.yaml`'s for `sharpen`): `make tune`" in studies.tuning(tmp_path, shipped_params)
