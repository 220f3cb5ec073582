"""Numbers in the template's hand-written prose, tied to the metric they come from, so prose cannot silently
go stale.

Two markers, resolved before the template is filled:

- ``{{check:48.43:metrics/shift_and_add.json:tracks.challenge.mean_cpsnr}}``: a number typed by the writer,
  with the file and the key it was read from. It is rendered as typed (``48.43``); the report stage fails,
  naming the sentence, when the run's value does not round to it (tolerance: half a unit of its last decimal).
- ``{{cite:metrics/shift_and_add.json:tracks.challenge.mean_cpsnr:.2f}}``: the run's value itself, formatted
  (a Python format spec; ``.2f`` where none is given).

A key is a dotted path into the JSON (list items by their index). A file under ``metrics/`` is read from the
run's metrics folder, any other relative to the repository. ``params.yaml``'s ``report.stale_prose`` says what a
contradiction does: ``fail`` (the run the prose was written for) or ``omit`` (a run it was not written for:
another size, the real data; the paragraph is left out, with a sentence saying why).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

NUMBER = r"[-+]?\d+(?:\.\d+)?"
CHECK = re.compile(r"\{\{\s*check:(?P<typed>" + NUMBER + r"):(?P<file>[^:}]+):(?P<key>[^:}\s]+)\s*\}\}")
CITE = re.compile(r"\{\{\s*cite:(?P<file>[^:}]+):(?P<key>[^:}\s]+)(?::(?P<spec>[^}\s]+))?\s*\}\}")


class StaleProseError(ValueError):
    """Hand-written numbers of the template that the run's metrics contradict (or cannot be checked)."""


@dataclass(frozen=True)
class Contradiction:
    line: int
    sentence: str
    problem: str

    def __str__(self) -> str:
        return f"line {self.line}: \"{self.sentence}\": {self.problem}"


def metric_value(file: str, key: str, metrics: Path, repo: Path) -> float:
    """The number at ``key`` (dotted path) of the JSON ``file``; KeyError/FileNotFoundError/ValueError say
    which part is missing."""
    path = metrics / file[len("metrics/"):] if file.startswith("metrics/") else repo / file
    if not path.is_file():
        raise FileNotFoundError(f"{file} does not exist in this run")
    value = json.loads(path.read_text())
    for part in key.split("."):
        if isinstance(value, list) and part.lstrip("-").isdigit() and -len(value) <= int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            raise KeyError(f"{file} has no {key!r} (no {part!r})")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{file}:{key} is {value!r}, not a finite number")
    return float(value)


def agrees(typed: str, value: float) -> bool:
    """Whether ``value`` rounds to the number as typed (half a unit of its last decimal either side)."""
    decimals = len(typed.split(".")[1]) if "." in typed else 0
    return abs(value - float(typed)) <= 0.5 * 10 ** -decimals + 1e-12


def sentence_at(text: str, start: int, end: int) -> str:
    """The sentence around ``text[start:end]`` (markers shown as written), on one line, at most 200 characters."""
    left = max(text.rfind(". ", 0, start), text.rfind("\n\n", 0, start))
    right_candidates = [i for i in (text.find(". ", end), text.find("\n\n", end)) if i >= 0]
    right = min(right_candidates) if right_candidates else len(text)
    sentence = " ".join(text[left + 1 if left >= 0 else 0:right + 1].split()).lstrip(". ")
    return sentence if len(sentence) <= 200 else sentence[:197] + "..."


MODES = ("fail", "omit")


def _resolve(text: str, metrics: Path, repo: Path, first_line: int) -> tuple[str, list[Contradiction]]:
    """``text`` with its markers replaced, and what the run contradicts (lines counted from ``first_line``)."""
    problems: list[Contradiction] = []

    def where(match) -> tuple[int, str]:
        whole = match.string   # markers are on one line: replacing them keeps the line numbers
        return first_line + whole.count("\n", 0, match.start()), sentence_at(whole, match.start(), match.end())

    def check(match) -> str:
        typed, file, key = match.group("typed"), match.group("file"), match.group("key")
        try:
            value = metric_value(file, key, metrics, repo)
        except (OSError, KeyError, ValueError) as err:
            problems.append(Contradiction(*where(match), f"cannot check {typed}: {err.args[0] if err.args else err}"))
            return typed
        if not agrees(typed, value):
            problems.append(Contradiction(*where(match), f"says {typed}, but {file}:{key} is {value:.6g} in this run"))
        return typed

    def cite(match) -> str:
        file, key, spec = match.group("file"), match.group("key"), match.group("spec") or ".2f"
        try:
            return format(metric_value(file, key, metrics, repo), spec)
        except (OSError, KeyError, ValueError) as err:
            problems.append(Contradiction(*where(match), f"cannot cite: {err.args[0] if err.args else err}"))
            return match.group(0)

    return CITE.sub(cite, CHECK.sub(check, text)), problems


def resolve_citations(template: str, metrics: Path, repo: Path, source: str = "reports/template.md",
                      on_stale: str = "fail") -> str:
    """The template with every ``check`` marker replaced by its typed number and every ``cite`` marker by the
    run's value. Where the run contradicts a number, ``on_stale="fail"`` raises ``StaleProseError`` listing every
    such sentence; ``"omit"`` (a run the prose was not written for: another size, the real data) replaces each
    paragraph holding one by a sentence that says so."""
    if on_stale not in MODES:
        raise ValueError(f"report.stale_prose must be one of {MODES}, got {on_stale!r}")
    pieces = re.split(r"(\n[ \t]*\n)", template)   # paragraphs and the blank lines between them
    out, problems, line = [], [], 1
    for piece in pieces:
        text, found = _resolve(piece, metrics, repo, line) if piece.strip() else (piece, [])
        line += piece.count("\n")
        if found and on_stale == "omit":
            text = (f"*A hand-written paragraph is left out here: it was written from other results than this run's "
                    f"(`report.stale_prose: omit`); {len(found)} of its numbers disagree, the first on line "
                    f"{found[0].line} of the template: {found[0].problem}.*")
        problems += found
        out.append(text)
    if problems and on_stale == "fail":
        raise StaleProseError(f"{source}: {len(problems)} hand-written number(s) disagree with this run's metrics; "
                              f"update the sentence(s) (or cite the metric with {{{{cite:FILE:KEY}}}}, or set "
                              f"report.stale_prose: omit for a run the prose was not written for):\n"
                              + "\n".join(f"  {p}" for p in problems))
    return "".join(out)
