"""Seed-to-seed spread of the networks: each one trained again with other seeds and scored on dev.

``make seeds`` (``studies/dvc.yaml:seeds``, ``stages/seeds.py``): for every deep model and every seed of
``study.seeds`` (params.yaml), the pipeline's training run again with the root ``seed`` replaced (weight
initialisation, patches, augmentation and the self-ensemble's orders change; the data, split and
TFRecords stay those of the pipeline), then the same dev evaluation as the ``evaluate`` stage. With the
pipeline's own run (``metrics/<model>.json``, the params' ``seed``) that gives every network's mean dev
cPSNR and score per track over several seeds: their mean and standard deviation
(``metrics/seeds.json``), so that a difference between two networks can be read against the noise of
training them. Each run is also scored on the real scenes with an HR (params ``real``, as the
``evaluate_real`` stage does; skipped where the real sample is absent), so that the real-scene figures
carry their spread too. Each run trains in a fresh process (TensorFlow state does not leak between runs), and a
finished run (``studies/seeds/<model>-seed<S>/summary.json``) is kept when the study is run again with the
same settings, so an interrupted study resumes.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

TRACKS = ("challenge", "ref")


def _records_digest(tfrecords: Path) -> str:
    """A digest of the TFRecord files' contents: a run trained on other data is not kept (meta.json alone
    describes the settings, not the scenes)."""
    digest = hashlib.sha256()
    for path in sorted(tfrecords.glob("*.tfrecord*")):
        digest.update(path.name.encode())
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _fingerprint(params: dict, model: str, seed: int, tfrecords: Path) -> str:
    meta = (tfrecords / "meta.json").read_text() if (tfrecords / "meta.json").is_file() else ""
    meta += _records_digest(tfrecords)
    keys = {k: params.get(k) for k in ("input", "model", "train", "reference", "classical", "real")}
    text = json.dumps({"model": model, "seed": seed, "params": keys, "meta": meta}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _run(job: tuple) -> dict:
    """Train one model with one seed and score it on dev and on the real scenes (in a worker process):
    {"dev": summary, "real": summary}."""
    model_name, params, seed, paths = job
    from probav.data.index import iter_scenes, subset_table
    from probav.evaluate import evaluate_model, summarise
    from probav.models.registry import load_model
    from probav.real import evaluate_real
    from probav.reference import load_estimator
    from probav.training import train

    params = copy.deepcopy(params)
    params["seed"] = int(seed)
    params.setdefault("train", {})["verbose"] = 0
    out = Path(paths["out"])
    train(model_name, params, out, None, tfrecords=paths["tfrecords"], checkpoint_dir=out.with_name(out.name + ".ckpt"))
    model = load_model(model_name, params, model_dir=out)
    table = subset_table(paths["scenes"], paths["split"], "dev")
    estimator = load_estimator(paths["estimator"]) if model.uses_reference else None
    scored = evaluate_model(model, iter_scenes(paths["raw"], table), progress=False, total=len(table),
                            estimator=estimator, track=paths["track"])
    dev = summarise(scored, model_name, {"subset": "dev", "seed": int(seed)}, track=paths["track"])
    real, _ = evaluate_real(model, params, estimator, base=paths["base"], progress=False)
    return {"dev": dev, "real": real}


def spread(values: list[float]) -> dict:
    """Mean and sample standard deviation (None with one value) of a list of per-seed figures."""
    values = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not values:
        return {"runs": 0, "mean": None, "sd": None}
    return {"runs": len(values), "mean": float(np.mean(values)),
            "sd": float(np.std(values, ddof=1)) if len(values) > 1 else None}


def from_this_run(figures: dict, seed, current: float | None) -> bool:
    """Whether one model's figures for one track in ``metrics/seeds.json`` come from this run: the study's
    mean cPSNR for this run's ``seed`` equals this run's own (``current``). Otherwise the study is stale (made
    from other data or code) and its spread must not be quoted beside this run's figures."""
    own = ((figures or {}).get("per_seed_cpsnr") or {}).get(str(seed))
    return own is not None and current is not None and abs(own - current) <= 1e-6


def _spread_by_track(by_seed: dict[int, dict]) -> dict:
    """Per track: mean ± sd over seeds of the mean cPSNR and score, and each seed's mean cPSNR."""
    entry = {}
    for name in TRACKS:
        tracks = {s: (r.get("tracks") or {}).get(name) or {} for s, r in sorted(by_seed.items())}
        entry[name] = {"mean_cpsnr": spread([t.get("mean_cpsnr") for t in tracks.values()]),
                       "mean_score": spread([t.get("mean_score") for t in tracks.values()]),
                       "per_seed_cpsnr": {str(s): t.get("mean_cpsnr") for s, t in tracks.items()}}
    return entry


def seed_study(params: dict, paths: dict, models: list[str], seeds: list[int], metrics_dir: os.PathLike | str,
               progress: bool = True) -> dict:
    """Every (model, seed) run (kept from an earlier study when its fingerprint matches), and per model and
    track the spread over them and the pipeline's own run (``metrics_dir/<model>.json`` on dev,
    ``metrics_dir/real/<model>.json`` on the real scenes; ``real`` is left out where those were not scored)."""
    from tqdm import tqdm

    from probav.data.reference_labels import reference_settings

    track = reference_settings(params)["track"]
    default_seed = int(params.get("seed", 0))
    seeds = [int(s) for s in seeds if int(s) != default_seed]
    root = Path(paths["out"])
    runs: dict[str, dict[int, dict]] = {m: {} for m in models}
    todo = []
    for model in models:
        pipeline_run = Path(metrics_dir) / f"{model}.json"
        if not pipeline_run.is_file():
            raise FileNotFoundError(f"{pipeline_run}: the pipeline's run of {model} is missing (run `dvc repro`)")
        real_run = Path(metrics_dir) / "real" / f"{model}.json"
        runs[model][default_seed] = {"dev": json.loads(pipeline_run.read_text()),
                                     "real": json.loads(real_run.read_text()) if real_run.is_file() else {}}
        for seed in seeds:
            folder = root / f"{model}-seed{seed}"
            fp = _fingerprint(params, model, seed, Path(paths["tfrecords"]))
            done = folder / "summary.json"
            if done.is_file() and json.loads(done.read_text()).get("fingerprint") == fp:
                runs[model][seed] = json.loads(done.read_text())["summary"]
            else:
                todo.append((model, seed, folder, fp))
    with tqdm(total=len(todo), desc="seed runs", unit="run", disable=not progress) as bar, \
            ProcessPoolExecutor(1, mp_context=get_context("spawn"), max_tasks_per_child=1) as pool:
        for model, seed, folder, fp in todo:
            job = (model, params, seed, {**{k: str(v) for k, v in paths.items()}, "out": str(folder), "track": track,
                                         "base": str(paths.get("base", "."))})
            summary = pool.submit(_run, job).result()
            tmp = folder / ".summary.json.tmp"
            tmp.write_text(json.dumps({"fingerprint": fp, "summary": summary}, indent=2, default=float) + "\n")
            os.replace(tmp, folder / "summary.json")
            runs[model][seed] = summary
            bar.update()
    result = {"track": track, "seeds": [default_seed] + seeds, "models": {}}
    for model, by_seed in runs.items():
        entry = {"seeds": sorted(by_seed), **_spread_by_track({s: r["dev"] for s, r in by_seed.items()})}
        real = {s: r.get("real") or {} for s, r in by_seed.items()}
        if all(r.get("tracks") for r in real.values()):
            entry["real"] = {"scenes": next(iter(real.values())).get("scenes"), **_spread_by_track(real)}
        result["models"][model] = entry
    return result
