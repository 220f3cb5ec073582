"""Formatting shared by the report's sections: numbers, Markdown tables, figure links, and the template's
``{{name}}`` placeholders."""
from __future__ import annotations

import math
import os
import re
from pathlib import Path


PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")


def fmt(value, digits: int = 2, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}{suffix}"


def fmt_sd(value, sd, digits: int = 2, sign: bool = False) -> str:
    """A figure of this run with the seed-to-seed sd of ``make seeds`` (``48.73 ± 0.02``), or alone where the
    model has no spread (classical models are deterministic; a network without the study)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    text = f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"
    return text if sd is None else f"{text} ± {sd:.{digits}f}"


SD_NOTE = ("± = the standard deviation between seeds of the network's mean cPSNR (`make seeds`, "
           "`metrics/seeds.json`); the classical models are deterministic")


def fmt_int(value) -> str:
    return "n/a" if value is None else f"{int(value):,}"


def fmt_seconds(seconds) -> str:
    if seconds is None or not math.isfinite(float(seconds)):
        return "n/a"
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def fmt_sig(value, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(float(value)) else f"{float(value):.{digits}g}"


def md_table(header: list[str], rows: list[list[str]], align: list[str] | None = None) -> str:
    align = align or ["l"] + ["r"] * (len(header) - 1)
    sep = ["---:" if a == "r" else ":---:" if a == "c" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render(template: str, context: dict[str, str]) -> str:
    """Replace every ``{{name}}``; an unknown name is an error (except ``model_<x>``, a model the
    template describes but this checkout does not have)."""
    missing = []

    def value(match):
        key = match.group(1)
        if key in context:
            return str(context[key])
        if key.startswith("model_"):
            return f"\n*`{key[6:]}` is not in this checkout's model registry.*"
        missing.append(key)
        return match.group(0)

    out = PLACEHOLDER.sub(value, template)
    if missing:
        raise KeyError(f"template placeholders without a value: {', '.join(sorted(set(missing)))}")
    return re.sub(r"\n{3,}", "\n\n", out).strip() + "\n"


def figure_md(path: Path, out_dir: Path, alt: str, caption: str = "") -> str:
    rel = os.path.relpath(path, out_dir).replace(os.sep, "/")
    text = f"![{alt}]({rel})"
    return f"{text}\n\n*{caption}*" if caption else text
