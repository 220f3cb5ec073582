"""Stage `split`: hold out part of the usable train scenes of data/scenes.csv as dev (the reported
scores) and val (model selection), stratified by band and seeded from params.yaml `seed`, written to
data/split.csv (name,band,subset)."""
from __future__ import annotations

import argparse
import sys

from probav.data.split import make_split, summary, write_split
from probav.params import load_params


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="parameters file (group `split`, root `seed`)")
    parser.add_argument("--scenes", default="data/scenes.csv", help="scene index written by the download stage")
    parser.add_argument("--out", default="data/split.csv", help="the split: name,band,subset (train | val | dev)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        params = load_params(args.params)
        split = make_split(args.scenes, params)
        write_split(split, args.out)
    except (FileNotFoundError, ValueError) as err:
        print(f"split stage failed: {err}", file=sys.stderr)
        return 1
    print(f"split {len(split)} usable train scenes: {summary(split)} → {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
