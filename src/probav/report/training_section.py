"""Section 4's training curves: the DVCLive logs of every network."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from probav.report import figures
from probav.report.inputs import ReportInputs
from probav.report.markdown import figure_md


def dvclive_curves(live_dir: Path) -> dict[str, pd.DataFrame]:
    """``{metric: DataFrame(step, value)}`` from ``<live_dir>/plots/metrics/**/*.tsv``."""
    base = live_dir / "plots" / "metrics"
    curves = {}
    for path in sorted(base.rglob("*.tsv")) if base.is_dir() else []:
        try:
            frame = pd.read_csv(path, sep="\t")
        except (OSError, ValueError, pd.errors.EmptyDataError):
            continue
        columns = [c for c in frame.columns if c not in ("timestamp", "step")]
        if "step" not in frame or not columns or frame.empty:
            continue
        name = path.relative_to(base).with_suffix("").as_posix()
        if "learning_rate" in name or name.endswith("/lr"):
            continue  # not a quality metric; its scale would flatten the others
        curves[name] = pd.DataFrame({"step": pd.to_numeric(frame["step"], errors="coerce"),
                                     "value": pd.to_numeric(frame[columns[-1]], errors="coerce")}).dropna()
    return curves


def fill(report: ReportInputs) -> dict[str, str]:
    runs, paths = report.runs, report.paths
    curves = {}
    for r in runs:
        if r.kind == "deep":
            c = dvclive_curves(paths.live / r.name)
            if c:
                curves[r.name] = c
    if not curves:
        return {"fig_training": "No DVCLive training log (`dvclive/<model>/`) in this run."}
    out = figures.training_curves(curves, paths.figures / "training_curves.png")
    missing = [r.name for r in runs if r.kind == "deep" and r.name not in curves]
    return {"fig_training": (figure_md(out, report.out_dir, "training curves",
                                       "DVCLive logs (`dvclive/<model>/plots/metrics/`), one column per network.")
                             + (f"\n\nNo training log for {', '.join(f'`{m}`' for m in missing)}." if missing else ""))}
