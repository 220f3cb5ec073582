"""The probav command: predict scenes with a model, score predictions, validate a submission zip.

    probav predict --model shift_and_add --data DATA --split test --out predictions/ [--track ref]
    probav score predictions/ --data DATA [--json]
    probav reference --data DATA [--labels reference.json] [--json]
    probav consistency FOLDER --model shift_and_add [--json]
    probav validate-submission submission/submission.zip [--data DATA]
    probav profile profiles/gpu-real.yaml [--exp-args | --estimate]

DATA is a folder in the official archive layout (``norm.csv``, ``train/``, ``test/``). Bad input
(a missing scene, a wrong image size, a corrupt PNG, a name not in the data) ends with a one-line
error on stderr and exit status 1; usage errors exit with 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EPILOG = """examples:
  probav predict --model baseline --data ../shared/probav-mini --split train --out pred/
  probav predict --model shift_and_add --data ../shared/probav-mini --split train --out pred/ --track ref \
      --labels ../shared/probav-ref/reference.json
  probav reference --data ../shared/probav-mini --labels ../shared/probav-ref/reference.json
  probav consistency ../shared/probav-lr-only --model shift_and_add
  probav score pred/ --data ../shared/probav-mini
  probav score submission/submission.zip --data data/raw --scenes imgset0000,imgset0001 --json
  probav validate-submission submission/submission.zip --data data/raw
  dvc exp run $(probav profile profiles/gpu-real.yaml --exp-args)
  probav profile profiles/gpu-real.yaml --estimate --tflops 25

The score is the official one: per scene, the best of 49 shifted, brightness-bias-corrected clear-pixel
cPSNRs against HR; score = norm.csv value / cPSNR (lower is better; the official baseline scores 1)."""


class CliError(Exception):
    """Bad input: printed as one line on stderr, exit status 1."""


def _scene_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise CliError("--scenes is empty: give names like imgset0000,imgset0001")
    return names


def _scene_folders(data: Path, split: str | None, names: list[str] | None) -> dict[str, Path]:
    """Scene name → folder in DATA (one split or both), restricted to ``names`` (all must exist)."""
    from probav.scene import SPLITS, scene_dirs

    if not data.is_dir():
        raise CliError(f"{data}: data folder not found")
    folders = {}
    for s in ([split] if split else SPLITS):
        folders.update({d.name: d for d in scene_dirs(data, s)})
    if not folders:
        raise CliError(f"{data}: no scene folder {'/'.join([split] if split else SPLITS)}/RED|NIR/imgsetNNNN "
                       f"(is this the root of the PROBA-V data, holding norm.csv, train/ and test/?)")
    if names is not None:
        missing = [n for n in names if n not in folders]
        if missing:
            where = f"{data}/{split}" if split else str(data)
            raise CliError(f"scene(s) not found in {where}: {', '.join(missing)}")
        folders = {n: folders[n] for n in names}
    return folders


def _load_params(path: str | None) -> dict:
    from probav.params import load_params

    if path is None:
        default = Path("params.yaml")
        return load_params(default) if default.is_file() else {}
    return load_params(path)


def _reference_tools(args: argparse.Namespace, data: Path, params: dict):
    """The labels (``--labels``, else DATA/reference.json if present; {} without) and the estimator
    (``--estimator``, else models/reference/estimator.json if present, else the hand-set rule)."""
    from probav.data.reference_labels import labels_path, read_labels
    from probav.reference import ReferenceEstimator

    path = Path(args.labels) if args.labels else labels_path(data)
    labels = read_labels(path) if path is not None else {}
    default = Path("models/reference/estimator.json")
    if args.estimator:
        estimator = ReferenceEstimator.load(args.estimator)
    elif default.is_file():
        estimator = ReferenceEstimator.load(default)
    else:
        estimator = ReferenceEstimator.rule()
    return labels, estimator


def _model_and_reference(args: argparse.Namespace, data: Path):
    """What predicting needs: the model (``--model``, ``--params``, ``--models-dir``), the track
    (``--track``, else params.yaml's), the labels and the estimator (``_reference_tools``), and DATA's norms."""
    from probav.data.reference_labels import reference_settings
    from probav.models.registry import load_model
    from probav.scene import read_norm

    params = _load_params(args.params)
    track = args.track or reference_settings(params)["track"]
    try:
        model = load_model(args.model, params, model_dir=Path(args.models_dir) / args.model)
    except KeyError as err:
        raise CliError(err.args[0]) from None
    labels, estimator = _reference_tools(args, data, params)
    if track == "ref" and not labels and args.track == "ref":
        # Asked for the reference given, with nothing to give it: the run would silently be the challenge track.
        raise CliError(f"--track ref needs the reference labels, and none were found: pass --labels "
                       f"reference.json (PROBA-V-REF's format) or put one at {data / 'reference.json'}; "
                       f"without labels use --track challenge")
    norms = read_norm(data / "norm.csv") if (data / "norm.csv").is_file() else {}
    return model, track, labels, estimator, norms


def _read_labelled(folder: Path, norm, labels: dict):
    """A scene of a folder (HR optional) with its labelled reference frame, if the labels have it."""
    from probav.scene import read_scene

    scene = read_scene(folder, norm=norm, require_hr=False)
    if scene.name in labels:
        band, frame = labels[scene.name]
        if band != scene.band:
            raise CliError(f"{folder}: labelled as a {band} scene, but it lies under {scene.band}")
        try:
            scene.reference = scene.frame_index(frame)
        except KeyError as err:
            raise CliError(f"{folder}: {err.args[0]} (its labelled reference)") from None
    return scene


def cmd_predict(args: argparse.Namespace) -> int:
    from probav.evaluate import check_prediction
    from probav.reference import with_track
    from probav.scene import write_png
    from tqdm import tqdm

    data = Path(args.data)
    folders = _scene_folders(data, args.split, _scene_list(args.scenes))
    model, track, labels, estimator, norms = _model_and_reference(args, data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    unlabelled = 0
    for name, folder in tqdm(folders.items(), desc=f"predict {args.model}", unit="scene", leave=False,
                             disable=args.quiet):
        scene = _read_labelled(folder, norms.get(name), labels)
        unlabelled += scene.reference is None
        if model.uses_reference:
            with_track(scene, track, estimator)
        write_png(out / f"{name}.png", check_prediction(model.predict(scene), name))
    if track == "ref" and unlabelled and model.uses_reference:
        print(f"warning: {unlabelled} of {len(folders)} scene(s) have no reference label"
              f"{'' if labels else ' (no labels file: pass --labels)'}; their reference was estimated, as in "
              f"the challenge track", file=sys.stderr)
    if not args.quiet:
        print(f"wrote {len(folders)} prediction(s) of {args.model} ({track} track) to {out}/")
    return 0


def cmd_reference(args: argparse.Namespace) -> int:
    from probav.reference import frame_features
    from probav.scene import read_norm

    data = Path(args.data)
    folders = _scene_folders(data, args.split, _scene_list(args.scenes))
    labels, estimator = _reference_tools(args, data, _load_params(args.params))
    norms = read_norm(data / "norm.csv") if (data / "norm.csv").is_file() else {}
    rows = {}
    for name, folder in folders.items():
        scene = _read_labelled(folder, norms.get(name), labels)
        p = estimator.probabilities_from_features(frame_features(scene))
        order = [int(i) for i in (-p).argsort(kind="stable")]
        row = {"band": scene.band, "frames": scene.frames,
               "ranking": [{"frame": int(scene.ids[i]), "probability": float(p[i])} for i in order[:args.top]]}
        if scene.reference is not None:
            row["reference"] = int(scene.ids[scene.reference])
            row["rank"] = order.index(scene.reference) + 1
            row["probability"] = float(p[scene.reference])
        rows[name] = row
    ranked = [r["rank"] for r in rows.values() if "rank" in r]
    summary = {"estimator": estimator.kind, "scenes": len(rows), "labelled": len(ranked),
               "top1": sum(r == 1 for r in ranked) / len(ranked) if ranked else None,
               "top3": sum(r <= 3 for r in ranked) / len(ranked) if ranked else None}
    if args.json:
        print(json.dumps({**summary, "rows": rows}, indent=2))
        return 0
    for name, row in rows.items():
        best = ", ".join(f"LR{r['frame']:03d} {r['probability']:.2f}" for r in row["ranking"])
        known = f"   reference LR{row['reference']:03d}: rank {row['rank']} ({row['probability']:.2f})" \
            if "rank" in row else ""
        print(f"{name} {row['band']:<3} {row['frames']:>2} frames: {best}{known}")
    if ranked:
        print(f"{estimator.kind} estimator: top-1 {summary['top1']:.0%}, top-3 {summary['top3']:.0%} on "
              f"{len(ranked)} labelled scene(s)")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from probav.metrics.scoring import score_folder

    result = score_folder(args.submission, args.data, _scene_list(args.scenes), workers=args.workers,
                          progress=not args.json and sys.stderr.isatty())
    if args.json:
        print(json.dumps(result, allow_nan=False, default=str))
        return 0
    print(f"{'scene':<12} {'band':<4} {'cPSNR (dB)':>10} {'norm (dB)':>10} {'score':>8}")
    for name, row in result["scenes"].items():
        print(f"{name:<12} {row['band']:<4} {row['cpsnr']:>10.3f} {row['norm']:>10.3f} {row['score']:>8.4f}")
    mean_cpsnr = "inf" if result["mean_cpsnr"] is None else f"{result['mean_cpsnr']:.3f}"
    print(f"{'mean':<12} {'':<4} {mean_cpsnr:>10} {'':>10} {result['mean_score']:>8.4f}   "
          f"({len(result['scenes'])} scene(s); lower score is better, the official baseline scores 1)")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from probav.submission import validate_submission

    expected = None
    if args.data:
        expected = list(_scene_folders(Path(args.data), "test", None))
    problems = validate_submission(args.zip, expected_names=expected)
    if problems:
        print(f"{args.zip}: NOT a valid submission ({len(problems)} problem(s)):", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    import zipfile

    with zipfile.ZipFile(args.zip) as archive:
        count = len(archive.namelist())
    print(f"{args.zip}: valid submission, {count} image(s)"
          + ("" if expected is not None else " (scene names not checked: give --data to check them)"))
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from probav.profiles import (apply_profile, changes, estimate_markdown, estimate_training, exp_run_args,
                                 load_profile, measured_rates, prior_cost)

    params = _load_params(args.params)
    if not params:
        raise CliError("no params.yaml here: run from the repository root or give --params")
    overrides = load_profile(args.profile, params)
    if args.exp_args:
        print(" ".join(exp_run_args(overrides)))
        return 0
    if not args.estimate:
        for key, old, new in changes(params, overrides):
            print(f"{key}: {old!r} -> {new!r}")
        return 0
    merged = apply_profile(params, overrides)
    models = args.models.split(",") if args.models else list(merged.get("deep_models") or [])
    measured = measured_rates(args.bench)
    per_core = measured.get("input_examples_per_core_s")
    rows = estimate_training(merged, models, args.tflops, dev_scenes=args.dev_scenes,
                             input_examples_per_s=per_core * args.cores if per_core else None)
    prior = prior_cost(args.scenes, measured.get("prior_scenes_per_core_s"), args.cores)
    estimate = json.dumps({"profile": str(args.profile), "cores": args.cores, "tflops": args.tflops,
                           "measured": measured, "models": rows, "prior": prior}, indent=2) + "\n"
    if args.json:
        print(estimate, end="")
        return 0
    text = estimate_markdown(str(args.profile), rows, args.tflops, args.cores, measured, prior)
    for path, content in ((args.out, text), (args.json_out, estimate)):
        if path:
            out = Path(path)
            tmp = out.with_name(f".{out.name}.tmp")
            tmp.write_text(content)
            tmp.replace(out)
    if not args.out:
        print(text, end="")
    return 0


def cmd_consistency(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from probav.consistency import scene_consistency
    from probav.real import find_scene_folders, read_any_scene

    root = Path(args.folder)
    folders = find_scene_folders(root, args.split)
    names = _scene_list(args.scenes)
    if names is not None:
        unknown = sorted(set(names) - {d.name for d in folders})
        if unknown:
            raise CliError(f"scene(s) not found in {root}: {', '.join(unknown)}")
        folders = [d for d in folders if d.name in names]
    model, track, labels, estimator, norms = _model_and_reference(args, root)
    rows = {}
    for folder in tqdm(folders, desc=f"consistency {args.model}", unit="scene", leave=False, disable=args.quiet):
        scene = read_any_scene(folder, norms, labels)
        result = scene_consistency(model, scene, track, estimator, args.held_out)
        rows[scene.name] = {"band": scene.band, "frames": scene.frames, "qm": bool(not scene.qm.all()),
                            "cpsnr": None if result["cpsnr"] != result["cpsnr"] else result["cpsnr"],
                            "held_out": [{"frame": r.frame, "cpsnr": r.cpsnr, "psf_sigma": r.psf_sigma}
                                         for r in result["frames"]]}
    values = [r["cpsnr"] for r in rows.values() if r["cpsnr"] is not None]
    mean = sum(values) / len(values) if values else None
    if args.json:
        print(json.dumps({"model": args.model, "track": track, "mean_cpsnr": mean, "scenes": rows}, indent=2))
        return 0
    for name, row in rows.items():
        held = ", ".join(f"LR{r['frame']:03d} {r['cpsnr']:.2f}" for r in row["held_out"])
        value = "n/a" if row["cpsnr"] is None else f"{row['cpsnr']:.2f}"
        print(f"{name} {row['band']:<3} {row['frames']:>2} frames{'' if row['qm'] else ' (no QM)'}: {value} dB  "
              f"(held out: {held or 'no clear frame to hold out'})")
    print(f"{args.model} ({track} track): mean leave-one-frame-out consistency "
          f"{'n/a' if mean is None else f'{mean:.2f} dB'} over {len(values)} of {len(rows)} scene(s) "
          f"(higher is better; not the official score)")
    return 0


def _reference_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--labels", default=None, help="reference labels, PROBA-V-REF's reference.json format "
                                                  "(default: DATA/reference.json if present)")
    p.add_argument("--estimator", default=None, help="reference estimator JSON (default: "
                                                     "models/reference/estimator.json if present, else the "
                                                     "hand-set rule)")


def build_parser() -> argparse.ArgumentParser:
    from probav.models.registry import available_models

    parser = argparse.ArgumentParser(prog="probav", description=__doc__.split("\n\n")[0], epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("predict", help="super-resolve scenes with a model, one imgsetNNNN.png each",
                       description="Super-resolve the scenes of one split of DATA with a model and write one "
                                   "384x384 16-bit PNG imgsetNNNN.png per scene into OUT.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help=f"model name: {', '.join(available_models())}")
    p.add_argument("--data", required=True, help="data root in the official layout (norm.csv, train/, test/)")
    p.add_argument("--split", required=True, choices=["train", "test"], help="which split's scenes")
    p.add_argument("--scenes", default=None, help="comma-separated scene names (default: every scene of the split)")
    p.add_argument("--models-dir", default="models", help="trained models live in MODELS_DIR/<model>/")
    p.add_argument("--params", default=None, help="parameters file (default: ./params.yaml if present, "
                                                   "else every model's defaults)")
    p.add_argument("--out", required=True, help="output folder")
    _reference_arguments(p)
    p.add_argument("--track", default=None, choices=["challenge", "ref"],
                   help="challenge: the reference frame estimated; ref: given by the labels (estimated for a "
                        "scene without one). Default: params.yaml reference.track, else challenge")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary line")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("reference", help="rank each scene's frames by how likely each was taken with the HR",
                       description="The reference frame (the LR frame of the HR's own pass), estimated: each "
                                   "scene's most likely frames with their probabilities, and with labels the rank "
                                   "of the labelled one and the top-1/top-3 accuracy.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", required=True, help="data root in the official layout (norm.csv, train/, test/)")
    p.add_argument("--split", default=None, choices=["train", "test"], help="which split (default both)")
    p.add_argument("--scenes", default=None, help="comma-separated scene names (default: every scene)")
    p.add_argument("--params", default=None, help="parameters file (default: ./params.yaml if present)")
    _reference_arguments(p)
    p.add_argument("--top", type=int, default=3, help="frames listed per scene")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_reference)

    p = sub.add_parser("consistency", help="a quality check without HR: leave-one-frame-out consistency",
                       description="For scenes without an HR (test scenes, LR frames only): hold out a clear frame, "
                                   "super-resolve from the others, bring the result to the held-out frame's grid "
                                   "and resolution (registration, blur, 3x3 binning), remove the brightness bias "
                                   "and compute a cPSNR on its clear pixels; the mean over held-out frames. Higher "
                                   "is better. Not the official score: see probav/consistency.py for what it "
                                   "measures and how well it ranks models.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("folder", help="official layout (train|test/RED|NIR/imgsetNNNN), LR-only layout "
                                  "(RED|NIR/imgsetNNNN/LRnnn.png: no QM, every pixel taken as clear) or one scene")
    p.add_argument("--model", required=True, help=f"model name: {', '.join(available_models())}")
    p.add_argument("--split", default=None, choices=["train", "test"], help="official layout: one split only")
    p.add_argument("--scenes", default=None, help="comma-separated scene names (default: every scene)")
    p.add_argument("--held-out", type=int, default=2, help="clear frames held out per scene")
    p.add_argument("--models-dir", default="models", help="trained models live in MODELS_DIR/<model>/")
    p.add_argument("--params", default=None, help="parameters file (default: ./params.yaml if present)")
    _reference_arguments(p)
    p.add_argument("--track", default=None, choices=["challenge", "ref"], help="default: params.yaml reference.track")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_consistency)

    p = sub.add_parser("score", help="official score of predicted PNGs against the scenes' HR",
                       description="Score a folder or zip of imgsetNNNN.png against the scenes of DATA that have "
                                   "an HR (norm from DATA/norm.csv; the baseline's cPSNR where a scene has none). "
                                   "Prints each scene's cPSNR and score, and the mean.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("submission", help="folder or zip of imgsetNNNN.png")
    p.add_argument("--data", required=True, help="data root in the official layout (norm.csv, train/, test/)")
    p.add_argument("--scenes", default=None, help="comma-separated scenes to score (default: every scene of DATA "
                                                  "with an HR, which must all be predicted)")
    p.add_argument("--json", action="store_true", help='print one JSON object {"mean_score", "mean_cpsnr", '
                                                       '"scenes": {name: {"cpsnr", "score", ...}}}')
    p.add_argument("--workers", type=int, default=None, help="threads that read and score scenes (default: all cores)")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("validate-submission", help="check a submission zip against the official format",
                       description="Check a submission zip: imgsetNNNN.png at its root, each a readable "
                                   "384x384 16-bit grayscale PNG; with --data, exactly the test scenes of DATA "
                                   "(290 for the real data). Lists every problem; exit status 1 if any.")
    p.add_argument("zip", help="the submission zip")
    p.add_argument("--data", default=None, help="data root: expect exactly its test scenes")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("profile", help="show, apply (as a DVC experiment) or cost a params profile",
                       description="A profile (profiles/*.yaml) overrides some keys of params.yaml. Without "
                                   "options: each key's current and new value. --exp-args: the arguments of "
                                   "`dvc exp run` that apply it. --estimate: the expected training time of each "
                                   "network under it, from the FLOPs of its traced training step and an assumed "
                                   "sustained throughput (no GPU needed; an estimate, not a measurement).",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("profile", help="the profile, e.g. profiles/gpu-real.yaml")
    p.add_argument("--params", default=None, help="parameters file (default: ./params.yaml)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--exp-args", action="store_true", help="print `-S key=value ...` for `dvc exp run`")
    what.add_argument("--estimate", action="store_true", help="expected training time per network")
    p.add_argument("--tflops", type=float, default=25.0, help="assumed sustained TFLOP/s of the GPU")
    p.add_argument("--models", default=None, help="comma-separated networks (default: deep_models)")
    p.add_argument("--dev-scenes", type=int, default=290, help="dev scenes validated each epoch when "
                                                                "train.validation_scenes is 0 (all)")
    p.add_argument("--scenes", type=int, default=1450, help="scenes whose prior the tfrecords stage computes")
    p.add_argument("--cores", type=int, default=16, help="CPU cores for the prior")
    p.add_argument("--bench", default="metrics/bench.json", help="measured shift_and_add rate for the prior")
    p.add_argument("--json", action="store_true", help="with --estimate: one JSON object")
    p.add_argument("--out", default=None, help="with --estimate: write the Markdown table to this file")
    p.add_argument("--json-out", default=None, help="with --estimate: also write the JSON object to this file "
                                                     "(the report's next steps read metrics/gpu-estimate.json)")
    p.set_defaults(func=cmd_profile)
    return parser


def main(argv: list[str] | None = None) -> int:
    from probav.scene import BadSceneError
    from probav.submission import SubmissionError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (CliError, BadSceneError, SubmissionError, FileNotFoundError, ValueError) as err:
        print(f"probav {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"probav {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
