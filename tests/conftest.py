"""Shared fixtures. The real challenge sample lives in ../shared/probav-mini beside the repo
(never copied in); tests that need it skip with a clear reason where it is absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROBAV_MINI = Path(os.environ.get("PROBAV_MINI", REPO.parent / "shared" / "probav-mini"))


@pytest.fixture(scope="session")
def probav_mini() -> Path:
    if not (PROBAV_MINI / "norm.csv").is_file():
        pytest.skip(f"real PROBA-V sample not found at {PROBAV_MINI} (set PROBAV_MINI or put shared/ beside the repo)")
    return PROBAV_MINI


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
