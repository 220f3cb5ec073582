"""Section 4's costs: the benchmark's table (``make bench``) and the archive-size run's (``make scale``), both
written outside ``dvc repro`` and included as they are."""
from __future__ import annotations

from pathlib import Path

from probav.report.inputs import ReportInputs


def bench_section(table: Path) -> str:
    """The benchmark's table (``make bench`` writes it; not a dependency, so it may be older or absent)."""
    if not table.is_file():
        return ("No benchmark in this run: `make bench` measures the scorer, the simulator, the data stages, "
                "the input pipeline and every model on this machine, and writes `reports/bench.md` here.")
    return ("From the last `make bench` (`metrics/bench.json`; measured on the machine that ran it, and not "
            "re-run by `dvc repro`):\n\n" + table.read_text().strip())


def scale_section(table: Path) -> str:
    """``make scale``'s table (not a dependency either: an hour of running, done on purpose)."""
    if not table.is_file():
        return ("No archive-size run yet: `make scale` runs the pipeline at the default size and at the official "
                "archive's 1450 scenes and writes `metrics/scale.json` and `reports/scale.md`.")
    return table.read_text().strip()


def fill(report: ReportInputs) -> dict[str, str]:
    return {"bench": bench_section(report.out_dir / "bench.md"), "scale": scale_section(report.out_dir / "scale.md")}
