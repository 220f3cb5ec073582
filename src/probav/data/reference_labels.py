"""Reference-frame labels: which LR frame of a scene was taken on the HR's own pass.

The format is PROBA-V-REF's ``reference.json`` (Nguyen et al., IGARSS 2021; public repository
``centreborelli/ProbaVref``), which lists the reference of every train scene of the challenge::

    {"RED": {"imgset0000": {"reference": "004"}, ...}, "NIR": {"imgset0594": {"reference": "008"}, ...}}

The value is the frame number NNN of ``LRNNN.png``. In ``data/raw`` the labels sit beside ``norm.csv``
as ``reference.json``: the simulator writes its own (train scenes; the test scenes' labels are kept
apart in ``synthetic/test_reference.json``, like their HRs), and for the real archive the download
stage fetches PROBA-V-REF's file (checksum checked) or copies the one the user gives
(``reference.labels`` in params.yaml).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from probav.scene import BANDS, SCENE_NAME, BadSceneError

LABELS_FILE = "reference.json"
# PROBA-V-REF's reference.json, pinned to a commit so that the checksum stays true.
PROBAV_REF_URL = ("https://raw.githubusercontent.com/centreborelli/ProbaVref/"
                  "5d521ecd29a81aacdb010cb166be160b40906344/reference.json")
PROBAV_REF_SHA256 = "d40352ea098bed36a745db79c6126c7ad118b081c3656bcc7a87b8fb23439295"
PROBAV_REF_SIZE = 76_600
_FRAME = re.compile(r"^\d{3}$")


class LabelsError(BadSceneError):
    """A labels file that cannot be used; the message names the file and the problem."""


def parse_labels(data, path: os.PathLike | str = LABELS_FILE) -> dict[str, tuple[str, int]]:
    """``{scene name: (band, frame number)}`` from the parsed JSON; every problem names ``path``."""
    if not isinstance(data, dict) or not data:
        raise LabelsError(path, 'expected {"RED": {"imgsetNNNN": {"reference": "NNN"}, ...}, "NIR": {...}}')
    unknown = sorted(set(data) - set(BANDS))
    if unknown:
        raise LabelsError(path, f"unknown band(s) {unknown}; expected {', '.join(BANDS)}")
    labels: dict[str, tuple[str, int]] = {}
    for band, scenes in data.items():
        if not isinstance(scenes, dict):
            raise LabelsError(path, f"{band}: expected an object of scenes, got {type(scenes).__name__}")
        for name, entry in scenes.items():
            if not SCENE_NAME.match(str(name)):
                raise LabelsError(path, f"{band}: {name!r} is not a scene name (imgsetNNNN)")
            frame = entry.get("reference") if isinstance(entry, dict) else None
            if not isinstance(frame, str) or not _FRAME.match(frame):
                raise LabelsError(path, f"{band}/{name}: expected {{\"reference\": \"NNN\"}}, got {entry!r}")
            if name in labels:
                raise LabelsError(path, f"{name} is listed under both bands")
            labels[name] = (band, int(frame))
    return labels


def read_labels(path: os.PathLike | str) -> dict[str, tuple[str, int]]:
    """Read a ``reference.json``: ``{scene name: (band, frame number)}``."""
    path = Path(path)
    if not path.is_file():
        raise LabelsError(path, "reference labels file is missing")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LabelsError(path, f"not valid JSON ({err})") from err
    return parse_labels(data, path)


def write_labels(path: os.PathLike | str, labels: dict[str, tuple[str, int]]) -> None:
    """Write labels in PROBA-V-REF's format, atomically."""
    path = Path(path)
    data = {band: {name: {"reference": f"{frame:03d}"} for name, (b, frame) in sorted(labels.items()) if b == band}
            for band in BANDS}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def labels_path(raw: os.PathLike | str) -> Path | None:
    """``raw/reference.json`` if the data has labels, else None."""
    path = Path(raw) / LABELS_FILE
    return path if path.is_file() else None


TRACKS = ("challenge", "ref")
ESTIMATORS = ("fitted", "rule")
DEFAULTS = {
    "track": "challenge",         # challenge (reference estimated) | ref (reference given by the labels)
    "labels": "download",         # real data: download (PROBA-V-REF) | a path to a reference.json | none
    "url": PROBAV_REF_URL,
    "sha256": PROBAV_REF_SHA256,
    "size": PROBAV_REF_SIZE,
    "estimator": "fitted",        # fitted (learned on the train split's labels) | rule (hand-set)
    "l2": 0.1,                    # fitted: L2 penalty of the conditional logit (features scaled to unit spread)
}


def reference_settings(params: dict | None) -> dict:
    """The ``reference`` group of params.yaml with defaults, checked."""
    cfg = {**DEFAULTS, **((params or {}).get("reference") or {})}
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown reference settings {sorted(unknown)}; known: {', '.join(DEFAULTS)}")
    if cfg["track"] not in TRACKS:
        raise ValueError(f"reference.track must be one of {', '.join(TRACKS)}, got {cfg['track']!r}")
    if cfg["estimator"] not in ESTIMATORS:
        raise ValueError(f"reference.estimator must be one of {', '.join(ESTIMATORS)}, got {cfg['estimator']!r}")
    if cfg["labels"] is None:
        cfg["labels"] = "none"
    if float(cfg["l2"]) < 0:
        raise ValueError(f"reference.l2 must be >= 0, got {cfg['l2']}")
    return cfg
