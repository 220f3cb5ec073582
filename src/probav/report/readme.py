"""The README's results block: the main table, the best model and the box plot, between two markers."""
from __future__ import annotations

import os
from pathlib import Path

from probav.report.inputs import ModelRun, Paths
from probav.report.markdown import fmt, md_table
from probav.report.results_section import results_rows


README_START = "<!-- results:start -->"


README_END = "<!-- results:end -->"


def readme_block(runs: list[ModelRun], source: str, paths: Paths, box_png: Path | None, commit: str | None) -> str:
    readme_dir = paths.readme.parent if paths.readme else Path(".")
    header, rows = results_rows(runs)
    keep = [0, 2, 3, 4, 5, 8, 9]
    table = md_table([header[i] for i in keep], [[row[i] for i in keep] for row in rows])
    lines = []
    if source == "synthetic":
        lines.append("> ⚠ These results were computed on **synthetic data** (the built-in simulator, "
                     "`data.source: synthetic`), not on the PROBA-V archive.")
    else:
        lines.append(f"> Data source: the official PROBA-V data (`data.source: {source}`), dev split.")
    lines += ["", table, ""]
    ran = sorted([r for r in runs if r.ran], key=lambda r: r.metrics["mean_score"])
    if ran:
        m = ran[0].metrics
        lines.append(f"Best on {m.get('scenes')} dev scenes: **{ran[0].name}**, mean score {fmt(m['mean_score'], 4)} "
                     f"(official score: mean of norm / cPSNR, lower is better, the baseline scores 1).")
        lines.append("")
    if box_png is not None and box_png.is_file():
        rel = os.path.relpath(box_png, readme_dir).replace(os.sep, "/")
        lines += [f"![Score per dev scene and model]({rel})", ""]
    rel_report = os.path.relpath(paths.out, readme_dir).replace(os.sep, "/")
    lines.append(f"Written by the `report` stage from `metrics/`{f' at commit `{commit}`' if commit else ''}; "
                 f"the full analysis is [{rel_report}]({rel_report}).")
    return "\n".join(lines)


def update_readme(readme: Path, block: str, markers: tuple[str, str] = (README_START, README_END)) -> bool:
    """Replace the text between two markers (the results block by default); False (untouched) when the
    file or a marker is missing."""
    if not readme.is_file():
        return False
    text = readme.read_text()
    first, last = markers
    start, end = text.find(first), text.find(last)
    if start < 0 or end < start:
        return False
    new = text[:start + len(first)] + "\n" + block.strip() + "\n" + text[end:]
    if new != text:
        tmp = readme.with_name(f".{readme.name}.tmp")
        tmp.write_text(new)
        os.replace(tmp, readme)
    return True
