"""``params.yaml``, read in one place."""
from __future__ import annotations

import os
from pathlib import Path

import yaml

DEFAULT_PATH = Path("params.yaml")


def load_params(path: os.PathLike | str = DEFAULT_PATH) -> dict:
    """The whole params file as a dict; a clear error when it is missing or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: params file not found (run from the repository root, or pass --params)")
    with path.open() as f:
        params = yaml.safe_load(f)
    if not isinstance(params, dict):
        raise ValueError(f"{path}: expected a YAML mapping of parameter groups")
    return params


def derive_seed(params: dict, *names: str | int) -> int:
    """A seed for one random choice, derived from the root ``seed`` and a name (stable across runs)."""
    import hashlib

    key = "/".join(str(n) for n in (params.get("seed", 0), *names))
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")
