"""Stage `ablations` (studies/dvc.yaml, `make ablations`): one-factor ablations of shift_and_add and
misr_net on every dev scene, in both tracks (probav/ablations.py): true, registered or zero shifts; QMs
used or ignored; K frames from 1 to all; misr_net with its frames or the reference alone. Writes
metrics/ablations.json (per variant: mean cPSNR and the paired difference against the shipped variant,
with a bootstrap interval and a sign test) and metrics/ablations/scenes.csv (every scene × variant).
A study, not a default stage: about 10 s per dev scene on 2 cores."""
from __future__ import annotations

import argparse
import sys

from probav.ablations import TABLE_COLUMNS, run_ablations
from probav.data.index import write_csv_atomic, write_json_atomic
from probav.params import load_params
from probav.reference import load_estimator
from probav.scene import BadSceneError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="parameters file (the shipped settings)")
    parser.add_argument("--raw", default="data/raw", help="data in the official layout")
    parser.add_argument("--scenes", default="data/scenes.csv", help="scene index")
    parser.add_argument("--split", default="data/split.csv", help="train/val/dev split")
    parser.add_argument("--models-dir", default="models", help="trained models live in MODELS_DIR/<model>/")
    parser.add_argument("--estimator", default=None, help="the reference estimator (default: the hand-set rule)")
    parser.add_argument("--dev-scenes", type=int, default=0, help="dev scenes ablated (0 = all)")
    parser.add_argument("--out", default="metrics/ablations.json", help="per variant (JSON)")
    parser.add_argument("--table", default="metrics/ablations/scenes.csv", help="per scene and variant (CSV)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        params = load_params(args.params)
        summary, table = run_ablations(args.raw, args.scenes, args.split, params, args.models_dir,
                                       load_estimator(args.estimator), args.dev_scenes, not args.no_progress)
    except (BadSceneError, FileNotFoundError, KeyError, ValueError) as err:
        print(f"ablations failed: {err}", file=sys.stderr)
        return 1
    write_csv_atomic(table, args.table, TABLE_COLUMNS)
    write_json_atomic(summary, args.out)
    for key, factor in summary["factors"].items():
        parts = [f"{v['label']} {v['challenge']['mean_cpsnr']:.2f}" for v in factor["variants"].values() if "challenge" in v]
        print(f"{key} (challenge track, mean dB): " + ", ".join(parts))
    for name, why in summary["skipped_models"].items():
        print(f"ablations: {name} left out: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
