"""Build ``reports/report.md`` and its figures from the pipeline's outputs, and the README's results block.

The prose lives in a template (``reports/template.md``) with ``{{name}}`` placeholders; this module
computes every placeholder from the run: ``metrics/<model>.json`` and ``metrics/scenes/<model>.csv``
(written by ``evaluate@model``), ``models/<model>/training.json`` and ``dvclive/<model>/`` (written by
``train@model``), ``data/scenes.csv``, ``data/split.csv``, ``data/raw/`` (the scenes, and
``data/raw/synthetic/`` for synthetic data) and ``params.yaml``; the real sample
(``../shared/probav-mini``) where present. Nothing is typed by hand: a model without metrics is
listed as "not run", and a part whose inputs are absent says so in a sentence.

Sentences that depend on the results (which model is best, whether one model beats another) are
generated here from the numbers, so they cannot contradict them.
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from probav.data import stats as data_stats
from probav.report import figures
from probav.report.real_results import real_results
from probav.report.realism_section import realism_section
from probav.report.reference_section import reference_section

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")
README_START = "<!-- results:start -->"
README_END = "<!-- results:end -->"
PARAM_GROUPS = ("seed", "data", "reference", "synthetic", "split", "tfrecords", "input", "models", "deep_models",
                "model", "train", "classical", "submission")
CROP = 192                   # HR pixels shown in the visual comparisons
TRAINING_KEYS = {            # models/<name>/training.json (probav.training): first key present wins
    "parameters": ("parameters",),
    "seconds": ("training_seconds", "wall_seconds"),
    "best_dev_cpsnr": ("best_dev_cpsnr",),
    "epochs_run": ("epochs_run",),
    "epochs": ("epochs",),
    "best_epoch": ("best_epoch",),
}


@dataclass
class Paths:
    """Where the run's outputs are (defaults: the dvc.yaml layout, relative to the repository root)."""

    raw: Path = Path("data/raw")
    scenes: Path = Path("data/scenes.csv")
    split: Path = Path("data/split.csv")
    metrics: Path = Path("metrics")
    tables: Path | None = None          # default metrics/scenes
    models: Path = Path("models")
    live: Path = Path("dvclive")
    template: Path = Path("reports/template.md")
    out: Path = Path("reports/report.md")
    figures: Path | None = None         # default <out's folder>/figures
    readme: Path | None = Path("README.md")
    real: Path | None = None            # the real sample (official layout), if present
    real_labels: Path | None = None     # PROBA-V-REF's reference.json for the real sample, if present
    repo: Path = Path(".")

    def __post_init__(self):
        for name in ("raw", "scenes", "split", "metrics", "models", "live", "template", "out", "repo"):
            setattr(self, name, Path(getattr(self, name)))
        self.tables = Path(self.tables) if self.tables else self.metrics / "scenes"
        self.figures = Path(self.figures) if self.figures else self.out.parent / "figures"
        self.readme = Path(self.readme) if self.readme else None
        self.real = Path(self.real) if self.real else None
        self.real_labels = Path(self.real_labels) if self.real_labels else None


@dataclass
class Options:
    sample_scenes: int = 24      # scenes per band read for value histograms and spectra
    shift_scenes: int = 8        # of those, scenes per band whose frames are registered
    sweep_scenes: int = 6        # dev scenes for the frame-count sweep of shift_and_add (0 = none)
    experiments: bool = True     # read `dvc exp show --json` for the effect of model.blocks etc.
    progress: bool = True


@dataclass
class ModelRun:
    """What the run produced for one model."""

    name: str
    kind: str                                   # classical | deep | unknown
    in_params: bool
    in_registry: bool
    metrics: dict | None = None
    table: pd.DataFrame | None = None
    training: dict = field(default_factory=dict)
    summary: str = ""                           # first paragraph of the module docstring
    layers: pd.DataFrame | None = None          # class, count, parameters (deep models)
    parameters: int | None = None

    @property
    def ran(self) -> bool:
        return self.metrics is not None and self.table is not None and len(self.table) > 0


def log(message: str, options: Options | None = None) -> None:
    if options is None or options.progress:
        print(f"report: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- formatting

def fmt(value, digits: int = 2, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}{suffix}"


def fmt_int(value) -> str:
    return "n/a" if value is None else f"{int(value):,}"


def fmt_seconds(seconds) -> str:
    if seconds is None or not math.isfinite(float(seconds)):
        return "n/a"
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def fmt_sig(value, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(float(value)) else f"{float(value):.{digits}g}"


def md_table(header: list[str], rows: list[list[str]], align: list[str] | None = None) -> str:
    align = align or ["l"] + ["r"] * (len(header) - 1)
    sep = ["---:" if a == "r" else ":---:" if a == "c" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render(template: str, context: dict[str, str]) -> str:
    """Replace every ``{{name}}``; an unknown name is an error (except ``model_<x>``, a model the
    template describes but this checkout does not have)."""
    missing = []

    def value(match):
        key = match.group(1)
        if key in context:
            return str(context[key])
        if key.startswith("model_"):
            return f"\n*`{key[6:]}` is not in this checkout's model registry.*"
        missing.append(key)
        return match.group(0)

    out = PLACEHOLDER.sub(value, template)
    if missing:
        raise KeyError(f"template placeholders without a value: {', '.join(sorted(set(missing)))}")
    return re.sub(r"\n{3,}", "\n\n", out).strip() + "\n"


def figure_md(path: Path, out_dir: Path, alt: str, caption: str = "") -> str:
    rel = os.path.relpath(path, out_dir).replace(os.sep, "/")
    text = f"![{alt}]({rel})"
    return f"{text}\n\n*{caption}*" if caption else text


# --------------------------------------------------------------------------- inputs

def git_commit(repo: Path) -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True,
                              timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def data_source(params: dict, raw: Path) -> str:
    source = str((params.get("data") or {}).get("source") or "").strip()
    if (raw / "synthetic" / "settings.json").is_file() or (raw / "synthetic" / "shifts.csv").is_file():
        return "synthetic"
    return source or "unknown"


def read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_table(path: Path) -> pd.DataFrame | None:
    try:
        table = pd.read_csv(path, dtype={"scene": str, "band": str})
    except (OSError, ValueError, pd.errors.EmptyDataError):
        return None
    needed = {"scene", "band", "score", "cpsnr"}
    if not needed <= set(table.columns):
        return None
    for column in ("frames", "clearance", "hr_clearance", "cpsnr", "score", "seconds", "norm"):
        if column in table:
            table[column] = pd.to_numeric(table[column], errors="coerce")
    return table


def training_info(path: Path) -> dict:
    raw = read_json(path) or {}
    out = {"raw": raw}
    for key, names in TRAINING_KEYS.items():
        for name in names:
            if isinstance(raw.get(name), (int, float)) and not isinstance(raw.get(name), bool):
                out[key] = raw[name]
                break
    return out


def module_summary(name: str) -> str:
    """First paragraph of ``probav/models/<name>.py``'s docstring (without importing it)."""
    import ast

    path = Path(__file__).resolve().parents[1] / "models" / f"{name}.py"
    try:
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    except (OSError, SyntaxError):
        return ""
    return " ".join(doc.strip().split("\n\n")[0].split())


def registry_names() -> list[str]:
    """Model modules that register a model (``@register(...)``), read without importing them
    (importing a network's module imports TensorFlow)."""
    try:
        from probav.models.registry import available_models
        names = available_models()
    except Exception:  # noqa: BLE001 - the report must not fail on a broken model module
        return []
    here = Path(__file__).resolve().parents[1] / "models"
    out = []
    for name in names:
        try:
            if "@register(" in (here / f"{name}.py").read_text():
                out.append(name)
        except OSError:
            continue
    return out


def model_kind(name: str, params: dict) -> str:
    if name in (params.get("deep_models") or []):
        return "deep"
    if name in (params.get("models") or []):
        return "classical"
    path = Path(__file__).resolve().parents[1] / "models" / f"{name}.py"
    try:
        text = path.read_text()
    except OSError:
        return "unknown"
    return "deep" if "trainable = True" in text or "import keras" in text or "tensorflow" in text else "classical"


def find_keras_model(obj, depth: int = 0):
    """The keras.Model inside a loaded SRModel (any attribute), or None."""
    try:
        import keras
    except ImportError:
        return None
    if isinstance(obj, keras.Model):
        return obj
    if depth > 1:
        return None
    for value in vars(obj).values() if hasattr(obj, "__dict__") else []:
        found = find_keras_model(value, depth + 1)
        if found is not None:
            return found
    return None


def layer_summary(keras_model) -> pd.DataFrame:
    rows = {}
    for layer in keras_model.layers:
        kind = type(layer).__name__
        if kind == "InputLayer":
            continue
        count, params = rows.get(kind, (0, 0))
        rows[kind] = (count + 1, params + int(layer.count_params()))
    table = pd.DataFrame([(k, c, p) for k, (c, p) in rows.items()], columns=["layer", "count", "parameters"])
    return table.sort_values(["parameters", "count"], ascending=False, kind="stable").reset_index(drop=True)


def load_models(params: dict, paths: Paths) -> list[ModelRun]:
    in_params = list(dict.fromkeys(list(params.get("models") or []) + list(params.get("deep_models") or [])))
    registry = registry_names()
    # A model's metrics hold a mean score and come with its per-scene table; other JSON in metrics/
    # (bench.json, reference.json: the reference estimator's) is not a model.
    with_metrics = (sorted(p.stem for p in paths.metrics.glob("*.json") if (paths.tables / f"{p.stem}.csv").is_file()
                           and (read_json(p) or {}).get("mean_score") is not None)
                    if paths.metrics.is_dir() else [])
    names = list(dict.fromkeys(in_params + [m for m in registry if m not in in_params]
                               + [m for m in with_metrics if m not in in_params and m not in registry]))
    runs = []
    for name in names:
        run = ModelRun(name, model_kind(name, params), name in in_params, name in registry)
        metrics = read_json(paths.metrics / f"{name}.json")
        table = read_table(paths.tables / f"{name}.csv")
        if metrics is not None and metrics.get("mean_score") is not None and table is not None:
            run.metrics, run.table = metrics, table
        run.training = training_info(paths.models / name / "training.json")
        run.parameters = run.training.get("parameters")
        if run.kind == "classical" and run.parameters is None:
            run.parameters = 0
        run.summary = module_summary(name)
        runs.append(run)
    return runs


def has_saved_model(model_dir: Path) -> bool:
    """A trained network's folder: exists and holds more than its training.json."""
    return model_dir.is_dir() and any(p.name != "training.json" for p in model_dir.iterdir())


def add_layer_tables(runs: list[ModelRun], params: dict, paths: Paths, options: Options) -> None:
    """Layer summaries (and parameter counts where training.json has none) of the trained networks."""
    for run in runs:
        if run.kind != "deep" or not has_saved_model(paths.models / run.name):
            continue
        try:
            from probav.models.registry import load_model
            model = load_model(run.name, params, model_dir=paths.models / run.name)
            net = find_keras_model(model)
        except Exception as err:  # noqa: BLE001
            log(f"cannot load {run.name} for its layer table: {err}", options)
            continue
        if net is None:
            continue
        run.layers = layer_summary(net)
        run.parameters = int(net.count_params())  # the saved network itself is the authority


def dvclive_curves(live_dir: Path) -> dict[str, pd.DataFrame]:
    """``{metric: DataFrame(step, value)}`` from ``<live_dir>/plots/metrics/**/*.tsv``."""
    base = live_dir / "plots" / "metrics"
    curves = {}
    for path in sorted(base.rglob("*.tsv")) if base.is_dir() else []:
        try:
            frame = pd.read_csv(path, sep="\t")
        except (OSError, ValueError, pd.errors.EmptyDataError):
            continue
        columns = [c for c in frame.columns if c not in ("timestamp", "step")]
        if "step" not in frame or not columns or frame.empty:
            continue
        name = path.relative_to(base).with_suffix("").as_posix()
        if "learning_rate" in name or name.endswith("/lr"):
            continue  # not a quality metric; its scale would flatten the others
        curves[name] = pd.DataFrame({"step": pd.to_numeric(frame["step"], errors="coerce"),
                                     "value": pd.to_numeric(frame[columns[-1]], errors="coerce")}).dropna()
    return curves


# --------------------------------------------------------------------------- sections

def banner(source: str, params: dict) -> str:
    data = params.get("data") or {}
    if source == "synthetic":
        return ("> **⚠ These results were computed on synthetic data** from the project's built-in PROBA-V "
                "simulator (`data.source: synthetic` in `params.yaml`), not on the official PROBA-V archive. "
                "They show that the pipeline works and how the methods compare on simulated scenes; they are "
                "not PROBA-V challenge results. Set `data.source` to `kelvins`, `archive` or `folder` and run "
                "`make repro` to get those (see the README).")
    where = {"kelvins": f"downloaded from {data.get('url', 'the Kelvins site')}",
             "archive": f"read from the archive `{data.get('archive')}`",
             "folder": f"read from the folder `{data.get('folder')}`"}.get(source, "")
    return (f"> **Data source: the official PROBA-V challenge data** (`data.source: {source}`"
            f"{', ' + where if where else ''}). Scores are measured on the dev split of the train scenes: "
            f"the test scenes' HR images are not public.")


def data_section(index: pd.DataFrame | None, split: pd.DataFrame | None, source: str) -> tuple[str, str]:
    intro = {
        "synthetic": "This run used **synthetic data** written by the project's simulator "
                     "(`probav.data.synthetic`) in the official layout, with the true shift of every frame "
                     "saved beside it (`data/raw/synthetic/shifts.csv`).",
    }.get(source, f"This run used **the official PROBA-V data** (`data.source: {source}`).")
    if index is None:
        return intro + " The scene index `data/scenes.csv` is missing, so the data are not described here.", ""
    subsets = {}
    if split is not None and {"name", "subset"} <= set(split.columns):
        subsets = dict(zip(split["name"], split["subset"]))
    rows = []
    ok = index[index["status"] == "ok"] if "status" in index else index
    for (sp, band), g in ok.groupby(["split", "band"], sort=False):
        label = sp
        if sp == "train" and subsets:
            n_dev = int(sum(subsets.get(n) == "dev" for n in g["name"]))
            label = f"train ({len(g) - n_dev} train + {n_dev} dev)"
        hr = pd.to_numeric(g.get("hr_clearance"), errors="coerce") if "hr_clearance" in g else pd.Series(dtype=float)
        rows.append([label, band, str(len(g)), fmt(g["frames"].mean(), 1),
                     f"{int(g['frames'].min())}–{int(g['frames'].max())}",
                     fmt(100 * pd.to_numeric(g["mean_clearance"], errors="coerce").mean(), 1, " %"),
                     fmt(100 * hr.mean(), 1, " %") if hr.notna().any() else "—"])
    skipped = int((index["status"] != "ok").sum()) if "status" in index else 0
    table = md_table(["split", "band", "scenes", "frames (mean)", "frames (range)", "LR clear (mean)",
                      "HR clear (mean)"], rows)
    tail = (f"\n\n{skipped} scene(s) were skipped by the check (`data/scenes.csv`, status `skipped`)."
            if skipped else "\n\nEvery scene passed the check (`data/scenes.csv`).")
    return intro, table + tail


def frames_text(index: pd.DataFrame, stats: dict) -> str:
    ok = index[index["status"] == "ok"] if "status" in index else index
    f = ok["frames"]
    if f.empty:
        return "No usable scene in the scene index."
    clear = np.concatenate([np.asarray(s.clearance) for s in stats.values()]) if stats else np.zeros(0)
    parts = [f"Scenes of this run have {fmt(f.mean(), 1)} LR frames on average ({int(f.min())} to {int(f.max())}); "
             f"the official archive has 19 on average, 9 to about 35."]
    if len(clear):
        parts.append(f"Of the {len(clear)} frames of the sampled scenes, {fmt(100 * (clear >= 0.999).mean(), 0)}% are "
                     f"fully clear and {fmt(100 * (clear < 0.8).mean(), 0)}% have more than a fifth of their pixels "
                     f"masked; the inclusion rules guarantee at least 60% clear for every frame and 75% for the HR "
                     f"(dashed lines).")
    return " ".join(parts)


def values_text(stats: dict, label: str) -> str:
    sentences = []
    for band, s in stats.items():
        if s.lr_pixels == 0:
            continue
        share_all = s.above_14bit / s.lr_pixels
        share_clear = s.above_14bit_clear / max(s.lr_clear_pixels, 1)
        sentences.append(
            f"**{band}** ({label}, {len(s.scenes)} scene{'s' if len(s.scenes) != 1 else ''}): {fmt(100 * share_all, 2)}% of all LR pixels and "
            f"{fmt(100 * share_clear, 3)}% of the clear ones are above 16383, the largest clear value is "
            f"{s.max_clear:,} DN; {s.nodata:,} pixels in {s.nodata_frames} frame(s) hold the no-data value 65520, "
            f"{'none' if s.nodata_clear == 0 else f'{s.nodata_clear:,}'} of them marked clear by the QM.")
    multiple = sum(s.not_multiple_16 for s in stats.values())
    if any(s.lr_pixels for s in stats.values()):
        sentences.append("Every value is a multiple of 16, as in the real files." if multiple == 0 else
                         f"{multiple:,} values are not multiples of 16 (the real files' values all are).")
    if label == "real sample":
        return " ".join(sentences)
    head = ("The data are described as 14-bit, but values above 16383 occur: in the real data clouds reach 28000 "
            "and more. The QM masks most of them, not all (bright ground and cloud edges the QM misses stay "
            "clear: see the shares below). The value 65520 marks missing data; in the official data the QM always "
            "masks it. A model must therefore not normalise by the maximum of a frame, and must not trust a pixel "
            "just because it is below some threshold. The score's peak of 65535 (not 16383) puts cPSNR values about "
            "12 dB higher than they would be on a 14-bit scale.")
    return head + "\n\n" + " ".join(sentences)


def shifts_text(stats: dict, real: dict | None, source: str) -> str:
    tab = pd.concat([s.shift_table() for s in stats.values()], ignore_index=True) if stats else pd.DataFrame()
    if tab.empty:
        return "No frame was registered (no sampled scene has two usable frames)."
    ok = tab[tab["ok"]]
    mag = np.hypot(ok["dy"], ok["dx"])
    text = (f"Of {len(tab)} frames registered in {tab['scene'].nunique()} scenes of this run, {len(ok)} passed the "
            f"checks. Their shift onto the clearest frame has a median size of {fmt(np.median(mag), 2)} LR pixels; "
            f"{fmt(100 * (mag > 1).mean(), 0)}% are larger than 1 LR pixel and {fmt(100 * (mag > 2).mean(), 0)}% "
            f"larger than 2.")
    truth = ok[ok["true_dy"].notna()]
    if len(truth):
        err = np.hypot(truth["dy"] - truth["true_dy"], truth["dx"] - truth["true_dx"])
        text += (f" Against the simulator's true shifts, the registration error has a median of "
                 f"{fmt(np.median(err), 3)} LR pixels ({fmt(3 * np.median(err), 2)} HR pixels), and "
                 f"{fmt(100 * (err > 1 / 3).mean(), 0)}% of the frames are off by more than one HR pixel.")
    if real:
        rtab = pd.concat([s.shift_table() for s in real.values()], ignore_index=True)
        rok = rtab[rtab["ok"]] if len(rtab) else rtab
        if len(rok):
            rmag = np.hypot(rok["dy"], rok["dx"])
            text += (f" In the real sample, {len(rok)} frames have a median shift of {fmt(np.median(rmag), 2)} LR "
                     f"pixels (largest {fmt(rmag.max(), 2)}).")
    text += (" Shifts are what multi-frame methods feed on: a set of frames with distinct sub-pixel offsets samples "
             "the ground more densely than any one frame.")
    return text


def _other_track(metrics: dict) -> tuple[str, float | None]:
    """The track that is not the headline one, and its mean score (None where it was not scored)."""
    other = "ref" if metrics.get("track", "challenge") == "challenge" else "challenge"
    return other, ((metrics.get("tracks") or {}).get(other) or {}).get("mean_score")


def results_rows(runs: list[ModelRun]) -> tuple[list[str], list[list[str]]]:
    ran = sorted([r for r in runs if r.ran], key=lambda r: r.metrics["mean_score"])
    track = ran[0].metrics.get("track", "challenge") if ran else "challenge"
    other = "ref" if track == "challenge" else "challenge"
    header = ["model", "kind", f"mean score, {track} ↓", f"mean score, {other}", "cPSNR RED (dB)", "cPSNR NIR (dB)",
              "mean cPSNR (dB)", "scenes better than baseline", "parameters", "training time", "inference (s/scene)"]
    rows = []
    for r in ran:
        m = r.metrics
        bands = m.get("bands") or {}
        seconds = m.get("seconds")
        per_scene = seconds / m["scenes"] if seconds is not None and m.get("scenes") else None
        rows.append([f"**{r.name}**" if r is ran[0] else r.name, r.kind, fmt(m["mean_score"], 4),
                     fmt(_other_track(m)[1], 4),
                     fmt((bands.get("RED") or {}).get("mean_cpsnr"), 2), fmt((bands.get("NIR") or {}).get("mean_cpsnr"), 2),
                     fmt(m.get("mean_cpsnr"), 2),
                     fmt(100 * m["beats_baseline"], 0, " %") if m.get("beats_baseline") is not None else "n/a",
                     fmt_int(r.parameters) if r.parameters is not None else "n/a",
                     fmt_seconds(r.training.get("seconds")) if r.kind == "deep" else "—",
                     fmt_sig(per_scene)])
    for r in runs:
        if not r.ran and (r.in_params or r.in_registry):
            rows.append([r.name, r.kind, "not run", "—", "—", "—", "—", "—",
                         fmt_int(r.parameters) if r.parameters else "—", "—", "—"])
    return header, rows


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
    if run.training.get("best_dev_cpsnr") is not None:
        parts.append(f"best dev cPSNR during training {fmt(run.training['best_dev_cpsnr'], 2)} dB")
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


def results_text(runs: list[ModelRun]) -> str:
    ran = sorted([r for r in runs if r.ran], key=lambda r: r.metrics["mean_score"])
    if not ran:
        return "No model has metrics yet: run `dvc repro`."
    best = ran[0]
    m = best.metrics
    text = (f"The best model on the {m.get('scenes')} dev scenes is **{best.name}**, with a mean score of "
            f"{fmt(m['mean_score'], 4)} ({fmt(100 * (1 - m['mean_score']), 2)}% "
            f"{'better' if m['mean_score'] < 1 else 'worse'} than the baseline's 1 by the official formula) and a mean "
            f"cPSNR of {fmt(m.get('mean_cpsnr'), 2)} dB.")
    bands = m.get("bands") or {}
    if {"RED", "NIR"} <= set(bands):
        red, nir = bands["RED"].get("mean_cpsnr"), bands["NIR"].get("mean_cpsnr")
        if red is not None and nir is not None:
            text += (f" Its cPSNR is {fmt(abs(red - nir), 2)} dB {'higher' if red > nir else 'lower'} on RED than on "
                     f"NIR scenes (the baseline's norms differ by band too, which the score divides out).")
    not_run = [r.name for r in runs if not r.ran and r.in_params]
    if not_run:
        text += f" Not run in this pipeline: {', '.join(f'`{n}`' for n in not_run)}."
    text += (f" Columns: mean score = mean over dev scenes of norm / cPSNR (the official submission score, lower "
             f"is better) in the headline track ({m.get('track', 'challenge')}: "
             f"{'reference estimated' if m.get('track', 'challenge') == 'challenge' else 'reference given'}) and in "
             f"the other; cPSNR per band = mean of the scenes' best-of-49-shifts cPSNR; scenes better than "
             "baseline = share of scenes with a score below 1; training time from `models/<name>/training.json`; "
             "inference = prediction seconds per scene on this machine, from `metrics/<name>.json`.")
    return text


def against_text(runs: list[ModelRun]) -> str:
    ran = sorted([r for r in runs if r.ran], key=lambda r: r.metrics["mean_score"])
    if not ran:
        return ""
    best = ran[0]
    t = best.table
    sentences = []
    for column, what, more in (("clearance", "the mean clearance of the frames", "clearer scenes"),
                               ("frames", "the number of frames", "scenes with more frames")):
        if column in t and t[column].nunique() > 2 and len(t) >= 8:
            rho = t[column].corr(t["score"], method="spearman")
            if rho is None or not np.isfinite(rho):
                continue
            if abs(rho) < 0.1:
                sentences.append(f"hardly to {what} (Spearman ρ = {rho:+.2f})")
                continue
            strength = "slightly " if abs(rho) < 0.3 else ""
            direction = "better (lower)" if rho < 0 else "worse (higher)"
            sentences.append(f"to {what} (Spearman ρ = {rho:+.2f}: {more} get {strength}{direction} scores)")
    if not sentences:
        return ""
    return (f"Over the {len(t)} dev scenes of `{best.name}`, the score is related " + " and ".join(sentences)
            + ". Scene difficulty also varies with the land cover and the change between dates, which no column "
              "of the table records.")


# --------------------------------------------------------------------------- predictions

def best_shift_error(sr: np.ndarray, hr: np.ndarray, sm: np.ndarray) -> np.ndarray:
    """SR − HR (DN) at the metric's best shift, bias removed, on the SR's grid; NaN where SM is cloudy
    or outside the 378×378 window."""
    from probav.metrics.score import BORDER, shifted_cpsnr_batch

    _, shifts = shifted_cpsnr_batch(sr[None], hr[None], sm[None], return_shift=True, workers=1)
    du, dv = shifts[0]
    n = sr.shape[0] - 2 * BORDER
    crop = sr[BORDER:BORDER + n, BORDER:BORDER + n].astype(np.float64)
    h = hr[BORDER + du:BORDER + du + n, BORDER + dv:BORDER + dv + n].astype(np.float64)
    m = sm[BORDER + du:BORDER + du + n, BORDER + dv:BORDER + dv + n]
    diff = crop - h
    diff -= diff[m].mean() if m.any() else 0.0
    out = np.full(sr.shape, np.nan)
    out[BORDER:BORDER + n, BORDER:BORDER + n] = np.where(m, diff, np.nan)
    return out


def detail_window(hr: np.ndarray, sm: np.ndarray, size: int = CROP, margin: int = 8) -> tuple[int, int, int]:
    """(y, x, size): the clear window of the HR with the most variance, away from the image border
    (the score ignores 3 pixels there, and models are least reliable near it)."""
    size = min(size, hr.shape[0] - 2 * margin)
    best, where = -1.0, (margin, margin)
    step = max((hr.shape[0] - size - 2 * margin) // 4, 1)
    for y in range(margin, hr.shape[0] - size - margin + 1, step):
        for x in range(margin, hr.shape[1] - size - margin + 1, step):
            m = sm[y:y + size, x:x + size]
            if m.mean() < 0.9:
                continue
            v = float(hr[y:y + size, x:x + size][m].astype(np.float64).std())
            if v > best:
                best, where = v, (y, x)
    return where[0], where[1], size


def pick_scenes(table: pd.DataFrame) -> list[tuple[str, str]]:
    t = table.dropna(subset=["score"]).sort_values("score", kind="stable").reset_index(drop=True)
    if t.empty:
        return []
    typical = int((t["score"] - t["score"].median()).abs().idxmin())
    picks = [("best", t.loc[0, "scene"]), ("typical", t.loc[typical, "scene"]), ("worst", t.loc[len(t) - 1, "scene"])]
    seen, out = set(), []
    for label, scene in picks:
        if scene not in seen:
            seen.add(scene)
            out.append((label, scene))
    return out


def comparisons(runs: list[ModelRun], params: dict, paths: Paths, index: pd.DataFrame | None,
                options: Options) -> str:
    from probav.models.registry import load_model
    from probav.scene import read_norm, read_scene

    ran = sorted([r for r in runs if r.ran], key=lambda r: r.metrics["mean_score"])
    if not ran or index is None:
        return "No model has per-scene results yet, so there is nothing to show."
    best = ran[0]
    picks = pick_scenes(best.table)
    paths_by_name = dict(zip(index["name"], index["path"]))
    order = ["baseline"] + [r.name for r in ran if r.name != "baseline"]
    order = [n for n in order if any(r.name == n for r in ran)]
    loaded, failures = {}, {}
    kinds = {r.name: r.kind for r in runs}
    for name in order:
        if kinds.get(name) == "deep" and not has_saved_model(paths.models / name):
            failures[name] = f"no saved model in {paths.models / name}"
            continue
        try:
            loaded[name] = load_model(name, params, model_dir=paths.models / name)
        except Exception as err:  # noqa: BLE001 - one broken model must not stop the report
            failures[name] = str(err).splitlines()[0] if str(err) else type(err).__name__
            log(f"cannot load {name}: {failures[name]}", options)
    norms = read_norm(paths.raw / "norm.csv") if (paths.raw / "norm.csv").is_file() else {}
    blocks = []
    tables = {r.name: r.table.set_index("scene") for r in ran}
    for label, name in picks:
        if name not in paths_by_name:
            continue
        scene = read_scene(paths.raw / paths_by_name[name], norm=norms.get(name))
        predictions, cpsnrs = {}, {}
        for model in order:
            image = None
            if model in loaded:
                try:
                    image = np.asarray(loaded[model].predict(scene))
                except Exception as err:  # noqa: BLE001
                    log(f"{model} failed on {name}: {err}", options)
            predictions[model] = image
            if name in tables[model].index:
                cpsnrs[model] = float(tables[model].loc[name, "cpsnr"])
        error = None
        if predictions.get(best.name) is not None:
            error = best_shift_error(predictions[best.name], scene.hr, scene.sm)
        row = tables[best.name].loc[name]
        title = (f"{label.capitalize()} dev scene of {best.name}: {name} ({scene.band}), score {row['score']:.4f}, "
                 f"{scene.frames} frames, clear {scene.clearance.mean():.0%}")
        out = paths.figures / f"compare_{label}.png"
        figures.comparison(scene, predictions, cpsnrs, best.name, error, out, title,
                           crop=detail_window(scene.hr, scene.sm))
        caption = (f"The {label} dev scene of {best.name} ({name}, {scene.band}): cPSNR of each model on this "
                   f"scene from metrics/scenes/.")
        blocks.append(f"**{label.capitalize()}: {name}** ({scene.band}, score {row['score']:.4f})\n\n"
                      + figure_md(out, paths.out.parent, f"{label} scene {name}", caption))
    if failures:
        blocks.append("Models that could not be loaded for these pictures: "
                      + "; ".join(f"`{n}` ({e})" for n, e in failures.items()) + ".")
    return "\n\n".join(blocks) if blocks else "The chosen scenes could not be read."


# --------------------------------------------------------------------------- effects

def frame_sweep(runs: list[ModelRun], params: dict, paths: Paths, index: pd.DataFrame | None,
                options: Options) -> pd.DataFrame | None:
    """Mean score of shift_and_add (and the median) using only the clearest K frames, K swept, on a
    few dev scenes: the effect of the number of frames on the classical fusion."""
    by = {r.name: r for r in runs if r.ran}
    if options.sweep_scenes <= 0 or "shift_and_add" not in by or index is None:
        return None
    import copy

    from probav.metrics.scoring import scene_norm
    from probav.metrics.score import score, shifted_cpsnr
    from probav.models.registry import load_model
    from probav.scene import read_norm, read_scene

    table = by["shift_and_add"].table
    names = data_stats.sample_evenly(list(table.sort_values("scene")["scene"]), options.sweep_scenes)
    where = dict(zip(index["name"], index["path"]))
    norms = read_norm(paths.raw / "norm.csv") if (paths.raw / "norm.csv").is_file() else {}
    scenes = [read_scene(paths.raw / where[n], norm=norms.get(n)) for n in names if n in where]
    if not scenes:
        return None
    counts = sorted({k for k in (1, 2, 3, 5, 9, 15, 35) if k <= max(s.frames for s in scenes)})
    rows = []
    for k in counts:
        p = copy.deepcopy(params)
        cfg = p.setdefault("classical", {}).setdefault("shift_and_add", {})
        cfg["max_frames"] = k
        cfg["min_clearance"] = min(float(cfg.get("min_clearance", 0.6)), 0.6)
        model = load_model("shift_and_add", p)
        values = []
        for s in scenes:
            values.append(score(shifted_cpsnr(model.predict(s), s.hr, s.sm), scene_norm(s)))
        rows.append({"model": "shift_and_add", "frames": k, "score": float(np.mean(values))})
    out = pd.DataFrame(rows)
    out.attrs["scenes"] = len(scenes)
    return out


def experiments(repo: Path, options: Options) -> pd.DataFrame | None:
    """Experiments of ``dvc exp show --json`` as rows (experiment, params…, model, mean_score), or None."""
    if not options.experiments:
        return None
    try:
        done = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], cwd=repo,
                              capture_output=True, text=True, timeout=120,
                              env=dict(os.environ, DVC_NO_ANALYTICS="1"))
        data = json.loads(done.stdout) if done.returncode == 0 and done.stdout.strip() else None
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return parse_experiments(data)


def parse_experiments(data) -> pd.DataFrame | None:
    """Rows (experiment, model, mean_score, model.blocks, model.misr_base, input.frames, self_ensemble) from the JSON of
    ``dvc exp show --json``: the workspace, the commits and every experiment under them."""
    if not isinstance(data, list):
        return None
    rows = []

    def visit(entry):
        d = entry.get("data") or {}
        name = entry.get("name") or d.get("name") or str(entry.get("rev", ""))[:7]
        params = ((d.get("params") or {}).get("params.yaml") or {}).get("data") or {}
        metrics = d.get("metrics") or {}
        for path, content in metrics.items():
            m = (content or {}).get("data") or {}
            if isinstance(m, dict) and m.get("mean_score") is not None:
                rows.append({"experiment": name, "model": m.get("model", Path(path).stem),
                             "mean_score": m["mean_score"],
                             "model.blocks": (params.get("model") or {}).get("blocks"),
                             "model.misr_base": (params.get("model") or {}).get("misr_base"),
                             "input.frames": (params.get("input") or {}).get("frames"),
                             "self_ensemble": (params.get("model") or {}).get("self_ensemble",
                                                                              m.get("self_ensemble"))})
        for child in entry.get("experiments") or []:
            for run in child.get("revs") or [child]:
                visit(run)

    for entry in data:
        visit(entry)
    return pd.DataFrame(rows) if rows else None


def effects_section(runs, params, paths, index, options) -> str:
    parts = []
    sweep = None
    try:
        sweep = frame_sweep(runs, params, paths, index, options)
    except Exception as err:  # noqa: BLE001
        log(f"frame sweep failed: {err}", options)
    if sweep is not None and len(sweep) >= 2:
        n = int(sweep.attrs.get("scenes", options.sweep_scenes))
        setting = ((params.get("classical") or {}).get("shift_and_add") or {}).get("max_frames")
        out = figures.effect(sweep, "frames", paths.figures / "effect_frames.png",
                             "frames used (the clearest K, at most the scene's)",
                             f"shift_and_add on {n} dev scene{'s' if n != 1 else ''}: score against frames used",
                             marker=setting)
        best_k = sweep.loc[sweep["score"].idxmin()]
        parts.append(f"**Number of frames.** `shift_and_add` run again by this stage on {n} dev "
                     f"scene{'s' if n != 1 else ''}, keeping "
                     "only the clearest K frames (`classical.shift_and_add.max_frames` = K; this run's setting "
                     f"is {setting if setting is not None else 'the default'}):\n\n"
                     + figure_md(out, paths.out.parent, "score against frames")
                     + f"\n\nOn these scenes the best K is {int(best_k['frames'])} (mean score "
                       f"{fmt(best_k['score'], 4)}); with K = 1 (the clearest frame alone, upscaled and sharpened) "
                       f"the score is {fmt(sweep.iloc[0]['score'], 4)}.")
    else:
        parts.append("**Number of frames.** No frame-count sweep in this run (it needs `shift_and_add`'s metrics).")
    exps = None
    try:
        exps = experiments(paths.repo, options)
    except Exception as err:  # noqa: BLE001
        log(f"dvc exp show failed: {err}", options)
    deep = set(params.get("deep_models") or [])
    tables = []
    if exps is not None and not exps.empty:
        # The models that read each setting (classical models read none of them but self_ensemble's).
        readers = {"model.blocks": deep, "model.misr_base": {"misr_net"}, "input.frames": deep}
        for column in ("model.blocks", "model.misr_base", "input.frames", "self_ensemble"):
            if column not in exps:
                continue
            rows = exps.dropna(subset=[column])
            if column in readers:
                rows = rows[rows["model"].isin(readers[column])]
            if rows.empty or rows[column].astype(str).nunique() < 2:
                continue
            pivot = rows.groupby(["model", column])["mean_score"].min().unstack(column)
            header = ["model"] + [f"{column} = {v}" for v in pivot.columns]
            body = [[name] + [fmt(v, 4) for v in values] for name, values in zip(pivot.index, pivot.to_numpy())]
            tables.append(f"**{column}** (best mean score per model and value, from `dvc exp show`)\n\n"
                          + md_table(header, body))
    if tables:
        parts += tables
    else:
        parts.append("**`model.blocks`, `input.frames`, self-ensemble.** "
                     + ("`dvc exp show` found no experiments that vary them"
                        if options.experiments else "Experiments were not read (`--no-experiments`)")
                     + ", so their effect is not measured here. Run for example `dvc exp run -S model.blocks=8` "
                       "and `dvc exp run -S input.frames=16`, then rebuild the report (`dvc repro report`).")
    return "\n\n".join(parts)


# --------------------------------------------------------------------------- data figures and the real sample

def real_section(run_stats, real_stats, run_scene, real_scene, run_norms, real_norms, paths: Paths,
                 source: str, real_summary: str) -> str:
    if real_stats is None:
        return ("The real sample (`../shared/probav-mini`, three official scenes) is not present on this machine, "
                "so the data of this run are not compared with real PROBA-V scenes here.")
    run_label = "synthetic" if source == "synthetic" else "this run"
    parts = [real_summary]
    if source != "synthetic":
        parts.append("This run used the official data, so this section is a consistency check of the run's data "
                     "against the sample; the simulator itself is compared with the real data in a run on "
                     "`data.source: synthetic`.")
    if not run_stats or not any(s.lr_pixels for s in run_stats.values()):
        parts.append("The data of this run could not be read (no scene index), so they are not compared here.")
        return "\n\n".join(parts)
    if run_scene is not None and real_scene is not None:
        out = figures.scene_pair([("real (probav-mini)", real_scene), (run_label, run_scene)],
                                 paths.figures / "data_real_vs_run.png")
        parts.append(figure_md(out, paths.out.parent, "a real and a synthetic scene",
                               "Top: the real scene imgset0000 (RED). Bottom: a scene of this run (same band). "
                               "Each image stretched to its own 1st–99th percentiles."))
    out = figures.distributions(run_stats, real_stats, run_norms, real_norms, paths.figures / "data_distributions.png",
                                run_label, "real")
    parts.append(figure_md(out, paths.out.parent, "distributions and spectra",
                           "Per band: density of clear LR values, mean radial power spectra of fully clear LR "
                           "frames (circles) and HR images (squares; HR frequencies converted to cycles per LR "
                           "pixel), and the scene norms (baseline cPSNR). Real: the sample's scenes and the "
                           "official norm.csv (all 1450 scenes)."))
    parts.append(compare_text(run_stats, real_stats, run_norms, real_norms, run_label))
    return "\n\n".join(parts)


def compare_text(run_stats, real_stats, run_norms, real_norms, run_label) -> str:
    sentences = []
    for band in run_stats:
        r, q = run_stats[band], real_stats.get(band)
        if q is None or not q.lr_clear_hist.any() or not r.lr_clear_hist.any():
            continue
        centres = 0.5 * (data_stats.hist_edges()[1:] + data_stats.hist_edges()[:-1])

        def median(h):
            c = np.cumsum(h)
            return float(centres[np.searchsorted(c, c[-1] / 2)])
        sentences.append(f"{band}: median clear LR value {median(r.lr_clear_hist):,.0f} DN ({run_label}) against "
                         f"{median(q.lr_clear_hist):,.0f} DN (real sample).")
    for band in run_norms:
        if band in real_norms and len(run_norms[band]) and len(real_norms[band]):
            a, b = run_norms[band], real_norms[band]
            sentences.append(f"{band} norms: {a.mean():.2f} ± {a.std():.2f} dB ({run_label}, {len(a)} scenes) against "
                             f"{b.mean():.2f} ± {b.std():.2f} dB (official, {len(b)} scenes).")
    return " ".join(sentences)


def baseline_vs_norm(runs, real_root: Path | None, source: str) -> str:
    parts = []
    by = {r.name: r for r in runs if r.ran}
    if real_root is not None:
        from probav.metrics.score import shifted_cpsnr
        from probav.models.baseline import baseline_sr
        from probav.scene import read_norm, read_scene, scene_dirs, to_uint16

        norms = read_norm(real_root / "norm.csv") if (real_root / "norm.csv").is_file() else {}
        for d in scene_dirs(real_root, "train"):
            if (d / "HR.png").is_file() and d.name in norms:
                scene = read_scene(d)
                ours = shifted_cpsnr(to_uint16(baseline_sr(scene.lr, scene.qm)), scene.hr, scene.sm)
                parts.append(f"this project's implementation scores {ours:.2f} dB on the real scene {d.name} against "
                             f"{norms[d.name]:.2f} dB in `norm.csv`")
    if source != "synthetic" and "baseline" in by and "norm" in by["baseline"].table:
        t = by["baseline"].table
        diff = (t["cpsnr"] - t["norm"]).dropna()
        if len(diff):
            parts.append(f"over the {len(diff)} dev scenes of this run it differs from `norm.csv` by "
                         f"{diff.mean():+.2f} dB on average ({diff.abs().mean():.2f} dB in absolute value), so the "
                         f"baseline's own score is {fmt(by['baseline'].metrics['mean_score'], 4)}, not exactly 1")
    text = ("Reimplementations land within a few tenths of a dB of `norm.csv`, not exactly on it (the organisers' "
            "exact resampling is not public)")
    if parts:
        text += ": " + "; ".join(parts)
    text += "."
    if source == "synthetic":
        text += (" For the synthetic data, `norm.csv` holds this project's own baseline cPSNR, so the baseline "
                 "scores exactly 1 on every scene.")
    return text


# --------------------------------------------------------------------------- README

def readme_block(runs: list[ModelRun], source: str, paths: Paths, box_png: Path | None, commit: str | None) -> str:
    readme_dir = paths.readme.parent if paths.readme else Path(".")
    header, rows = results_rows(runs)
    keep = [0, 2, 3, 4, 5, 8, 9]
    table = md_table([header[i] for i in keep], [[row[i] for i in keep] for row in rows])
    lines = []
    if source == "synthetic":
        lines.append("> ⚠ These results were computed on **synthetic data** (the built-in simulator, "
                     "`data.source: synthetic`), not on the PROBA-V archive.")
    else:
        lines.append(f"> Data source: the official PROBA-V data (`data.source: {source}`), dev split.")
    lines += ["", table, ""]
    ran = sorted([r for r in runs if r.ran], key=lambda r: r.metrics["mean_score"])
    if ran:
        m = ran[0].metrics
        lines.append(f"Best on {m.get('scenes')} dev scenes: **{ran[0].name}**, mean score {fmt(m['mean_score'], 4)} "
                     f"(official score: mean of norm / cPSNR, lower is better, the baseline scores 1).")
        lines.append("")
    if box_png is not None and box_png.is_file():
        rel = os.path.relpath(box_png, readme_dir).replace(os.sep, "/")
        lines += [f"![Score per dev scene and model]({rel})", ""]
    rel_report = os.path.relpath(paths.out, readme_dir).replace(os.sep, "/")
    lines.append(f"Written by the `report` stage from `metrics/`{f' at commit `{commit}`' if commit else ''}; "
                 f"the full analysis is [{rel_report}]({rel_report}).")
    return "\n".join(lines)


def update_readme(readme: Path, block: str, markers: tuple[str, str] = (README_START, README_END)) -> bool:
    """Replace the text between two markers (the results block by default); False (untouched) when the
    file or a marker is missing."""
    if not readme.is_file():
        return False
    text = readme.read_text()
    first, last = markers
    start, end = text.find(first), text.find(last)
    if start < 0 or end < start:
        return False
    new = text[:start + len(first)] + "\n" + block.strip() + "\n" + text[end:]
    if new != text:
        tmp = readme.with_name(f".{readme.name}.tmp")
        tmp.write_text(new)
        os.replace(tmp, readme)
    return True


# --------------------------------------------------------------------------- the whole report

def build_report(params: dict, paths: Paths, options: Options | None = None) -> dict:
    """Write the report and its figures (and the README block); returns the template context."""
    options = options or Options()
    started = time.perf_counter()
    paths.figures.mkdir(parents=True, exist_ok=True)
    for old in paths.figures.glob("*.png"):
        old.unlink()
    out_dir = paths.out.parent
    source = data_source(params, paths.raw)
    commit = git_commit(paths.repo)
    index = pd.read_csv(paths.scenes, dtype={"name": str}) if paths.scenes.is_file() else None
    split = pd.read_csv(paths.split, dtype={"name": str}) if paths.split.is_file() else None
    real_root = paths.real if paths.real is not None and (paths.real / "norm.csv").is_file() else None

    log("models and metrics", options)
    runs = load_models(params, paths)
    add_layer_tables(runs, params, paths, options)
    ran = sorted([r for r in runs if r.ran], key=lambda r: r.metrics["mean_score"])
    ctx: dict[str, str] = {}
    ctx["banner"] = banner(source, params)

    # ---- data
    log("data statistics", options)
    truth = data_stats.read_truth(paths.raw)
    run_stats = {}
    if index is not None:
        run_stats = data_stats.collect(paths.raw, data_stats.index_sample(paths.raw, index, options.sample_scenes),
                                       options.shift_scenes, truth)
    real_stats = None
    if real_root is not None:
        real_stats = data_stats.collect(real_root, data_stats.folder_sample(real_root), None, None)
    ctx["data_source"], ctx["data_table"] = data_section(index, split, source)
    if index is not None and run_stats:
        out = figures.frames_clearance(index, run_stats, paths.figures / "data_frames_clearance.png")
        ctx["fig_frames"] = figure_md(out, out_dir, "frames and clearance",
                                      "Left: LR frames per scene (scene index, every usable scene). Middle: clear "
                                      "fraction of each LR frame (sampled scenes). Right: clear fraction of the HR "
                                      "of the train scenes. Dashed: the inclusion rules (60% and 75%).")
        ctx["frames_text"] = frames_text(index, run_stats)
        out = figures.value_histograms(run_stats, paths.figures / "data_values.png",
                                       f"LR values of this run's data ({source}, sampled scenes)")
        ctx["fig_values"] = figure_md(out, out_dir, "value histograms",
                                      "Histogram (log scale) of LR values over the whole 16-bit range: all pixels "
                                      "(grey) and the clear ones (colour); clear HR pixels in black (divided by 9).")
        ctx["values_text"] = values_text(run_stats, source)
        out = figures.shifts(run_stats, real_stats, paths.figures / "data_shifts.png")
        ctx["fig_shifts"] = figure_md(out, out_dir, "shifts between frames",
                                      "Left: estimated shift of each frame onto its scene's clearest frame (circles: "
                                      "1 and 2 LR pixels). Right: "
                                      + ("registration error against the simulator's true shifts."
                                         if truth is not None else "distribution of the shift magnitudes."))
        ctx["shifts_text"] = shifts_text(run_stats, real_stats, source)
    else:
        for key in ("fig_frames", "frames_text", "fig_values", "values_text", "fig_shifts", "shifts_text"):
            ctx[key] = ""
        ctx["frames_text"] = "The scene index `data/scenes.csv` is missing: no statistics of the data."
    ctx["fig_values_real"] = ""
    if real_stats is not None:
        out = figures.value_histograms(real_stats, paths.figures / "data_values_real.png",
                                       "LR values of the real sample (probav-mini)")
        ctx["fig_values_real"] = (figure_md(out, out_dir, "value histograms, real sample",
                                            "The same histogram for the three real scenes of the sample.")
                                  + "\n\n" + values_text(real_stats, "real sample"))
    run_norms = data_stats.norms_by_band(paths.raw / "norm.csv", index)
    real_norms = data_stats.norms_by_band(real_root / "norm.csv") if real_root is not None else {}
    run_scene = real_scene = None
    if real_root is not None:
        from probav.scene import read_scene
        real_dirs = [d for d in data_stats.folder_sample(real_root).get("RED", []) if (d / "HR.png").is_file()]
        real_scene = read_scene(real_dirs[0]) if real_dirs else None
        if index is not None:
            band = real_scene.band if real_scene is not None else "RED"
            cands = index[(index["split"] == "train") & (index["band"] == band)
                          & ((index["status"] == "ok") if "status" in index else True)]
            if len(cands):
                run_scene = read_scene(paths.raw / cands.iloc[0]["path"])
    real_summary = ""
    if real_stats is not None:
        n = sum(len(s.scenes) for s in real_stats.values())
        described = ", ".join(f"{name} ({band}, {frames} frames, {100 * np.mean(s.clearance[sum(s.frames[:i]):sum(s.frames[:i + 1])]):.0f}% clear)"
                              for band, s in real_stats.items() for i, (name, frames) in enumerate(zip(s.scenes, s.frames)))
        real_summary = (f"The real sample holds {n} official scenes: {described}, and the official `norm.csv` of all "
                        f"1450 scenes. That is too few for statistics, but enough to check the simulator's value "
                        f"ranges, texture (power spectra) and shifts against real PROBA-V frames.")
    ctx["real_section"] = real_section(run_stats, real_stats, run_scene, real_scene, run_norms, real_norms, paths,
                                       source, real_summary)
    ctx["baseline_vs_norm"] = baseline_vs_norm(runs, real_root, source)
    log("realism scorecard", options)
    ctx["realism_section"] = realism_section(paths, source, real_root, out_dir)

    # ---- approaches
    ctx["models_table"] = models_table(runs)
    for r in runs:
        ctx[f"model_{r.name}"] = model_block(r)
    described = set(PLACEHOLDER.findall(paths.template.read_text())) if paths.template.is_file() else set()
    others = [r for r in runs if f"model_{r.name}" not in described]
    ctx["other_models"] = "\n\n".join(f"### {r.name}\n\n{r.summary or 'No description.'}\n{model_block(r)}"
                                      for r in others)
    ctx["layers_tables"] = layers_tables(runs)

    # ---- results
    log("results", options)
    header, rows = results_rows(runs)
    ctx["results_table"] = md_table(header, rows, ["l", "l"] + ["r"] * (len(header) - 2))
    ctx["results_text"] = results_text(runs)
    log("reference frame and tracks", options)
    ctx["reference_section"] = reference_section(params, paths, runs, real_root, paths.real_labels, out_dir)
    ctx["real_results"] = real_results(paths, runs, out_dir, source)
    box = None
    if ran:
        tables = {r.name: r.table for r in ran}
        box = figures.score_boxes(tables, paths.figures / "results_scores.png")
        ctx["fig_scores"] = figure_md(box, out_dir, "score per scene",
                                      "Box: quartiles of the per-scene scores; whiskers: 1.5 × the interquartile "
                                      "range; diamond: the mean (the official score). Dashed: the baseline.")
        out = figures.score_against(tables, ran[0].name, paths.figures / "results_against.png")
        ctx["fig_against"] = figure_md(out, out_dir, "score against clearance and frames",
                                       f"Dots: every dev scene of {ran[0].name}; lines: each model's mean score in "
                                       f"bins of equal scene counts.")
        ctx["against_text"] = against_text(runs)
    else:
        ctx["fig_scores"] = "No model has been scored yet."
        ctx["fig_against"] = ctx["against_text"] = ""
    log("visual comparisons", options)
    ctx["comparisons"] = comparisons(runs, params, paths, index, options)
    curves = {}
    for r in runs:
        if r.kind == "deep":
            c = dvclive_curves(paths.live / r.name)
            if c:
                curves[r.name] = c
    if curves:
        out = figures.training_curves(curves, paths.figures / "training_curves.png")
        missing = [r.name for r in runs if r.kind == "deep" and r.name not in curves]
        ctx["fig_training"] = (figure_md(out, out_dir, "training curves",
                                         "DVCLive logs (`dvclive/<model>/plots/metrics/`), one column per network.")
                               + (f"\n\nNo training log for {', '.join(f'`{m}`' for m in missing)}." if missing else ""))
    else:
        ctx["fig_training"] = "No DVCLive training log (`dvclive/<model>/`) in this run."
    log("effects", options)
    ctx["effects"] = effects_section(runs, params, paths, index, options)
    ctx["bench"] = bench_section(paths.out.parent / "bench.md")
    ctx["scale"] = scale_section(paths.out.parent / "scale.md")

    # ---- conclusions and reproduction
    ctx["findings"] = findings(runs, source)
    ctx["summary"] = summary_text(runs, source, index, split, commit)
    ctx["reproduce_text"] = reproduce_text(source, params, commit)
    groups = {k: params[k] for k in PARAM_GROUPS if k in params}
    ctx["params_dump"] = yaml.safe_dump(groups, sort_keys=False, allow_unicode=True).strip()

    template = paths.template.read_text()
    report = render(template, ctx)
    paths.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = paths.out.with_name(f".{paths.out.name}.tmp")
    tmp.write_text(report)
    os.replace(tmp, paths.out)
    if paths.readme is not None:
        block = readme_block(runs, source, paths, box, commit)
        if not update_readme(paths.readme, block):
            log(f"{paths.readme}: missing or without {README_START}/{README_END} markers; not updated", options)
    log(f"wrote {paths.out} and {len(list(paths.figures.glob('*.png')))} figures in "
        f"{time.perf_counter() - started:.0f} s", options)
    return ctx


def bench_section(table: Path) -> str:
    """The benchmark's table (``make bench`` writes it; not a dependency, so it may be older or absent)."""
    if not table.is_file():
        return ("No benchmark in this run: `make bench` measures the scorer, the simulator, the data stages, "
                "the input pipeline and every model on this machine, and writes `reports/bench.md` here.")
    return ("From the last `make bench` (`metrics/bench.json`; measured on the machine that ran it, and not "
            "re-run by `dvc repro`):\n\n" + table.read_text().strip())


def scale_section(table: Path) -> str:
    """``make scale``'s table (not a dependency either: an hour of running, done on purpose)."""
    if not table.is_file():
        return ("No archive-size run yet: `make scale` runs the pipeline at the default size and at the official "
                "archive's 1450 scenes and writes `metrics/scale.json` and `reports/scale.md`.")
    return table.read_text().strip()


def summary_text(runs, source, index, split, commit) -> str:
    ran = sorted([r for r in runs if r.ran], key=lambda r: r.metrics["mean_score"])
    n_dev = int((split["subset"] == "dev").sum()) if split is not None and "subset" in split else None
    scenes = int((index["status"] == "ok").sum()) if index is not None and "status" in index else None
    parts = [f"Data: **{source}** ({scenes} usable scenes, {n_dev if n_dev is not None else 'n/a'} of them in the "
             f"dev split that every score below is measured on)." if scenes is not None else
             f"Data: **{source}** (no scene index).",
             f"Code: commit `{commit}`." if commit else "Code: not a git checkout (no commit recorded)."]
    if ran:
        parts.append(f"{len(ran)} of {len(runs)} models were scored; the best is **{ran[0].name}** with a mean score of "
                     f"{fmt(ran[0].metrics['mean_score'], 4)} (the official baseline scores 1; lower is better).")
    else:
        parts.append("No model has been scored yet.")
    return " ".join(parts)


def reproduce_text(source: str, params: dict, commit: str | None) -> str:
    data = params.get("data") or {}
    if source == "synthetic":
        where = ("The data are generated by the simulator from the `seed` and `synthetic` parameters below: "
                 "no download. To run on the real data, set `data.source: kelvins` (download from "
                 f"{data.get('url', 'the Kelvins site')}), `archive` or `folder` in `params.yaml`.")
    else:
        where = (f"The data come from `data.source: {source}` (url {data.get('url')}, archive {data.get('archive')}, "
                 f"folder {data.get('folder')}); the download stage checks the zip's size and sha256 when recorded.")
    code = (f"This report was built from commit `{commit}` (`git checkout {commit}` then `make repro` rebuilds it)."
            if commit else "This report was built outside a git checkout: no commit recorded.")
    return where + "\n\n" + code
