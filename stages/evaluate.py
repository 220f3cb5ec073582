"""Stage `evaluate@MODEL`: predict every dev scene with MODEL, score it with the official metric in both
tracks (challenge: the reference frame estimated by the estimator of the `reference` stage; ref: the
labelled reference, where there is one), and write the per-scene table (metrics/scenes/MODEL.csv) and
the summary (metrics/MODEL.json; headline track: params.yaml `reference.track`), both atomically."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from probav.data.index import iter_scenes, subset_table
from probav.data.reference_labels import reference_settings
from probav.evaluate import evaluate_model, summarise
from probav.models.registry import load_model
from probav.params import load_params
from probav.reference import load_estimator
from probav.scene import BadSceneError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("model", help="registered model name (probav/models/<name>.py)")
    parser.add_argument("--params", default="params.yaml", help="parameters file")
    parser.add_argument("--raw", default="data/raw", help="data in the official layout (norm.csv, train/, test/)")
    parser.add_argument("--scenes", default="data/scenes.csv", help="scene index written by the download stage")
    parser.add_argument("--split", default="data/split.csv", help="train/dev split")
    parser.add_argument("--subset", default="dev", choices=["train", "dev"], help="which scenes to evaluate")
    parser.add_argument("--models-dir", default="models", help="trained models live in MODELS_DIR/<model>/")
    parser.add_argument("--estimator", default=None,
                        help="the reference estimator of the challenge track (written by the reference stage; "
                             "default: the hand-set rule)")
    parser.add_argument("--metrics", default=None, help="summary JSON (default metrics/MODEL.json)")
    parser.add_argument("--table", default=None, help="per-scene CSV (default metrics/scenes/MODEL.csv)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def write_atomic(path: Path, write) -> None:
    """Write through ``write(tmp_path)`` then rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _fmt(value, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    metrics = Path(args.metrics or f"metrics/{args.model}.json")
    table_path = Path(args.table or f"metrics/scenes/{args.model}.csv")
    try:
        params = load_params(args.params)
        model = load_model(args.model, params, model_dir=Path(args.models_dir) / args.model)
        scenes = subset_table(args.scenes, args.split, args.subset)
        if scenes.empty:
            raise ValueError(f"no usable {args.subset} scene in {args.scenes} / {args.split}")
        track = reference_settings(params)["track"]
        estimator = load_estimator(args.estimator) if model.uses_reference else None
        table = evaluate_model(model, iter_scenes(args.raw, scenes), progress=not args.no_progress,
                               total=len(scenes), estimator=estimator, track=track)
        summary = summarise(table, args.model, {"subset": args.subset}, track=track)
    except (BadSceneError, FileNotFoundError, KeyError, ValueError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"evaluate {args.model} failed: {message}", file=sys.stderr)
        return 1
    write_atomic(table_path, lambda tmp: table.to_csv(tmp, index=False, float_format="%.6f"))
    write_atomic(metrics, lambda tmp: tmp.write_text(json.dumps(summary, indent=2) + "\n"))
    tracks = ", ".join(f"{name} {_fmt(t['mean_score'], 4)}" for name, t in summary["tracks"].items() if t)
    print(f"{args.model}: mean score {_fmt(summary['mean_score'], 4)} ({track} track; {tracks}), mean cPSNR "
          f"{_fmt(summary['mean_cpsnr'], 3)} dB over {summary['scenes']} {args.subset} scenes "
          f"({_fmt(summary['scenes_per_second'], 2)} scenes/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
