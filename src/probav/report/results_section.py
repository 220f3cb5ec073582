"""Section 4's main results: the table of every model's scores, the sentences on the best model, and the
per-scene figures (box plot, score against clearance and frames)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from probav.report import figures
from probav.report.inputs import ModelRun, ReportInputs
from probav.report.markdown import SD_NOTE, figure_md, fmt, fmt_int, fmt_sd, fmt_seconds, fmt_sig, md_table


def _other_track(metrics: dict) -> tuple[str, float | None]:
    """The track that is not the headline one, and its mean score (None where it was not scored)."""
    other = "ref" if metrics.get("track", "challenge") == "challenge" else "challenge"
    return other, ((metrics.get("tracks") or {}).get(other) or {}).get("mean_score")


def bench_inference_ms(bench_json: Path) -> dict[str, float]:
    """Per model, the median milliseconds of one scene's prediction in the last ``make bench``
    (``metrics/bench.json``; empty where there is none)."""
    try:
        models = json.loads(bench_json.read_text()).get("models") or {}
    except (OSError, ValueError):
        return {}
    out = {}
    for name, entry in models.items():
        ms = (((entry or {}).get("inference") or {}).get("ms_per_scene") or {}).get("median")
        if isinstance(ms, (int, float)):
            out[name] = float(ms)
    return out


def reads_reference(run: ModelRun) -> bool:
    """Whether the model was given an estimated reference frame (its per-scene table records one)."""
    return "estimated" in run.table and bool(run.table["estimated"].notna().any())


def results_rows(runs: list[ModelRun], bench_ms: dict[str, float] | None = None,
                 seed_sd=None) -> tuple[list[str], list[list[str]]]:
    """The main table; ``seed_sd(model, track)`` gives a network's seed-to-seed sd of mean cPSNR (or None)."""
    ran = sorted([r for r in runs if r.ran], key=lambda r: r.metrics["mean_score"])
    track = ran[0].metrics.get("track", "challenge") if ran else "challenge"
    other = "ref" if track == "challenge" else "challenge"
    header = ["model", "kind", f"mean score, {track} ↓", f"mean score, {other}", "cPSNR RED (dB)", "cPSNR NIR (dB)",
              "mean cPSNR (dB)", "scenes better than baseline", "parameters", "training time",
              "prediction (ms/scene, bench)", "evaluate stage (s/scene)"]
    bench_ms = bench_ms or {}
    rows = []
    for r in ran:
        m = r.metrics
        bands = m.get("bands") or {}
        seconds = m.get("seconds")
        per_scene = seconds / m["scenes"] if seconds is not None and m.get("scenes") else None
        rows.append([f"**{r.name}**" if r is ran[0] else r.name, r.kind, fmt(m["mean_score"], 4),
                     fmt(_other_track(m)[1], 4),
                     fmt((bands.get("RED") or {}).get("mean_cpsnr"), 2), fmt((bands.get("NIR") or {}).get("mean_cpsnr"), 2),
                     fmt_sd(m.get("mean_cpsnr"), seed_sd(r.name, track) if seed_sd else None),
                     fmt(100 * m["beats_baseline"], 0, " %") if m.get("beats_baseline") is not None else "n/a",
                     fmt_int(r.parameters) if r.parameters is not None else "n/a",
                     fmt_seconds(r.training.get("seconds")) if r.kind == "deep" else "—",
                     fmt_sig(bench_ms.get(r.name)), fmt_sig(per_scene)])
    for r in runs:
        if not r.ran and (r.in_params or r.in_registry):
            rows.append([r.name, r.kind, "not run", "—", "—", "—", "—", "—",
                         fmt_int(r.parameters) if r.parameters else "—", "—", "—", "—"])
    return header, rows


def results_text(runs: list[ModelRun], bench_ms: dict[str, float] | None = None, with_sd: bool = False) -> str:
    ran = sorted([r for r in runs if r.ran], key=lambda r: r.metrics["mean_score"])
    if not ran:
        return "No model has metrics yet: run `dvc repro`."
    best = ran[0]
    m = best.metrics
    text = (f"The best model on the {m.get('scenes')} dev scenes is **{best.name}**, with a mean score of "
            f"{fmt(m['mean_score'], 4)} ({fmt(100 * (1 - m['mean_score']), 2)}% "
            f"{'better' if m['mean_score'] < 1 else 'worse'} than the baseline's 1 by the official formula) and a mean "
            f"cPSNR of {fmt(m.get('mean_cpsnr'), 2)} dB.")
    bands = m.get("bands") or {}
    if {"RED", "NIR"} <= set(bands):
        red, nir = bands["RED"].get("mean_cpsnr"), bands["NIR"].get("mean_cpsnr")
        if red is not None and nir is not None:
            text += (f" Its cPSNR is {fmt(abs(red - nir), 2)} dB {'higher' if red > nir else 'lower'} on RED than on "
                     f"NIR scenes (the baseline's norms differ by band too, which the score divides out).")
    not_run = [r.name for r in runs if not r.ran and r.in_params]
    if not_run:
        text += f" Not run in this pipeline: {', '.join(f'`{n}`' for n in not_run)}."
    text += (f" Columns: mean score = mean over dev scenes of norm / cPSNR (the official submission score, lower "
             f"is better) in the headline track ({m.get('track', 'challenge')}: "
             f"{'reference estimated' if m.get('track', 'challenge') == 'challenge' else 'reference given'}) and in "
             f"the other; cPSNR per band = mean of the scenes' best-of-49-shifts cPSNR"
             + (f" ({SD_NOTE})" if with_sd else "") + "; scenes better than "
             "baseline = share of scenes with a score below 1; training time from `models/<name>/training.json`; ")
    text += ("prediction = the median time of one scene's prediction in the last `make bench` (`metrics/bench.json`, "
             "warmed up and repeated: the *Speed* table's figure); " if bench_ms else
             "prediction: no `make bench` in this run (`metrics/bench.json` is missing); ")
    readers = [r.name for r in ran if reads_reference(r)]
    text += ("evaluate stage = seconds per scene measured by the evaluate stage (`metrics/<name>.json`), which "
             "includes each model's first call (imports, TensorFlow tracing)"
             + (f" and, for the models given the reference frame ({', '.join(f'`{n}`' for n in readers)}), "
                f"estimating it in the challenge track" if readers else "")
             + ".")
    return text


SIGNIFICANCE = 0.05   # a correlation is described only where its p-value is below this


def spearman(x, y) -> tuple[float, float]:
    """Spearman's ρ of two columns and its two-sided p-value (scipy; NaN where undefined)."""
    from scipy.stats import spearmanr

    result = spearmanr(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    return float(result.statistic), float(result.pvalue)


def correlation_phrase(what: str, more: str, rho: float, p: float, scenes: int) -> str:
    """One correlation in words: no detectable correlation where p ≥ ``SIGNIFICANCE``, else its direction."""
    stats = f"Spearman ρ = {rho:+.2f}, p = {p:.2g}, {scenes} scenes"
    if not p < SIGNIFICANCE:
        return f"no detectable correlation with {what} ({stats})"
    direction = "better (lower)" if rho < 0 else "worse (higher)"
    return f"a correlation with {what} ({stats}: {more} get {direction} scores)"


def against_text(runs: list[ModelRun]) -> str:
    ran = sorted([r for r in runs if r.ran], key=lambda r: r.metrics["mean_score"])
    if not ran:
        return ""
    best = ran[0]
    t = best.table
    phrases = []
    for column, what, more in (("clearance", "the mean clearance of the frames", "clearer scenes"),
                               ("frames", "the number of frames", "scenes with more frames")):
        if column in t and t[column].nunique() > 2 and len(t) >= 8:
            rho, p = spearman(t[column], t["score"])
            if np.isfinite(rho) and np.isfinite(p):
                phrases.append(correlation_phrase(what, more, rho, p, len(t)))
    if not phrases:
        return ""
    return (f"Over the {len(t)} dev scenes of `{best.name}`, the score shows " + " and ".join(phrases)
            + f" (a correlation is described where p < {SIGNIFICANCE}). Scene difficulty also varies with the land "
              "cover and the change between dates, which no column of the table records.")


def fill(report: ReportInputs) -> dict[str, str]:
    runs, ran, out_dir, figures_dir = report.runs, report.ran, report.out_dir, report.paths.figures
    bench_ms = bench_inference_ms(report.paths.metrics / "bench.json")
    header, rows = results_rows(runs, bench_ms, report.seed_sd)
    with_sd = any(report.seed_sd(r.name, r.metrics.get("track", "challenge")) is not None for r in ran)
    out = {"results_table": md_table(header, rows, ["l", "l"] + ["r"] * (len(header) - 2)),
           "results_text": results_text(runs, bench_ms, with_sd)}
    if ran:
        tables = {r.name: r.table for r in ran}
        box = figures.score_slopes(tables, figures_dir / "results_scores.png")
        out["fig_scores"] = figure_md(box, out_dir, "score per scene", figures.SLOPES_CAPTION)
        path = figures.score_against(tables, ran[0].name, figures_dir / "results_against.png")
        out["fig_against"] = figure_md(path, out_dir, "score against clearance and frames", figures.AGAINST_CAPTION)
        out["against_text"] = against_text(runs)
    else:
        out["fig_scores"] = "No model has been scored yet."
        out["fig_against"] = out["against_text"] = ""
    return out
