"""The report's realism section: the scorecard of the ``realism`` stage (``metrics/realism.json``) as a table
and a chart, and real and simulated scenes side by side at the same ground scale."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from probav.report.cloudy import cloudiest_usable  # noqa: E402
from probav.report.figures import _save, stretch  # noqa: E402
from probav.scene import BANDS, SCALE  # noqa: E402

CLOUD_RGBA = (1.0, 0.55, 0.0, 0.55)   # masked pixels drawn over the frame, half transparent


def _show(ax, image, vmin, vmax, title, mask=None):
    ax.imshow(image, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
    if mask is not None and not mask.all():
        overlay = np.zeros(mask.shape + (4,))
        overlay[~mask] = CLOUD_RGBA
        ax.imshow(overlay, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def scenes_figure(rows: list[tuple[str, object]], path: Path) -> Path | None:
    """One row per (label, scene): an LR frame, the same frame with its QM's clouds over it, and the HR;
    LR pixels repeated ×3 so every panel covers the same ground at the same scale."""
    rows = [(label, scene) for label, scene in rows if scene is not None]
    if not rows:
        return None
    fig, axes = plt.subplots(len(rows), 3, figsize=(10, 3.3 * len(rows)), squeeze=False)
    for (label, scene), ax in zip(rows, axes):
        k = cloudiest_usable(scene)
        frame = np.repeat(np.repeat(scene.lr[k].astype(np.float64), SCALE, 0), SCALE, 1)
        mask = np.repeat(np.repeat(scene.qm[k], SCALE, 0), SCALE, 1)
        vmin, vmax = stretch(scene.hr if scene.hr is not None else frame, None if scene.hr is None else scene.sm)
        ids = scene.ids
        _show(ax[0], frame, vmin, vmax, f"{label}: {scene.name} LR{ids[k]:03d} ({100 * scene.clearance[k]:.0f}% clear)")
        _show(ax[1], frame, vmin, vmax, "its QM: masked pixels in orange" if scene.has_qm else "no QM for this scene",
              mask if scene.has_qm else None)
        if scene.hr is not None:
            _show(ax[2], scene.hr.astype(np.float64), vmin, vmax,
                  f"HR ({100 * scene.sm.mean():.0f}% clear in its SM)", scene.sm)
        else:
            ax[2].axis("off")
            ax[2].text(0.5, 0.5, "no HR for this scene\n(a test scene)", ha="center", va="center", fontsize=9)
    fig.suptitle("Real and simulated scenes, 384×384 HR pixels (38 km) each, LR pixels shown ×3", fontsize=10)
    return _save(fig, path)


def chart(statistics: dict, path: Path) -> Path | None:
    """The scorecard's distances, one bar per statistic (and band), grouped by the kind of distance."""
    rows = [r for r in statistics.values() if r.get("distance") is not None]
    if not rows:
        return None
    kinds = sorted({r["distance_kind"] for r in rows})
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.6 * len(kinds), 0.32 * len(rows) + 1.5), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        of_kind = [r for r in rows if r["distance_kind"] == kind]
        labels = [f"{r['statistic'].split(' (')[0]}{'' if r['band'] == 'all' else ' ' + r['band']}" for r in of_kind]
        ax.barh(np.arange(len(of_kind)), [r["distance"] for r in of_kind], color="#5b7db1")
        ax.set_yticks(np.arange(len(of_kind)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(kind)
        ax.set_title("0 = like the real scenes", fontsize=9)
    return _save(fig, path)


def realism_section(paths, source: str, real_root: Path | None, out_dir: Path) -> str:
    """The section's Markdown (empty sentences where the scorecard or the real sample is missing)."""
    from probav.report.markdown import figure_md, fmt, md_table
    from probav.scene import read_scene, scene_dirs

    path = paths.metrics / "realism.json"
    if not path.is_file():
        return "No realism scorecard in this run (`metrics/realism.json` is missing: the `realism` stage did not run)."
    data = json.loads(path.read_text())
    statistics = data.get("statistics") or {}
    parts = []
    version = data.get("simulator_version")
    if source == "synthetic" and version is not None:
        parts.append(f"The data of this run were made by version {version} of the simulator "
                     f"(`probav.data.synthetic.VERSION`, recorded in `data/raw/synthetic/settings.json`).")
    real = data.get("real") or {}
    if not statistics:
        parts.append("No real material to compare with: " + "; ".join(real.get("absent") or []) + ".")
        return "\n\n".join(parts)
    parts.append(f"The realism scorecard (`metrics/realism.json`, the `realism` stage; `probav/data/realism.py` "
                 f"says how each statistic is measured): {data['synthetic']['scenes']} of this run's train scenes "
                 f"against {real['scenes']} real scenes ({real['with_qm']} with QMs, the others LR frames only, where "
                 f"the statistics avoid unmasked clouds) and the official `norm.csv`. Where the real side rests on a "
                 f"handful of scenes the 'real scenes' column says so: such a value is a rough one.")
    rows = [[r["statistic"], r["band"], fmt(r["synthetic"], 3 if abs(r["synthetic"] or 0) < 10 else 0),
             fmt(r["real"], 3 if abs(r["real"] or 0) < 10 else 0), fmt(r["distance"], 2), r["distance_kind"],
             str(r["real_scenes"]), r.get("note") or ""] for r in statistics.values()]
    parts.append(md_table(["statistic", "band", "this run", "real", "distance", "distance is", "real scenes", "note"],
                          rows, ["l", "l", "r", "r", "r", "l", "r", "l"]))
    out = chart(statistics, paths.figures / "realism_scorecard.png")
    if out is not None:
        parts.append(figure_md(out, out_dir, "realism scorecard", "The scorecard's distances (shorter is more real)."))
    picks = []
    real_dirs = {b: [] for b in BANDS}
    if real_root is not None:
        for split in ("train", "test"):
            for d in scene_dirs(real_root, split):
                real_dirs.setdefault(d.parent.name, []).append(d)
    run_dirs = {b: [d for d in scene_dirs(paths.raw, "train") if d.parent.name == b] for b in BANDS}
    for band in BANDS:
        real_scene = read_scene(real_dirs[band][0], require_hr=False) if real_dirs.get(band) else None
        run_scene = None
        for d in run_dirs[band][:12]:   # a simulated train scene with clouds, like the real ones shown
            candidate = read_scene(d)
            if run_scene is None or (candidate.clearance < 0.97).sum() > (run_scene.clearance < 0.97).sum():
                run_scene = candidate
        picks += [(f"real {band}", real_scene), (f"this run {band}", run_scene)]
    out = scenes_figure(picks, paths.figures / "realism_scenes.png")
    if out is not None:
        parts.append(figure_md(out, out_dir, "real and simulated scenes",
                               "Each row: one scene's cloudiest usable LR frame, the same frame with its QM's masked "
                               "pixels in orange, and its HR with the SM's; real scenes from the sample beside the "
                               "repository, simulated ones from this run, per band."))
    return "\n\n".join(parts)


def fill(report) -> dict[str, str]:
    """``realism_section`` for a ``probav.report.inputs.ReportInputs``, then the frames' sub-pixel positions."""
    from probav.report.positions import positions_section

    return {"realism_section": realism_section(report.paths, report.source, report.real_root, report.out_dir)
            + "\n\n" + positions_section(report.params, report.paths, report.index, report.split, report.out_dir,
                                report.source)}
