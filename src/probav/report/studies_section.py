"""What the studies outside the default run add to section 4, read from their outputs when present: the
held-out test score (``metrics/test.json``, the package stage), the seed-to-seed spread of the networks
(``metrics/seeds.json``, ``make seeds``), the one-factor ablations (``metrics/ablations.json``,
``make ablations``) and ``shift_and_add``'s settings selected on val (``metrics/tuning.json``, ``make tune``).
A study that was not run is named with the command that runs it."""
from __future__ import annotations

import json
from pathlib import Path

from probav.report.inputs import ReportInputs
from probav.report.markdown import fmt, md_table
from probav.seeds import from_this_run

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


STALE = ("*This table comes from an earlier run than this report's ({why}): `{command}` measures it again "
         "on this run.*")


def _dev_cpsnr(metrics_dir: Path, model: str, track: str) -> float | None:
    run = _read(metrics_dir / f"{model}.json") or {}
    return ((run.get("tracks") or {}).get(track) or {}).get("mean_cpsnr")


def _mean_sd(figures: dict) -> str:
    c = (figures or {}).get("mean_cpsnr") or {}
    return f"{fmt(c.get('mean'), 2)} ± {fmt(c.get('sd'), 2)}" if c.get("sd") is not None else fmt(c.get("mean"), 2)


def seeds(metrics_dir: Path, seed: int | None = None) -> str:
    """Each network's mean cPSNR over seeds (mean ± sd) on dev and, where scored, on the real scenes, or how to
    measure it; flagged as stale where its entry for this run's ``seed`` is not this run's dev figure."""
    data = _read(metrics_dir / "seeds.json")
    if data is None:
        return ("Every network above was trained once; `make seeds` trains each again with the seeds of "
                "`studies.seeds` and gives the spread (`metrics/seeds.json`), against which differences between "
                "networks should be read.")
    track = data.get("track", "challenge")
    with_real = any("real" in entry for entry in data.get("models", {}).values())
    rows, stale = [], []
    for model, entry in data.get("models", {}).items():
        row = [model, str(len(entry.get("seeds", [])))] + [_mean_sd(entry.get(name)) for name in ("challenge", "ref")]
        if with_real:
            row += [_mean_sd((entry.get("real") or {}).get(name)) for name in ("challenge", "ref")]
        per_seed = (entry.get(track) or {}).get("per_seed_cpsnr") or {}
        row.append(", ".join(f"{s}: {fmt(v, 2)}" for s, v in per_seed.items()))
        rows.append(row)
        if seed is not None and not from_this_run(entry.get(track), seed, _dev_cpsnr(metrics_dir, model, track)):
            stale.append(model)
    header = ["model", "runs", "dev, challenge (dB)", "dev, ref (dB)"]
    if with_real:
        scenes = next((e["real"].get("scenes") for e in data["models"].values() if e.get("real")), None)
        header += [f"real ({scenes} scene{'s' if scenes != 1 else ''}), challenge (dB)", "real, ref (dB)"]
    header.append(f"per seed, dev ({track})")
    text = (f"**Training noise** (`make seeds`, `metrics/seeds.json`): each network trained with the seeds "
            f"{', '.join(map(str, data.get('seeds', [])))} (the first is this run's), mean cPSNR over seeds "
            f"± the standard deviation between them:\n\n"
            + md_table(header, rows, ["l"] + ["r"] * (len(header) - 2) + ["l"]))
    if stale:
        text += "\n\n" + STALE.format(why=f"its figures for seed {seed} are not this run's for "
                                          + ", ".join(f"`{m}`" for m in stale), command="make seeds")
    return text


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
    stale = []
    for factor in data.get("factors", {}).values():
        shipped = (factor["variants"].get(factor["shipped"]) or {}).get("challenge") or {}
        current = _dev_cpsnr(metrics_dir, factor["model"], "challenge")
        if shipped.get("mean_cpsnr") is not None and current is not None and \
                abs(shipped["mean_cpsnr"] - current) > 0.005 and factor["model"] not in stale:
            stale.append(factor["model"])
    if stale:
        parts.append(STALE.format(why="its shipped variant's dev cPSNR is not this run's for "
                                      + ", ".join(f"`{m}`" for m in stale), command="make ablations"))
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


def _setting(name: str, value) -> str:
    if name == "max_frames" and value == 0:
        return "0 (all)"
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def _paired(vs: dict | None) -> str:
    if not vs:
        return "—"
    text = f"{vs['mean']:+.3f} [{vs['low']:+.3f}, {vs['high']:+.3f}], {vs['better']}↑ {vs['worse']}↓"
    return text if vs.get("detectable") else f"{text}, n.s."


def _real(pair: dict | None) -> str:
    if not pair or pair.get("shipped") is None:
        return "—"
    if pair.get("selected") is None or pair["selected"] == pair["shipped"]:
        return fmt(pair["shipped"], 2)
    return f"{fmt(pair['shipped'], 2)} → {fmt(pair['selected'], 2)} ({pair['selected'] - pair['shipped']:+.2f})"


def tuning(metrics_dir: Path, params: dict | None = None) -> str:
    """Per ``shift_and_add`` setting: shipped and val-selected values, their val cPSNR, the paired difference
    with its interval, their real-scene cPSNR (``metrics/tuning.json``); one line naming ``make tune`` when absent."""
    data = _read(metrics_dir / "tuning.json")
    if data is None:
        return ("Not run in this pipeline: `make tune` selects `shift_and_add`'s settings on the val split (never "
                "dev) and writes `metrics/tuning.json`.")
    track = data["track"]
    real = data.get("real") or {}
    current = ((params or {}).get("classical") or {}).get("shift_and_add") or {}
    moved = [name for name, entry in data.get("parameters", {}).items()
             if name in current and current[name] != entry.get("shipped")]
    real_names = ", ".join(real.get("scenes") or [])
    bands = ", ".join(f"{n} {b}" for b, n in (data.get("bands") or {}).items())
    parts = [f"The settings of `classical.shift_and_add` selected on the {data['scenes']} val scenes ({bands}), "
             f"never on dev (`make tune`, `metrics/tuning.json`; per scene `metrics/tuning/scenes.csv`): a coordinate "
             f"search, one setting at a time over the values of `studies.tune.grid` with the others held, "
             f"{data['passes_run']} pass(es), {data['configurations']} configurations, "
             + ("converged (no single setting's values improve on the point reached)"
                if data.get("converged") else "stopped by the pass limit before converging (`studies.tune.passes`)")
             + f"; the rule: {data['rule']}. "
             f"Each row is the setting's last sweep (the other settings where the search stood then). Val cPSNR in "
             f"dB, {track} track; the difference is val-selected − shipped per scene, mean with its 95% bootstrap "
             f"interval ({data['resamples']:,} resamples) and the scenes better ↑ / worse ↓; n.s. = no detectable "
             f"difference. "
             + (f"Real: the cPSNR on the real scene(s) with an HR ({real_names}), {track} track, shipped → selected; "
                f"reported, never used to select." if real.get("scenes") else
                f"Real scenes: left out ({real.get('skipped')}).")]
    rows = []
    for name, entry in data.get("parameters", {}).items():
        val = (entry.get("val") or {}).get(track) or {}
        selected = _setting(name, entry["selected"]) + (" (grid edge)" if entry.get("at_edge") else "")
        joint = "".join(f" (with `{n}`)" for n in entry.get("joint_with") or [])
        rows.append([f"`{name}`{joint}", _setting(name, entry["shipped"]),
                     selected if entry.get("equals_shipped") else f"**{selected}**",
                     fmt(val.get("shipped"), 3), fmt(val.get("selected"), 3),
                     "same value" if entry.get("equals_shipped") else _paired(val.get("vs_shipped")),
                     _real((entry.get("real") or {}).get(track))])
    groups = [g for g in data.get("joint") or [] if len(g) > 1]
    if groups:
        parts.append("Swept together (every combination of their values: their effects are coupled): "
                     + "; ".join(" with ".join(f"`{n}`" for n in g) for g in groups)
                     + ". Their rows compare the selected combination with the shipped one.")
    parts.append(md_table(["setting", "shipped", "val-selected", "val shipped", "val selected",
                           "difference [95%]", "real"], rows, ["l", "r", "r", "r", "r", "r", "r"]))
    overall = data.get("overall") or {}
    changed = overall.get("changed") or {}
    if not changed:
        parts.append("The search kept every shipped value: on val, no value tried beats the shipped settings.")
    else:
        moves = ", ".join(f"`{k}` {_setting(k, v['shipped'])} → {_setting(k, v['selected'])}" for k, v in changed.items())
        cells = []
        for t in ("challenge", "ref"):
            shipped = ((overall.get("shipped") or {}).get("val") or {}).get(t) or {}
            chosen = ((overall.get("selected") or {}).get("val") or {}).get(t) or {}
            if shipped:
                cells.append(f"{t} track {fmt(shipped.get('mean_cpsnr'), 3)} → {fmt(chosen.get('mean_cpsnr'), 3)} dB "
                             f"({_paired(chosen.get('vs_shipped'))})")
        text = f"**All changes together** ({moves}) against the shipped settings, on val: " + "; ".join(cells) + "."
        if real.get("scenes"):
            reals = [f"{t} track {_real({'shipped': ((overall.get('shipped') or {}).get('real') or {}).get(t), 'selected': ((overall.get('selected') or {}).get('real') or {}).get(t)})} dB"
                     for t in ("challenge", "ref")]
            text += " On the real scene(s): " + "; ".join(reals) + "."
        parts.append(text)
        parts.append("A val-selected value's val figures are optimistic: it was chosen among many on these few "
                     "scenes. The shipped settings change only by hand, on this evidence and the real scenes'.")
    if moved:
        parts.insert(0, STALE.format(why="its shipped settings are not `params.yaml`'s for "
                                         + ", ".join(f"`{m}`" for m in moved), command="make tune"))
    return "\n\n".join(parts)


def fill(report: ReportInputs) -> dict[str, str]:
    metrics = report.paths.metrics
    return {"held_out_test": held_out_test(metrics), "seeds": seeds(metrics, report.params.get("seed")),
            "ablations": ablations(metrics, report.seed_sd), "tuning": tuning(metrics, report.params)}
