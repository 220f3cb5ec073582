"""The pipeline files: `dvc repro` (dvc.yaml) must not pull in a study or the benchmark. DVC runs a stage of
another dvc.yaml as an upstream stage when one of its outputs lies inside a dependency of dvc.yaml's stages
(an output under models/ made `make repro` train every network again for the seeds study)."""
from __future__ import annotations

from pathlib import PurePosixPath

import yaml

OTHER_PIPELINES = ("studies/dvc.yaml", "bench/dvc.yaml")


def _paths(entries) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]


def _inside(path: str, folder: str) -> bool:
    return PurePosixPath(path) == PurePosixPath(folder) or PurePosixPath(folder) in PurePosixPath(path).parents


def test_studies_and_bench_are_not_upstream_of_the_pipeline(repo_root):
    main = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]
    deps = {d for stage in main.values() for d in _paths((stage.get("do") or stage).get("deps"))}
    for name in OTHER_PIPELINES:
        stages = yaml.safe_load((repo_root / name).read_text())["stages"]
        for stage_name, stage in stages.items():
            outs = [o for key in ("outs", "metrics", "plots") for o in _paths(stage.get(key))]
            for out in outs:
                for dep in deps:
                    assert not _inside(out, dep), (f"{name}:{stage_name} writes {out}, inside {dep}, a dependency of "
                                                   f"dvc.yaml: `dvc repro` would run it")
