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
        for column in ("model.blocks", "model.misr_base", "input.frames", "self_ensemble"):
            if column not in exps:
                continue
            rows = exps.dropna(subset=[column])
            if column in readers:
                rows = rows[rows["model"].isin(readers[column])]
            if rows.empty or rows[column].astype(str).nunique() < 2:
                continue
            pivot = rows.groupby(["model", column])["mean_score"].min().unstack(column)
            header = ["model"] + [f"{column} = {v}" for v in pivot.columns]
            body = [[name] + [fmt(v, 4) for v in values] for name, values in zip(pivot.index, pivot.to_numpy())]
            tables.append(f"**{column}** (best mean score per model and value, from `dvc exp show`)\n\n"
                          + md_table(header, body))
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
