"""The report's section on real scenes: every model scored on the real scenes with an HR (the
``evaluate_real`` stages: ``metrics/real/<model>.json`` and ``metrics/real/scenes/<model>.csv``) beside its
dev score (the sim-to-real gap), and the no-HR quality check (``make nohr``: ``metrics/nohr.json``), its
validation and its values on the real scenes without an HR."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from probav.report.figures import _save  # noqa: E402


def load_real(paths, names: list[str]) -> tuple[dict, dict]:
    """``{model: metrics}`` and ``{model: per-scene table}`` of the real scenes (missing ones left out)."""
    metrics, tables = {}, {}
    for name in names:
        path = paths.metrics / "real" / f"{name}.json"
        if path.is_file():
            metrics[name] = json.loads(path.read_text())
            table = paths.metrics / "real" / "scenes" / f"{name}.csv"
            if table.is_file():
                tables[name] = pd.read_csv(table, dtype={"scene": str})
    return metrics, tables


def baseline_cpsnr(tables: dict) -> pd.Series | None:
    """Per real scene, the cPSNR of this project's baseline model (what every model is compared with; the
    official ``norm.csv`` value differs from it by the reimplementation's offset, about 0.15 dB on
    imgset0000), or None where the baseline was not scored."""
    table = tables.get("baseline")
    if table is None or table.empty:
        return None
    return table.set_index("scene")["cpsnr_challenge"]


def _gain(table: pd.DataFrame, column: str, base: pd.Series | None) -> pd.Series:
    reference = table["norm"] if base is None else table["scene"].map(base).fillna(table["norm"])
    return table[column] - reference


def gains(tables: dict, dev_tables: dict) -> pd.DataFrame:
    """Per model and track: the mean cPSNR gain over the baseline (on real scenes the baseline model's
    cPSNR; on dev scenes the norm, which is that same baseline's cPSNR) and how many real scenes it beats
    the baseline on."""
    rows = []
    base = baseline_cpsnr(tables)
    for name, table in tables.items():
        if table.empty:
            continue
        dev = dev_tables.get(name)
        for track in ("challenge", "ref"):
            real = _gain(table, f"cpsnr_{track}", base)
            if real.isna().all():
                continue
            row = {"model": name, "track": track, "real_scenes": int(real.notna().sum()),
                   "real_gain": float(real.mean()), "real_better": int((real > 0).sum()),
                   "dev_gain": None}
            if dev is not None and f"cpsnr_{track}" in dev:
                row["dev_gain"] = float((dev[f"cpsnr_{track}"] - dev["norm"]).mean())
            rows.append(row)
    return pd.DataFrame(rows)


def figure(tables: dict, path: Path) -> Path | None:
    """Per real scene and model: cPSNR minus the baseline's on that scene, both tracks."""
    scored = {n: t for n, t in tables.items() if not t.empty and n != "baseline"}
    if not scored:
        return None
    base = baseline_cpsnr(tables)
    scenes = sorted({s for t in scored.values() for s in t["scene"]})
    names = sorted(scored, key=lambda n: -float(_gain(scored[n], "cpsnr_challenge", base).mean()))
    fig, axes = plt.subplots(1, len(scenes), figsize=(max(6.0, 4.2 * len(scenes)), 3.8), squeeze=False)
    for ax, scene in zip(axes[0], scenes):
        y = np.arange(len(names))
        for offset, track, colour in ((-0.2, "challenge", "#2c7fb8"), (0.2, "ref", "#d95f0e")):
            values = []
            for n in names:
                row = scored[n][scored[n]["scene"] == scene]
                values.append(float(_gain(row, f"cpsnr_{track}", base).iloc[0]) if len(row) else np.nan)
            ax.barh(y + offset, values, height=0.38, color=colour, label=f"{track} track")
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(y, names)
        ax.invert_yaxis()
        ax.set_xlabel("cPSNR − the baseline's (dB)")
        ax.set_title(f"real {scene}")
        ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def real_results(paths, runs, out_dir: Path, source: str, seed_sd=None) -> str:
    """The section's Markdown; ``seed_sd(model, track, where)`` gives a network's seed-to-seed sd of mean cPSNR
    on ``dev`` or ``real`` scenes (``make seeds``), quoted after its gain."""
    from probav.report.markdown import SD_NOTE, figure_md, fmt_sd, md_table

    seed_sd = seed_sd or (lambda model, track, where="dev": None)
    names = [r.name for r in runs if r.in_params or r.ran]
    metrics, tables = load_real(paths, names)
    parts = []
    if not metrics:
        parts.append("No model was scored on real scenes in this run (`metrics/real/` is empty: the "
                     "`evaluate_real` stages did not run).")
    else:
        skipped = {n: m["skipped"] for n, m in metrics.items() if m.get("skipped")}
        if len(skipped) == len(metrics):
            parts.append(f"Real scenes: skipped in this run ({next(iter(skipped.values()))}).")
        else:
            first = next(m for m in metrics.values() if not m.get("skipped"))
            dev_tables = {r.name: r.table for r in runs if r.ran and r.table is not None}
            table = gains(tables, dev_tables)
            base = baseline_cpsnr(tables)
            offset = ""
            if base is not None:
                norm = tables["baseline"].set_index("scene")["norm"]
                offset = (" The baseline reimplemented here scores "
                          + ", ".join(f"{s} {base[s] - norm[s]:+.2f} dB" for s in base.index)
                          + " against the official `norm.csv` value (PROBAV.md: reimplementations land within a few "
                            "tenths of a dB of it).")
            parts.append(f"Every model, trained and tuned on {source} data, scored on the {first['scenes']} real "
                         f"scene(s) with an HR in `{first.get('folder')}` exactly as on the dev split "
                         f"(`metrics/real/`); the gain is the cPSNR over the baseline's on the same scene, in dB."
                         + offset)
            rows = []
            for name in table.sort_values("real_gain", ascending=False)["model"].unique():
                row = [name]
                for track in ("challenge", "ref"):
                    hit = table[(table["model"] == name) & (table["track"] == track)]
                    if hit.empty:
                        row += ["n/a", "n/a"]
                        continue
                    h = hit.iloc[0]
                    real_gain = fmt_sd(h["real_gain"], seed_sd(name, track, "real"), sign=True)
                    row += [f"{real_gain} ({h['real_better']} of {h['real_scenes']} better)",
                            fmt_sd(h["dev_gain"], seed_sd(name, track, "dev"), sign=True)]
                rows.append(row)
            parts.append(md_table(["model", "real, challenge (dB)", f"{source} dev, challenge (dB)", "real, ref (dB)",
                                   f"{source} dev, ref (dB)"], rows, ["l", "r", "r", "r", "r"]))
            if any("±" in cell for row in rows for cell in row):
                parts.append(f"({SD_NOTE}; the baseline the gains are taken against is deterministic too.)")
            challenge = table[(table["track"] == "challenge") & (table["model"] != "baseline")].set_index("model")
            if not challenge.empty:
                better = [n for n, r in challenge.iterrows() if r["real_gain"] > 0]
                worse = [n for n, r in challenge.iterrows() if r["real_gain"] <= 0]
                lost = [n for n, r in challenge.iterrows() if r["dev_gain"] is not None and r["real_gain"] < r["dev_gain"] - 1]
                text = (f"In the challenge track {len(better)} of {len(challenge)} models beat the baseline on "
                        f"the real scene(s)" + (f" ({', '.join(f'`{n}`' for n in better)})" if better else ""))
                if worse:
                    text += f"; {', '.join(f'`{n}`' for n in worse)} do not"
                text += "."
                if lost:
                    text += (f" The gain of {', '.join(f'`{n}`' for n in lost)} shrinks by more than 1 dB from "
                             f"{source} dev to real: what the simulator taught them transfers only in part.")
                parts.append(text + " One real scene is a single data point: these numbers show whether a method "
                                    "survives contact with real frames, not how much better it is.")
            out = figure(tables, paths.figures / "real_scores.png")
            if out is not None:
                parts.append(figure_md(out, out_dir, "real scenes",
                                       "Each model's cPSNR on each real scene minus the baseline's, with the reference "
                                       "estimated (blue) and given (orange)."))
    parts.append(nohr_text(paths, source))
    return "\n\n".join(p for p in parts if p)


def nohr_text(paths, source: str) -> str:
    """The no-HR check's validation and its values on real scenes without an HR (``make nohr``)."""
    from probav.report.markdown import fmt, md_table

    path = paths.metrics / "nohr.json"
    if not path.is_file():
        return ("**A quality check that needs no HR** (`probav consistency`, leave-one-frame-out): its study has not "
                "been run here (`make nohr` writes `metrics/nohr.json`).")
    data = json.loads(path.read_text())
    dev, real = data["validation"].get("dev") or {}, data["validation"].get("real") or {}
    parts = ["**A quality check that needs no HR** (`probav consistency`; `probav/consistency.py`): hold out a clear "
             "frame, super-resolve from the others, bring the result to the held-out frame's grid and resolution "
             "(registration, blur, 3×3 binning), remove the brightness bias and compute a cPSNR on its clear pixels; "
             f"the mean over {data['held_out']} held-out frames per scene (`make nohr`, `metrics/nohr.json`)."]
    if dev.get("scenes"):
        parts.append(f"Validated on {dev['scenes']} {source} dev scenes against the official cPSNR of {dev['models']} "
                     f"models: Spearman ρ across models per scene {fmt(dev['rho_per_scene_mean'], 2)} on average "
                     f"(positive on {dev['rho_per_scene_positive']} of {dev['scenes']} scenes); ρ of the models' mean "
                     f"values {fmt(dev['rho_model_means'], 2)}; ρ across scenes per model "
                     + ", ".join(f"`{m}` {fmt(v, 2)}" for m, v in (dev.get("rho_per_model") or {}).items()) + ".")
        parts.append("The simulator's frames are made by the forward model the check inverts (shift, Gaussian blur, "
                     "3×3 binning), so this validation flatters it; the real scene below is the harder test.")
    if real.get("scenes"):
        parts.append(f"On the {real['scenes']} real scene(s) with an HR: ρ across models "
                     + ", ".join(f"{s} {fmt(v, 2)}" for s, v in real["rho_per_scene"].items()) + ".")
    no_hr = data.get("real_no_hr") or {}
    if no_hr:
        rows = [[m, str(v["scenes"]), fmt(v["mean_consistency"], 2)]
                for m, v in sorted(no_hr.items(), key=lambda kv: -(kv[1]["mean_consistency"] or -1e9))]
        parts.append("Its mean value on the real scenes without an HR (the test scenes of the real sample and the "
                     "LR-only scenes, whose clouds are not masked):\n\n"
                     + md_table(["model", "scenes", "mean consistency (dB)"], rows, ["l", "r", "r"]))
    return "\n\n".join(parts)


def fill(report) -> dict[str, str]:
    """``real_results`` for a ``probav.report.inputs.ReportInputs``."""
    return {"real_results": real_results(report.paths, report.runs, report.out_dir, report.source, report.seed_sd)}
