"""The report's head: the data-source banner and the one-paragraph summary of the run."""
from __future__ import annotations

from probav.report.inputs import ReportInputs
from probav.report.markdown import fmt


def banner(source: str, params: dict) -> str:
    data = params.get("data") or {}
    if source == "synthetic":
        return ("> **⚠ These results were computed on synthetic data** from the project's built-in PROBA-V "
                "simulator (`data.source: synthetic` in `params.yaml`), not on the official PROBA-V archive. "
                "They show that the pipeline works and how the methods compare on simulated scenes; they are "
                "not PROBA-V challenge results. Set `data.source` to `kelvins`, `archive` or `folder` and run "
                "`make repro` to get those (see the README).")
    where = {"kelvins": f"downloaded from {data.get('url', 'the Kelvins site')}",
             "archive": f"read from the archive `{data.get('archive')}`",
             "folder": f"read from the folder `{data.get('folder')}`"}.get(source, "")
    return (f"> **Data source: the official PROBA-V challenge data** (`data.source: {source}`"
            f"{', ' + where if where else ''}). Scores are measured on the dev split of the train scenes: "
            f"the test scenes' HR images are not public.")


def summary_text(runs, source, index, split, commit) -> str:
    ran = sorted([r for r in runs if r.ran], key=lambda r: r.metrics["mean_score"])
    n_dev = int((split["subset"] == "dev").sum()) if split is not None and "subset" in split else None
    scenes = int((index["status"] == "ok").sum()) if index is not None and "status" in index else None
    parts = [f"Data: **{source}** ({scenes} usable scenes, {n_dev if n_dev is not None else 'n/a'} of them in the "
             f"dev split that every score below is measured on)." if scenes is not None else
             f"Data: **{source}** (no scene index).",
             f"Code: commit `{commit}`." if commit else "Code: not a git checkout (no commit recorded)."]
    if ran:
        parts.append(f"{len(ran)} of {len(runs)} models were scored; the best is **{ran[0].name}** with a mean score of "
                     f"{fmt(ran[0].metrics['mean_score'], 4)} (the official baseline scores 1; lower is better).")
    else:
        parts.append("No model has been scored yet.")
    return " ".join(parts)


def fill(report: ReportInputs) -> dict[str, str]:
    return {"banner": banner(report.source, report.params),
            "summary": summary_text(report.runs, report.source, report.index, report.split, report.commit)}
