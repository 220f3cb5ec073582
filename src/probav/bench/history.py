"""A model against an earlier version of itself, side by side in one bench run.

``bench.models.earlier`` (params.yaml) maps a model to a commit, e.g. ``shift_and_add: 702e730``
(the last commit before its speed-up). The package as it was at that commit is exported with
``git archive`` into the bench's work folder; then each version predicts the same scenes in its own
Python process (two versions of ``probav`` cannot share one), alternating ``repeats`` times, so that
a busy spell slows both alike. Each process reads every scene afresh and predicts it once (a
``Scene`` caches its registration, so a second prediction of the same object would be flattered);
one extra scene read separately warms the process up first.

Reported: each version's scenes/s, their ratio (now / earlier), and how far the predictions differ
(largest absolute difference in DN, and the number of scenes predicted identically). Skipped, with
the reason, where git, the repository or the commit is not there (e.g. a source archive).
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from probav.bench.common import skipped, summary

# Run in the version's own process: reads the scenes, warms up on a separate read of the first one,
# then times one prediction per scene and saves the predictions. Only APIs both versions share.
_WORKER = """
import json, sys, time
import numpy as np
from probav.models.registry import model_class
from probav.scene import read_scene

job = json.loads(open(sys.argv[1]).read())
model = model_class(job["model"])(job["params"])
model.predict(read_scene(job["scenes"][0]))
scenes = [read_scene(d) for d in job["scenes"]]
start = time.perf_counter()
predictions = [model.predict(scene) for scene in scenes]
seconds = time.perf_counter() - start
np.save(job["out"], np.stack(predictions))
print(json.dumps({"seconds": seconds}))
"""


def repository_root() -> Path | None:
    """The git checkout this package runs from (``src/probav`` two levels down), or None."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / ".git").exists() and (root / "src" / "probav").is_dir() else None


def export_package(commit: str, dest: Path) -> Path:
    """``src/probav`` as it was at ``commit``, written under ``dest`` (replacing what is there);
    returns the ``src`` folder to put on PYTHONPATH. Raises RuntimeError saying why it cannot."""
    root = repository_root()
    if root is None or shutil.which("git") is None:
        raise RuntimeError("needs git and a git checkout of the repository (this is not one)")
    proc = subprocess.run(["git", "-C", str(root), "archive", "--format=tar", commit, "src/probav"],
                          capture_output=True)
    if proc.returncode:
        raise RuntimeError(f"git archive {commit} failed: {proc.stderr.decode(errors='replace').strip()}")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as archive:
        archive.extractall(dest, filter="data")
    return dest / "src"


def _predict_in_process(src: Path, model: str, params: dict, scenes: list[str], out: Path,
                        timeout_s: float) -> float:
    """Seconds that the package under ``src`` takes to predict ``scenes``; predictions saved to ``out``."""
    with tempfile.TemporaryDirectory(prefix="bench-earlier-") as tmp:
        job = Path(tmp) / "job.json"
        job.write_text(json.dumps({"model": model, "params": params, "scenes": scenes, "out": str(out)}))
        env = dict(os.environ, PYTHONPATH=str(src), TF_CPP_MIN_LOG_LEVEL="2")
        proc = subprocess.run([sys.executable, "-c", _WORKER, str(job)], capture_output=True, text=True,
                              env=env, timeout=timeout_s)
    if proc.returncode:
        raise RuntimeError(f"{model} under {src} failed: {proc.stderr.strip()[-1000:]}")
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["seconds"])


def bench_earlier_version(name: str, commit: str, settings: dict, params: dict, work: Path,
                          scene_dirs: list[Path]) -> dict:
    """``name`` now against ``name`` at ``commit`` on the same scenes (see the module docstring)."""
    if not scene_dirs:
        return skipped("no scenes to predict")
    try:
        earlier_src = export_package(commit, work / "earlier" / commit)
    except RuntimeError as err:
        return skipped(f"{name} at {commit}: {err}")
    current_src = Path(__file__).resolve().parents[2]
    scenes = [str(d) for d in scene_dirs]
    versions = {"earlier": earlier_src, "now": current_src}
    seconds: dict[str, list[float]] = {key: [] for key in versions}
    outputs = {key: work / "earlier" / f"{name}-{key}.npy" for key in versions}
    timeout = float(settings["timeout_s"])
    try:
        for _ in range(max(int(settings["repeats"]), 1)):  # alternate: a busy spell slows both alike
            for key, src in versions.items():
                seconds[key].append(_predict_in_process(src, name, params, scenes, outputs[key], timeout))
    except (RuntimeError, subprocess.TimeoutExpired) as err:
        return {"error": f"{type(err).__name__}: {err}"}
    earlier, now = (np.load(outputs[key]).astype(np.int64) for key in ("earlier", "now"))
    differences = np.abs(earlier - now).reshape(len(scenes), -1).max(axis=1)
    rates = {key: summary([len(scenes) / s for s in values]) for key, values in seconds.items()}
    return {"commit": commit, "scenes": len(scenes),
            "earlier_scenes_per_s": rates["earlier"], "now_scenes_per_s": rates["now"],
            "ratio": float(np.median(seconds["earlier"]) / np.median(seconds["now"])),
            "max_abs_diff_dn": int(differences.max()), "identical_scenes": int(np.sum(differences == 0)),
            "note": "each version in its own process, alternating; one prediction per freshly read scene; "
                    "ratio = earlier's median seconds / now's"}
