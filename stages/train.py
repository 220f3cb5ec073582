"""Stage `train@MODEL`: train deep model MODEL on the train TFRecords, validate (early stopping, the best
epoch) on the val ones, never on the reported dev scenes, and write it to models/MODEL (atomically, with
training.json); DVCLive logs go to dvclive/MODEL.

An interrupted run leaves a checkpoint (by default in OUT/checkpoints) and the next run with the
same settings resumes from it. Note that `dvc repro` deletes a stage's outputs before running it
unless they are declared `persist: true`: keep the checkpoints outside OUT (--checkpoints) or
persist OUT for resuming under DVC.
"""
from __future__ import annotations

import argparse
import json
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("model", help="registered deep model name (probav/models/<name>.py)")
    parser.add_argument("--params", default="params.yaml", help="parameters file")
    parser.add_argument("--tfrecords", default="data/tfrecords", help="folder of the tfrecords stage")
    parser.add_argument("--out", default=None, help="model folder (default models/MODEL)")
    parser.add_argument("--live", default=None, help="DVCLive folder (default dvclive/MODEL)")
    parser.add_argument("--checkpoints", default=None, help="checkpoint folder (default OUT/checkpoints)")
    parser.add_argument("--verbose", type=int, default=None, help="Keras fit verbosity (default train.verbose)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from probav.params import load_params

    try:
        params = load_params(args.params)
        from probav.models.registry import model_class

        cls = model_class(args.model)
        if not getattr(cls, "trainable", False):
            raise ValueError(f"model {args.model!r} is not trainable (classical models need no train stage)")
        from probav.training import train

        summary = train(args.model, params, args.out or f"models/{args.model}", args.live or f"dvclive/{args.model}",
                        tfrecords=args.tfrecords, checkpoint_dir=args.checkpoints, verbose=args.verbose)
    except (FileNotFoundError, KeyError, ValueError) as err:
        print(f"train {args.model}: error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
