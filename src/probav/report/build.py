"""Build ``reports/report.md`` and its figures from the pipeline's outputs, and the README's results block.

The prose lives in a template (``reports/template.md``) with ``{{name}}`` placeholders. Each section of the
report is one module of this package whose ``fill(report)`` computes its placeholders (numbers, tables,
figures and generated sentences) from the run, read once into a ``ReportInputs``: ``metrics/``,
``models/<model>/training.json``, ``dvclive/``, ``data/`` and ``params.yaml``, and the real sample
(``../shared/probav-mini``) where present. ``SECTIONS`` lists them in build order: a new section is a new module
and one line there. Nothing is typed by hand: a model without metrics is listed as "not run", and a part whose
inputs are absent says so in a sentence; a number typed in the template's prose names the metric it comes from and
is checked against it (``citations``).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

from probav.report import (approaches_section, comparisons_section, conclusions_section, costs_section,
                           data_section, effects_section, problem_section, real_results, realism_section,
                           reproduce_section, results_section, studies_section, summary_section, training_section)
from probav.report.citations import resolve_citations
from probav.report.inputs import Options, Paths, ReportInputs, log, read_inputs
# fmt, figure_md and md_table are also imported from here by reference_section.
from probav.report.markdown import figure_md, fmt, md_table, render  # noqa: F401
from probav.report.readme import README_END, README_START, readme_block, update_readme
from probav.report.reference_section import reference_section


@dataclass(frozen=True)
class Section:
    """A part of the report: its name (for progress messages) and the function that fills its placeholders."""

    name: str
    fill: Callable[[ReportInputs], dict[str, str]]


def _reference_fill(report: ReportInputs) -> dict[str, str]:
    return {"reference_section": reference_section(report.params, report.paths, report.runs, report.real_root,
                                                   report.paths.real_labels, report.out_dir, report.seed_sd)}


SECTIONS: tuple[Section, ...] = (
    Section("summary", summary_section.fill),
    Section("the problem", problem_section.fill),
    Section("the data", data_section.fill),
    Section("realism scorecard", realism_section.fill),
    Section("the approaches", approaches_section.fill),
    Section("results", results_section.fill),
    Section("studies", studies_section.fill),
    Section("reference frame and tracks", _reference_fill),
    Section("real scenes", real_results.fill),
    Section("visual comparisons", comparisons_section.fill),
    Section("training curves", training_section.fill),
    Section("effects", effects_section.fill),
    Section("speed and scale", costs_section.fill),
    Section("conclusions", conclusions_section.fill),
    Section("how to reproduce", reproduce_section.fill),
)


def build_report(params: dict, paths: Paths, options: Options | None = None,
                 sections: tuple[Section, ...] = SECTIONS) -> dict:
    """Write the report and its figures (and the README block); returns the template context."""
    options = options or Options()
    started = time.perf_counter()
    paths.figures.mkdir(parents=True, exist_ok=True)
    for old in paths.figures.glob("*.png"):
        old.unlink()
    report = read_inputs(params, paths, options)
    # Hand-written numbers are checked first: a stale sentence fails the stage before anything is drawn.
    template = resolve_citations(report.template, paths.metrics, paths.repo, str(paths.template),
                                 (params.get("report") or {}).get("stale_prose", "omit"))
    ctx: dict[str, str] = {}
    for section in sections:
        log(section.name, options)
        filled = section.fill(report)
        clash = sorted(set(filled) & set(ctx))
        if clash:
            raise ValueError(f"section {section.name!r} fills placeholders another section filled: {', '.join(clash)}")
        ctx.update(filled)

    text = render(template, ctx)
    paths.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = paths.out.with_name(f".{paths.out.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, paths.out)
    if paths.readme is not None:
        box = paths.figures / "results_scores.png"
        block = readme_block(report.runs, report.source, paths, box if box.is_file() else None, report.commit)
        if not update_readme(paths.readme, block):
            log(f"{paths.readme}: missing or without {README_START}/{README_END} markers; not updated", options)
    log(f"wrote {paths.out} and {len(list(paths.figures.glob('*.png')))} figures in "
        f"{time.perf_counter() - started:.0f} s", options)
    return ctx
