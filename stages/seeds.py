"""Stage `seeds` (studies/dvc.yaml, `make seeds`): every deep model trained again with the root seeds of
params.yaml `studies.seeds` and scored on dev like the evaluate stage (probav/seeds.py); with the
pipeline's own run, the mean and standard deviation over seeds of each network's mean dev cPSNR and score
per track (metrics/seeds.json), and the same on the real scenes with an HR (params `real`). The runs live in studies/seeds/<model>-seed<S>/ (not under models/, which
the report stage depends on); a finished run made with the same settings is kept, so an interrupted study
resumes. A study: the training time of the pipeline once per extra seed."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from probav.data.index import write_json_atomic
from probav.params import load_params
from probav.seeds import seed_study


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="parameters file (studies.seeds, deep_models)")
    parser.add_argument("--raw", default="data/raw", help="data in the official layout")
    parser.add_argument("--scenes", default="data/scenes.csv", help="scene index")
    parser.add_argument("--split", default="data/split.csv", help="train/val/dev split")
    parser.add_argument("--tfrecords", default="data/tfrecords", help="folder of the tfrecords stage")
    parser.add_argument("--estimator", default="models/reference/estimator.json", help="the reference estimator")
    parser.add_argument("--metrics-dir", default="metrics", help="the pipeline's runs: METRICS_DIR/<model>.json")
    parser.add_argument("--runs", default="studies/seeds", help="where the extra runs are trained")
    parser.add_argument("--out", default="metrics/seeds.json", help="spread over seeds (JSON)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        params = load_params(args.params)
        seeds = ((params.get("studies") or {}).get("seeds")) or []
        if not seeds:
            raise ValueError(f"{args.params}: set studies.seeds to the extra seeds to train with")
        paths = {"raw": args.raw, "scenes": args.scenes, "split": args.split, "tfrecords": args.tfrecords,
                 "estimator": args.estimator, "out": args.runs, "base": Path(args.params).resolve().parent}
        result = seed_study(params, paths, list(params.get("deep_models") or []), seeds, args.metrics_dir,
                            progress=not args.no_progress)
    except (FileNotFoundError, KeyError, ValueError) as err:
        print(f"seeds failed: {err}", file=sys.stderr)
        return 1
    write_json_atomic(result, args.out)
    for model, entry in result["models"].items():
        c = entry[result["track"]]["mean_cpsnr"]
        sd = f" ± {c['sd']:.3f}" if c["sd"] is not None else ""
        print(f"{model}: dev cPSNR {c['mean']:.3f}{sd} dB over {c['runs']} seeds ({result['track']} track)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
