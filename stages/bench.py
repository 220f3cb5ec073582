"""Stage `bench` (bench/dvc.yaml, `make bench`): how fast each part runs on this machine and how it
grows — the scorer, the simulator, the data check, the TFRecord build, the input pipeline, every
model's inference and training. Writes the measurements as JSON (DVC metrics) and a short markdown
table for the report. See probav.bench for what is measured and how."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from probav.bench import ALL_PARTS, markdown_table, run_bench
from probav.params import load_params


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="parameters file (groups `bench`, `seed`, "
                        "`synthetic`, `input`, `model`, `classical`, `models`, `deep_models`)")
    parser.add_argument("--out", default="metrics/bench.json", help="measurements (JSON)")
    parser.add_argument("--table", default="reports/bench.md", help="short markdown summary")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repeats: a smoke run, not figures")
    parser.add_argument("--parts", default=",".join(ALL_PARTS),
                        help="comma-separated subset of: " + ", ".join(ALL_PARTS))
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed after)")
    return parser.parse_args(argv)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    params = load_params(args.params)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    report = run_bench(params, quick=args.quick, parts=parts, work=Path(args.work) if args.work else None,
                       log=lambda line: print(line, file=sys.stderr, flush=True))
    _write(Path(args.out), json.dumps(report, indent=2) + "\n")
    table = markdown_table(report)
    _write(Path(args.table), table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
