"""Stage `realism`: the realism scorecard of the pipeline's data against the real material of params.yaml
`real` (probav/data/realism.py): for every statistic the synthetic value, the real value and a distance,
written to metrics/realism.json (and shown in the report). Without real material the scorecard is empty
and says why."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from probav.data.index import write_json_atomic
from probav.data.realism import run_scorecard
from probav.params import load_params
from probav.scene import BadSceneError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="parameters file (group `real`)")
    parser.add_argument("--raw", default="data/raw", help="the pipeline's data in the official layout")
    parser.add_argument("--scenes", default="data/scenes.csv", help="its scene index")
    parser.add_argument("--reference-table", default="metrics/scenes/reference.csv",
                        help="the reference stage's per-scene table (the reference frame's margin)")
    parser.add_argument("--out", default="metrics/realism.json", help="the scorecard (JSON)")
    parser.add_argument("--scenes-per-band", type=int, default=24, help="train scenes per band measured")
    parser.add_argument("--shift-scenes", type=int, default=12, help="of those, scenes per band whose frames are registered")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        params = load_params(args.params)
        result = run_scorecard(args.raw, args.scenes, params, args.reference_table,
                               base=Path(args.params).resolve().parent, scenes_per_band=args.scenes_per_band,
                               shift_scenes=args.shift_scenes)
    except (BadSceneError, FileNotFoundError, ValueError) as err:
        print(f"realism stage failed: {err}", file=sys.stderr)
        return 1
    write_json_atomic(result, args.out)
    rows = list(result["statistics"].values())
    if not rows:
        print(f"realism: no real material ({'; '.join(result['real']['absent'])}): empty scorecard")
    else:
        print(f"realism: {len(rows)} statistics against {result['real']['scenes']} real scenes; largest distances: "
              + ", ".join(f"{r['statistic']} {r['band']} {r['distance']:.2f}"
                          for r in sorted(rows, key=lambda r: -(r['distance'] or 0))[:3]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
