"""Stage `reference`: the reference-frame estimator. Fits it on the labelled train scenes (params.yaml
`reference`: `estimator: fitted`, `l2`; the hand-set rule with `estimator: rule` or without labels),
writes it to models/reference/estimator.json, and measures it on the labelled dev scenes: top-1/top-3
accuracy, the hand-set rule beside it, what its mistakes cost a single frame, and the margin of the
reference frame over the next-best single frame (metrics/reference.json, metrics/scenes/reference.csv);
and on the labelled real scenes of params.yaml `real` (PROBA-V-REF labels; metrics/reference.json's
`real`, metrics/real/scenes/reference.csv), which no fit has seen."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from probav.data.index import write_csv_atomic, write_json_atomic
from probav.params import load_params
from probav.reference import REAL_COLUMNS, SCENE_COLUMNS, fit_reference_estimator
from probav.scene import BadSceneError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="parameters file (groups `reference`, `real`)")
    parser.add_argument("--raw", default="data/raw", help="data in the official layout")
    parser.add_argument("--scenes", default="data/scenes.csv", help="scene index (with its reference column)")
    parser.add_argument("--split", default="data/split.csv", help="train/dev split")
    parser.add_argument("--out", default="models/reference/estimator.json", help="the estimator (JSON)")
    parser.add_argument("--metrics", default="metrics/reference.json", help="its dev metrics (JSON)")
    parser.add_argument("--table", default="metrics/scenes/reference.csv", help="per dev scene (CSV)")
    parser.add_argument("--real-table", default="metrics/real/scenes/reference.csv", help="per real scene (CSV)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default data.workers)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        params = load_params(args.params)
        workers = args.workers or int((params.get("data") or {}).get("workers", 2))
        base = Path(args.params).resolve().parent
        estimator, metrics, table, real_table = fit_reference_estimator(args.raw, args.scenes, args.split, params,
                                                                        workers, base)
    except (BadSceneError, FileNotFoundError, KeyError, ValueError) as err:
        print(f"reference stage failed: {err}", file=sys.stderr)
        return 1
    estimator.save(args.out)
    write_csv_atomic(table, args.table, SCENE_COLUMNS)
    write_csv_atomic(real_table, args.real_table, REAL_COLUMNS)
    write_json_atomic(metrics, args.metrics)
    dev = metrics["dev"]
    if dev:
        print(f"reference estimator ({estimator.kind}, {metrics['train_scenes']} train scenes): top-1 "
              f"{dev['top1']:.0%}, top-3 {dev['top3']:.0%} on {dev['scenes']} dev scenes (hand-set rule: top-1 "
              f"{dev['rule']['top1']:.0%})")
    else:
        print(f"reference estimator ({estimator.kind}): no labelled dev scene to measure it on")
    real = metrics["real"]
    if real.get("skipped"):
        print(f"real scenes: skipped: {real['skipped']}")
    else:
        print(f"on {real['scenes']} labelled real scenes: top-1 {real['top1']:.0%}, top-3 {real['top3']:.0%} "
              f"(hand-set rule: top-1 {real['rule']['top1']:.0%}; chance {real['chance_top1']:.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
