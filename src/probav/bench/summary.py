"""What the measurements mean: growth series, fractions of the hardware peaks, the markdown table."""
from __future__ import annotations

from probav.bench.scoring import SCORER_COMPULSORY_BYTES, SCORER_FAST_BYTES, SCORER_NAIVE_BYTES




# --------------------------------------------------------------------------- growth and hardware fractions

def _median(entry) -> float | None:
    if isinstance(entry, dict) and isinstance(entry.get("median"), (int, float)):
        return float(entry["median"])
    return None


def _best(entry) -> float | None:
    if isinstance(entry, dict) and isinstance(entry.get("max"), (int, float)):
        return float(entry["max"])
    return None


def collect_growth(report: dict) -> dict:
    """Every growth series in one place: {"scorer": …, "inference": {model: …}, "train_frames": {model: …}}."""
    out: dict = {}
    scorer = (report.get("scorer") or {}).get("growth")
    if scorer:
        out["scorer"] = {"scenes": [r["scenes"] for r in scorer["rows"]],
                         "fast_ms_per_scene": [_median(r["fast_ms_per_scene"]) for r in scorer["rows"]],
                         "naive_ms_per_scene": [_median(r.get("naive_ms_per_scene")) for r in scorer["rows"]],
                         "exponent": scorer["fast_exponent"]}
    inference, train = {}, {}
    for name, m in (report.get("models") or {}).items():
        g = m.get("inference_growth")
        if g:
            inference[name] = {"scenes": [r["scenes"] for r in g["rows"]],
                               "ms_per_scene": [_median(r["ms_per_scene"]) for r in g["rows"]],
                               "exponent": g["exponent"]}
        t = m.get("train_growth")
        if t:
            train[name] = {"frames": [r["frames"] for r in t["rows"]],
                           "step_ms": [_median(r.get("step_ms")) for r in t["rows"]], "exponent": t["exponent"]}
    if inference:
        out["inference"] = inference
    if train:
        out["train_frames"] = train
    return out


def derive(report: dict) -> dict:
    """How far from the hardware each part is, and whether training is input-bound."""
    hw = report.get("hardware") or {}
    bandwidth = _best(hw.get("memory_bandwidth_gb_s"))
    tf_hw = hw.get("tensorflow") or {}
    matmul = _best(tf_hw.get("tf_matmul_float32_gflop_s")) or _best(hw.get("numpy_matmul_float32_gflop_s"))
    conv = _best(tf_hw.get("tf_conv3x3_float32_gflop_s"))
    nominal = (hw.get("nominal_peak") or {}).get("gflop_s")
    out: dict = {"memory_bandwidth_gb_s": bandwidth, "matmul_gflop_s": matmul, "conv_gflop_s": conv,
                 "nominal_peak_gflop_s": nominal,
                 "note": "peaks are the best repeat of each hardware measurement (a busy machine only "
                         "slows a repeat down); the parts' rates are medians"}

    scorer = report.get("scorer") or {}
    if "fast_ms_per_scene" in scorer:
        rows = {}
        for name, key, nbytes in (("fast", "fast_ms_per_scene", SCORER_FAST_BYTES),
                                  ("fast_1thread", "fast_1thread_ms_per_scene", SCORER_FAST_BYTES),
                                  ("naive", "naive_ms_per_scene", SCORER_NAIVE_BYTES)):
            ms = scorer[key]
            row = {"ms_per_scene": ms, "estimated_gb_s": nbytes / (ms * 1e-3) / 1e9,
                   "compulsory_gb_s": SCORER_COMPULSORY_BYTES / (ms * 1e-3) / 1e9}
            if bandwidth:
                row["fraction_of_bandwidth"] = row["estimated_gb_s"] / bandwidth
                row["bandwidth_bound_ms"] = nbytes / (bandwidth * 1e9) * 1e3
                row["times_slower_than_bandwidth_bound"] = ms / row["bandwidth_bound_ms"]
            rows[name] = row
        out["scorer"] = rows

    for part in ("check", "tfrecords"):
        section = report.get(part) or {}
        if bandwidth and section.get("workers"):
            out[part] = {w: {"decoded_fraction_of_bandwidth": (_median(r.get("decoded_mb_per_s")) or 0) / 1e3 / bandwidth}
                         for w, r in section["workers"].items()}

    pipeline = _median((report.get("pipeline") or {}).get("batches_per_s"))
    models = {}
    for name, m in (report.get("models") or {}).items():
        row = {}
        train = m.get("train") or {}
        steps = _median(train.get("steps_per_s"))
        flops = train.get("flops_per_step")
        if steps and flops:
            row["train_gflop_s"] = flops * steps / 1e9
            row["train_gflop_per_step"] = flops / 1e9
            if matmul:
                row["train_fraction_of_matmul"] = row["train_gflop_s"] / matmul
            if conv:
                row["train_fraction_of_conv"] = row["train_gflop_s"] / conv
            if nominal:
                row["train_fraction_of_nominal_peak"] = row["train_gflop_s"] / nominal
        infer = m.get("inference") or {}
        per_s = _median(infer.get("scenes_per_s"))
        if per_s and infer.get("flops_per_scene"):
            row["inference_gflop_s"] = infer["flops_per_scene"] * per_s / 1e9
            if matmul:
                row["inference_fraction_of_matmul"] = row["inference_gflop_s"] / matmul
            if nominal:
                row["inference_fraction_of_nominal_peak"] = row["inference_gflop_s"] / nominal
        if steps and pipeline:
            # Measured apart, each on the whole machine. On a CPU-only machine the two share the
            # cores: a step then costs about (1 + input_cost_per_step) step times.
            row["input_batches_per_train_step"] = pipeline / steps
            row["input_cost_per_step"] = steps / pipeline
            row["input_bound"] = pipeline < steps
        if row:
            models[name] = row
    if models:
        out["models"] = models
    if pipeline is None:
        out["input_bound"] = "unknown: the input pipeline was not measured"
    return out


# --------------------------------------------------------------------------- markdown table

def _fmt(x, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        if x == 0:
            return "0"
        if abs(x) >= 100:
            return f"{x:,.0f}"
        return f"{x:.{digits}g}"
    return str(x)


def _cell(entry, scale: float = 1.0) -> tuple[str, str]:
    """(median, 'min–max') of a summary dict."""
    if not isinstance(entry, dict) or entry.get("median") is None:
        return "–", ""
    return _fmt(entry["median"] * scale), f"{_fmt(entry['min'] * scale)}–{_fmt(entry['max'] * scale)}"


def _reason(entry) -> str | None:
    if not isinstance(entry, dict):
        return "not measured"
    if "skipped" in entry:
        return f"skipped: {entry['skipped']}"
    if "error" in entry:
        return f"error: {str(entry['error']).splitlines()[0][:160]}"
    return None


def markdown_table(report: dict) -> str:
    """A short markdown summary: one table of medians (min–max over repeats), one of growth."""
    meta = report.get("meta", {})
    lines = [f"Benchmarks on {meta.get('cpu', '?')}, {meta.get('cpu_count', '?')} cores"
             f"{' (quick run: tiny sizes)' if meta.get('quick') else ''}; load average "
             f"{meta.get('load_before')} → {meta.get('load_after')}; medians of repeats, min–max in brackets.",
             "", "| part | measure | median | min–max | note |", "|---|---|---:|---|---|"]

    def row(part, measure_, entry, note="", scale=1.0):
        med, spread = _cell(entry, scale)
        lines.append(f"| {part} | {measure_} | {med} | {spread} | {note} |")

    def missing(part, entry):
        if entry is None:  # not asked for
            return "absent"
        reason = _reason(entry)
        if reason:
            lines.append(f"| {part} | | | | {reason} |")
        return reason

    hw = report.get("hardware")
    if not missing("hardware", hw):
        row("hardware", "memory bandwidth, GB/s", hw.get("memory_bandwidth_gb_s"), "numpy copy, read + write")
        row("hardware", "numpy matmul float32, GFLOP/s", hw.get("numpy_matmul_float32_gflop_s"), f"n = {hw.get('matmul_n')}")
        nominal = hw.get("nominal_peak") or {}
        if nominal.get("gflop_s"):
            lines.append(f"| hardware | nominal float32 peak, GFLOP/s | {_fmt(nominal['gflop_s'])} | | "
                         f"{nominal['cores']} cores × {nominal['mhz']:.0f} MHz × {nominal['flop_per_cycle']} FLOP/cycle |")
        tfh = hw.get("tensorflow")
        if tfh and not missing("hardware (TF)", tfh):
            row("hardware", "TF matmul float32, GFLOP/s", tfh.get("tf_matmul_float32_gflop_s"))
            row("hardware", "TF conv 3×3 32→32, GFLOP/s", tfh.get("tf_conv3x3_float32_gflop_s"))
    sc = report.get("scorer")
    if not missing("scorer", sc):
        der = (report.get("derived") or {}).get("scorer", {})
        frac = der.get("fast", {}).get("fraction_of_bandwidth")
        row("scorer", "kernel, scenes/s", sc.get("fast_scenes_per_s"),
            f"{sc.get('n_scenes')} scenes; ≈{_fmt(frac)} of memory bandwidth (estimated bytes)")
        row("scorer", "kernel 1 thread, scenes/s", sc.get("fast_1thread_scenes_per_s"))
        row("scorer", "naive 49-window loop, scenes/s", sc.get("naive_scenes_per_s"),
            f"kernel is {_fmt(sc.get('ratio'))}× faster ({_fmt(sc.get('ratio_1thread'))}× on 1 thread); "
            f"max diff {_fmt(sc.get('max_abs_diff_db'))} dB")
        if sc.get("organisers_scenes_per_s"):
            row("scorer", "organisers' numpy kernel, scenes/s", sc["organisers_scenes_per_s"],
                f"kernel is {_fmt(sc.get('ratio_organisers'))}× faster "
                f"({_fmt(sc.get('ratio_organisers_1thread'))}× on 1 thread); "
                f"max score diff {_fmt(sc.get('max_abs_score_diff'))}")
        folder = sc.get("folder")
        if folder and not missing("scorer, folder", folder):
            row("scorer", "probav score (end to end), scenes/s", folder["probav"]["scenes_per_s"],
                f"{folder['scenes']} scenes of PNGs; {_fmt(folder['ratio'])}× the organisers' scorer "
                f"({_fmt(folder['ratio_1thread'])}× on 1 thread); mean scores differ by "
                f"{_fmt(folder['mean_score_diff'])}")
            row("scorer", "organisers' numpy scorer, scenes/s", folder["organisers"]["scenes_per_s"],
                "reimplemented step for step (scikit-image reads, pandas norm, 49 gathers)")
    sim = report.get("simulator")
    if not missing("simulator", sim):
        row("simulator", "simulate_scene, scenes/s", sim["compute"]["scenes_per_s"], "compute only, 1 process")
        for w, r in sim["generate"]["workers"].items():
            row("simulator", f"generate, {w} worker(s), scenes/s", r["scenes_per_s"],
                f"{_fmt(_median(r['png_mb_per_s']))} MB/s of PNG written")
    for part, label in (("check", "data check"), ("tfrecords", "TFRecord build")):
        section = report.get(part)
        if not missing(label, section):
            for w, r in section["workers"].items():
                row(label, f"{w} worker(s), scenes/s", r["scenes_per_s"],
                    f"{_fmt(_median(r['png_mb_per_s']))} MB/s PNG, {_fmt(_median(r['decoded_mb_per_s']))} MB/s decoded")
    pipe = report.get("pipeline")
    if not missing("input pipeline", pipe):
        row("input pipeline", "training batches/s", pipe.get("batches_per_s"),
            f"batch {pipe.get('batch_size')}, patch {pipe.get('patch_size')}, K {pipe.get('frames')}")
    derived_models = (report.get("derived") or {}).get("models", {})
    for name, m in (report.get("models") or {}).items():
        if missing(f"model {name}", m):
            continue
        mem = m.get("peak_memory_mb") or {}
        peak = mem.get("inference_one_scene") if m.get("kind") == "deep" else mem.get("tracemalloc_one_scene")
        row(f"model {name}", "inference, scenes/s", (m.get("inference") or {}).get("scenes_per_s"),
            f"{m.get('kind')}; {m.get('parameters'):,} parameters; peak +{_fmt(peak)} MB per scene"
            + (f", {_fmt(mem['model_peak'])} MB for the model in all" if mem.get("model_peak") is not None else ""))
        earlier = m.get("earlier")
        if earlier and not missing(f"model {name}", earlier):
            row(f"model {name}", f"as at {earlier['commit']}, scenes/s", earlier["earlier_scenes_per_s"],
                f"side by side on {earlier['scenes']} freshly read scenes, each version in its own process: "
                f"now {_fmt(earlier['now_scenes_per_s']['median'])} scenes/s, {_fmt(earlier['ratio'])}× faster; "
                f"{earlier['identical_scenes']} of {earlier['scenes']} predictions identical "
                f"(max difference {earlier['max_abs_diff_dn']} DN)")
        if m.get("train"):
            d = derived_models.get(name, {})
            note = f"batch {m.get('batch_size')}, patch {m.get('patch_size')}, K {m.get('frames')}"
            if d.get("train_gflop_per_step") is not None:
                note += f"; {_fmt(d['train_gflop_per_step'])} GFLOP/step, {_fmt(d['train_gflop_s'])} GFLOP/s"
                peak = ("conv", d.get("train_fraction_of_conv")) if d.get("train_fraction_of_conv") else \
                    ("matmul", d.get("train_fraction_of_matmul"))
                if peak[1] is not None:
                    note += f" = {_fmt(peak[1])} of the {peak[0]} peak"
            note += f"; peak +{_fmt(mem.get('train_one_step'))} MB per step"
            if "input_bound" in d:
                note += (f"; input {'BOUND' if d['input_bound'] else 'not bound'}: the pipeline makes "
                         f"{_fmt(d['input_batches_per_train_step'])} batches per step time")
            row(f"model {name}", "training, steps/s", m["train"].get("steps_per_s"), note)

    growth = report.get("growth") or {}
    if growth:
        lines += ["", "| growth | sizes | time per item (median) | exponent |", "|---|---|---|---:|"]
        if "scorer" in growth:
            g = growth["scorer"]
            lines.append(f"| scorer, ms/scene vs scenes | {g['scenes']} | "
                         f"{[_fmt(v) for v in g['fast_ms_per_scene']]} | {_fmt(g['exponent'])} |")
        for name, g in growth.get("inference", {}).items():
            lines.append(f"| {name} inference, ms/scene vs scenes | {g['scenes']} | "
                         f"{[_fmt(v) for v in g['ms_per_scene']]} | {_fmt(g['exponent'])} |")
        for name, g in growth.get("train_frames", {}).items():
            lines.append(f"| {name} training, ms/step vs K | {g['frames']} | "
                         f"{[_fmt(v) for v in g['step_ms']]} | {_fmt(g['exponent'])} |")
        lines.append("")
        lines.append("Exponent: slope of log(time) against log(size) (1 = linear; for per-item columns, "
                     "total time grows as size^exponent).")
    return "\n".join(lines) + "\n"

