"""The data stages: simulator, data check, TFRecord build, input pipeline."""
from __future__ import annotations

import copy
import inspect
import math
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

from probav.bench.common import (
    MB, dir_bytes, measure, optional_module, quiet, rate, skipped, summary, timing_options,
    worker_counts,
)


# --------------------------------------------------------------------------- data: simulator, check

def _synthetic_params(params: dict, scenes: int, workers: int) -> dict:
    p = copy.deepcopy(params)
    syn = dict(p.get("synthetic") or {})
    syn.update(profile="default", train_scenes_per_band=max(1, int(math.ceil(scenes / 2))),
               test_scenes_per_band=0, workers=int(workers))
    p["synthetic"] = syn
    return p


def bench_simulator(settings: dict, params: dict, work: Path) -> dict:
    """``simulate_scene`` (compute only, one process) and ``generate`` (end to end) on 1, 2, … workers.

    Leaves the last archive generated in ``work/raw`` for the data check and the TFRecord build.
    """
    from probav.data import synthetic

    cfg = settings["simulator"]
    sim_settings = synthetic.resolve_settings(params)
    out: dict = {}
    n_compute = max(int(cfg["compute_scenes"]), 1)

    def compute():
        for i in range(n_compute):
            synthetic.simulate_scene(np.random.default_rng(i), ("RED", "NIR")[i % 2], f"imgset{i:04d}",
                                     "train", sim_settings)

    t = measure(compute, **timing_options(settings, repeats=cfg["repeats"], warmup=0))
    out["compute"] = {"scenes": n_compute, "scenes_per_s": rate(t, n_compute), "s_per_scene": summary(
        [x / n_compute for x in t]), "note": "simulate_scene only: no PNG writing, one process"}

    n = max(int(cfg["scenes"]), 1)
    generated = {}
    raw = work / "raw"
    for w in worker_counts(settings["data"]["workers"]):
        p = _synthetic_params(params, n, w)
        total = sum(synthetic.scene_counts(p).values())
        times, sizes = [], []
        for _ in range(max(int(cfg["repeats"]), 1)):
            shutil.rmtree(raw, ignore_errors=True)
            start = time.perf_counter()
            with quiet():
                synthetic.generate(raw, p, progress=False)
            times.append(time.perf_counter() - start)
            sizes.append(dir_bytes(raw))
            if len(times) >= settings["min_repeats"] and sum(times) >= settings["budget_s"]:
                break
        png = float(np.median(sizes))
        generated[str(w)] = {"scenes_per_s": rate(times, total), "png_mb_per_s": rate(times, png / MB),
                             "seconds": summary(times)}
        out["scenes"] = total
        out["png_mb"] = png / MB
    out["generate"] = {"workers": generated,
                       "note": "generate(): simulate, write PNGs and norm.csv; worker processes are spawned "
                               "(about 0.5 s each to start, included)"}
    return out


def enlarge_archive(raw: Path, scenes: int) -> int:
    """Copy train scenes of ``raw`` under new names (imgset5000…, listed in norm.csv) until it holds
    ``scenes`` scenes: more data for the check and the TFRecord build without simulating it.
    Returns the number of copies made."""
    from probav.scene import read_norm, scene_dirs, write_norm

    originals = scene_dirs(raw, "train")
    have = sum(1 for split in ("train", "test") for _ in scene_dirs(raw, split))
    if not originals or have >= scenes:
        return 0
    norms = read_norm(raw / "norm.csv")
    made = 0
    for i in range(scenes - have):
        source = originals[i % len(originals)]
        name = f"imgset{5000 + i:04d}"
        shutil.copytree(source, source.parent / name)
        norms[name] = norms[source.name]
        made += 1
    write_norm(raw / "norm.csv", norms)
    return made


def _decoded_bytes(raw: Path) -> int:
    """Bytes of the decoded arrays of every scene (LR uint16 + QM bool, HR uint16 + SM bool)."""
    lr = len(list(raw.rglob("LR*.png")))
    hr = len(list(raw.rglob("HR.png")))
    return lr * 128 * 128 * 3 + hr * 384 * 384 * 3


def bench_check(settings: dict, params: dict, work: Path) -> dict:
    """``check_scenes`` over ``work/raw`` on 1, 2, … workers (the pool is forced on at any size)."""
    from probav.data import check

    raw = work / "raw"
    if not (raw / "norm.csv").is_file():
        return skipped("no generated archive (the simulator part did not run)")
    copies = enlarge_archive(raw, int(settings["data"].get("scenes", 0) or 0))
    scenes = sum(1 for split in ("train", "test") for _ in (raw / split).glob("*/imgset*"))
    png, decoded = dir_bytes(raw), _decoded_bytes(raw)
    saved = check.POOL_MIN_SCENES
    check.POOL_MIN_SCENES = 0  # measure the pool even on a small archive
    out = {"scenes": scenes, "copied_scenes": copies, "png_mb": png / MB, "decoded_mb": decoded / MB, "workers": {},
           "note": f"POOL_MIN_SCENES ({saved}) overridden to 0 so that workers > 1 really use a pool; "
                   f"the stage itself works in-process below {saved} scenes"}
    try:
        for w in worker_counts(settings["data"]["workers"]):
            def run():
                with quiet():
                    check.check_scenes(raw, "stop", workers=w, index_csv=work / "scenes.csv")
            times = measure(run, **timing_options(settings))
            out["workers"][str(w)] = {"scenes_per_s": rate(times, scenes), "png_mb_per_s": rate(times, png / MB),
                                      "decoded_mb_per_s": rate(times, decoded / MB), "seconds": summary(times)}
    finally:
        check.POOL_MIN_SCENES = saved
    return out


def _write_split(work: Path) -> Path:
    """data/split.csv for the bench archive: every usable train scene, 3 in 4 train, the rest dev."""
    import pandas as pd

    table = pd.read_csv(work / "scenes.csv")
    train = table[(table["split"] == "train") & (table["status"] == "ok")].reset_index(drop=True)
    split = pd.DataFrame({"name": train["name"], "band": train["band"],
                          "subset": ["dev" if i % 4 == 3 else "train" for i in range(len(train))]})
    path = work / "split.csv"
    split.to_csv(path, index=False)
    return path


# --------------------------------------------------------------------------- TFRecords and the input pipeline

def call_with(fn: Callable, available: dict):
    """Call ``fn`` with the keyword arguments it accepts, from ``available`` (positional-only
    parameters are filled in order). Raises TypeError when a required one is missing."""
    sig = inspect.signature(fn)
    args, kwargs = [], {}
    for name, p in sig.parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if name in available:
            if p.kind == p.POSITIONAL_ONLY:
                args.append(available[name])
            else:
                kwargs[name] = available[name]
        elif p.default is p.empty:
            raise TypeError(f"{fn.__module__}.{fn.__name__}: no value for required argument {name!r}")
    return fn(*args, **kwargs)


TFRECORD_WRITERS = ("write_tfrecords", "build_tfrecords", "write_all", "build")


def bench_tfrecords(settings: dict, params: dict, work: Path) -> dict:
    """The TFRecord build of ``work/raw`` on 1, 2, … workers; leaves the last build in ``work/tfrecords``."""
    module = optional_module("probav.data.tfrecords")
    if module is None:
        return skipped("probav.data.tfrecords does not exist yet")
    writer = next((getattr(module, n) for n in TFRECORD_WRITERS if callable(getattr(module, n, None))), None)
    if writer is None:
        return skipped(f"probav.data.tfrecords has none of {', '.join(TFRECORD_WRITERS)}")
    raw = work / "raw"
    if not (work / "scenes.csv").is_file():
        return skipped("no scene index (the check part did not run)")
    split = _write_split(work)
    png, decoded = dir_bytes(raw), _decoded_bytes(raw)
    scenes = sum(1 for _ in raw.glob("*/*/imgset*"))
    out_dir = work / "tfrecords"
    out = {"function": f"{writer.__module__}.{writer.__name__}", "scenes": scenes, "png_mb": png / MB,
           "decoded_mb": decoded / MB, "workers": {}}
    import tensorflow  # noqa: F401  (imported by the writer: not part of its time)

    saved = getattr(module, "POOL_MIN_SCENES", None)
    if saved is not None:
        module.POOL_MIN_SCENES = 0  # measure the pool even on a small archive
        out["note"] = (f"POOL_MIN_SCENES ({saved}) overridden to 0 so that workers > 1 really use a pool; "
                       f"the stage itself works in-process below {saved} scenes")
    try:
        return _tfrecords_runs(writer, settings, params, work, raw, split, out_dir, out, scenes, png, decoded)
    finally:
        if saved is not None:
            module.POOL_MIN_SCENES = saved


def _tfrecords_runs(writer, settings, params, work, raw, split, out_dir, out, scenes, png, decoded) -> dict:
    for w in worker_counts(settings["data"]["workers"]):
        p = copy.deepcopy(params)
        p.setdefault("tfrecords", {})["workers"] = w
        available = {"raw": raw, "raw_root": raw, "scenes": work / "scenes.csv", "scenes_csv": work / "scenes.csv",
                     "index_csv": work / "scenes.csv", "split": split, "split_csv": split, "out": out_dir,
                     "out_dir": out_dir, "root": out_dir, "params": p, "workers": w, "progress": False}

        def run():
            shutil.rmtree(out_dir, ignore_errors=True)
            with quiet():
                call_with(writer, available)
        times = measure(run, **timing_options(settings, warmup=0))
        written = dir_bytes(out_dir, "*.tfrecord*")
        out["workers"][str(w)] = {"scenes_per_s": rate(times, scenes), "png_mb_per_s": rate(times, png / MB),
                                  "decoded_mb_per_s": rate(times, decoded / MB),
                                  "written_mb_per_s": rate(times, written / MB), "seconds": summary(times)}
        out["written_mb"] = written / MB
    return out


def _training_files(work: Path) -> list[str]:
    return sorted(str(p) for p in (work / "tfrecords").glob("train-*.tfrecord*"))


def bench_pipeline(settings: dict, params: dict, work: Path, seed: int = 0) -> dict:
    """Batches/s of ``probav.data.pipeline.training_dataset`` over the bench's TFRecords."""
    module = optional_module("probav.data.pipeline")
    if module is None or not hasattr(module, "training_dataset"):
        return skipped("probav.data.pipeline.training_dataset does not exist yet")
    files = _training_files(work)
    if not files:
        return skipped("no train TFRecords (the tfrecords part did not run or failed)")
    n = max(int(settings["pipeline"]["batches"]), 1)
    inp = params.get("input") or {}
    start = time.perf_counter()
    dataset = module.training_dataset(files, params, seed)
    iterator = iter(dataset.repeat() if hasattr(dataset, "repeat") else dataset)
    first = next(iterator)
    startup = time.perf_counter() - start

    def batches():
        for _ in range(n):
            next(iterator)
    times = measure(batches, **timing_options(settings, warmup=0))
    inputs, target = first
    shapes = {k: list(v.shape) for k, v in inputs.items()} if isinstance(inputs, dict) else list(inputs.shape)
    batch = int(next(iter(inputs.values())).shape[0]) if isinstance(inputs, dict) else int(inputs.shape[0])
    return {"batches_per_s": rate(times, n), "examples_per_s": rate(times, n * batch),
            "first_batch_s": startup, "batches_per_repeat": n, "batch_size": batch,
            "patch_size": inp.get("patch_size"), "frames": inp.get("frames"),
            "shapes": {"inputs": shapes, "target": list(target.shape)}, "train_files": len(files)}


