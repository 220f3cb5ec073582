"""Section 4's visual comparisons: the best, a typical and the worst dev scene of the best model, every model's
prediction on the same window, and the best model's error map."""
from __future__ import annotations

import numpy as np
import pandas as pd

from probav.report import detail, figures
from probav.report.inputs import ModelRun, Options, Paths, ReportInputs, has_saved_model, log
from probav.report.markdown import figure_md, md_table


CROP = 192                   # HR pixels shown in the visual comparisons


def best_shift_error(sr: np.ndarray, hr: np.ndarray, sm: np.ndarray) -> np.ndarray:
    """SR − HR (DN) at the metric's best shift, bias removed, on the SR's grid; NaN where SM is cloudy
    or outside the 378×378 window."""
    from probav.metrics.score import BORDER, shifted_cpsnr_batch

    _, shifts = shifted_cpsnr_batch(sr[None], hr[None], sm[None], return_shift=True, workers=1)
    du, dv = shifts[0]
    n = sr.shape[0] - 2 * BORDER
    crop = sr[BORDER:BORDER + n, BORDER:BORDER + n].astype(np.float64)
    h = hr[BORDER + du:BORDER + du + n, BORDER + dv:BORDER + dv + n].astype(np.float64)
    m = sm[BORDER + du:BORDER + du + n, BORDER + dv:BORDER + dv + n]
    diff = crop - h
    diff -= diff[m].mean() if m.any() else 0.0
    out = np.full(sr.shape, np.nan)
    out[BORDER:BORDER + n, BORDER:BORDER + n] = np.where(m, diff, np.nan)
    return out


def detail_window(hr: np.ndarray, sm: np.ndarray, size: int = CROP, margin: int = 8) -> tuple[int, int, int]:
    """(y, x, size): the clear window of the HR with the most variance, away from the image border
    (the score ignores 3 pixels there, and models are least reliable near it)."""
    size = min(size, hr.shape[0] - 2 * margin)
    best, where = -1.0, (margin, margin)
    step = max((hr.shape[0] - size - 2 * margin) // 4, 1)
    for y in range(margin, hr.shape[0] - size - margin + 1, step):
        for x in range(margin, hr.shape[1] - size - margin + 1, step):
            m = sm[y:y + size, x:x + size]
            if m.mean() < 0.9:
                continue
            v = float(hr[y:y + size, x:x + size][m].astype(np.float64).std())
            if v > best:
                best, where = v, (y, x)
    return where[0], where[1], size


def pick_scenes(table: pd.DataFrame) -> list[tuple[str, str]]:
    t = table.dropna(subset=["score"]).sort_values("score", kind="stable").reset_index(drop=True)
    if t.empty:
        return []
    typical = int((t["score"] - t["score"].median()).abs().idxmin())
    picks = [("best", t.loc[0, "scene"]), ("typical", t.loc[typical, "scene"]), ("worst", t.loc[len(t) - 1, "scene"])]
    seen, out = set(), []
    for label, scene in picks:
        if scene not in seen:
            seen.add(scene)
            out.append((label, scene))
    return out


def comparisons(runs: list[ModelRun], params: dict, paths: Paths, index: pd.DataFrame | None,
                options: Options) -> str:
    from probav.models.registry import load_model
    from probav.scene import read_norm, read_scene

    ran = sorted([r for r in runs if r.ran], key=lambda r: r.metrics["mean_score"])
    if not ran or index is None:
        return "No model has per-scene results yet, so there is nothing to show."
    best = ran[0]
    picks = pick_scenes(best.table)
    paths_by_name = dict(zip(index["name"], index["path"]))
    labels = dict(zip(index["name"], index["reference"])) if "reference" in index else {}
    order = ["baseline"] + [r.name for r in ran if r.name != "baseline"]
    order = [n for n in order if any(r.name == n for r in ran)]
    loaded, failures = {}, {}
    kinds = {r.name: r.kind for r in runs}
    for name in order:
        if kinds.get(name) == "deep" and not has_saved_model(paths.models / name):
            failures[name] = f"no saved model in {paths.models / name}"
            continue
        try:
            loaded[name] = load_model(name, params, model_dir=paths.models / name)
        except Exception as err:  # noqa: BLE001 - one broken model must not stop the report
            failures[name] = str(err).splitlines()[0] if str(err) else type(err).__name__
            log(f"cannot load {name}: {failures[name]}", options)
    norms = read_norm(paths.raw / "norm.csv") if (paths.raw / "norm.csv").is_file() else {}
    weights = headline_weights(params, paths)
    blocks, spectra_by_scene, misaligned = [], {}, {}
    tables = {r.name: r.table.set_index("scene") for r in ran}
    for label, name in picks:
        if name not in paths_by_name:
            continue
        scene = read_scene(paths.raw / paths_by_name[name], norm=norms.get(name))
        if pd.notna(labels.get(name)):
            scene.reference = scene.frame_index(int(labels[name]))
        predictions, cpsnrs = {}, {}
        for model in order:
            image = None
            if model in loaded:
                try:
                    scene.reference_weights = weights(loaded[model], scene)
                    image = np.asarray(loaded[model].predict(scene))
                except Exception as err:  # noqa: BLE001
                    log(f"{model} failed on {name}: {err}", options)
            predictions[model] = image
            if name in tables[model].index:
                cpsnrs[model] = float(tables[model].loc[name, "cpsnr"])
        errors = {m: best_shift_error(image, scene.hr, scene.sm) for m, image in predictions.items()
                  if image is not None}
        error = errors.get(best.name)
        row = tables[best.name].loc[name]
        title = (f"{label.capitalize()} dev scene of {best.name}: {name} ({scene.band}), score {row['score']:.4f}, "
                 f"{scene.frames} frames, clear {scene.clearance.mean():.0%}")
        out = paths.figures / f"compare_{label}.png"
        figures.comparison(scene, predictions, cpsnrs, best.name, error, out, title,
                           crop=detail_window(scene.hr, scene.sm))
        caption = (f"The {label} dev scene of {best.name} ({name}, {scene.band}): cPSNR of each model on this "
                   f"scene from metrics/scenes/.")
        blocks.append(f"**{label.capitalize()}: {name}** ({scene.band}, score {row['score']:.4f})\n\n"
                      + figure_md(out, paths.out.parent, f"{label} scene {name}", caption))
        if predictions.get(best.name) is not None:
            misaligned[label] = detail.residual_misalignment(predictions[best.name], scene.hr, scene.sm)
        if label == "worst":
            blocks.append(worst_text(scene, best.name, tables, misaligned, paths))
        blocks.append(zoom_block(scene, predictions, errors, cpsnrs, label, paths))
        spectra_by_scene[f"{label}: {name} ({scene.band})"] = detail.spectra(predictions, scene.hr, scene.sm)
    if spectra_by_scene:
        classical = {n: m for n, m in loaded.items() if kinds.get(n) == "classical"}
        spectra_by_scene.update(real_spectra(classical, params, paths, options))
        blocks.append(spectra_block(spectra_by_scene, order, paths))
    if failures:
        blocks.append("Models that could not be loaded for these pictures: "
                      + "; ".join(f"`{n}` ({e})" for n, e in failures.items()) + ".")
    return "\n\n".join(blocks) if blocks else "The chosen scenes could not be read."


def headline_weights(params: dict, paths: Paths):
    """``weights(model, scene)``: the reference weights the evaluate stage gave a model that reads them, in the
    headline track (the run's estimator where saved, else the hand-set rule; a labelled scene's label in the ref
    track), None for the others; so the pictures show the predictions that were scored."""
    from probav.data.reference_labels import reference_settings
    from probav.reference import ReferenceEstimator, reference_weights

    track = reference_settings(params)["track"]
    saved = paths.models / "reference" / "estimator.json"
    estimator = ReferenceEstimator.load(saved) if saved.is_file() else None

    def weights(model, scene):
        return reference_weights(scene, track, estimator) if getattr(model, "uses_reference", False) else None

    return weights


def _frame(number) -> str:
    """LRnnn of a frame given by its file number (the per-scene tables' ``reference`` and ``estimated``)."""
    return f"LR{int(number):03d}"


def worst_text(scene, best: str, tables: dict[str, pd.DataFrame], misaligned: dict, paths: Paths) -> str:
    """What the worst scene shows, from the run's numbers: the reference frame estimated against the labelled
    one, what the label would have given, the prediction's misalignment left after the metric's best integer
    shift (against the best and typical scenes'), and the simulator's true offset between the two frames."""
    from probav.data.stats import read_truth

    row = tables[best].loc[scene.name]
    parts = []
    ref, est = row.get("reference"), row.get("estimated")
    known = pd.notna(ref) and pd.notna(est)
    if known and int(ref) != int(est):
        ranking = ""
        ref_csv = paths.metrics / "scenes" / "reference.csv"
        if ref_csv.is_file():
            r = pd.read_csv(ref_csv).set_index("scene")
            if scene.name in r.index and pd.notna(r.loc[scene.name, "rank"]):
                ranking = (f", which the estimator ranked number {int(r.loc[scene.name, 'rank'])} of {scene.frames} "
                           f"(probability {r.loc[scene.name, 'p_reference']:.2f})")
        parts.append(f"On {scene.name} the estimator took {_frame(est)} for the reference frame; the labelled "
                     f"one is {_frame(ref)}{ranking}.")
        if pd.notna(row.get("cpsnr_ref")) and pd.notna(row.get("cpsnr_challenge")):
            parts.append(f"Given the labelled reference, {best} scores {row['cpsnr_ref']:.2f} dB on this scene instead "
                         f"of {row['cpsnr_challenge']:.2f} (score {row['score_ref']:.4f} instead of "
                         f"{row['score_challenge']:.4f}).")
        truth = read_truth(paths.raw)
        key_ref, key_est = (scene.name, int(ref)), (scene.name, int(est))
        if truth and key_ref in truth and key_est in truth:
            offset = 3 * (np.array(truth[key_est]) - np.array(truth[key_ref]))
            left = offset - np.round(offset)
            parts.append(f"In the simulator's truth {_frame(est)} lies ({offset[0]:+.2f}, {offset[1]:+.2f}) HR "
                         f"pixels (dy, dx) from {_frame(ref)}, the HR's own pass: the metric's search over whole "
                         f"HR pixels removes the integer part and leaves ({left[0]:+.2f}, {left[1]:+.2f}).")
    elif known:
        parts.append(f"On {scene.name} the estimator found the labelled reference frame ({_frame(ref)}).")
    if "baseline" in tables and scene.name in tables["baseline"].index:
        parts.append(f"The baseline scores {tables['baseline'].loc[scene.name, 'cpsnr']:.2f} dB here, {best} "
                     f"{row['cpsnr']:.2f}.")
    shift = misaligned.get("worst")
    if shift is not None:
        others = [f"{np.hypot(*v):.2f} on the {k} scene" for k, v in misaligned.items() if k != "worst" and v is not None]
        parts.append(f"Registering {best}'s prediction onto the HR after the metric's best shift measures a residual "
                     f"misalignment of {np.hypot(*shift):.2f} HR pixels (dy {shift[0]:+.2f}, dx {shift[1]:+.2f} bring it "
                     f"onto the HR)" + (f", against {' and '.join(others)}" if others else "")
                     + ": a fraction of a pixel that the metric cannot undo. In the error maps it shows where the HR "
                       "has a sharp, high-contrast edge, as a red band on one side and a blue band on the other, and "
                       "in every model's map alike (they are all placed on the same frames' grid); elsewhere the "
                       "error is mostly the HR's pixel-scale texture, which no model recovers.")
    elif misaligned:
        parts.append(f"Registering {best}'s prediction onto the HR failed its checks, so its misalignment is not measured.")
    return "**What the worst scene shows.** " + " ".join(parts) if parts else ""


def zoom_block(scene, predictions, errors, cpsnrs, label: str, paths: Paths) -> str:
    """The zoomed window of one comparison scene, as Markdown."""
    y, x = detail.zoom_window(scene.hr, scene.sm)
    out = paths.figures / f"compare_{label}_zoom.png"
    figures.zoom(scene, predictions, errors, cpsnrs, (y, x, detail.ZOOM), out,
                 f"{scene.name} ({scene.band}), {detail.ZOOM}×{detail.ZOOM} HR pixels enlarged")
    return figure_md(out, paths.out.parent, f"{label} scene enlarged",
                     f"The fully clear {detail.ZOOM}×{detail.ZOOM} HR-pixel window of {scene.name} with the most "
                     f"variance, enlarged. Top: the clearest LR frame (each pixel repeated 3×3), every model's "
                     f"prediction and the HR, in the HR's grey range. Bottom: each model's error (SR − HR at the "
                     f"metric's best shift, brightness bias removed), all in one colour range; RMS over the window.")


def real_spectra(models: dict, params: dict, paths: Paths, options: Options) -> dict[str, dict]:
    """The spectra of the classical models' predictions on the real scenes with an HR (``real.folder``), which
    take a second each; empty where there are none."""
    from probav.real import real_scenes_with_hr, real_settings

    if not models:
        return {}
    scenes, why = real_scenes_with_hr(real_settings(params, paths.repo))
    out = {}
    for scene in scenes:
        predictions = {}
        for name, model in models.items():
            try:
                predictions[name] = np.asarray(model.predict(scene))
            except Exception as err:  # noqa: BLE001 - one failing model must not stop the report
                log(f"{name} failed on the real scene {scene.name}: {err}", options)
        if predictions:
            out[f"real: {scene.name} ({scene.band}), classical models"] = detail.spectra(predictions, scene.hr, scene.sm)
    return out


def spectra_block(spectra_by_scene: dict, order: list[str], paths: Paths) -> str:
    """The spectra figure of the comparison scenes and one sentence per model on the power above the LR
    Nyquist frequency, averaged over those scenes."""
    colours = figures.model_colours(sorted(order))
    out = figures.spectra(spectra_by_scene, colours, paths.figures / "compare_spectra.png",
                          "Power spectra of each model's SR against the HR's, and of its error")
    ratios = {}
    dev = {k: v for k, v in spectra_by_scene.items() if not k.startswith("real: ")}
    for curves in dev.values():
        for name, s in curves.items():
            ratios.setdefault(name, []).append(detail.above_nyquist(s))
    rows = []
    for name in order:
        if name in ratios:
            sr = float(np.mean([r["sr_over_hr"] for r in ratios[name]]))
            err = float(np.mean([r["error_over_hr"] for r in ratios[name]]))
            rows.append([name, f"{sr:.2f}", f"{err:.2f}"])
    n = len(dev)
    table = md_table(["model", "SR power / HR power above LR Nyquist", "error power / HR power above LR Nyquist"],
                     rows, ["l", "r", "r"])
    return (figure_md(out, paths.out.parent, "power spectra",
                      "Radially averaged power spectra on the HR's clear pixels at the metric's best shift (top: each "
                      "model's SR, the HR in black; bottom: the power of the SR's error over the HR's power), per "
                      "comparison scene (and, where the real sample is present, the classical models on its real scenes "
                      "with an HR). Dotted: the LR Nyquist frequency (0.5 cycles per LR pixel); above it, a "
                      "frame holds detail only as aliasing, which several shifted frames can untangle.")
            + f"\n\nAbove the LR Nyquist frequency, summed over frequencies and averaged over the {n} dev scenes above "
              "(an SR ratio near 1 with an error ratio well below 1 is recovered detail; an error ratio near or above "
              "1 means the detail there is missing or invented):\n\n" + table)


def fill(report: ReportInputs) -> dict[str, str]:
    return {"comparisons": comparisons(report.runs, report.params, report.paths, report.index, report.options)}
