"""Running the parts, each in its own process, and assembling the report."""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

import numpy as np

from probav.bench.common import TF_PARTS, VERSION, bench_settings, maxrss_mb, merge_settings
from probav.bench.data import bench_check, bench_pipeline, bench_simulator, bench_tfrecords
from probav.bench.hardware import bench_hardware, bench_hardware_tf
from probav.bench.models import bench_model
from probav.bench.scoring import bench_scorer
from probav.bench.summary import collect_growth, derive


# --------------------------------------------------------------------------- parts and subprocesses

def run_part(part: str, settings: dict, params: dict, work: Path) -> dict:
    """One measurement by name: hardware, hardware_tf, scorer, simulator, check, tfrecords, pipeline,
    model:<name>. Errors become ``{"error": …}``."""
    seed = int(params.get("seed", 0))
    start = time.perf_counter()
    try:
        if part == "hardware":
            result = bench_hardware(settings)
        elif part == "hardware_tf":
            result = bench_hardware_tf(settings)
        elif part == "scorer":
            result = bench_scorer(settings, work, seed)
        elif part == "simulator":
            result = bench_simulator(settings, params, work)
        elif part == "check":
            result = bench_check(settings, params, work)
        elif part == "tfrecords":
            result = bench_tfrecords(settings, params, work)
        elif part == "pipeline":
            result = bench_pipeline(settings, params, work, seed)
        elif part.startswith("model:"):
            result = bench_model(part.split(":", 1)[1], settings, params, work)
        else:
            raise ValueError(f"unknown bench part {part!r}")
    except Exception as err:
        result = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc(limit=6)}
    result["wall_s"] = time.perf_counter() - start
    result["process_peak_rss_mb"] = maxrss_mb()
    return result


def run_parts_subprocess(parts: list[str], settings: dict, params: dict, work: Path) -> dict:
    """Run ``parts`` in one fresh Python process (``python -m probav.bench``); {part: result}."""
    with tempfile.TemporaryDirectory(prefix="bench-ipc-") as tmp:
        config, out = Path(tmp) / "config.json", Path(tmp) / "out.json"
        config.write_text(json.dumps({"settings": settings, "params": params, "work": str(work)}, default=str))
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "probav.bench", str(config), str(out), *parts]
        timeout = float(settings["timeout_s"]) * max(len(parts), 1)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
            failure = f"exit status {proc.returncode}: {proc.stderr.strip()[-1500:]}" if proc.returncode else None
        except subprocess.TimeoutExpired:
            failure = f"timed out after {timeout:.0f} s"
        results = json.loads(out.read_text()) if out.is_file() else {}
    for part in parts:
        if part not in results:
            results[part] = {"error": failure or "no result written"}
    return results


def _main_subprocess(argv: list[str]) -> int:
    """``python -m probav.bench CONFIG OUT PART…``: run parts, writing results after each one."""
    config_path, out_path, parts = Path(argv[0]), Path(argv[1]), argv[2:]
    config = json.loads(config_path.read_text())
    results = {}
    for part in parts:
        results[part] = run_part(part, config["settings"], config["params"], Path(config["work"]))
        out_path.write_text(json.dumps(results, default=_json_default))
    return 0


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return str(value)


# --------------------------------------------------------------------------- the whole bench

ALL_PARTS = ("hardware", "scorer", "simulator", "check", "tfrecords", "hardware_tf", "pipeline", "models")


def _load_avg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for key, dists in (("numpy", ["numpy"]), ("scipy", ["scipy"]), ("tensorflow", ["tensorflow-cpu", "tensorflow"]),
                       ("keras", ["keras"])):
        out[key] = None
        for dist in dists:
            try:
                out[key] = version(dist)
                break
            except PackageNotFoundError:
                continue
    return out


def run_bench(params: dict, quick: bool = False, parts: list[str] | None = None, work: Path | None = None,
              log: Callable[[str], None] | None = print) -> dict:
    """Run the bench (see the module docstring); ``parts`` limits it to some of ``ALL_PARTS``."""
    settings = bench_settings(params, quick)
    params = merge_settings(params, settings.get("params"))  # bench.params (and --quick's tiny network) override
    wanted = list(parts or ALL_PARTS)
    unknown = sorted(set(wanted) - set(ALL_PARTS))
    if unknown:
        raise ValueError(f"unknown bench parts {unknown}; choose from {', '.join(ALL_PARTS)}")
    classical = settings["models"]["classical"]
    deep = settings["models"]["deep"]
    classical = list(params.get("models") or []) if classical is None else list(classical)
    deep = list(params.get("deep_models") or []) if deep is None else list(deep)
    settings["models"]["classical"], settings["models"]["deep"] = classical, deep

    # Order matters: the simulator makes the archive the check reads, the check the index the
    # TFRecord build reads, which writes the files the input pipeline reads.
    order = [p for p in ALL_PARTS if p in wanted and p != "models"]
    if "models" in wanted:
        order += [f"model:{m}" for m in classical + deep]
    if any(p in wanted for p in ("check", "tfrecords", "pipeline", "models")) and "simulator" not in order:
        order.insert(0, "simulator")  # they need its archive
    if any(p in wanted for p in ("tfrecords", "pipeline")) and "check" not in order:
        order.insert(order.index("simulator") + 1, "check")
    if "pipeline" in wanted and "tfrecords" not in order:
        order.insert(order.index("check") + 1, "tfrecords")

    meta = {"version": VERSION, "quick": settings["quick"], "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "cpu_count": os.cpu_count(), "cpu": _cpu_model(), "platform": platform.platform(),
            "versions": _versions(), "load_before": _load_avg(), "settings": settings}
    start = time.perf_counter()
    results: dict = {}
    owned = work is None
    work = Path(tempfile.mkdtemp(prefix="probav-bench-")) if owned else Path(work)
    work.mkdir(parents=True, exist_ok=True)
    try:
        if settings["quick"]:
            # Two processes in all: everything without TensorFlow, then everything with it.
            tf_parts = [p for p in order if p in TF_PARTS or p.removeprefix("model:") in deep]
            groups = [[p for p in order if p not in tf_parts], tf_parts]
        else:
            groups = [[p] for p in order]  # one process per part: separate memory peaks
        for group in (g for g in groups if g):
            if log:
                log(f"bench: {', '.join(group)} …")
            results.update(run_parts_subprocess(group, settings, params, work))
            if log:
                for p in group:
                    r = results[p]
                    state = r.get("skipped") or r.get("error") or "ok"
                    log(f"  {p}: {str(state).splitlines()[0][:200]} ({r.get('wall_s', 0):.1f} s)")
    finally:
        if owned:
            shutil.rmtree(work, ignore_errors=True)

    report = {"meta": meta}
    for key in ("hardware", "scorer", "simulator", "check", "tfrecords", "pipeline"):
        if key in results:
            report[key] = results[key]
    if "hardware_tf" in results:
        report.setdefault("hardware", {})["tensorflow"] = results["hardware_tf"]
    models = {p.removeprefix("model:"): r for p, r in results.items() if p.startswith("model:")}
    if models:
        report["models"] = models
    report["growth"] = collect_growth(report)
    report["derived"] = derive(report)
    meta["load_after"] = _load_avg()
    meta["duration_s"] = time.perf_counter() - start
    return json.loads(json.dumps(report, default=_json_default))


