"""Stage `download`: produce data/raw/ in the official layout from params.yaml `data.source`
(synthetic | kelvins | archive | folder), add the reference labels (data/raw/reference.json: the
simulator's, or PROBA-V-REF's as params.yaml `reference.labels` says), then check every scene into
the index data/scenes.csv."""
from __future__ import annotations

import argparse
import sys

from probav.data.check import check_scenes
from probav.data.download import DataSourceError, data_settings, prepare_labels, prepare_raw
from probav.params import load_params
from probav.scene import BadSceneError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Sources (params.yaml data.source): synthetic = generated scenes (default, no download); "
               "kelvins = the official zip from data.url, resumed and checked against data.size/data.sha256; "
               "archive = a zip you already have (data.archive); folder = an unpacked copy (data.folder). "
               "data.on_bad_scene: stop | skip decides what happens to an unusable scene. Reference labels "
               "(real sources): reference.labels = download (PROBA-V-REF, checksum checked) | a path | none.")
    parser.add_argument("--params", default="params.yaml", help="parameters file (groups `data`, `synthetic`, "
                                                                 "`reference`)")
    parser.add_argument("--out", default="data/raw", help="output folder, in the official archive layout")
    parser.add_argument("--index", default="data/scenes.csv", help="scene index written by the check")
    parser.add_argument("--cache", default="data/interim",
                        help="download cache: the zip (and labels), its .part while downloading, its recorded sha256")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        params = load_params(args.params)
        settings = data_settings(params)
        raw = prepare_raw(params, args.out, args.cache)
        prepare_labels(params, raw, args.cache)
        check_scenes(raw, on_bad_scene=settings["on_bad_scene"], workers=int(settings["workers"]),
                     index_csv=args.index)
    except (DataSourceError, BadSceneError, FileNotFoundError, ValueError) as err:
        print(f"download stage failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
