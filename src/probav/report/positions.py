"""Where each frame samples the ground, on the LR pixel grid: every frame of a scene registered to its
reference frame, its position taken modulo one LR pixel. Multi-frame super-resolution feeds on frames whose
fractional positions differ; the figure shows how real scenes and the simulator's spread them over the unit LR
pixel, and the text counts the HR sub-pixel cells (a 3×3 grid in each LR pixel) they reach.

Positions follow ``Alignment.with_shifts``: a feature at y in the reference frame appears at y + p in a frame at
position p; frame k's position relative to the reference is minus its registered
shift (``probav.registration``'s convention); the simulator's true one is its per-frame offset minus the
reference frame's (``synthetic/shifts.csv``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from probav.scene import SCALE

COLUMNS = ["source", "scene", "band", "frame", "dy", "dx", "ok", "true_dy", "true_dx"]


def frame_positions(scene, ref: int, truth: dict | None = None, source: str = "") -> pd.DataFrame:
    """One row per frame but the reference: its registered position relative to frame ``ref`` (``ok`` False where
    the registration failed its checks), and the true one where ``truth`` (``read_truth``) knows both frames."""
    from probav.registration import Alignment

    others = [k for k in range(scene.frames) if k != ref]
    alignment = Alignment.to(scene.lr.astype(np.float64), scene.qm, ref, [ref] + others)
    ids = scene.ids
    rows = []
    for k in others:
        r = alignment.results[k]
        row = {"source": source, "scene": scene.name, "band": scene.band, "frame": int(ids[k]),
               "dy": -float(r.shift[0]), "dx": -float(r.shift[1]), "ok": bool(r.ok),
               "true_dy": np.nan, "true_dx": np.nan}
        key_k, key_ref = (scene.name, int(ids[k])), (scene.name, int(ids[ref]))
        if truth and key_k in truth and key_ref in truth:
            row["true_dy"], row["true_dx"] = np.subtract(truth[key_k], truth[key_ref])
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def fractional(values) -> np.ndarray:
    """Positions modulo one LR pixel, centred on the reference's grid: in [-0.5, 0.5)."""
    out = np.mod(np.asarray(values, np.float64) + 0.5, 1.0)
    return np.where(out >= 1.0, 0.0, out) - 0.5   # -1e-17 % 1 rounds to 1.0


def cells_reached(fy, fx) -> int:
    """How many of the 9 HR sub-pixel cells of the LR pixel around the reference's grid point (a 3×3 grid, the
    middle cell the reference's own) the positions and the reference's fall in."""
    cy = np.minimum(((np.append(fractional(fy), 0.0) + 0.5) * SCALE).astype(int), SCALE - 1)
    cx = np.minimum(((np.append(fractional(fx), 0.0) + 0.5) * SCALE).astype(int), SCALE - 1)
    return len(set(zip(cy.tolist(), cx.tolist())))


def summary(table: pd.DataFrame) -> dict[str, float]:
    """Per source: scenes, frames registered (ok), the mean number of HR sub-pixel cells each scene reaches, and
    the share of frames in the reference's own HR cell (within 1/6 LR pixel of its grid in both directions)."""
    ok = table[table["ok"]]
    if ok.empty:
        return {"scenes": 0, "frames": 0, "failed": int(len(table)), "cells": float("nan"), "on_grid": float("nan")}
    cells = [cells_reached(g["dy"], g["dx"]) for _, g in ok.groupby("scene")]
    fy, fx = fractional(ok["dy"]), fractional(ok["dx"])
    near = (np.abs(fy) < 0.5 / SCALE) & (np.abs(fx) < 0.5 / SCALE)
    return {"scenes": int(ok["scene"].nunique()), "frames": int(len(ok)), "failed": int((~table["ok"]).sum()),
            "cells": float(np.mean(cells)), "on_grid": float(near.mean())}


def figure(real: pd.DataFrame, synthetic: pd.DataFrame, path, run_label: str = "simulated scenes") -> Path:
    """Two LR pixels centred on the reference frame's grid point, side by side: the real scenes' frames (colour per
    scene) and the simulator's (registered dots, true positions as crosses joined to them), the HR pixels as a
    dotted 3×3 grid."""
    import matplotlib.pyplot as plt

    from probav.report.figures import STYLE, _save

    panels = [("real scenes", real), (run_label, synthetic)]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(11.4, 5.6))
        for ax, (label, table) in zip(axes, panels):
            ok = table[table["ok"]] if len(table) else table
            cmap = plt.get_cmap("tab10")
            for i, (scene, g) in enumerate(ok.groupby(["scene", "band"], sort=True)):
                colour = cmap(i % 10)
                fy, fx = fractional(g["dy"]), fractional(g["dx"])
                ax.scatter(fx, fy, s=22, color=colour, lw=0, alpha=0.85,
                           label=f"{scene[0]} {scene[1]} ({len(g)})" if label == "real scenes" or i < 8 else None)
                if g["true_dy"].notna().any():
                    ty, tx = fractional(g["true_dy"]), fractional(g["true_dx"])
                    ax.scatter(tx, ty, s=22, marker="x", color=colour, lw=0.9)
                    for a, b, c, d in zip(fx, fy, tx, ty):
                        if abs(a - c) < 0.5 and abs(b - d) < 0.5:   # not across the wrap-around
                            ax.plot([a, c], [b, d], color=colour, lw=0.6, alpha=0.7)
            for t in (-0.5 / SCALE, 0.5 / SCALE):
                ax.axhline(t, color="0.5", ls=":", lw=0.9)
                ax.axvline(t, color="0.5", ls=":", lw=0.9)
            ax.scatter([0], [0], marker="*", s=140, color="k", zorder=5, label="the reference frame")
            s = summary(table) if len(table) else None
            detail = "" if s is None or not s["frames"] else (
                f"\n{s['frames']} frames of {s['scenes']} scenes; {s['cells']:.1f} of 9 HR cells reached per scene")
            ax.set(xlim=(-0.5, 0.5), ylim=(-0.5, 0.5), aspect="equal", xlabel="x position, modulo 1 LR pixel",
                   ylabel="y position, modulo 1 LR pixel", title=f"{label}{detail}")
            ax.grid(False)
            if len(ok) == 0:
                ax.text(0.5, 0.5, "none", ha="center", va="center")
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
        if synthetic["true_dy"].notna().any() if len(synthetic) else False:
            axes[1].scatter([], [], marker="x", color="0.3", label="true position (joined to the registered dot)")
            axes[1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
        fig.tight_layout()
        return _save(fig, path)


SYNTHETIC_SCENES = 8     # dev scenes of the simulator registered for the figure


def real_positions(params: dict, repo: Path) -> tuple[pd.DataFrame, list[str]]:
    """Every labelled real scene's frames (the train scenes of ``real.folder`` and the LR-only scenes), registered
    to its PROBA-V-REF reference frame; and a sentence per missing source."""
    from probav.real import find_scene_folders, missing, read_any_scene, real_settings
    from probav.data.reference_labels import read_labels

    cfg = real_settings(params, repo)
    notes = []
    labels = read_labels(cfg["labels"]) if cfg["labels"] is not None and Path(cfg["labels"]).is_file() else {}
    if not labels:
        notes.append("no PROBA-V-REF labels (`real.labels`), so the real scenes have no known reference frame")
        return pd.DataFrame(columns=COLUMNS), notes
    folders = []
    for key, split in (("folder", "train"), ("lr_only", None)):
        why = missing(cfg[key], f"`real.{key}`")
        if why:
            notes.append(why)
            continue
        folders += find_scene_folders(cfg[key], split)
    tables = []
    for folder in folders:
        scene = read_any_scene(folder, None, labels)
        if scene.reference is not None:
            tables.append(frame_positions(scene, int(scene.reference), source="real"))
    return (pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=COLUMNS)), notes


def synthetic_positions(raw: Path, index: pd.DataFrame | None, split: pd.DataFrame | None,
                        count: int = SYNTHETIC_SCENES) -> pd.DataFrame:
    """``count`` dev scenes of the run (evenly spaced), registered to their labelled reference frame, with the
    simulator's true positions where ``raw/synthetic/shifts.csv`` has them."""
    from probav.data.stats import read_truth, sample_evenly
    from probav.scene import read_scene

    if index is None or split is None or "reference" not in index or "subset" not in split:
        return pd.DataFrame(columns=COLUMNS)
    dev = set(split.loc[split["subset"] == "dev", "name"])
    rows = index[index["name"].isin(dev) & index["reference"].notna()].sort_values("name")
    truth = read_truth(raw)
    tables = []
    for _, row in pd.DataFrame(sample_evenly([r for _, r in rows.iterrows()], count)).iterrows():
        scene = read_scene(raw / row["path"])
        if int(row["reference"]) in set(scene.ids.tolist()):
            tables.append(frame_positions(scene, scene.frame_index(int(row["reference"])), truth, "synthetic"))
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=COLUMNS)


def positions_section(params: dict, paths, index, split, out_dir: Path, source: str = "synthetic") -> str:
    """The figure and its sentences (a sentence alone where the real scenes or the run's are missing)."""
    from probav.report.markdown import figure_md

    real, notes = real_positions(params, paths.repo)
    synthetic = synthetic_positions(paths.raw, index, split)
    if real.empty and synthetic.empty:
        return ("**Sub-pixel positions of the frames.** Not drawn: no labelled real scene and no dev scene "
                f"could be registered ({'; '.join(notes) or 'none found'}).")
    run_label = "simulated" if source == "synthetic" else "this run's dev"
    out = figure(real, synthetic, paths.figures / "data_positions.png", f"{run_label} scenes")
    text = ["**Sub-pixel positions of the frames.** A multi-frame method gains from frames that sample the ground "
            "between the reference frame's pixels. Each frame of each scene registered to its reference frame, its "
            "position kept modulo one LR pixel:",
            figure_md(out, out_dir, "sub-pixel positions of the frames",
                      "Every frame's position relative to its scene's reference frame (the star, at the centre), "
                      "modulo one LR pixel (a frame at +0.45 and one at −0.45 are a tenth of a pixel apart): real "
                      "scenes (PROBA-V-REF's reference) on the left, this run's dev scenes (their labelled reference) "
                      "on the right"
                      + (", with the simulator's true positions as crosses joined to the registered ones"
                         if len(synthetic) and synthetic["true_dy"].notna().any() else "")
                      + ". Dotted: the 3×3 HR pixels of one LR pixel, the middle one the reference's. Frames whose "
                        "registration failed its checks are left out; the LR-only real scenes have no QM, so their "
                        "clouds are not masked in the registration (its robust weights must handle them).")]
    sentences = []
    for label, table in (("real", real), (run_label, synthetic)):
        if table.empty:
            continue
        s = summary(table)
        sentences.append(f"The {s['frames']} registered frames of the {s['scenes']} {label} scenes reach "
                         f"{s['cells']:.1f} of the 9 HR sub-pixel cells per scene on average; "
                         f"{100 * s['on_grid']:.0f}% lie in the reference's own HR cell (within 1/6 LR pixel of its "
                         f"grid in both directions: no new sampling phase at the HR's resolution); "
                         + ("every frame passed the registration's checks." if not s["failed"] else
                            f"{s['failed']} frame(s) failed the registration's checks and are left out."))
    truth = synthetic.dropna(subset=["true_dy"]) if len(synthetic) else synthetic
    truth = truth[truth["ok"]] if len(truth) else truth
    if len(truth):
        err = np.hypot(truth["dy"] - truth["true_dy"], truth["dx"] - truth["true_dx"])
        sentences.append(f"Against the simulator's truth, the registered positions are off by {np.median(err):.3f} LR "
                         f"pixels in the median ({SCALE * np.median(err):.2f} HR pixels).")
    if real.empty:
        sentences.append("No real scene is drawn: " + "; ".join(notes) + ".")
    return "\n\n".join(text + [" ".join(sentences)])
