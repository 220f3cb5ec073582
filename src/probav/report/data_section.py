"""Section 2 (the data): the scene table, frames and clearance, values, shifts, and this run's data beside the
real sample (value distributions, spectra, norms)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from probav.data import stats as data_stats
from probav.report import cloudy, figures
from probav.report.inputs import Paths, ReportInputs, log
from probav.report.markdown import figure_md, fmt, md_table


def data_section(index: pd.DataFrame | None, split: pd.DataFrame | None, source: str) -> tuple[str, str]:
    intro = {
        "synthetic": "This run used **synthetic data** written by the project's simulator "
                     "(`probav.data.synthetic`) in the official layout, with the true shift of every frame "
                     "saved beside it (`data/raw/synthetic/shifts.csv`).",
    }.get(source, f"This run used **the official PROBA-V data** (`data.source: {source}`).")
    if index is None:
        return intro + " The scene index `data/scenes.csv` is missing, so the data are not described here.", ""
    subsets = {}
    if split is not None and {"name", "subset"} <= set(split.columns):
        subsets = dict(zip(split["name"], split["subset"]))
    rows = []
    ok = index[index["status"] == "ok"] if "status" in index else index
    for (sp, band), g in ok.groupby(["split", "band"], sort=False):
        label = sp
        if sp == "train" and subsets:
            n_dev = int(sum(subsets.get(n) == "dev" for n in g["name"]))
            n_val = int(sum(subsets.get(n) == "val" for n in g["name"]))
            label = (f"train ({len(g) - n_dev - n_val} train + {n_val} val + {n_dev} dev)" if n_val else
                     f"train ({len(g) - n_dev} train + {n_dev} dev)")
        hr = pd.to_numeric(g.get("hr_clearance"), errors="coerce") if "hr_clearance" in g else pd.Series(dtype=float)
        rows.append([label, band, str(len(g)), fmt(g["frames"].mean(), 1),
                     f"{int(g['frames'].min())}–{int(g['frames'].max())}",
                     fmt(100 * pd.to_numeric(g["mean_clearance"], errors="coerce").mean(), 1, " %"),
                     fmt(100 * hr.mean(), 1, " %") if hr.notna().any() else "—"])
    skipped = int((index["status"] != "ok").sum()) if "status" in index else 0
    table = md_table(["split", "band", "scenes", "frames (mean)", "frames (range)", "LR clear (mean)",
                      "HR clear (mean)"], rows)
    tail = (f"\n\n{skipped} scene(s) were skipped by the check (`data/scenes.csv`, status `skipped`)."
            if skipped else "\n\nEvery scene passed the check (`data/scenes.csv`).")
    return intro, table + tail


def frames_text(index: pd.DataFrame, stats: dict) -> str:
    ok = index[index["status"] == "ok"] if "status" in index else index
    f = ok["frames"]
    if f.empty:
        return "No usable scene in the scene index."
    clear = np.concatenate([np.asarray(s.clearance) for s in stats.values()]) if stats else np.zeros(0)
    parts = [f"Scenes of this run have {fmt(f.mean(), 1)} LR frames on average ({int(f.min())} to {int(f.max())}); "
             f"the official archive has 19 on average, 9 to about 35."]
    if len(clear):
        parts.append(f"Of the {len(clear)} frames of the sampled scenes, {fmt(100 * (clear >= 0.999).mean(), 0)}% are "
                     f"fully clear and {fmt(100 * (clear < 0.8).mean(), 0)}% have more than a fifth of their pixels "
                     f"masked; the inclusion rules guarantee at least 60% clear for every frame and 75% for the HR "
                     f"(dashed lines).")
    return " ".join(parts)


def values_text(stats: dict, label: str) -> str:
    sentences = []
    for band, s in stats.items():
        if s.lr_pixels == 0:
            continue
        share_all = s.above_14bit / s.lr_pixels
        share_clear = s.above_14bit_clear / max(s.lr_clear_pixels, 1)
        sentences.append(
            f"**{band}** ({label}, {len(s.scenes)} scene{'s' if len(s.scenes) != 1 else ''}): {fmt(100 * share_all, 2)}% of all LR pixels and "
            f"{fmt(100 * share_clear, 3)}% of the clear ones are above 16383, the largest clear value is "
            f"{s.max_clear:,} DN; {s.nodata:,} pixels in {s.nodata_frames} frame(s) hold the no-data value 65520, "
            f"{'none' if s.nodata_clear == 0 else f'{s.nodata_clear:,}'} of them marked clear by the QM.")
    multiple = sum(s.not_multiple_16 for s in stats.values())
    if any(s.lr_pixels for s in stats.values()):
        sentences.append("Every value is a multiple of 16, as in the real files." if multiple == 0 else
                         f"{multiple:,} values are not multiples of 16 (the real files' values all are).")
    if label == "real sample":
        return " ".join(sentences)
    head = ("The data are described as 14-bit, but values above 16383 occur: in the real data clouds reach 28000 "
            "and more. The QM masks most of them, not all (bright ground and cloud edges the QM misses stay "
            "clear: see the shares below). The value 65520 marks missing data; in the official data the QM always "
            "masks it. A model must therefore not normalise by the maximum of a frame, and must not trust a pixel "
            "just because it is below some threshold. The score's peak of 65535 (not 16383) puts cPSNR values about "
            "12 dB higher than they would be on a 14-bit scale.")
    return head + "\n\n" + " ".join(sentences)


def shifts_text(stats: dict, real: dict | None, source: str) -> str:
    tab = pd.concat([s.shift_table() for s in stats.values()], ignore_index=True) if stats else pd.DataFrame()
    if tab.empty:
        return "No frame was registered (no sampled scene has two usable frames)."
    ok = tab[tab["ok"]]
    mag = np.hypot(ok["dy"], ok["dx"])
    text = (f"Of {len(tab)} frames registered in {tab['scene'].nunique()} scenes of this run, {len(ok)} passed the "
            f"checks. Their shift onto the clearest frame has a median size of {fmt(np.median(mag), 2)} LR pixels; "
            f"{fmt(100 * (mag > 1).mean(), 0)}% are larger than 1 LR pixel and {fmt(100 * (mag > 2).mean(), 0)}% "
            f"larger than 2.")
    truth = ok[ok["true_dy"].notna()]
    if len(truth):
        err = np.hypot(truth["dy"] - truth["true_dy"], truth["dx"] - truth["true_dx"])
        text += (f" Against the simulator's true shifts, the registration error has a median of "
                 f"{fmt(np.median(err), 3)} LR pixels ({fmt(3 * np.median(err), 2)} HR pixels), and "
                 f"{fmt(100 * (err > 1 / 3).mean(), 0)}% of the frames are off by more than one HR pixel.")
    if real:
        rtab = pd.concat([s.shift_table() for s in real.values()], ignore_index=True)
        rok = rtab[rtab["ok"]] if len(rtab) else rtab
        if len(rok):
            rmag = np.hypot(rok["dy"], rok["dx"])
            text += (f" In the real sample, {len(rok)} frames have a median shift of {fmt(np.median(rmag), 2)} LR "
                     f"pixels (largest {fmt(rmag.max(), 2)}).")
    text += (" Shifts are what multi-frame methods feed on: a set of frames with distinct sub-pixel offsets samples "
             "the ground more densely than any one frame.")
    return text


def real_section(run_stats, real_stats, run_scene, real_scene, run_norms, real_norms, paths: Paths,
                 source: str, real_summary: str) -> str:
    if real_stats is None:
        return ("The real sample (`../shared/probav-mini`, three official scenes) is not present on this machine, "
                "so the data of this run are not compared with real PROBA-V scenes here.")
    run_label = "synthetic" if source == "synthetic" else "this run"
    parts = [real_summary]
    if source != "synthetic":
        parts.append("This run used the official data, so this section is a consistency check of the run's data "
                     "against the sample; the simulator itself is compared with the real data in a run on "
                     "`data.source: synthetic`.")
    if not run_stats or not any(s.lr_pixels for s in run_stats.values()):
        parts.append("The data of this run could not be read (no scene index), so they are not compared here.")
        return "\n\n".join(parts)
    if run_scene is not None and real_scene is not None:
        rows = [("real (probav-mini)", real_scene), (run_label, run_scene)]
        out = figures.scene_pair(rows, paths.figures / "data_real_vs_run.png")
        parts.append(figure_md(out, paths.out.parent, "a real and a synthetic scene", cloudy.caption(rows)))
    out = figures.distributions(run_stats, real_stats, run_norms, real_norms, paths.figures / "data_distributions.png",
                                run_label, "real")
    parts.append(figure_md(out, paths.out.parent, "distributions and spectra",
                           "Per band: density of clear LR values, mean radial power spectra of fully clear LR "
                           "frames (circles) and HR images (squares; HR frequencies converted to cycles per LR "
                           "pixel), each divided by its mean power below the LR Nyquist frequency so that shapes "
                           "compare (a source without a fully clear image is named in the panel instead), and the scene norms (baseline cPSNR). Real: the sample's scenes and the "
                           "official norm.csv (all 1450 scenes)."))
    parts.append(compare_text(run_stats, real_stats, run_norms, real_norms, run_label))
    return "\n\n".join(parts)


def compare_text(run_stats, real_stats, run_norms, real_norms, run_label) -> str:
    sentences = []
    for band in run_stats:
        r, q = run_stats[band], real_stats.get(band)
        if q is None or not q.lr_clear_hist.any() or not r.lr_clear_hist.any():
            continue
        centres = 0.5 * (data_stats.hist_edges()[1:] + data_stats.hist_edges()[:-1])

        def median(h):
            c = np.cumsum(h)
            return float(centres[np.searchsorted(c, c[-1] / 2)])
        sentences.append(f"{band}: median clear LR value {median(r.lr_clear_hist):,.0f} DN ({run_label}) against "
                         f"{median(q.lr_clear_hist):,.0f} DN (real sample).")
    for band in run_norms:
        if band in real_norms and len(run_norms[band]) and len(real_norms[band]):
            a, b = run_norms[band], real_norms[band]
            sentences.append(f"{band} norms: {a.mean():.2f} ± {a.std():.2f} dB ({run_label}, {len(a)} scenes) against "
                             f"{b.mean():.2f} ± {b.std():.2f} dB (official, {len(b)} scenes).")
    return " ".join(sentences)


def fill(report: ReportInputs) -> dict[str, str]:
    """Every placeholder of section 2 but the realism scorecard's."""
    paths, options, source = report.paths, report.options, report.source
    index, split, real_root, out_dir = report.index, report.split, report.real_root, report.out_dir
    out: dict[str, str] = {}
    log("data statistics", options)
    truth = data_stats.read_truth(paths.raw)
    run_stats = {}
    if index is not None:
        run_stats = data_stats.collect(paths.raw, data_stats.index_sample(paths.raw, index, options.sample_scenes),
                                       options.shift_scenes, truth)
    real_stats = None
    if real_root is not None:
        real_stats = data_stats.collect(real_root, data_stats.folder_sample(real_root), None, None)
    out["data_source"], out["data_table"] = data_section(index, split, source)
    if index is not None and run_stats:
        figure = figures.frames_clearance(index, run_stats, paths.figures / "data_frames_clearance.png")
        out["fig_frames"] = figure_md(figure, out_dir, "frames and clearance",
                                      "Left: how many scenes have each number of LR frames, per band (the scene "
                                      "index's every usable scene: train, val, dev and test; the two bands' bars are "
                                      "drawn over each other, darker where both are). Middle: clear fraction (QM) of "
                                      "each LR frame of the sampled scenes, frames counted on a log scale. Right: "
                                      "clear fraction (SM) of the HR of every scene that has one (the archive's "
                                      "train scenes: the train, val and dev splits; test scenes have none). Dashed: the inclusion rules (60% and 75%).")
        out["frames_text"] = frames_text(index, run_stats)
        figure = figures.value_histograms(run_stats, paths.figures / "data_values.png",
                                       f"LR values of this run's data ({source}, sampled scenes)")
        out["fig_values"] = figure_md(figure, out_dir, "value histograms",
                                      "Histogram (log scale) of LR values over the whole 16-bit range: all pixels "
                                      "(grey) and the clear ones (colour); clear HR pixels in black (divided by 9).")
        out["values_text"] = values_text(run_stats, source)
        figure = figures.shifts(run_stats, real_stats, paths.figures / "data_shifts.png")
        out["fig_shifts"] = figure_md(figure, out_dir, "shifts between frames",
                                      "Left: estimated shift of each frame onto its scene's clearest frame (circles: "
                                      "1 and 2 LR pixels). Right: "
                                      + ("registration error against the simulator's true shifts."
                                         if truth is not None else "distribution of the shift magnitudes."))
        out["shifts_text"] = shifts_text(run_stats, real_stats, source)
    else:
        for key in ("fig_frames", "frames_text", "fig_values", "values_text", "fig_shifts", "shifts_text"):
            out[key] = ""
        out["frames_text"] = "The scene index `data/scenes.csv` is missing: no statistics of the data."
    out["fig_values_real"] = ""
    if real_stats is not None:
        figure = figures.value_histograms(real_stats, paths.figures / "data_values_real.png",
                                       "LR values of the real sample (probav-mini)")
        out["fig_values_real"] = (figure_md(figure, out_dir, "value histograms, real sample",
                                            "The same histogram for the three real scenes of the sample.")
                                  + "\n\n" + values_text(real_stats, "real sample"))
    run_norms = data_stats.norms_by_band(paths.raw / "norm.csv", index)
    real_norms = data_stats.norms_by_band(real_root / "norm.csv") if real_root is not None else {}
    real_scene, run_scene = cloudy.cloudy_pair(real_root, paths.raw, index) if real_root is not None else (None, None)
    real_summary = ""
    if real_stats is not None:
        n = sum(len(s.scenes) for s in real_stats.values())
        described = ", ".join(f"{name} ({band}, {frames} frames, {100 * np.mean(s.clearance[sum(s.frames[:i]):sum(s.frames[:i + 1])]):.0f}% clear)"
                              for band, s in real_stats.items() for i, (name, frames) in enumerate(zip(s.scenes, s.frames)))
        real_summary = (f"The real sample holds {n} official scenes: {described}, and the official `norm.csv` of all "
                        f"1450 scenes. That is too few for statistics, but enough to check the simulator's value "
                        f"ranges, texture (power spectra) and shifts against real PROBA-V frames.")
    out["real_section"] = real_section(run_stats, real_stats, run_scene, real_scene, run_norms, real_norms, paths,
                                       source, real_summary)
    return out
