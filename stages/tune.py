"""Stage `tune` (studies/dvc.yaml, `make tune`): shift_and_add's settings selected on the val split, never on
dev (probav/tuning.py): a coordinate search over the values of params.yaml `studies.tune.grid`, one setting at a
time around the current point (the coupled settings of `studies.tune.joint` together: every combination), for
`studies.tune.passes` passes, scored with the official shifted cPSNR on the val scenes in the headline track
(`reference.track`); the ref track and the real scenes with an HR (`real.folder`) are scored beside it, never
used to select. Writes metrics/tuning.json (per setting: every value tried, its val and real cPSNR, the paired
difference against the shipped value with a bootstrap interval, the val-selected value) and
metrics/tuning/scenes.csv (every sweep × value × scene). params.yaml is never changed. A study, not a default
stage: a few minutes on 2 cores."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from probav.data.index import write_csv_atomic, write_json_atomic
from probav.params import load_params
from probav.reference import load_estimator
from probav.scene import BadSceneError
from probav.tuning import TABLE_COLUMNS, run_tuning


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml",
                        help="parameters file (studies.tune, classical.shift_and_add: the shipped settings, real)")
    parser.add_argument("--raw", default="data/raw", help="data in the official layout")
    parser.add_argument("--scenes", default="data/scenes.csv", help="scene index")
    parser.add_argument("--split", default="data/split.csv", help="train/val/dev split")
    parser.add_argument("--estimator", default=None,
                        help="the reference estimator of the challenge track (default: the hand-set rule)")
    parser.add_argument("--val-scenes", type=int, default=0, help="val scenes tuned on (0 = all)")
    parser.add_argument("--no-real", action="store_true", help="do not score the real scenes with an HR")
    parser.add_argument("--out", default="metrics/tuning.json", help="per setting (JSON)")
    parser.add_argument("--table", default="metrics/tuning/scenes.csv", help="per sweep, value and scene (CSV)")
    parser.add_argument("--no-progress", action="store_true", help="no progress lines")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        params = load_params(args.params)
        base = Path(args.params).resolve().parent
        summary, table = run_tuning(args.raw, args.scenes, args.split, params, load_estimator(args.estimator),
                                    base=base, limit=args.val_scenes, progress=not args.no_progress,
                                    real=not args.no_real)
    except (BadSceneError, FileNotFoundError, KeyError, ValueError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"tune failed: {message}", file=sys.stderr)
        return 1
    write_csv_atomic(table, args.table, TABLE_COLUMNS)
    write_json_atomic(summary, args.out)
    track = summary["track"]
    print(f"tune: {summary['configurations']} configurations on {summary['scenes']} val scenes in "
          f"{summary['seconds']:.0f} s ({track} track), "
          + ("converged" if summary["converged"] else "stopped by the pass limit before converging"))
    for name, entry in summary["parameters"].items():
        vs = entry["val"][track]["vs_shipped"]
        diff = "" if not vs else f", {vs['mean']:+.3f} dB [{vs['low']:+.3f}, {vs['high']:+.3f}]"
        joint = f" (with {', '.join(entry['joint_with'])})" if entry.get("joint_with") else ""
        print(f"  {name}{joint}: shipped {entry['shipped']}, val-selected {entry['selected']}{diff}"
              f"{' (detectable)' if entry['detectable'] else ''}")
    if summary["real"]["skipped"]:
        print(f"tune: real scenes left out: {summary['real']['skipped']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
