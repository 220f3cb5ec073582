"""Stage `tfrecords`: the train, dev and test scenes of data/raw (index data/scenes.csv, split
data/split.csv) as sharded GZIP TFRecords in data/tfrecords/, one tf.train.Example per scene (with its
labelled reference frame, the reference estimator's probabilities and the classical prior of both tracks),
with data/tfrecords/meta.json (counts, bytes, train statistics for normalisation)."""
from __future__ import annotations

import argparse
import sys

from probav.data.tfrecords import write_tfrecords
from probav.params import load_params
from probav.scene import BadSceneError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--params", default="params.yaml",
                        help="parameters file (group `tfrecords`: scenes_per_shard, workers)")
    parser.add_argument("--raw", default="data/raw", help="scenes in the official archive layout")
    parser.add_argument("--scenes", default="data/scenes.csv", help="scene index written by the download stage")
    parser.add_argument("--split", default="data/split.csv", help="train/dev split written by the split stage")
    parser.add_argument("--out", default="data/tfrecords", help="output folder (shards + meta.json), replaced when complete")
    parser.add_argument("--estimator", default=None,
                        help="reference estimator (reference stage): its probabilities and the challenge prior "
                             "(default: the hand-set rule)")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes reading PNGs (default: tfrecords.workers; the output does not depend on it)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        params = load_params(args.params)
        write_tfrecords(args.raw, args.scenes, args.split, args.out, params, workers=args.workers,
                        estimator=args.estimator)
    except (BadSceneError, FileNotFoundError, ValueError) as err:
        print(f"tfrecords stage failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
