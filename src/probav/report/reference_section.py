"""The report's section on the reference frame (the LR frame taken on the HR's pass) and the two tracks.

Numbers come from ``metrics/reference.json`` and ``metrics/scenes/reference.csv`` (the ``reference``
stage: the estimator, its accuracy on dev, the reference frame's margin over the next-best single frame),
from every model's ``tracks`` in ``metrics/<model>.json`` and its per-scene table (``cpsnr_challenge``,
``cpsnr_ref``), and from the real scenes with an HR and a PROBA-V-REF label, when present beside the
repository (scored here: single frames, and the classical models in both tracks).
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from probav.report.figures import _save, model_colours  # noqa: E402

REAL_MODELS = ("baseline", "shift_and_add")   # classical: scored on the real scenes here without training


def real_labelled_scenes(real_root: Path | None, labels_path: Path | None) -> list:
    """The real scenes with an HR and a label (e.g. imgset0000 of probav-mini with PROBA-V-REF's labels)."""
    from probav.data.reference_labels import read_labels
    from probav.scene import read_norm, read_scene, scene_dirs

    if real_root is None or labels_path is None or not labels_path.is_file():
        return []
    labels = read_labels(labels_path)
    norms = read_norm(real_root / "norm.csv") if (real_root / "norm.csv").is_file() else {}
    scenes = []
    for folder in scene_dirs(real_root, "train"):
        if folder.name in labels and (folder / "HR.png").is_file():
            scene = read_scene(folder, norm=norms.get(folder.name))
            scene.reference = scene.frame_index(labels[folder.name][1])
            scenes.append(scene)
    return scenes


def score_real(scenes: list, params: dict, estimator) -> pd.DataFrame:
    """Per real scene: the reference frame alone and the next-best frame (bicubic ×3), and each classical
    model of ``REAL_MODELS`` in both tracks (cPSNR, dB)."""
    from probav.evaluate import evaluate_scene
    from probav.models.registry import load_model
    from probav.reference import single_frame_cpsnr

    rows = []
    for scene in scenes:
        single = single_frame_cpsnr(scene)
        others = np.delete(single, scene.reference)
        row = {"scene": scene.name, "band": scene.band, "frames": scene.frames,
               "reference": int(scene.ids[scene.reference]), "reference_frame": float(single[scene.reference]),
               "next_best_frame": float(others.max()), "margin": float(single[scene.reference] - others.max())}
        p = estimator.probabilities(scene)
        row["estimated"] = int(scene.ids[int(np.argmax(p))])
        row["rank"] = int((p > p[scene.reference]).sum()) + 1
        for name in REAL_MODELS:
            result = evaluate_scene(load_model(name, params), scene, estimator)
            row[f"{name}_challenge"], row[f"{name}_ref"] = result["cpsnr_challenge"], result["cpsnr_ref"]
        rows.append(row)
    return pd.DataFrame(rows)


def sim_and_real(metrics: dict) -> str:
    """The estimator on the simulator's dev scenes (with and without masks) beside the labelled real scenes
    (``metrics/reference.json``'s ``dev`` and ``real``), and each feature alone on both."""
    from probav.report.build import fmt, md_table
    from probav.reference import FEATURES

    dev, real = metrics.get("dev") or {}, metrics.get("real") or {}
    if real.get("skipped") or not real:
        return f"The estimator was not measured on real scenes in this run ({real.get('skipped', 'no real material')})."
    pct = lambda v: f"{100 * v:.0f} %" if v is not None else "–"  # noqa: E731
    rows = []
    if dev:
        rows.append([f"simulator, dev ({dev['scenes']} scenes)", pct(dev["top1"]), pct(dev["top3"]),
                     fmt(dev["mean_probability"], 2), pct(dev.get("chance_top1"))])
        if dev.get("unmasked"):
            u = dev["unmasked"]
            rows.append(["simulator, dev, QMs and SM withheld", pct(u["top1"]), pct(u["top3"]),
                         fmt(u["mean_probability"], 2), pct(dev.get("chance_top1"))])
    masked = real["scenes"] - real.get("without_masks", 0)
    rows.append([f"real, PROBA-V-REF labels ({real['scenes']} scenes: {masked} with QMs, "
                 f"{real.get('without_masks', 0)} LR frames only)", pct(real["top1"]), pct(real["top3"]),
                 fmt(real["mean_probability"], 2), pct(real.get("chance_top1"))])
    text = ("**The estimator on the simulator and on real scenes** (`metrics/reference.json`, per real scene "
            "`metrics/real/scenes/reference.csv`; fitted on the simulator's train split only, so the real scenes "
            "are unseen; chance = the mean of 1/frames):\n\n"
            + md_table(["scenes", "top-1", "top-3", "mean probability of the true frame", "chance top-1"], rows))
    if dev.get("feature_top1") and real.get("feature_top1"):
        text += ("\n\nEach feature alone (share of scenes whose reference it ranks first, ties shared):\n\n"
                 + md_table(["scenes"] + [f"`{f}`" for f in FEATURES],
                            [["simulator, dev"] + [pct(dev["feature_top1"].get(f)) for f in FEATURES],
                             ["real"] + [pct(real["feature_top1"].get(f)) for f in FEATURES]]))
    n = real["scenes"]
    text += (f"\n\nWith {n} real scenes, one more or one fewer found moves top-1 by {100 / n:.0f} points: the real "
             f"figure says whether the estimator finds real references at all, not how well to a few points. Most "
             f"real scenes here have no QM and no SM, so the like-for-like simulator row is the one with them "
             f"withheld.")
    return text


def tracks_table(runs, seed_sd=None) -> tuple[list[str], list[list[str]]]:
    """Per scored model: mean score and cPSNR in both tracks (± the seed sd where ``seed_sd(model, track)`` has
    one), and what estimating the reference costs."""
    from probav.report.build import fmt
    from probav.report.markdown import fmt_sd

    seed_sd = seed_sd or (lambda model, track: None)
    header = ["model", "score, challenge ↓", "score, ref ↓", "cPSNR challenge (dB)", "cPSNR ref (dB)",
              "cost of estimating (dB)", "scenes below baseline (challenge)", "worst vs baseline (dB)"]
    rows = []
    ran = sorted([r for r in runs if r.ran and (r.metrics.get("tracks") or {}).get("challenge")],
                 key=lambda r: r.metrics["tracks"]["challenge"]["mean_score"])
    for r in ran:
        tracks, table = r.metrics["tracks"], r.table
        ch, ref = tracks.get("challenge") or {}, tracks.get("ref") or {}
        cost = worst = below = None
        if table is not None and "cpsnr_challenge" in table:
            both = table["cpsnr_ref"].notna()
            if both.any():
                cost = float((table.loc[both, "cpsnr_ref"] - table.loc[both, "cpsnr_challenge"]).mean())
            gap = table["cpsnr_challenge"] - table["norm"]
            worst, below = float(gap.min()), int((gap < 0).sum())
        rows.append([r.name, fmt(ch.get("mean_score"), 4), fmt(ref.get("mean_score"), 4),
                     fmt_sd(ch.get("mean_cpsnr"), seed_sd(r.name, "challenge")),
                     fmt_sd(ref.get("mean_cpsnr"), seed_sd(r.name, "ref")), fmt(cost, 2),
                     "n/a" if below is None else f"{below} of {len(table)}", fmt(worst, 2)])
    return header, rows


def figure(reference_table: pd.DataFrame | None, real: pd.DataFrame, runs, path: Path) -> Path | None:
    """Left: the reference frame's margin over the next-best single frame, dev scenes (synthetic) and the
    real scenes. Right: per dev scene, cPSNR given the reference against estimated, per model."""
    with_tracks = [r for r in runs if r.ran and r.table is not None and "cpsnr_ref" in r.table
                   and r.table["cpsnr_ref"].notna().any()]
    if (reference_table is None or reference_table.empty) and not with_tracks:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    if reference_table is not None and reference_table["margin"].notna().any():
        margins = reference_table["margin"].dropna()
        ax.hist(margins, bins=np.arange(np.floor(margins.min()), np.ceil(margins.max()) + 0.25, 0.25),
                color="#7f8c8d", label=f"this run's dev scenes ({len(margins)})")
    for _, row in real.iterrows():
        ax.axvline(row["margin"], color="#c0392b", lw=2, label=f"real {row['scene']} ({row['margin']:.2f} dB)")
    ax.set_xlabel("reference frame alone − next-best frame alone (dB, bicubic ×3)")
    ax.set_ylabel("scenes")
    ax.set_title("How far the frame of the HR's pass beats the others")
    ax.legend(loc="upper right")
    ax = axes[1]
    colours = model_colours([r.name for r in with_tracks])
    lo, hi = np.inf, -np.inf
    for r in with_tracks:
        t = r.table[r.table["cpsnr_ref"].notna()]
        ax.scatter(t["cpsnr_ref"], t["cpsnr_challenge"], s=14, color=colours[r.name], label=r.name, alpha=0.8)
        lo, hi = min(lo, t["cpsnr_ref"].min(), t["cpsnr_challenge"].min()), max(hi, t["cpsnr_ref"].max())
    if np.isfinite(lo):
        ax.plot([lo, hi], [lo, hi], color="black", lw=0.8, ls="--")
    ax.set_xlabel("cPSNR, reference given (dB)")
    ax.set_ylabel("cPSNR, reference estimated (dB)")
    ax.set_title("Per dev scene: what estimating the reference costs")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def reference_section(params: dict, paths, runs, real_root: Path | None, real_labels: Path | None,
                      out_dir: Path, seed_sd=None) -> str:
    """The section's Markdown: the estimator, the margin, the two tracks, and the real scenes."""
    from probav.data.reference_labels import reference_settings
    from probav.report.build import figure_md, fmt, md_table
    from probav.reference import ReferenceEstimator

    metrics_path = paths.metrics / "reference.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
    table_path = paths.tables / "reference.csv"
    table = pd.read_csv(table_path, dtype={"scene": str}) if table_path.is_file() else None
    estimator_path = paths.models / "reference" / "estimator.json"
    estimator = ReferenceEstimator.load(estimator_path) if estimator_path.is_file() else ReferenceEstimator.rule()
    track = reference_settings(params)["track"]
    parts = [f"Headline track of this run: **{track}** (`reference.track`); every table and figure of section 4 "
             f"shows it, and both tracks are scored wherever a scene has a label."]

    if metrics is None or not metrics.get("dev"):
        parts.append("The reference stage measured nothing in this run (no labelled dev scene, or "
                     "`metrics/reference.json` is missing).")
    else:
        dev, single = metrics["dev"], metrics.get("single_frame") or {}
        margin = single.get("margin_db") or {}
        rows = [[f"{metrics['estimator']} ({metrics['train_scenes']} labelled train scenes)" if metrics["estimator"] ==
                 "fitted" else "hand-set rule", f"{100 * dev['top1']:.0f} %", f"{100 * dev['top3']:.0f} %",
                 fmt(dev["mean_probability"], 2)]]
        if metrics["estimator"] == "fitted":
            rule = dev["rule"]
            rows.append(["hand-set rule (for comparison)", f"{100 * rule['top1']:.0f} %", f"{100 * rule['top3']:.0f} %",
                         fmt(rule["mean_probability"], 2)])
        parts.append(f"**The estimator on the {dev['scenes']} labelled dev scenes** (`metrics/reference.json`; the "
                     f"weights are in `models/reference/estimator.json`):\n\n"
                     + md_table(["estimator", "top-1", "top-3", "mean probability of the true frame"], rows))
        weights = ", ".join(f"`{k}` {v:+.2f}" for k, v in metrics["weights"].items())
        parts.append(f"Weights of the estimator per feature unit: {weights}.")
        if single.get("mistakes"):
            parts.append(f"Its {single['mistakes']} wrong picks cost {fmt(single.get('mistake_cost_db'), 2)} dB on "
                         f"average, frame alone against frame alone; the fusion's cost of them is the gap between "
                         f"the two tracks below.")
        if margin:
            parts.append(f"**The reference frame's margin** over the next-best single frame (bicubic ×3 of one frame, "
                         f"official cPSNR) on the dev scenes: median {fmt(margin.get('median'), 2)} dB, 10th–90th "
                         f"percentile {fmt(margin.get('p10'), 2)}–{fmt(margin.get('p90'), 2)} dB, range "
                         f"{fmt(margin.get('min'), 2)}–{fmt(margin.get('max'), 2)} dB.")

    if metrics is not None:
        parts.append(sim_and_real(metrics))
    real_scenes = real_labelled_scenes(real_root, real_labels)
    real = score_real(real_scenes, params, estimator) if real_scenes else pd.DataFrame()
    if not real.empty:
        rows = [[f"{r['scene']} ({r['band']}, {r['frames']} frames)", f"LR{r['reference']:03d}",
                 fmt(r["reference_frame"], 2), fmt(r["next_best_frame"], 2), fmt(r["margin"], 2),
                 f"LR{r['estimated']:03d} (true frame ranked {r['rank']})"]
                + [f"{fmt(r[f'{m}_challenge'], 2)} / {fmt(r[f'{m}_ref'], 2)}" for m in REAL_MODELS]
                for _, r in real.iterrows()]
        parts.append("**On the real scenes with an HR and a PROBA-V-REF label** (scored by the report stage from "
                     f"`{real_root}`; cPSNR in dB, challenge / ref track):\n\n"
                     + md_table(["scene", "reference", "it alone", "next-best frame", "margin", "estimated"]
                                + [f"{m} (challenge / ref)" for m in REAL_MODELS], rows))
    elif real_root is None:
        parts.append("The real sample is not beside the repository: no real scene scored here.")

    header, rows = tracks_table(runs, seed_sd)
    if rows:
        from probav.report.markdown import SD_NOTE

        spread = any("±" in cell for row in rows for cell in row)
        parts.append("**Both tracks, every model** (dev scenes; cost of estimating = mean over the labelled scenes of "
                     "cPSNR given the reference minus cPSNR estimated; worst vs baseline = the challenge track's "
                     "lowest cPSNR minus the scene's baseline cPSNR" + (f"; {SD_NOTE}" if spread else "") + "):\n\n"
                     + md_table(header, rows, ["l"] + ["r"] * (len(header) - 1)))
    out = figure(table, real, runs, paths.figures / "reference_tracks.png")
    if out is not None:
        parts.append(figure_md(out, out_dir, "reference frame and tracks",
                               "Left: the reference frame's margin over the next-best single frame (grey: this run's "
                               "dev scenes; red: real scenes). Right: each dev scene's cPSNR with the reference given "
                               "(x) and estimated (y); below the diagonal, estimating it cost something."))
    return "\n\n".join(parts)
