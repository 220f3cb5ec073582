"""Section 4's effect of the settings: the frame-count sweep of ``shift_and_add`` (run by the report stage)
and the tables of ``dvc exp show``'s experiments."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from probav.data import stats as data_stats
from probav.report import figures
from probav.report.inputs import ModelRun, Options, Paths, ReportInputs, log
from probav.report.markdown import figure_md, fmt, md_table


def frame_sweep(runs: list[ModelRun], params: dict, paths: Paths, index: pd.DataFrame | None,
                options: Options) -> pd.DataFrame | None:
    """Mean score of shift_and_add (and the median) using only the clearest K frames, K swept, on a
    few dev scenes: the effect of the number of frames on the classical fusion."""
    by = {r.name: r for r in runs if r.ran}
    if options.sweep_scenes <= 0 or "shift_and_add" not in by or index is None:
        return None
    import copy

    from probav.metrics.scoring import scene_norm
    from probav.metrics.score import score, shifted_cpsnr
    from probav.models.registry import load_model
    from probav.scene import read_norm, read_scene

    table = by["shift_and_add"].table
    names = data_stats.sample_evenly(list(table.sort_values("scene")["scene"]), options.sweep_scenes)
    where = dict(zip(index["name"], index["path"]))
    norms = read_norm(paths.raw / "norm.csv") if (paths.raw / "norm.csv").is_file() else {}
    scenes = [read_scene(paths.raw / where[n], norm=norms.get(n)) for n in names if n in where]
    if not scenes:
        return None
    counts = sorted({k for k in (1, 2, 3, 5, 9, 15, 35) if k <= max(s.frames for s in scenes)})
    rows = []
    for k in counts:
        p = copy.deepcopy(params)
        cfg = p.setdefault("classical", {}).setdefault("shift_and_add", {})
        cfg["max_frames"] = k
        cfg["min_clearance"] = min(float(cfg.get("min_clearance", 0.6)), 0.6)
        model = load_model("shift_and_add", p)
        values = []
        for s in scenes:
            values.append(score(shifted_cpsnr(model.predict(s), s.hr, s.sm), scene_norm(s)))
        rows.append({"model": "shift_and_add", "frames": k, "score": float(np.mean(values))})
    out = pd.DataFrame(rows)
    out.attrs["scenes"] = len(scenes)
    return out


def experiments(repo: Path, options: Options) -> pd.DataFrame | None:
    """Experiments of ``dvc exp show --json`` as rows (experiment, params…, model, mean_score), or None."""
    if not options.experiments:
        return None
    try:
        done = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], cwd=repo,
                              capture_output=True, text=True, timeout=120,
                              env=dict(os.environ, DVC_NO_ANALYTICS="1"))
        data = json.loads(done.stdout) if done.returncode == 0 and done.stdout.strip() else None
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return parse_experiments(data)


def parse_experiments(data) -> pd.DataFrame | None:
    """Rows (experiment, model, mean_score, model.blocks, model.misr_base, input.frames, self_ensemble) from the JSON of
    ``dvc exp show --json``: the workspace, the commits and every experiment under them."""
    if not isinstance(data, list):
        return None
    rows = []

    def visit(entry):
        d = entry.get("data") or {}
        name = entry.get("name") or d.get("name") or str(entry.get("rev", ""))[:7]
        params = ((d.get("params") or {}).get("params.yaml") or {}).get("data") or {}
        metrics = d.get("metrics") or {}
        for path, content in metrics.items():
            m = (content or {}).get("data") or {}
            if isinstance(m, dict) and m.get("mean_score") is not None:
                rows.append({"experiment": name, "model": m.get("model", Path(path).stem),
                             "mean_score": m["mean_score"],
                             "model.blocks": (params.get("model") or {}).get("blocks"),
                             "model.misr_base": (params.get("model") or {}).get("misr_base"),
                             "input.frames": (params.get("input") or {}).get("frames"),
                             "self_ensemble": (params.get("model") or {}).get("self_ensemble",
                                                                              m.get("self_ensemble"))})
        for child in entry.get("experiments") or []:
            for run in child.get("revs") or [child]:
                visit(run)

    for entry in data:
        visit(entry)
    return pd.DataFrame(rows) if rows else None


SETTINGS = ("model.blocks", "model.misr_base", "input.frames", "self_ensemble")


def reference_settings(params: dict) -> dict:
    """This run's value of each setting the experiment tables vary (those ``params`` sets)."""
    model, inp = params.get("model") or {}, params.get("input") or {}
    values = {"model.blocks": model.get("blocks"), "model.misr_base": model.get("misr_base"),
              "input.frames": inp.get("frames"), "self_ensemble": model.get("self_ensemble")}
    return {k: v for k, v in values.items() if v is not None}


def one_factor(exps: pd.DataFrame, column: str, reference: dict) -> pd.DataFrame:
    """The experiments that vary ``column`` alone: every other setting equal to ``reference``'s value (an
    experiment that does not record one of them is left out)."""
    keep = exps[column].notna()
    for other, value in reference.items():
        if other != column and other in exps:
            keep &= exps[other].map(lambda v, value=value: same_setting(v, value))
    return exps[keep]


def same_setting(a, b) -> bool:
    """Equal as numbers where both are (4 and 4.0: a column with gaps turns ints into floats), else as text."""
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def cell(mean: float, count) -> str:
    if count != count or not count:   # NaN or 0: no experiment with this value
        return "—"
    return fmt(mean, 4) + (f" (mean of {int(count)})" if count > 1 else "")


def effects_section(runs, params, paths, index, options) -> str:
    parts = []
    sweep = None
    try:
        sweep = frame_sweep(runs, params, paths, index, options)
    except Exception as err:  # noqa: BLE001
        log(f"frame sweep failed: {err}", options)
    if sweep is not None and len(sweep) >= 2:
        n = int(sweep.attrs.get("scenes", options.sweep_scenes))
        setting = ((params.get("classical") or {}).get("shift_and_add") or {}).get("max_frames")
        out = figures.effect(sweep, "frames", paths.figures / "effect_frames.png",
                             "frames used (the clearest K, at most the scene's)",
                             f"shift_and_add on {n} dev scene{'s' if n != 1 else ''}: score against frames used",
                             marker=setting)
        best_k = sweep.loc[sweep["score"].idxmin()]
        parts.append(f"**Number of frames.** `shift_and_add` run again by this stage on {n} dev "
                     f"scene{'s' if n != 1 else ''}, keeping "
                     "only the clearest K frames (`classical.shift_and_add.max_frames` = K; this run's setting "
                     f"is {setting if setting is not None else 'the default'}):\n\n"
                     + figure_md(out, paths.out.parent, "score against frames")
                     + f"\n\nOn these scenes the best K is {int(best_k['frames'])} (mean score "
                       f"{fmt(best_k['score'], 4)}); with K = 1 (the clearest frame alone, upscaled and sharpened) "
                       f"the score is {fmt(sweep.iloc[0]['score'], 4)}.")
    else:
        parts.append("**Number of frames.** No frame-count sweep in this run (it needs `shift_and_add`'s metrics).")
    exps = None
    try:
        exps = experiments(paths.repo, options)
    except Exception as err:  # noqa: BLE001
        log(f"dvc exp show failed: {err}", options)
    deep = set(params.get("deep_models") or [])
    tables = []
    if exps is not None and not exps.empty:
        # The models that read each setting (classical models read none of them but self_ensemble's).
        readers = {"model.blocks": deep, "model.misr_base": {"misr_net"}, "input.frames": deep}
        reference = reference_settings(params)
        for column in SETTINGS:
            if column not in exps:
                continue
            rows = one_factor(exps, column, reference)
            if column in readers:
                rows = rows[rows["model"].isin(readers[column])]
            if rows.empty or rows[column].astype(str).nunique() < 2:
                continue
            grouped = rows.groupby(["model", column])["mean_score"]
            means, counts = grouped.mean().unstack(column), grouped.size().unstack(column)
            header = ["model"] + [f"{column} = {v}" for v in means.columns]
            body = [[name] + [cell(m, n) for m, n in zip(means.loc[name], counts.loc[name])] for name in means.index]
            fixed = ", ".join(f"{k} = {v}" for k, v in reference.items() if k != column) or "none recorded"
            tables.append(f"**{column}** (mean score per model and value, from `dvc exp show`; only the experiments "
                          f"whose other settings are this run's: {fixed})\n\n" + md_table(header, body))
    if tables:
        parts += tables
    else:
        parts.append("**`model.blocks`, `input.frames`, self-ensemble.** "
                     + ("`dvc exp show` found no experiments that vary them"
                        if options.experiments else "Experiments were not read (`--no-experiments`)")
                     + ", so their effect is not measured here. Run for example `dvc exp run -S model.blocks=8` "
                       "and `dvc exp run -S input.frames=16`, then rebuild the report (`dvc repro report`).")
    return "\n\n".join(parts)


def fill(report: ReportInputs) -> dict[str, str]:
    return {"effects": effects_section(report.runs, report.params, report.paths, report.index, report.options)}
