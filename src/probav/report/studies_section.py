"""What the studies outside the default run add to section 4, read from their outputs when present: the
held-out test score (``metrics/test.json``, the package stage), the seed-to-seed spread of the networks
(``metrics/seeds.json``, ``make seeds``) and the one-factor ablations (``metrics/ablations.json``,
``make ablations``). A study that was not run is named with the command that runs it."""
from __future__ import annotations

import json
from pathlib import Path

from probav.report.inputs import ReportInputs
from probav.report.markdown import fmt, md_table

FACTOR_TITLES = {
    "shift_and_add_shifts": "the shifts it fuses with",
    "shift_and_add_masks": "the quality masks (QMs)",
    "shift_and_add_frames": "the number of frames K it fuses (`classical.shift_and_add.max_frames`)",
    "misr_net_masks": "the quality masks (QMs), its prior's included",
    "misr_net_frames": "the frames it sees beside its prior",
}


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def held_out_test(metrics_dir: Path) -> str:
    """The submission's score on the simulator's hidden test HRs, once, or why there is none."""
    test = _read(metrics_dir / "test.json")
    if test is None:
        return "The packaged submission has not been scored on held-out test HRs in this run (`metrics/test.json` is missing)."
    if test.get("skipped"):
        return f"The packaged submission is not scored on the test scenes: {test['skipped']}."
    bands = test.get("bands") or {}
    per_band = ", ".join(f"{b} {fmt(v.get('mean_score'), 4)}" for b, v in bands.items())
    return (f"**Held-out test.** The packaged submission (`{test['model']}`, {test['track']} track) scores "
            f"{fmt(test['mean_score'], 4)} (mean cPSNR {fmt(test.get('mean_cpsnr'), 2)} dB) on the "
            f"{test['scenes']} test scenes, against their HRs that the simulator withholds (per band: {per_band}; "
            f"`metrics/test.json`). Nothing was chosen on these scenes: the networks' epochs were selected on the "
            f"val split and every other figure of this report is on dev, so this is the one score no choice has seen.")


def seeds(metrics_dir: Path) -> str:
    """Each network's mean dev cPSNR over seeds (mean ± sd), or how to measure it."""
    data = _read(metrics_dir / "seeds.json")
    if data is None:
        return ("Every network above was trained once; `make seeds` trains each again with the seeds of "
                "`studies.seeds` and gives the spread (`metrics/seeds.json`), against which differences between "
                "networks should be read.")
    track = data.get("track", "challenge")
    rows = []
    for model, entry in data.get("models", {}).items():
        row = [model, str(len(entry.get("seeds", [])))]
        for name in ("challenge", "ref"):
            c = ((entry.get(name) or {}).get("mean_cpsnr")) or {}
            row.append(f"{fmt(c.get('mean'), 2)} ± {fmt(c.get('sd'), 2)}" if c.get("sd") is not None
                       else fmt(c.get("mean"), 2))
        per_seed = (entry.get(track) or {}).get("per_seed_cpsnr") or {}
        row.append(", ".join(f"{s}: {fmt(v, 2)}" for s, v in per_seed.items()))
        rows.append(row)
    return (f"**Training noise** (`make seeds`, `metrics/seeds.json`): each network trained with the seeds "
            f"{', '.join(map(str, data.get('seeds', [])))} (the first is this run's), mean dev cPSNR over seeds "
            f"± the standard deviation between them:\n\n"
            + md_table(["model", "runs", "cPSNR challenge (dB)", "cPSNR ref (dB)", f"per seed ({track})"], rows,
                       ["l", "r", "r", "r", "l"]))


def _difference(entry: dict) -> str:
    vs = entry.get("vs_shipped")
    if not vs:
        return "shipped"
    text = f"{vs['mean']:+.2f} [{vs['low']:+.2f}, {vs['high']:+.2f}], {vs['better']}↑ {vs['worse']}↓"
    return text if vs["verdict"] != "no detectable difference" else f"{text}, n.s."


def ablations(metrics_dir: Path, seed_sd=None) -> str:
    """One table per factor: each variant's mean dev cPSNR and its paired difference against the shipped one;
    for a network, its seed-to-seed sd (``seed_sd(model, track)``) to read the differences against."""
    data = _read(metrics_dir / "ablations.json")
    if data is None:
        return ("Not run in this pipeline: `make ablations` changes one factor at a time (shifts, QMs, frames, "
                "`misr_net`'s frames) on every dev scene and writes `metrics/ablations.json`.")
    parts = [f"One factor changed at a time against the method as shipped, every other setting held, on the "
             f"{data['scenes']} dev scenes (`make ablations`, `metrics/ablations.json`; per scene "
             f"`metrics/ablations/scenes.csv`). Each cell: mean cPSNR in dB, then the paired difference against the "
             f"shipped variant with its 95% bootstrap interval ({data['resamples']:,} resamples) and the scenes "
             f"better ↑ / worse ↓; n.s. = no detectable difference (the interval includes zero)."]
    if not data.get("true_shifts"):
        parts.append("The data hold no true shifts (real data), so the `true` variant is left out.")
    for key, factor in data.get("factors", {}).items():
        model = factor["model"]
        rows = []
        for variant, entry in factor["variants"].items():
            cells = []
            for track in ("challenge", "ref"):
                t = entry.get(track)
                cells.append("—" if not t else f"{fmt(t['mean_cpsnr'], 2)} ({_difference(t)})")
            label = entry.get("label", variant)
            rows.append([f"**{label}**" if variant == factor["shipped"] else label] + cells)
        parts.append(f"**`{model}`: {FACTOR_TITLES.get(key, key)}**\n\n"
                     + md_table(["variant", "challenge track", "ref track"], rows, ["l", "r", "r"]))
    for model, why in (data.get("skipped_models") or {}).items():
        parts.append(f"`{model}` was left out: {why}.")
    networks = sorted({f["model"] for f in data.get("factors", {}).values()})
    spreads = {m: [(seed_sd or (lambda *_: None))(m, t) for t in ("challenge", "ref")] for m in networks}
    spreads = {m: sd for m, sd in spreads.items() if all(v is not None for v in sd)}
    if spreads:
        parts.append("Every variant of a network is the pipeline's one trained network, fed differently, so the paired "
                     "differences above hold no training noise; for scale, the mean dev cPSNR of a network trained "
                     "with another seed moves by sd " + ", ".join(
                         f"{sd[0]:.2f} (challenge) and {sd[1]:.2f} dB (ref) for `{m}`" for m, sd in spreads.items())
                     + " (`make seeds`).")
    return "\n\n".join(parts)


def fill(report: ReportInputs) -> dict[str, str]:
    metrics = report.paths.metrics
    return {"held_out_test": held_out_test(metrics), "seeds": seeds(metrics),
            "ablations": ablations(metrics, report.seed_sd)}
