"""``shift_and_add``'s settings selected on the val split: a coordinate search, scored like the challenge.

``make tune`` (``studies/dvc.yaml:tune``, ``stages/tune.py``). The settings of ``classical.shift_and_add``
(``probav.models.shift_and_add``) were first set by hand while looking at dev scores, the scores this
project reports. This study selects them where nothing is reported: on the **val** scenes
(``split.val_fraction``), with the official shifted cPSNR (``probav.metrics.scoring``), in the headline
track (``reference.track``; the challenge track estimates the reference frame with
``models/reference/estimator.json``). The ref track is scored beside it, never used to select.

The search (``coordinate_search``), over the grid of params.yaml ``studies.tune.grid`` (a list of values
per setting; the shipped value is always among them): start from the shipped settings; for each setting in
turn, try every value with the others held at the current point (settings whose effects are coupled,
listed together in ``studies.tune.joint``, are swept as one: every combination of their values), and keep
the value with the highest val mean cPSNR when it beats the current value's by more than
``studies.tune.min_gain`` dB (0.001: smaller differences are the rounding of the 16-bit output, a tie, and
a tie keeps the current value); go round again, for at most ``studies.tune.passes`` passes, until every
coordinate has kept its value at the current point (``converged``: no single coordinate's values improve
on the point reached). The val-selected settings are what the study recommends; it never changes
params.yaml.

Beside the val figure every tried value is scored on the real scenes with an HR (``real.folder``, both
tracks where ``real.labels`` labels them): reported, never used to select. The simulator flatters
methods; real data is the judge. Without the real folder the study still runs and says why they are missing.

Outputs (``run_tuning``): the summary written to ``metrics/tuning.json`` and one row per sweep, value and
scene in ``metrics/tuning/scenes.csv`` (``TABLE_COLUMNS``). Per setting the summary holds its last sweep
(the final pass, the other settings at the point the search had then reached): every value tried with its
val mean cPSNR per track, the paired difference against the shipped value in that sweep (mean per-scene
difference, 95% bootstrap interval, scenes better/worse, sign test: ``probav.metrics.paired``), its
real-scene cPSNR; and the val-selected value, whether it equals the shipped one, and whether the
difference is detectable (the interval excludes zero). A setting swept jointly with others compares the
selected combination with the shipped one, and ``joint_sweeps`` holds every combination tried.
``overall`` compares the whole val-selected configuration with the shipped one. The val figures of a
selected value are optimistic (it was chosen on them, on a few scenes): read the interval, and the real
scenes, before changing the shipped settings.

Speed: each scene is read, registered (``probav.reference.cached_alignment``) and given its reference
weights once per worker process; a configuration is predicted once (settings that cannot change the output,
``kernel_sigma`` without splat fusion or ``sharpen_sigma`` without sharpening, share its result).
"""
from __future__ import annotations

import itertools
import json
import math
import os
import time
from typing import Callable

import numpy as np
import pandas as pd

from probav.scene import Scene

TRACKS = ("challenge", "ref")
RESAMPLES = 10_000                 # bootstrap resamples of the scenes per paired comparison
TABLE_COLUMNS = ["pass", "parameter", "value", "shipped", "selected", "changes", "subset", "scene", "band",
                 "cpsnr_challenge", "cpsnr_ref"]
DEFAULTS = {
    "passes": 2,                   # coordinate-search passes (stops early after a pass that changes nothing)
    "workers": 2,                  # processes, each holding the scenes (read and registered once)
    "min_gain": 0.001,             # dB a value must beat the current one's val mean by to replace it (else a tie)
    "grid": None,                  # {setting: [values]}: required
    "joint": [],                   # [[setting, setting, …], …]: settings swept together (every combination)
}
# What each tunable setting of classical.shift_and_add accepts: (kind, low, high, low included).
KINDS = {
    "candidates": ("float", 0.0, 1.0, False),
    "min_clearance": ("float", 0.0, 1.0, True),
    "max_frames": ("int", 0, None, True),
    "fusion": ("choice", None, None, None),
    "kernel_sigma": ("float", 0.0, None, False),
    "outlier_sigma": ("float", 0.0, None, False),
    "outlier_smooth": ("float", 0.0, None, True),
    "sharpen": ("float", 0.0, None, True),
    "sharpen_sigma": ("float", 0.0, None, False),
    "consistency": ("int", 0, None, True),
}


# --------------------------------------------------------------------------- settings

def _value(name: str, value, where: str):
    """``value`` of setting ``name`` normalised (ints as int, reals as float), or a ValueError naming it."""
    from probav.models.shift_and_add import CHOICES

    kind, low, high, low_included = KINDS[name]
    if kind == "choice":
        if value not in CHOICES[name]:
            raise ValueError(f"{where}: {value!r} is not one of {', '.join(CHOICES[name])}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and math.isnan(value)):
        raise ValueError(f"{where}: {value!r} is not a number")
    if kind == "int":
        if float(value) != int(value):
            raise ValueError(f"{where}: {value!r} is not a whole number")
        value = int(value)
    else:
        value = float(value)
    if value < low or (value == low and not low_included) or (high is not None and value > high):
        bounds = f"{'[' if low_included else '('}{low}, {high if high is not None else '∞'}{']' if high is not None else ')'}"
        raise ValueError(f"{where}: {value!r} is outside {bounds}")
    return value


def shipped_settings(params: dict) -> dict:
    """The shipped ``classical.shift_and_add`` settings (defaults filled), tunable values normalised."""
    from probav.models.shift_and_add import settings

    cfg = settings(params)
    return {**cfg, **{k: _value(k, cfg[k], f"classical.shift_and_add.{k}") for k in KINDS}}


def _sort_key(name: str, value):
    if KINDS[name][0] == "choice":
        return 0
    return math.inf if name == "max_frames" and value == 0 else value   # max_frames 0 = all frames


def tune_settings(params: dict) -> dict:
    """``studies.tune`` with defaults, checked: ``passes``, ``workers``, ``min_gain``, ``grid`` ({setting:
    [values]}, the shipped value added to each list, numbers sorted) and ``joint`` (groups of settings of the grid
    swept together, as tuples). A ValueError names an unknown key, an unknown or untunable setting, or a value the
    setting does not accept."""
    given = ((params or {}).get("studies") or {}).get("tune")
    if not isinstance(given, dict):
        raise ValueError("params.yaml: set studies.tune (passes, workers, grid: values to try per "
                         "classical.shift_and_add setting)")
    unknown = set(given) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown studies.tune settings {sorted(unknown)}; known: {', '.join(DEFAULTS)}")
    cfg = {**DEFAULTS, **given}
    for key in ("passes", "workers"):
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"studies.tune.{key} must be a whole number ≥ 1, got {value!r}")
    gain = cfg["min_gain"]
    if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not gain >= 0:
        raise ValueError(f"studies.tune.min_gain must be a number of dB ≥ 0, got {gain!r}")
    grid = cfg["grid"]
    if not isinstance(grid, dict) or not grid:
        raise ValueError("studies.tune.grid must map classical.shift_and_add settings to lists of values to try")
    shipped = shipped_settings(params)
    out = {}
    for name, values in grid.items():
        if name not in KINDS:
            raise ValueError(f"studies.tune.grid.{name}: not a tunable classical.shift_and_add setting; "
                             f"tunable: {', '.join(KINDS)}")
        if not isinstance(values, list) or not values:
            raise ValueError(f"studies.tune.grid.{name} must be a non-empty list of values, got {values!r}")
        checked = [_value(name, v, f"studies.tune.grid.{name}") for v in values]
        if shipped[name] not in checked:
            checked.append(shipped[name])
        unique = list(dict.fromkeys(checked))
        out[name] = sorted(unique, key=lambda v: _sort_key(name, v)) if KINDS[name][0] != "choice" else unique
    joint, seen = [], set()
    if not isinstance(cfg["joint"] or [], list):
        raise ValueError(f"studies.tune.joint must be a list of lists of settings, got {cfg['joint']!r}")
    for group in cfg["joint"] or []:
        if not isinstance(group, list) or len(group) < 2:
            raise ValueError(f"studies.tune.joint: {group!r} is not a list of two or more settings")
        for name in group:
            if name not in out:
                raise ValueError(f"studies.tune.joint: {name!r} is not a setting of studies.tune.grid")
            if name in seen:
                raise ValueError(f"studies.tune.joint: {name!r} is in more than one group")
            seen.add(name)
        joint.append(tuple(group))
    return {"passes": cfg["passes"], "workers": cfg["workers"], "min_gain": float(gain), "grid": out, "joint": joint}


def search_grid(grid: dict[str, list], joint: list[tuple[str, ...]] = ()) -> dict:
    """The coordinates of the search, in the grid's order: a setting alone (its values), or a group of ``joint``
    at its first member's place (a tuple of names, and every combination of their values as tuples)."""
    group_of = {name: group for group in joint for name in group}
    out = {}
    for name, values in grid.items():
        group = group_of.get(name)
        if group is None:
            out[name] = list(values)
        elif group not in out:
            out[group] = list(itertools.product(*(grid[n] for n in group)))
    return out


def assign(point: dict, key, value) -> dict:
    """``point`` with coordinate ``key`` (a setting, or a tuple of settings) set to ``value``."""
    return {**point, **dict(zip(key, value))} if isinstance(key, tuple) else {**point, key: value}


def _of(point: dict, key):
    return tuple(point[n] for n in key) if isinstance(key, tuple) else point[key]


def label(key) -> str:
    return "+".join(key) if isinstance(key, tuple) else key


def at_edge(name: str, value, grid: list) -> bool:
    """Whether ``value`` is the largest or smallest value tried of a numeric setting while the setting allows
    values beyond it (max_frames 0 = all frames, sharpen 0 = none and such natural ends do not count): the best
    value may lie outside the grid."""
    kind, low, high, _ = KINDS[name]
    if kind == "choice" or len(grid) < 2:
        return False
    ordered = sorted(grid, key=lambda v: _sort_key(name, v))
    if value == ordered[-1]:
        return not (name == "max_frames" and value == 0) and (high is None or value < high)
    return value == ordered[0] and value > low


def effective_key(cfg: dict) -> str:
    """The settings that can change the output, as a key: ``kernel_sigma`` counts with splat fusion only,
    ``sharpen_sigma`` with sharpening only."""
    c = {k: v for k, v in cfg.items()}
    if c.get("fusion") != "splat":
        c.pop("kernel_sigma", None)
    if not c.get("sharpen", 0) > 0:
        c.pop("sharpen_sigma", None)
    return json.dumps(c, sort_keys=True, default=str)


# --------------------------------------------------------------------------- the search

def coordinate_search(start: dict, grid: dict, objective: Callable[[list[dict]], list[float]],
                      passes: int = 1, min_gain: float = 0.0,
                      on_sweep: Callable[[dict], None] | None = None) -> tuple[dict, list[dict]]:
    """Maximise ``objective`` one coordinate at a time from ``start``.

    A coordinate is a setting (values: its values) or a tuple of settings swept together (values: tuples, as
    ``search_grid`` makes them). For each coordinate of ``grid`` in order, the configurations ``{**point,
    setting: value}`` for every value (the current one added when missing) are scored together (``objective``
    takes a list of configurations, returns their scores; NaN counts as the worst); the best replaces the current
    value only when it scores more than ``min_gain`` higher (a tie keeps the current value). The search ends once every coordinate has
    been swept at the current point and kept its value (a further sweep would repeat one already made: the point
    is the best of every coordinate's values, the others held), possibly within a pass, or after ``passes``
    passes. Returns the point reached and one record per sweep (also given to ``on_sweep``): ``pass``,
    ``parameter`` (the coordinate), ``point`` (the configuration before the sweep), ``current``, ``values``,
    ``scores``, ``selected``, ``settled`` (how many coordinates in a row are known best at the current point:
    the search converged when the last record's equals the number of coordinates)."""
    point = dict(start)
    steps, settled = [], 0
    for number in range(1, int(passes) + 1):
        for name, values in grid.items():
            if settled >= len(grid):
                return point, steps
            current = _of(point, name)
            values = list(values) if current in values else [*values, current]
            configs = [assign(point, name, v) for v in values]
            scores = [float(s) for s in objective(configs)]
            if len(scores) != len(values):
                raise ValueError(f"objective returned {len(scores)} scores for {len(values)} configurations")
            ranked = [-math.inf if math.isnan(s) else s for s in scores]
            keep = values.index(current)
            best = max(range(len(values)), key=lambda i: (ranked[i], i == keep))   # the first best; current on a tie
            if not ranked[best] > ranked[keep] + min_gain:
                best = keep
            # A new value is the best of its coordinate at the new point: it counts as the first settled one.
            settled = settled + 1 if values[best] == current else 1
            steps.append({"pass": number, "parameter": name, "point": dict(point), "current": current,
                          "values": values, "scores": scores, "selected": values[best], "settled": settled})
            if on_sweep is not None:
                on_sweep(steps[-1])
            if values[best] != current:
                point = assign(point, name, values[best])
    return point, steps


# --------------------------------------------------------------------------- scoring configurations

_SCENES: list = []          # the scenes of this process (set by _init_worker): Scene objects
_PREPARED: dict = {}        # index → (scene, truth, {track: reference weights})
_ESTIMATOR = None


def _init_worker(scenes: list[Scene], estimator) -> None:
    global _SCENES, _PREPARED, _ESTIMATOR
    _SCENES, _PREPARED, _ESTIMATOR = list(scenes), {}, estimator


def _prepared(index: int):
    """Scene ``index`` with its truth and reference weights per track (computed once per process; the
    registration that the estimator and shift_and_add share is cached in ``scene.extra``)."""
    from probav.metrics.scoring import Truth
    from probav.reference import reference_weights

    if index not in _PREPARED:
        scene = _SCENES[index]
        weights = {track: reference_weights(scene, track, _ESTIMATOR) for track in TRACKS
                   if track == "challenge" or scene.reference is not None}
        _PREPARED[index] = (scene, Truth.of_scene(scene), weights)
    return _PREPARED[index]


def score_scene(index: int, configs: list[dict]) -> list[dict[str, float]]:
    """cPSNR per track (NaN where the scene has no labelled reference) of scene ``index`` under each of
    ``configs`` (full shift_and_add settings)."""
    from probav.evaluate import check_prediction
    from probav.metrics.scoring import score_predictions
    from probav.models.shift_and_add import shift_and_add_sr
    from probav.scene import to_uint16

    scene, truth, weights = _prepared(index)
    out = []
    for cfg in configs:
        row = {}
        for track in TRACKS:
            if track not in weights:
                row[track] = math.nan
                continue
            sr = check_prediction(to_uint16(shift_and_add_sr(scene, cfg, weights=weights[track])), scene.name)
            row[track] = float(score_predictions([sr], [truth])[0]["cpsnr"])
        out.append(row)
    return out


class Evaluator:
    """Scores configurations on every scene (val and real), each effective configuration once.

    ``scenes`` are (subset, Scene) pairs; ``workers`` processes each hold all of them. ``results(cfg)`` is
    the per-scene table of a configuration already scored; ``objective`` scores what is new and returns the
    val mean cPSNR in ``track``."""

    def __init__(self, scenes: list[tuple[str, Scene]], estimator, track: str, workers: int = 1):
        self.subsets = [s for s, _ in scenes]
        self.names = [(scene.name, scene.band) for _, scene in scenes]
        self.track = track
        self.memo: dict[str, pd.DataFrame] = {}
        self.workers = max(1, min(int(workers), os.cpu_count() or 1, len(scenes)))
        self.pool = None
        scene_list = [scene for _, scene in scenes]
        if self.workers > 1:
            from concurrent.futures import ProcessPoolExecutor
            from multiprocessing import get_context

            self.pool = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"), initializer=_init_worker,
                                            initargs=(scene_list, estimator))
        else:
            _init_worker(scene_list, estimator)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _score(self, configs: list[dict]) -> None:
        todo = {}
        for cfg in configs:
            key = effective_key(cfg)
            if key not in self.memo and key not in todo:
                todo[key] = cfg
        if not todo:
            return
        batch = list(todo.values())
        indices = range(len(self.names))
        if self.pool is None:
            per_scene = [score_scene(i, batch) for i in indices]
        else:
            per_scene = list(self.pool.map(score_scene, indices, [batch] * len(self.names)))
        for j, key in enumerate(todo):
            rows = [{"subset": self.subsets[i], "scene": self.names[i][0], "band": self.names[i][1],
                     **{f"cpsnr_{t}": per_scene[i][j][t] for t in TRACKS}} for i in indices]
            self.memo[key] = pd.DataFrame(rows)

    def results(self, cfg: dict) -> pd.DataFrame:
        self._score([cfg])
        return self.memo[effective_key(cfg)]

    def objective(self, configs: list[dict]) -> list[float]:
        self._score(configs)
        out = []
        for cfg in configs:
            table = self.memo[effective_key(cfg)]
            values = table.loc[table["subset"] == "val", f"cpsnr_{self.track}"].dropna()
            out.append(float(values.mean()) if len(values) else math.nan)
        return out


# --------------------------------------------------------------------------- the summary

def _mean(table: pd.DataFrame, subset: str, track: str) -> float | None:
    values = table.loc[table["subset"] == subset, f"cpsnr_{track}"].dropna()
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else None


def _versus(a: pd.DataFrame, b: pd.DataFrame, track: str, seed: int) -> dict | None:
    """Val: ``a`` − ``b`` per scene in ``track`` (paired, bootstrap interval, sign test)."""
    from probav.metrics.paired import compare_tables

    column = f"cpsnr_{track}"
    ta, tb = (t[t["subset"] == "val"] for t in (a, b))
    if ta[column].dropna().empty or tb[column].dropna().empty:
        return None
    c = compare_tables("a", ta, "b", tb, RESAMPLES, seed, column=column)
    return {"scenes": c.scenes, "mean": c.mean, "low": c.low, "high": c.high, "better": c.better, "worse": c.worse,
            "sign_p": c.sign_p, "detectable": c.detectable}


def _figures(table: pd.DataFrame, reference: pd.DataFrame | None, seed: int, real: bool) -> dict:
    """Val mean per track (and the paired difference against ``reference``), real-scene mean per track."""
    out = {"val": {}, "real": {} if real else None}
    for track in TRACKS:
        mean = _mean(table, "val", track)
        if mean is None:
            continue
        entry = {"scenes": int(table.loc[table["subset"] == "val", f"cpsnr_{track}"].notna().sum()), "mean_cpsnr": mean}
        if reference is not None:
            entry["vs_shipped"] = _versus(table, reference, track, seed)
        out["val"][track] = entry
    if real:
        for track in TRACKS:
            out["real"][track] = _mean(table, "real", track)
    return out


def _plain(key, value):
    """A coordinate's value as JSON shows it: a setting's value, or {setting: value} for a group."""
    return dict(zip(key, value)) if isinstance(key, tuple) else value


def _decision(chosen: dict, kept: dict, real: bool) -> dict:
    """The val (and real) figures of the selected and the shipped value of one sweep."""
    return {"val": {t: {"shipped": (kept["val"].get(t) or {}).get("mean_cpsnr"),
                        "selected": (chosen["val"].get(t) or {}).get("mean_cpsnr"),
                        "vs_shipped": (chosen["val"].get(t) or {}).get("vs_shipped")} for t in TRACKS},
            "real": {t: {"shipped": kept["real"].get(t), "selected": chosen["real"].get(t)} for t in TRACKS}
            if real else None}


def _sweep(evaluator: Evaluator, point: dict, key, values: list, shipped_value, seed: int, real: bool) -> list[dict]:
    """Figures of every value of coordinate ``key`` at ``point``, against ``shipped_value`` there."""
    base = evaluator.results(assign(point, key, shipped_value))
    return [{"value": _plain(key, v),
             **_figures(evaluator.results(assign(point, key, v)), None if v == shipped_value else base, seed, real)}
            for v in values]


def summarise(steps: list[dict], evaluator: Evaluator, shipped: dict, selected: dict, track: str, seed: int,
              real: bool) -> tuple[dict, dict, dict, pd.DataFrame]:
    """Per setting (its coordinate's last sweep), per group of joint settings (every combination), overall
    (the selected against the shipped configuration), and the per-scene table.

    A setting swept alone: its ``values`` are its sweep, each against the shipped value. A setting of a joint
    group: its ``val``/``real`` figures compare the selected combination with the shipped one (the decision);
    its ``values`` are a slice of the group's sweep, this setting varying and the others at their selected
    values, each against this setting's shipped value in that slice."""
    rows = []
    for step in steps:
        key = step["parameter"]
        for value in step["values"]:
            cfg = assign(step["point"], key, value)
            changes = {k: v for k, v in cfg.items() if k in KINDS and v != shipped[k]}
            shown = json.dumps(_plain(key, value), sort_keys=True) if isinstance(key, tuple) else value
            for r in evaluator.results(cfg).to_dict("records"):
                rows.append({"pass": step["pass"], "parameter": label(key), "value": shown,
                             "shipped": value == _of(shipped, key), "selected": value == step["selected"],
                             "changes": json.dumps(changes, sort_keys=True), **r})
    last = {}
    for step in steps:
        last[step["parameter"]] = step
    parameters, joint = {}, {}
    for key, step in last.items():
        point, names = step["point"], (key if isinstance(key, tuple) else (key,))
        shipped_value, chosen_value = _of(shipped, key), step["selected"]
        entries = _sweep(evaluator, point, key, step["values"], shipped_value, seed, real)
        for entry, score in zip(entries, step["scores"]):
            entry["objective"] = score
        chosen = entries[step["values"].index(chosen_value)]
        kept = entries[step["values"].index(shipped_value)]
        decision = _decision(chosen, kept, real)
        vs = decision["val"][track]["vs_shipped"]
        others = {k: v for k, v in point.items() if k in KINDS and k not in names and v != shipped[k]}
        for i, name in enumerate(names):
            mine = chosen_value[i] if isinstance(key, tuple) else chosen_value
            grid = list(dict.fromkeys(v[i] for v in step["values"])) if isinstance(key, tuple) else step["values"]
            parameters[name] = {"shipped": shipped[name], "selected": mine, "equals_shipped": mine == shipped[name],
                                "pass": step["pass"], "others_changed": others, **decision,
                                "detectable": bool(vs and vs["detectable"]), "at_edge": at_edge(name, mine, grid)}
            if isinstance(key, tuple):
                parameters[name]["joint_with"] = [n for n in names if n != name]
                at = assign(point, key, chosen_value)
                parameters[name]["values"] = _sweep(evaluator, at, name, grid, shipped[name], seed, real)
            else:
                parameters[name]["values"] = entries
        if isinstance(key, tuple):
            joint[label(key)] = {"settings": list(names), "shipped": _plain(key, shipped_value),
                                 "selected": _plain(key, chosen_value), "pass": step["pass"], **decision,
                                 "detectable": bool(vs and vs["detectable"]), "combinations": entries}
    a, b = evaluator.results(selected), evaluator.results(shipped)
    overall = {"changed": {k: {"shipped": shipped[k], "selected": selected[k]} for k in KINDS if selected[k] != shipped[k]},
               "shipped": _figures(b, None, seed, real), "selected": _figures(a, b, seed, real)}
    overall["detectable"] = bool(((overall["selected"]["val"].get(track) or {}).get("vs_shipped") or {}).get("detectable"))
    return parameters, joint, overall, pd.DataFrame(rows, columns=TABLE_COLUMNS)


# --------------------------------------------------------------------------- the study

def run_tuning(raw: os.PathLike | str, scenes_csv: os.PathLike | str, split_csv: os.PathLike | str, params: dict,
               estimator=None, base: os.PathLike | str = ".", limit: int = 0, progress: bool = True,
               real: bool = True) -> tuple[dict, pd.DataFrame]:
    """The study: the coordinate search on the val scenes (the first ``limit``, 0 = all), every tried value
    scored on the real scenes with an HR too (``real`` False, or no real folder: left out, said why).
    ``base``: the directory the ``real`` paths are relative to (the repository root). Returns the summary
    (``metrics/tuning.json``) and the per-scene table."""
    from probav.data.index import iter_scenes, subset_table
    from probav.data.reference_labels import reference_settings
    from probav.params import derive_seed
    from probav.real import real_scenes_with_hr, real_settings

    started = time.perf_counter()
    cfg = tune_settings(params)
    shipped = shipped_settings(params)
    track = reference_settings(params)["track"]
    table = subset_table(scenes_csv, split_csv, "val")
    if limit:
        table = table.head(int(limit))
    if table.empty:
        raise ValueError(f"{split_csv}: no val scene to tune on (split.val_fraction must be > 0)")
    scenes = [("val", s) for s in iter_scenes(raw, table)]
    real_scenes, skipped = [], "left out (--no-real)"
    if real:
        real_scenes, skipped = real_scenes_with_hr(real_settings(params, base))
    scenes += [("real", s) for s in real_scenes]
    seed = derive_seed(params, "tuning")

    def on_sweep(step: dict) -> None:
        key, pairs = step["parameter"], list(zip(step["values"], step["scores"]))
        if isinstance(key, tuple):
            best = max(pairs, key=lambda p: p[1])
            text = (f"{len(pairs)} combinations, best {best[0]} {best[1]:.3f}, current {step['current']} "
                    f"{dict(pairs)[step['current']]:.3f}, selected {step['selected']}")
        else:
            text = ", ".join(f"{v} {s:.3f}" for v, s in pairs)
        print(f"tune: pass {step['pass']}: {label(key)}: {text} dB (val, {track} track; "
              f"{time.perf_counter() - started:.0f} s)", flush=True)

    with Evaluator(scenes, estimator, track, cfg["workers"]) as evaluator:
        selected, steps = coordinate_search(shipped, search_grid(cfg["grid"], cfg["joint"]), evaluator.objective,
                                            cfg["passes"], cfg["min_gain"], on_sweep if progress else None)
        parameters, joint, overall, rows = summarise(steps, evaluator, shipped, selected, track, seed,
                                                     bool(real_scenes))
        configurations = len(evaluator.memo)
        coordinates = len(search_grid(cfg["grid"], cfg["joint"]))

    summary = {
        "subset": "val", "track": track, "tracks": list(TRACKS),
        "rule": f"highest val mean cPSNR in the {track} track, if more than {cfg['min_gain']} dB above the current "
                f"value's (else the current value is kept)", "min_gain": cfg["min_gain"],
        "scenes": int(len(table)), "bands": {str(k): int(v) for k, v in table["band"].value_counts().items()},
        "real": {"scenes": [s.name for s in real_scenes], "skipped": None if real_scenes else skipped},
        "passes": cfg["passes"], "passes_run": max(s["pass"] for s in steps),
        "converged": steps[-1]["settled"] >= coordinates, "grid": cfg["grid"],
        "joint": [list(g) for g in cfg["joint"]],
        "configurations": configurations, "resamples": RESAMPLES, "seed": seed,
        "seconds": round(time.perf_counter() - started, 1),
        "shipped": {k: shipped[k] for k in KINDS}, "selected": {k: selected[k] for k in KINDS},
        "overall": overall, "parameters": parameters, "joint_sweeps": joint,
        "steps": [{**{k: v for k, v in s.items() if k not in ("point", "parameter")}, "parameter": label(s["parameter"])}
                  for s in steps],
    }
    return summary, rows
