"""Stage `nohr` (studies/dvc.yaml, `make nohr`): the quality check that needs no HR (leave-one-frame-out
consistency, probav/consistency.py) for every model, validated where the official score is known and
applied where it is not:

- the dev scenes (synthetic by default): its value against each model's official dev cPSNR
  (metrics/scenes/<model>.csv, track `reference.track`): Spearman ρ per scene and of the model means;
- the real scenes with an HR (params.yaml `real.folder`, e.g. imgset0000): the same, on real data;
- the real scenes without an HR (`real.folder`'s test scenes, `real.lr_only`): its values.

Writes metrics/nohr.json (the validation and the per-model means) and metrics/nohr/scenes.csv (every
scene × model). A study, not a default stage: about 15 s per scene on 2 cores."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from probav.consistency import ROW_COLUMNS, consistency_rows, validate
from probav.data.index import iter_scenes, subset_table, write_csv_atomic, write_json_atomic
from probav.data.reference_labels import reference_settings
from probav.models.registry import load_model
from probav.params import load_params
from probav.real import real_scenes_with_hr, real_scenes_without_hr, real_settings
from probav.reference import load_estimator
from probav.scene import BadSceneError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="parameters file (groups `real`, `reference`)")
    parser.add_argument("--raw", default="data/raw", help="data in the official layout")
    parser.add_argument("--scenes", default="data/scenes.csv", help="scene index")
    parser.add_argument("--split", default="data/split.csv", help="train/dev split")
    parser.add_argument("--tables", default="metrics/scenes", help="official dev cPSNR per scene and model")
    parser.add_argument("--models-dir", default="models", help="trained models live in MODELS_DIR/<model>/")
    parser.add_argument("--estimator", default=None, help="the reference estimator (default: the hand-set rule)")
    parser.add_argument("--dev-scenes", type=int, default=0, help="dev scenes checked (0 = all)")
    parser.add_argument("--out", default="metrics/nohr.json", help="validation and means (JSON)")
    parser.add_argument("--table", default="metrics/nohr/scenes.csv", help="every scene × model (CSV)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        params = load_params(args.params)
        track = reference_settings(params)["track"]
        cfg = real_settings(params, Path(args.params).resolve().parent)
        names = list(dict.fromkeys(list(params.get("models") or []) + list(params.get("deep_models") or [])))
        models = {n: load_model(n, params, model_dir=Path(args.models_dir) / n) for n in names}
        estimator = load_estimator(args.estimator)
        official = {}
        for name in names:
            table = pd.read_csv(Path(args.tables) / f"{name}.csv", dtype={"scene": str})
            column = f"cpsnr_{track}" if f"cpsnr_{track}" in table else "cpsnr"
            official.update({(row.scene, name): float(getattr(row, column)) for row in table.itertuples()})
        dev = subset_table(args.scenes, args.split, "dev")
        if args.dev_scenes:
            dev = dev.head(args.dev_scenes)
        rows = consistency_rows(models, iter_scenes(args.raw, dev), "dev", track, estimator, cfg["held_out"], official)
        real, why = real_scenes_with_hr(cfg)
        rows += consistency_rows(models, real, "real", track, estimator, cfg["held_out"])
        rows += consistency_rows(models, real_scenes_without_hr(cfg), "real_no_hr", track, estimator, cfg["held_out"])
    except (BadSceneError, FileNotFoundError, KeyError, ValueError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"nohr stage failed: {message}", file=sys.stderr)
        return 1
    table = pd.DataFrame(rows, columns=ROW_COLUMNS)
    kinds = {kind: table[table["kind"] == kind] for kind in ("dev", "real", "real_no_hr")}
    result = {"track": track, "held_out": cfg["held_out"], "real_skipped": why,
              "validation": {"dev": validate(kinds["dev"]), "real": validate(kinds["real"])},
              "real_no_hr": {model: {"scenes": int(g["consistency"].notna().sum()),
                                     "mean_consistency": None if g["consistency"].isna().all()
                                     else float(g["consistency"].mean())}
                             for model, g in kinds["real_no_hr"].groupby("model")}}
    write_csv_atomic(table, args.table, ROW_COLUMNS)
    write_json_atomic(result, args.out)
    dev = result["validation"]["dev"]
    if dev.get("scenes"):
        print(f"no-HR check on {dev['scenes']} dev scenes: Spearman ρ per scene across {dev['models']} models "
              f"{dev['rho_per_scene_mean']:+.2f} (positive on {dev['rho_per_scene_positive']}), of the model means "
              f"{dev['rho_model_means']:+.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
