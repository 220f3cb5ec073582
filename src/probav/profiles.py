"""Params profiles: named sets of ``params.yaml`` overrides (``profiles/*.yaml``) and what they cost.

A profile mirrors ``params.yaml``'s groups with only the keys it changes, e.g.
``profiles/gpu-real.yaml`` (full-size training on one GPU with the real archive). It is applied as a
DVC experiment, so every value is recorded with the results and params.yaml stays the default::

    dvc exp run $(probav profile profiles/gpu-real.yaml --exp-args)

``estimate_training(params, models, tflops)`` gives the expected training time of each network
under a profile without a GPU: the FLOPs of one training step and of one validation pass are
counted by tracing the real Keras ``train_step`` / forward pass (``probav.bench``'s tracer; nothing
is run), multiplied by the steps and epochs the profile asks for, and divided by an assumed
sustained throughput. It is an estimate, as good as that assumption; ``make bench`` on the target
machine measures the real steps per second.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import yaml

# Assumed sustained float32/TF32 throughput of small 3×3-conv networks on one H100 (TFLOP/s). The
# H100 SXM peaks at ~67 TFLOP/s FP32 and ~495 dense TF32 on tensor cores (TensorFlow uses TF32 for
# convolutions by default); networks of 32–64 channels on 32×32 patches use a small share of that.
# On this project's CPU they reach 0.4–0.9 of the measured conv peak (metrics/bench.json).
DEFAULT_TFLOPS = 25.0
RANGE = (0.5, 2.0)   # pessimistic / optimistic multipliers of the assumed throughput


def load_profile(path: os.PathLike | str, params: dict) -> dict:
    """The overrides of a profile file, checked: every key must exist in ``params`` (a typo would
    otherwise add a parameter nothing reads)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: profile not found")
    try:
        overrides = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(overrides, dict) or not overrides:
        raise ValueError(f"{path}: a profile is a mapping of params.yaml groups to the keys it changes")
    unknown = []
    for key, _ in flatten(overrides):
        try:
            lookup(params, key)
        except KeyError:
            unknown.append(key)
    if unknown:
        raise ValueError(f"{path}: {', '.join(unknown)} not in params.yaml (a profile only changes existing keys)")
    return overrides


_RAISE = object()


def lookup(params: dict, dotted: str, default=_RAISE):
    """The value of a dotted key (``train.misr_net.epochs``) in ``params``; ``default`` (or KeyError) if absent."""
    node = params
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            if default is _RAISE:
                raise KeyError(dotted)
            return default
        node = node[key]
    return node


def changes(params: dict, overrides: dict) -> list[tuple[str, object, object]]:
    """``[(dotted key, current value, profile value), …]``."""
    return [(key, lookup(params, key), value) for key, value in flatten(overrides)]


def flatten(overrides: dict, prefix: str = "") -> list[tuple[str, object]]:
    """``[(dotted key, value), …]`` of the leaves of a nested mapping, in file order."""
    out = []
    for key, value in overrides.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out += flatten(value, f"{name}.")
        else:
            out.append((name, value))
    return out


def exp_run_args(overrides: dict) -> list[str]:
    """``dvc exp run`` arguments setting every override: ``["-S", "group.key=value", …]`` (values as
    YAML scalars, which is how DVC parses them)."""
    args = []
    for key, value in flatten(overrides):
        rendered = yaml.safe_dump(value, default_flow_style=True, width=10_000)
        rendered = rendered.strip().removesuffix("...").strip()   # a scalar document ends with "..."
        args += ["-S", f"{key}={rendered}"]
    return args


def apply_profile(params: dict, overrides: dict) -> dict:
    """A deep copy of ``params`` with the overrides merged in (``params`` is not changed)."""
    merged = copy.deepcopy(params)

    def merge(into: dict, over: dict) -> None:
        for key, value in over.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = copy.deepcopy(value)

    merge(merged, overrides)
    return merged


def estimate_training(params: dict, models: list[str], tflops: float = DEFAULT_TFLOPS,
                      dev_scenes: int | None = None, input_examples_per_s: float | None = None) -> list[dict]:
    """Expected training time of each network under ``params`` (a profile applied), at ``tflops``.

    Per model: parameters, FLOPs of one training step (batch ``input.batch_size``, patch
    ``input.patch_size``, K ``input.frames``) and of one whole 128×128 dev scene forward pass,
    the steps (``train.epochs`` × ``train.steps_per_epoch``, per-model overrides included), the
    validation passes (``dev_scenes`` × epochs; ``train.validation_scenes`` when set), and the
    compute hours at ``tflops`` and at the ``RANGE`` multiples of it. With
    ``input_examples_per_s`` (what the CPU input pipeline can deliver), ``input_hours`` is the time
    the pipeline needs for the training examples, and ``hours`` the larger of the two (a GPU waits
    for its input). Early stopping can only shorten it."""
    from probav.bench.models import DeepSetup, forward_flops, train_step_flops
    from probav.training import train_settings

    if not tflops > 0:
        raise ValueError(f"the assumed throughput must be positive, got {tflops} TFLOP/s")
    cfg = params.get("input") or {}
    frames, batch, patch = int(cfg.get("frames", 9)), int(cfg.get("batch_size", 16)), int(cfg.get("patch_size", 32))
    rows = []
    for name in models:
        settings = train_settings(params, name)
        setup = DeepSetup(name, params, frames, (0.1, 0.03))
        step = train_step_flops(setup, batch, patch)
        scene = forward_flops(setup.network, frames, 128, 1)
        if step is None or scene is None:
            raise RuntimeError(f"{name}: the FLOP count of its training step could not be traced")
        epochs, steps = int(settings["epochs"]), int(settings["steps_per_epoch"])
        limit = int(settings.get("validation_scenes") or 0)
        validated = min(limit, dev_scenes) if (limit and dev_scenes) else (limit or dev_scenes or 0)
        total = step * epochs * steps + scene * validated * epochs
        seconds = total / (tflops * 1e12)
        input_s = epochs * steps * batch / input_examples_per_s if input_examples_per_s else 0.0
        rows.append({"model": name, "parameters": int(setup.network.count_params()),
                     "gflop_per_step": step / 1e9, "gflop_per_dev_scene": scene / 1e9,
                     "steps": epochs * steps, "validation_passes": validated * epochs,
                     "total_pflop": total / 1e15, "tflops_assumed": tflops, "compute_hours": seconds / 3600,
                     "input_hours": input_s / 3600 if input_examples_per_s else None,
                     "hours": max(seconds, input_s) / 3600,
                     "hours_range": [max(seconds / RANGE[1], input_s) / 3600, max(seconds / RANGE[0], input_s) / 3600]})
    return rows


def measured_rates(bench_json: os.PathLike | str) -> dict:
    """What ``metrics/bench.json`` measured that the estimate scales: the shift_and_add inference rate
    (one process) and the training input pipeline's examples/s per core ({} without a benchmark)."""
    bench_json = Path(bench_json)
    if not bench_json.is_file():
        return {}
    bench = json.loads(bench_json.read_text())
    prior = lookup(bench, "models.shift_and_add.inference.scenes_per_s.median", None)
    examples = lookup(bench, "pipeline.examples_per_s.median", None)
    cores = lookup(bench, "meta.cpu_count", None) or 1
    return {"prior_scenes_per_core_s": prior, "input_examples_per_core_s": examples / cores if examples else None,
            "source": str(bench_json)}


def prior_cost(scenes: int, scenes_per_core_second: float | None, cores: int) -> dict | None:
    """Hours to compute the classical prior of ``scenes`` scenes on ``cores`` CPU cores (None without a rate)."""
    if not scenes_per_core_second:
        return None
    return {"scenes": scenes, "cores": cores, "scenes_per_core_s": scenes_per_core_second,
            "hours": scenes / (scenes_per_core_second * cores) / 3600}


def estimate_markdown(profile: str, rows: list[dict], tflops: float, cores: int, measured: dict,
                      prior: dict | None) -> str:
    """The estimate as a sentence of assumptions, a Markdown table and the once-per-archive cost."""
    lo, hi = (tflops * f for f in RANGE)
    per_core = measured.get("input_examples_per_core_s")
    lines = [f"Expected training time under `{profile}`: compute at an assumed {tflops:g} TFLOP/s "
             f"sustained (range {hi:g} to {lo:g}), FLOPs traced from the real train step; input = the training "
             f"examples at the input pipeline's measured rate per core × {cores} cores"
             + (f" ({per_core:.0f} examples/s per core, {measured['source']})" if per_core
                else " (no benchmark: not counted)")
             + "; hours = the larger. An estimate, not a GPU measurement.", "",
             "| model | parameters | GFLOP/step | steps | validation passes | compute h | input h | hours (range) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        input_h = "—" if r["input_hours"] is None else f"{r['input_hours']:.2f}"
        lines.append(f"| {r['model']} | {r['parameters']:,} | {r['gflop_per_step']:.1f} | {r['steps']:,} | "
                     f"{r['validation_passes']:,} | {r['compute_hours']:.2f} | {input_h} | {r['hours']:.2f} "
                     f"({r['hours_range'][0]:.2f}–{r['hours_range'][1]:.2f}) |")
    lines.append(f"| all | | | | | | | {sum(r['hours'] for r in rows):.2f} |")
    if prior:
        lines += ["", f"Once per archive: the shift_and_add prior of {prior['scenes']} scenes on {prior['cores']} "
                      f"cores at {prior['scenes_per_core_s']:.2f} scenes/s per core ({measured['source']}): "
                      f"{60 * prior['hours']:.1f} min."]
    return "\n".join(lines) + "\n"
