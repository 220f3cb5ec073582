"""Stage `package`: predict every test scene with the model named by params.yaml `submission.model`
(on the reference frame the estimator of the `reference` stage finds: test scenes have no labels), write
submission/submission.zip in the official format (one 384×384 16-bit PNG imgsetNNNN.png per test
scene, at the root of the zip; written under a temporary name, then renamed) and validate it.

On the simulator's data it then scores the submission once against the test scenes' hidden HRs
(metrics/test.json): held out from every choice, the one figure no tuning has seen. On the real archive
the test HRs are not public, and metrics/test.json says so."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from probav.data.index import iter_scenes, subset_table, write_json_atomic
from probav.data.reference_labels import reference_settings
from probav.metrics.scoring import score_hidden_test
from probav.models.registry import load_model
from probav.params import load_params
from probav.reference import load_estimator, with_track
from probav.scene import BadSceneError
from probav.submission import REAL_TEST_SCENES, predict_submission, validate_submission


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="parameters file (group `submission`)")
    parser.add_argument("--raw", default="data/raw", help="data in the official layout (norm.csv, train/, test/)")
    parser.add_argument("--scenes", default="data/scenes.csv", help="scene index written by the download stage")
    parser.add_argument("--split", default="data/split.csv", help="train/dev split (not used for test scenes)")
    parser.add_argument("--models-dir", default="models", help="trained models live in MODELS_DIR/<model>/")
    parser.add_argument("--estimator", default=None,
                        help="the reference estimator (written by the reference stage; default: the hand-set rule)")
    parser.add_argument("--out", default="submission/submission.zip", help="the submission zip")
    parser.add_argument("--metrics", default="metrics/test.json",
                        help="its score on the hidden test HRs (JSON; the simulator's data only)")
    parser.add_argument("--model", default=None, help="override submission.model")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        params = load_params(args.params)
        name = args.model or (params.get("submission") or {}).get("model")
        if not name:
            raise ValueError(f"{args.params}: set submission.model to the model to package")
        model = load_model(name, params, model_dir=Path(args.models_dir) / name)
        table = subset_table(args.scenes, args.split, "test")
        if table.empty:
            raise ValueError(f"{args.scenes}: no usable test scene to predict")
        track = reference_settings(params)["track"]
        estimator = load_estimator(args.estimator) if model.uses_reference else None
        scenes = (with_track(scene, track, estimator) if estimator else scene for scene in iter_scenes(args.raw, table))
        out = predict_submission(model, scenes, args.out, progress=not args.no_progress, total=len(table))
    except (BadSceneError, FileNotFoundError, KeyError, ValueError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"package failed: {message}", file=sys.stderr)
        return 1
    problems = validate_submission(out, expected_names=table["name"])
    if problems:
        print(f"package: {out} is not a valid submission:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    try:
        scored = score_hidden_test(out, args.raw, table)
    except (BadSceneError, ValueError) as err:
        print(f"package: scoring the hidden test HRs failed: {err}", file=sys.stderr)
        return 1
    test = {"model": name, "track": track}
    if scored is None:
        test["skipped"] = "the test scenes' HRs are not public (real data)"
    else:
        test.update({k: scored[k] for k in ("mean_score", "mean_cpsnr", "bands")}, scenes=len(scored["scenes"]))
        print(f"package: hidden test HRs (scored once, here): mean score {scored['mean_score']:.4f} on "
              f"{test['scenes']} scenes")
    write_json_atomic(test, args.metrics)
    index = pd.read_csv(args.scenes, dtype={"name": str})
    skipped = index[(index["split"] == "test") & (index["status"] != "ok")]
    print(f"package: {out} holds {len(table)} test scenes predicted by {name}; valid")
    if len(skipped):
        print(f"package: warning: {len(skipped)} test scene(s) were skipped by the check and are not in the zip "
              f"({', '.join(skipped['name'].head(10))}); the official server expects every test scene",
              file=sys.stderr)
    elif len(table) != REAL_TEST_SCENES:
        print(f"package: note: {len(table)} test scenes (the official test set has {REAL_TEST_SCENES}: "
              f"this is not real challenge data, or not all of it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
