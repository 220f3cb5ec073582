"""Section 3 (the approaches): the table of models, each model's line of results under its description, and
the layer tables of the trained networks."""
from __future__ import annotations

import re

from probav.report.inputs import ModelRun, ReportInputs
from probav.report.markdown import PLACEHOLDER, fmt, fmt_int, fmt_seconds, md_table


def models_table(runs: list[ModelRun]) -> str:
    rows = []
    for r in runs:
        status = ("scored" if r.ran else "not run") + ("" if r.in_params else " (not in params.yaml)")
        what = r.summary.split(". ")[0].rstrip(".") if r.summary else ""
        what = re.sub(r"^``\w+``:\s*", "", what)
        rows.append([f"`{r.name}`", r.kind, status, fmt_int(r.parameters) if r.parameters is not None else "n/a",
                     what.replace("``", "`")])
    return md_table(["model", "kind", "this run", "parameters", "what it is (module docstring)"], rows,
                    ["l", "l", "l", "r", "l"])


def model_block(run: ModelRun) -> str:
    if not run.ran:
        reason = "it is not listed in `params.yaml`" if not run.in_params else "its metrics are missing"
        return f"\n*Not run: {reason} (`metrics/{run.name}.json`).*"
    m = run.metrics
    parts = [f"\n*In this run: mean score {fmt(m['mean_score'], 4)}, mean cPSNR {fmt(m.get('mean_cpsnr'), 2)} dB on "
             f"{m.get('scenes')} dev scenes"]
    if run.parameters:
        parts.append(f"{fmt_int(run.parameters)} parameters")
    if run.training.get("seconds") is not None:
        parts.append(f"trained in {fmt_seconds(run.training['seconds'])}")
    if run.training.get("epochs_run") is not None:
        epochs = run.training.get("epochs")
        text = f"{int(run.training['epochs_run'])}{f' of {int(epochs)}' if epochs else ''} epochs"
        if run.training.get("best_epoch") is not None:
            text += f" (best: epoch {int(run.training['best_epoch'])})"
        parts.append(text)
    if run.training.get("best_val_cpsnr") is not None:
        parts.append(f"best val cPSNR during training {fmt(run.training['best_val_cpsnr'], 2)} dB (the epoch kept)")
    return "; ".join(parts) + ".*"


def layers_tables(runs: list[ModelRun]) -> str:
    deep = [r for r in runs if r.kind == "deep"]
    if not deep:
        return ""
    blocks = ["### Layers and parameters of the networks",
              "Layers of each trained network, grouped by type (from the saved model)."]
    for r in deep:
        if r.layers is None or r.layers.empty:
            blocks.append(f"**{r.name}**: no trained model in `models/{r.name}/` for this run.")
            continue
        weighted = r.layers[r.layers["parameters"] > 0]
        free = r.layers[r.layers["parameters"] == 0]
        rows = [[str(row.layer), str(row.count), fmt_int(row.parameters)] for row in weighted.itertuples()]
        if len(free):
            names = ", ".join(f"{row.layer}" + (f" ×{row.count}" if row.count > 1 else "") for row in free.itertuples())
            rows.append([f"without weights: {names}", str(int(free["count"].sum())), "0"])
        rows.append(["**total**", str(int(r.layers["count"].sum())), f"**{fmt_int(r.layers['parameters'].sum())}**"])
        blocks.append(f"**{r.name}**\n\n" + md_table(["layer type", "count", "parameters"], rows))
    return "\n\n".join(blocks)


def fill(report: ReportInputs) -> dict[str, str]:
    """``models_table``, ``model_<name>`` for every model, ``other_models`` (the models the template does not
    describe, with their module docstring) and ``layers_tables``."""
    runs = report.runs
    out = {"models_table": models_table(runs)}
    for r in runs:
        out[f"model_{r.name}"] = model_block(r)
    described = set(PLACEHOLDER.findall(report.template))
    others = [r for r in runs if f"model_{r.name}" not in described]
    out["other_models"] = "\n\n".join(f"### {r.name}\n\n{r.summary or 'No description.'}\n{model_block(r)}"
                                       for r in others)
    out["layers_tables"] = layers_tables(runs)
    return out
