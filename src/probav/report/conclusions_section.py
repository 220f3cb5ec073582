"""Section 5's findings: paired per-scene comparisons (``probav.metrics.paired``) of every model against the
baseline and of the pairs of models the report discusses, each with a sentence whose verdict follows the
statistics: a difference is stated only where its bootstrap interval excludes zero."""
from __future__ import annotations

import json
from pathlib import Path

from probav.metrics.paired import PairedComparison, compare_tables
from probav.params import derive_seed
from probav.report.inputs import ModelRun, ReportInputs
from probav.report.markdown import fmt, md_table
from probav.report.real_results import gains, load_real

RESAMPLES = 10_000   # bootstrap resamples of the scenes per comparison

# (a, b, what the comparison tests, sentence when a is better, when b is better, when neither is detectable);
# {a}, {b} are the names, {d} the difference with its interval and sign test.
PAIRS = (
    ("residual_single", "median", "one frame (the reference) refined by a network, against the median of all frames",
     "A network that refines one frame, the reference, beats the median of all frames: `{a}` against `{b}` {d}. "
     "The frame taken with the HR is worth more than many frames fused without registration.",
     "A network that refines one frame, the reference, does not beat the median of all frames: `{a}` against `{b}` "
     "{d}.",
     "No detectable difference between `{a}`, which refines the reference frame alone, and the median of all frames "
     "`{b}` {d}."),
    ("residual_multi", "residual_single", "the same CNN given K stacked frames instead of the reference alone",
     "Giving the same CNN K frames helps: `{a}` against `{b}` {d}.",
     "Giving the same CNN K frames as stacked channels costs score: `{a}` against `{b}` {d}. Training permutes the "
     "frames after the reference (`input.augment`), so the network cannot rely on their order, and stacked channels "
     "leave registration and fusion to be learned from the training scenes; in this run it did not learn them well "
     "enough to beat the reference alone.",
     "No detectable difference between `{a}` (K stacked frames) and `{b}` (the reference alone) {d}."),
    ("srgan", "residual_multi", "the adversarial loss added to the same network",
     "The adversarial `{a}` scores better than `{b}` {d}.",
     "The adversarial loss costs score: `{a}` against `{b}` {d}; cPSNR rewards pixel accuracy, not realism.",
     "No detectable difference between the adversarial `{a}` and `{b}` {d}: at this adversarial weight the "
     "discriminator's loss has no measurable effect on the score."),
    ("misr_net", "shift_and_add", "the multi-frame network against the classical fusion",
     "The multi-frame network `{a}` beats the classical `{b}` {d}.",
     "The multi-frame network `{a}` does not beat the classical `{b}` {d}: with the training this run could afford, "
     "explicit registration and robust fusion still win.",
     "No detectable difference between the multi-frame network `{a}` and the classical `{b}` {d}."),
)
TRAINED_ONCE = (" Both are networks trained once: the interval does not hold the variation between training runs, "
                "which only several seeds per network would measure.")
STALE_SEEDS = (" Both are networks, and the seeds study (`make seeds`) is not from this run for both, so their "
               "spread between training runs is not quoted (run it again): the interval does not hold it.")
PRIOR_NOTE = (" With `model.misr_base: prior` `misr_net` starts from `shift_and_add`'s own fusion, so this difference "
              "is what the network learned to correct in it.")


def fmt_p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.2g}"


def db(x: float) -> str:
    """A signed difference in dB, with a third decimal where two would round it to zero."""
    return f"{x:+.2f}" if abs(x) >= 0.005 else f"{x:+.3f}"


def p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def difference(c: PairedComparison) -> str:
    """The comparison in words: mean difference, interval, scenes won and lost, sign test."""
    return (f"({db(c.mean)} dB, 95% interval {db(c.low)} to {db(c.high)}; better on {c.better} and worse on "
            f"{c.worse} of {c.scenes} scenes, sign test {p_text(c.sign_p)})")


def row(c: PairedComparison, what: str = "", seed_sd=None) -> list[str]:
    """A comparison's table row; the last column is each model's seed-to-seed sd (``seed_sd(model)``; — for a
    deterministic model or one without ``make seeds``)."""
    sds = [(seed_sd or (lambda name: None))(name) for name in (c.a, c.b)]
    return [f"`{c.a}` − `{c.b}`"] + ([what] if what else []) + [
        db(c.mean), f"{db(c.low)} to {db(c.high)}", f"{c.better} / {c.worse}", fmt_p(c.sign_p),
        c.verdict if not c.detectable else f"**{c.verdict}**",
        " / ".join("—" if sd is None else f"{sd:.2f}" for sd in sds)]


SEED_COLUMN = "seed sd, first / second (dB)"


def paired(a: ModelRun, b: ModelRun, params: dict) -> PairedComparison:
    """``a`` against ``b`` on the headline track's per-scene cPSNR, seeded per pair from ``seed``."""
    return compare_tables(a.name, a.table, b.name, b.table, RESAMPLES, derive_seed(params, "report", "paired", a.name,
                                                                                   b.name))


def seed_noise(a: str, b: str, seeds: dict | None, track: str, seed_sd=None) -> str:
    """The two networks' seed-to-seed spread of mean dev cPSNR (``make seeds``; ``seed_sd(model)`` is None where
    the study has no figure or is not from this run), or that they were trained once."""
    sds = [(seed_sd or (lambda name: None))(n) for n in (a, b)]
    if any(sd is None for sd in sds):
        return STALE_SEEDS if seeds else TRAINED_ONCE
    runs = [seeds["models"][n][track]["mean_cpsnr"]["runs"] for n in (a, b)]
    return (f" Trained with {runs[0]} and {runs[1]} seeds (`make seeds`), their mean dev cPSNR "
            f"varies between seeds by sd {sds[0]:.2f} (`{a}`) and {sds[1]:.2f} dB (`{b}`): "
            f"a difference within about twice that is within the noise of training them.")


def findings(runs: list[ModelRun], source: str, params: dict, seeds: dict | None = None, seed_sd=None) -> str:
    """The paired comparisons; ``seed_sd(model)``: a network's seed-to-seed sd of mean dev cPSNR, headline track."""
    by = {r.name: r for r in runs if r.ran}
    ran = sorted(by.values(), key=lambda r: r.metrics["mean_score"])
    if not ran:
        return "No model was scored in this run, so there is nothing to conclude yet."
    scenes = len(ran[0].table)
    head = (f"**What the numbers say** (generated from the per-scene tables `metrics/scenes/<model>.csv`). Every "
            f"comparison is paired: both models on the same {scenes} dev scenes, difference = the first model's "
            f"cPSNR minus the second's (headline track, dB; positive: the first is better), its mean with a 95% "
            f"percentile bootstrap interval ({RESAMPLES:,} resamples of the scenes, seeded from `params.yaml`'s "
            f"`seed`), and an exact two-sided sign test on the scenes each one wins. Where the interval includes "
            f"zero the verdict is *no detectable difference*. The intervals hold the scenes' variation, not the "
            f"training's: " + ("the seed-to-seed spread of each network is in section 4 (*Training noise*) and in "
                               "the last column (— = a deterministic classical model)."
                               if seeds else "each network was trained once (one seed; `make seeds` measures it)."))
    parts = [head]
    baseline = by.get("baseline")
    against_base = [paired(r, baseline, params) for r in ran if r.name != "baseline"] if baseline is not None else []
    if against_base:
        parts.append("**Every model against the baseline**\n\n" + md_table(
            ["comparison", "mean difference (dB)", "95% interval (dB)", "scenes better / worse", "sign test p",
             "verdict", SEED_COLUMN], [row(c, seed_sd=seed_sd) for c in against_base],
            ["l", "r", "r", "r", "r", "l", "r"]))
    pairs, sentences, open_pairs = [], [], []
    for a, b, what, better, worse, none in PAIRS:
        if a not in by or b not in by:
            open_pairs.append(f"`{a}` against `{b}`")
            continue
        c = paired(by[a], by[b], params)
        pairs.append(row(c, what, seed_sd))
        text = (none if not c.detectable else better if c.mean > 0 else worse).format(a=a, b=b, d=difference(c))
        if (a, b) == ("misr_net", "shift_and_add") and c.detectable and \
                ((params.get("model") or {}).get("misr_base", "prior") == "prior"):
            text += PRIOR_NOTE
        if c.detectable and by[a].kind == "deep" and by[b].kind == "deep":
            text += seed_noise(a, b, seeds, ran[0].metrics.get("track", "challenge"), seed_sd)
        sentences.append("- " + text)
    deep = [r for r in ran if r.kind == "deep"]
    classical = [r for r in ran if r.kind == "classical"]
    if deep and classical and (deep[0].name, classical[0].name) not in {(p[0], p[1]) for p in PAIRS}:
        c = paired(deep[0], classical[0], params)
        pairs.append(row(c, "the best network against the best classical method", seed_sd))
        sentences.append(f"- The best network `{c.a}` against the best classical method `{c.b}`: {c.verdict} "
                         f"{difference(c)}.")
    if pairs:
        parts.append("**The pairs this report discusses**\n\n" + md_table(
            ["comparison", "what it tests", "mean difference (dB)", "95% interval (dB)", "scenes better / worse",
             "sign test p", "verdict", SEED_COLUMN], pairs, ["l", "l", "r", "r", "r", "r", "l", "r"]))
    by_base = {c.a: c for c in against_base}
    if "residual_single" in by_base:
        c = by_base["residual_single"]
        sentences.insert(0, "- " + (
            f"The single-image network `residual_single` beats the baseline {difference(c)}. The published "
            f"single-image SRResNet did not (1.0084 on the test set); `residual_single` is given the reference frame "
            f"(estimated in the challenge track), the frame taken with the HR, which alone is closer to it than any "
            f"other frame (section 4, the reference frame's margin)." if c.detectable and c.mean > 0 else
            f"The single-image network `residual_single` does not beat the baseline {difference(c)}, like the "
            f"published single-image SRResNet (1.0084)." if c.detectable else
            f"No detectable difference between the single-image network `residual_single` and the baseline "
            f"{difference(c)}."))
    if "median" in by_base:
        c = by_base["median"]
        sentences.append("- " + (
            f"Even the unregistered per-pixel median of all clear frames (`median`) beats the baseline "
            f"{difference(c)}: the baseline throws most frames away." if c.detectable and c.mean > 0 else
            f"The per-pixel median of all clear frames (`median`) does not beat the baseline {difference(c)}."
            if c.detectable else
            f"No detectable difference between the per-pixel median of all clear frames and the baseline "
            f"{difference(c)}."))
    best = ran[0]
    worse_share = float((best.table["score"] > 1.0).mean())
    sentences.append(f"- Even the best model, `{best.name}`, is worse than the baseline on {fmt(100 * worse_share, 0)}% "
                     f"of the dev scenes." if worse_share > 0 else
                     f"- The best model, `{best.name}`, is at least as good as the baseline on every dev scene.")
    if open_pairs:
        sentences.append(f"- Not measured in this run, because a model did not run: {', '.join(open_pairs)}.")
    if source == "synthetic":
        sentences.append("- All of this is measured on simulated scenes: the simulator's land change, clouds and "
                         "registration difficulty are models, and conclusions must be checked on the real data.")
    parts.append("\n".join(sentences))
    return "\n\n".join(parts)


def did_not_work(report: ReportInputs) -> str:
    """What did not work, each point with the numbers of this run that show it (dev scenes, the real scenes of
    ``metrics/real/``, the reference stage's ``metrics/reference.json``)."""
    by = {r.name: r for r in report.runs if r.ran}
    points = []
    reference = {}
    path = report.paths.metrics / "reference.json"
    if path.is_file():
        reference = json.loads(path.read_text()).get("single_frame") or {}
    margin = (reference.get("margin_db") or {}).get("median")
    if {"median", "shift_and_add", "baseline"} <= set(by):
        dev = {n: paired(by[n], by["baseline"], report.params).mean for n in ("median", "shift_and_add")}
        _, real_tables = load_real(report.paths, ["baseline", "median", "shift_and_add"])
        real = gains(real_tables, {}) if real_tables else None
        real_gain = {}
        if real is not None and not real.empty:
            challenge = real[real["track"] == "challenge"].set_index("model")
            real_gain = {n: (challenge.loc[n, "real_gain"], int(challenge.loc[n, "real_scenes"]))
                         for n in ("median", "shift_and_add") if n in challenge.index}
        text = "Fusing all frames with equal weight: the frame taken with the HR is closer to it than any other"
        if margin is not None:
            text += (f" (by a median {fmt(margin, 2)} dB over the next-best frame on the dev scenes, "
                     f"`metrics/reference.json`; section 4, *The reference frame*)")
        text += (f", and an equal-weight fusion moves away from it: the per-pixel median of all clear frames gains "
                 f"{db(dev['median'])} dB over the baseline on the dev scenes")
        if len(real_gain) == 2:
            text += (f" and {db(real_gain['median'][0])} dB on the {real_gain['median'][1]} real scene(s) with an "
                     f"HR (section 5, *Real scenes*)")
        text += f", against {db(dev['shift_and_add'])} dB"
        if len(real_gain) == 2:
            text += f" and {db(real_gain['shift_and_add'][0])} dB"
        text += " for `shift_and_add`, which builds on the reference (challenge track)."
        points.append(text)
    if reference.get("mistakes"):
        points.append(f"Committing to one estimated reference: the estimator's {reference['mistakes']} wrong picks on "
                      f"the dev scenes cost {fmt(reference.get('mistake_cost_db'), 2)} dB on average, frame alone "
                      f"against frame alone (`metrics/reference.json`), which is why `shift_and_add` hedges between "
                      f"candidates when the estimator is unsure; what estimating still costs is the gap between the "
                      f"two tracks (section 4, *Both tracks, every model*).")
    if "residual_multi" in by and "residual_single" in by:
        c = paired(by["residual_multi"], by["residual_single"], report.params)
        if c.detectable and c.mean < 0:
            points.append(f"Stacking K frames as channels (`residual_multi`): it does worse than `residual_single`, "
                          f"the same CNN given the reference frame alone {difference(c)}.")
    if not points:
        return ""
    return "**What did not work, or not well enough.** " + " ".join(points)


def gpu_plan(metrics_dir: Path) -> str:
    """The GPU profile's plan and its estimated cost (``make gpu-estimate``: ``metrics/gpu-estimate.json``)."""
    path = metrics_dir / "gpu-estimate.json"
    if not path.is_file():
        return ("its cost is estimated by `make gpu-estimate`, which has not been run for this report "
                "(`metrics/gpu-estimate.json` is missing)")
    est = json.loads(path.read_text())
    rows = est.get("models") or []
    if not rows:
        return "`make gpu-estimate` found no network to estimate"
    steps = sorted({r["steps"] for r in rows})
    params = [r["parameters"] for r in rows]
    total = sum(r["hours"] for r in rows)
    low, high = sum(r["hours_range"][0] for r in rows), sum(r["hours_range"][1] for r in rows)
    text = (f"{' or '.join(f'{s:,}' for s in steps)} training steps per network, "
            f"{min(params) / 1e6:.2f}–{max(params) / 1e6:.2f} M parameters; `make gpu-estimate` puts the "
            f"{len(rows)} networks at {total:.1f} h on one GPU in all at an assumed {est.get('tflops', 25):g} TFLOP/s "
            f"sustained ({low:.1f}–{high:.1f} h over its range; " + ", ".join(
                f"`{r['model']}` {r['hours']:.2f} h" for r in rows) + ")")
    prior = est.get("prior")
    if prior:
        text += (f", and the `shift_and_add` prior of the archive's {prior['scenes']:,} scenes at "
                 f"{60 * prior['hours']:.1f} min on {prior['cores']} CPU cores")
    return text + (" (`metrics/gpu-estimate.json`, `reports/gpu-real-estimate.md`: traced FLOPs over an assumed "
                   "throughput and the input pipeline's measured rate, not a GPU measurement)")


def fill(report: ReportInputs) -> dict[str, str]:
    track = report.ran[0].metrics.get("track", "challenge") if report.ran else "challenge"
    return {"findings": findings(report.runs, report.source, report.params, report.seeds,
                                 lambda name: report.seed_sd(name, track)),
            "did_not_work": did_not_work(report), "gpu_plan": gpu_plan(report.paths.metrics)}
