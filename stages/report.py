"""Stage `report`: write reports/report.md and reports/figures/*.png from the run's outputs (metrics/,
models/*/training.json, dvclive/, data/), filling the prose template reports/template.md, and rewrite
the results block of README.md between its markers."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from probav.params import load_params

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REAL = os.environ.get("PROBAV_MINI", str(REPO.parent / "shared" / "probav-mini"))
DEFAULT_REAL_LABELS = os.environ.get("PROBAV_REF", str(REPO.parent / "shared" / "probav-ref" / "reference.json"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="parameters file")
    parser.add_argument("--raw", default="data/raw", help="data in the official layout")
    parser.add_argument("--scenes", default="data/scenes.csv", help="scene index written by the download stage")
    parser.add_argument("--split", default="data/split.csv", help="train/dev split")
    parser.add_argument("--metrics", default="metrics", help="metrics/<model>.json (and metrics/scenes/<model>.csv)")
    parser.add_argument("--tables", default=None, help="per-scene tables (default METRICS/scenes)")
    parser.add_argument("--models-dir", default="models", help="trained models: MODELS_DIR/<model>/")
    parser.add_argument("--live", default="dvclive", help="DVCLive logs: LIVE/<model>/")
    parser.add_argument("--template", default="reports/template.md", help="the report's prose with {{placeholders}}")
    parser.add_argument("--out", default="reports/report.md", help="the report")
    parser.add_argument("--figures", default=None, help="figures folder (default: beside OUT, figures/)")
    parser.add_argument("--readme", default="README.md",
                        help="README whose <!-- results:start/end --> block is rewritten ('' = leave it alone)")
    parser.add_argument("--real", default=DEFAULT_REAL,
                        help="the real sample in the official layout (skipped with a sentence where absent)")
    parser.add_argument("--real-labels", default=DEFAULT_REAL_LABELS,
                        help="PROBA-V-REF's reference.json for the real sample (skipped where absent)")
    parser.add_argument("--sample-scenes", type=int, default=24, help="scenes per band read for pixel statistics")
    parser.add_argument("--shift-scenes", type=int, default=8, help="of those, scenes per band whose frames are registered")
    parser.add_argument("--sweep-scenes", type=int, default=6, help="dev scenes of the frame-count sweep (0 = none)")
    parser.add_argument("--no-experiments", action="store_true", help="do not read `dvc exp show`")
    parser.add_argument("--quiet", action="store_true", help="no progress messages")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from probav.report.build import Options, Paths, build_report

    try:
        params = load_params(args.params)
        paths = Paths(raw=args.raw, scenes=args.scenes, split=args.split, metrics=args.metrics, tables=args.tables,
                      models=args.models_dir, live=args.live, template=args.template, out=args.out,
                      figures=args.figures, readme=args.readme or None, real=args.real or None,
                      real_labels=args.real_labels or None, repo=Path("."))
        if not paths.template.is_file():
            raise FileNotFoundError(f"{paths.template}: report template not found")
        options = Options(sample_scenes=args.sample_scenes, shift_scenes=args.shift_scenes,
                          sweep_scenes=args.sweep_scenes, experiments=not args.no_experiments,
                          progress=not args.quiet)
        build_report(params, paths, options)
    except (FileNotFoundError, KeyError, ValueError) as err:
        print(f"report failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
