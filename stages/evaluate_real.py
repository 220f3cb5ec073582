"""Stage `evaluate_real@MODEL`: score MODEL on the real scenes of params.yaml `real.folder` (train scenes
with an HR, official layout), in both tracks where `real.labels` labels them, exactly as `evaluate` scores
the dev split; write metrics/real/MODEL.json and the per-scene table metrics/real/scenes/MODEL.csv.
Without the real folder the stage still succeeds: the metrics say why nothing was scored."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from probav.data.index import write_csv_atomic, write_json_atomic
from probav.evaluate import COLUMNS
from probav.models.registry import load_model
from probav.params import load_params
from probav.real import evaluate_real
from probav.reference import load_estimator
from probav.scene import BadSceneError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("model", help="registered model name (probav/models/<name>.py)")
    parser.add_argument("--params", default="params.yaml", help="parameters file (groups `real`, `reference`)")
    parser.add_argument("--models-dir", default="models", help="trained models live in MODELS_DIR/<model>/")
    parser.add_argument("--estimator", default=None,
                        help="the reference estimator of the challenge track (default: the hand-set rule)")
    parser.add_argument("--metrics", default=None, help="summary JSON (default metrics/real/MODEL.json)")
    parser.add_argument("--table", default=None, help="per-scene CSV (default metrics/real/scenes/MODEL.csv)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    metrics_path = Path(args.metrics or f"metrics/real/{args.model}.json")
    table_path = Path(args.table or f"metrics/real/scenes/{args.model}.csv")
    try:
        params = load_params(args.params)
        model = load_model(args.model, params, model_dir=Path(args.models_dir) / args.model)
        estimator = load_estimator(args.estimator) if model.uses_reference else None
        base = Path(args.params).resolve().parent
        metrics, table = evaluate_real(model, params, estimator, base=base, progress=not args.no_progress)
    except (BadSceneError, FileNotFoundError, KeyError, ValueError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"evaluate_real {args.model} failed: {message}", file=sys.stderr)
        return 1
    write_csv_atomic(table, table_path, COLUMNS)
    write_json_atomic(metrics, metrics_path)
    if metrics.get("skipped"):
        print(f"evaluate_real {args.model}: skipped: {metrics['skipped']}")
    else:
        tracks = ", ".join(f"{k} {v['mean_cpsnr']:.2f} dB ({v.get('mean_gain_db', float('nan')):+.2f} dB over the "
                           f"baseline)" for k, v in metrics["tracks"].items() if v)
        print(f"evaluate_real {args.model}: {metrics['scenes']} real scene(s): {tracks}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
