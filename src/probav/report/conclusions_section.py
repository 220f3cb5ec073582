"""Section 5's findings: what the numbers say about the pairs of models the report compares."""
from __future__ import annotations

from probav.report.inputs import ModelRun, ReportInputs
from probav.report.markdown import fmt


def compare(a: ModelRun | None, b: ModelRun | None) -> float | None:
    """Score difference a − b (negative: a is better), None when either did not run."""
    if a is None or b is None or not a.ran or not b.ran:
        return None
    return a.metrics["mean_score"] - b.metrics["mean_score"]


def findings(runs: list[ModelRun], source: str) -> str:
    by = {r.name: r for r in runs}
    ran = sorted([r for r in runs if r.ran], key=lambda r: r.metrics["mean_score"])
    if not ran:
        return "No model was scored in this run, so there is nothing to conclude yet."
    out = []

    def s(name):
        return fmt(by[name].metrics["mean_score"], 4)

    open_pairs = []

    def pair(a, b, better, worse, tie):
        d = compare(by.get(a), by.get(b))
        if d is None:
            open_pairs.append(f"`{a}` against `{b}`")
            return None
        if abs(d) < 5e-5:
            return tie.format(a=a, b=b, sa=s(a), sb=s(b))
        return (better if d < 0 else worse).format(a=a, b=b, sa=s(a), sb=s(b))

    out.append(pair("residual_single", "baseline",
                    "- The single-image network `{a}` ({sa}) beats the baseline ({sb}) here. The published "
                    "single-image SRResNet did not (1.0084 on the test set); but `{a}` refines the median of all "
                    "frames, not one frame, so part of its gain is the median's.",
                    "- The single-image network `{a}` ({sa}) does not beat the baseline ({sb}), like the published "
                    "single-image SRResNet (1.0084): one image does not hold the detail the shifts between frames add.",
                    "- The single-image network `{a}` ({sa}) ties with the baseline ({sb})."))
    out.append(pair("residual_single", "median",
                    "- Learned single-image sharpening helps: `{a}` ({sa}) beats the median it refines (`{b}`, {sb}).",
                    "- Learned single-image sharpening does not help: `{a}` ({sa}) does not beat the median it "
                    "refines (`{b}`, {sb}).",
                    "- `{a}` ties with the median it refines ({sa})."))
    out.append(pair("residual_multi", "residual_single",
                    "- Giving the same network several frames helps: `{a}` {sa} against `{b}` {sb}.",
                    "- Giving the same network several frames does not help here: `{a}` {sa} against `{b}` {sb}; "
                    "stacked frames in a fixed order are a weak way to fuse unregistered frames.",
                    "- `{a}` and `{b}` tie ({sa})."))
    out.append(pair("misr_net", "shift_and_add",
                    "- The multi-frame network `{a}` ({sa}) beats the classical `{b}` ({sb}). With "
                    "`model.misr_base: prior` (the default) it starts from `{b}`'s own fusion, so the difference "
                    "is what the network learned to correct in it.",
                    "- The multi-frame network `{a}` ({sa}) does not beat the classical `{b}` ({sb}): with the "
                    "training this run could afford, explicit registration and robust fusion still win.",
                    "- `{a}` and `{b}` tie ({sa})."))
    out.append(pair("srgan", "residual_multi",
                    "- The adversarial `{a}` ({sa}) scores better than `{b}` ({sb}).",
                    "- The adversarial loss costs score: `{a}` {sa} against `{b}` {sb}; cPSNR rewards pixel "
                    "accuracy, not realism.",
                    "- `{a}` and `{b}` tie ({sa})."))
    out.append(pair("median", "baseline",
                    "- Even the unregistered per-pixel median of all clear frames (`{a}`, {sa}) beats the baseline "
                    "({sb}): the baseline throws most frames away.",
                    "- The per-pixel median of all clear frames (`{a}`, {sa}) does not beat the baseline ({sb}).",
                    "- `{a}` ties with the baseline ({sa})."))
    out = [line for line in out if line]
    best = ran[0]
    deep = [r for r in ran if r.kind == "deep"]
    classical = [r for r in ran if r.kind == "classical"]
    if deep and classical:
        bd, bc = deep[0], classical[0]
        verdict = "beats" if bd.metrics["mean_score"] < bc.metrics["mean_score"] else "does not beat"
        out.append(f"- The best network, `{bd.name}` ({s(bd.name)}), {verdict} the best classical method, "
                   f"`{bc.name}` ({s(bc.name)}).")
    if best.table is not None:
        worse = float((best.table["score"] > 1.0).mean())
        out.append(f"- Even the best model, `{best.name}`, is worse than the baseline on "
                   f"{fmt(100 * worse, 0)}% of the dev scenes." if worse > 0 else
                   f"- The best model, `{best.name}`, is at least as good as the baseline on every dev scene.")
    if open_pairs:
        out.append(f"- Not measured in this run, because a model did not run: {', '.join(open_pairs)}.")
    if source == "synthetic":
        out.append("- All of this is measured on simulated scenes: the simulator's land change, clouds and "
                   "registration difficulty are models, and conclusions must be checked on the real data.")
    return "**What the numbers say** (generated from `metrics/`):\n\n" + "\n".join(out)


def fill(report: ReportInputs) -> dict[str, str]:
    return {"findings": findings(report.runs, report.source)}
