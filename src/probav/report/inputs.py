"""What the report reads from a run: where the outputs are (``Paths``), how much to compute (``Options``), each
model's metrics, per-scene table, training record and layers (``ModelRun``), and everything a section needs in
one place (``ReportInputs``)."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from probav.seeds import from_this_run


TRAINING_KEYS = {            # models/<name>/training.json (probav.training): first key present wins
    "parameters": ("parameters",),
    "seconds": ("training_seconds", "wall_seconds"),
    "best_val_cpsnr": ("best_val_cpsnr", "best_dev_cpsnr"),   # best_dev_cpsnr: runs before the val split
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


@dataclass
class ReportInputs:
    """Everything a section reads: the parameters, the paths, the options, the data source, the commit, the scene
    index and split, the real sample's root (None where absent) and every model's run."""

    params: dict
    paths: Paths
    options: Options
    source: str
    commit: str | None
    index: pd.DataFrame | None
    split: pd.DataFrame | None
    real_root: Path | None
    runs: list[ModelRun]
    template: str
    seeds: dict | None = None   # metrics/seeds.json (`make seeds`) where present

    def seed_sd(self, model: str, track: str, where: str = "dev") -> float | None:
        """The sd over seeds of ``model``'s mean cPSNR in ``track`` on dev (or ``where="real"``), from ``make
        seeds``; None where the study has no such figure or was made from another run than this one (its entry
        for this run's seed differs from this run's metrics: the study is stale, and its spread is not quoted)."""
        entry = ((self.seeds or {}).get("models") or {}).get(model) or {}
        if where != "dev":
            entry = entry.get(where) or {}
        figures = entry.get(track) or {}
        run = next((r for r in self.runs if r.name == model and r.ran), None)
        if run is None or not figures:
            return None
        real_path = self.paths.metrics / "real" / f"{model}.json"
        metrics = run.metrics if where == "dev" else (json.loads(real_path.read_text()) if real_path.is_file() else None)
        current = ((metrics or {}).get("tracks") or {}).get(track, {}).get("mean_cpsnr")
        if not from_this_run(figures, self.params.get("seed"), current):
            return None
        return (figures.get("mean_cpsnr") or {}).get("sd")

    @property
    def ran(self) -> list[ModelRun]:
        """The models with metrics, best (lowest mean score) first."""
        return sorted([r for r in self.runs if r.ran], key=lambda r: r.metrics["mean_score"])

    @property
    def out_dir(self) -> Path:
        return self.paths.out.parent


def read_inputs(params: dict, paths: Paths, options: Options) -> ReportInputs:
    """Read the run's outputs once for every section (the networks are loaded for their layer tables)."""
    index = pd.read_csv(paths.scenes, dtype={"name": str}) if paths.scenes.is_file() else None
    split = pd.read_csv(paths.split, dtype={"name": str}) if paths.split.is_file() else None
    real_root = paths.real if paths.real is not None and (paths.real / "norm.csv").is_file() else None
    log("models and metrics", options)
    runs = load_models(params, paths)
    add_layer_tables(runs, params, paths, options)
    template = paths.template.read_text() if paths.template.is_file() else ""
    seeds_path = paths.metrics / "seeds.json"
    seeds = json.loads(seeds_path.read_text()) if seeds_path.is_file() else None
    return ReportInputs(params, paths, options, data_source(params, paths.raw), git_commit(paths.repo), index, split,
                        real_root, runs, template, seeds)
