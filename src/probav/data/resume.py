"""What lets a long data stage resume after an interruption, and only under the same settings.

The ``download`` (synthetic source) and ``tfrecords`` stages write their outputs in place, one unit
at a time (a scene folder, a TFRecord shard), each under a temporary name renamed when complete, and
record beside each unit the *fingerprint* of everything that decides its bytes: the parameters, the
seeds, the source code of the modules that make it (their sha256, so any edit counts), the versions
of the libraries that compute or encode it. A later run reuses a unit only when its recorded
fingerprint equals the one it would write now; anything else is deleted and made again. dvc.yaml
marks those outputs ``persist: true`` so that DVC leaves them in place between runs.

The records are part of the outputs (an interrupted-then-resumed run and an uninterrupted one write
the same bytes), and hold no timings, dates or absolute paths.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import os
import zlib
from pathlib import Path

CHUNK = 1 << 20


def _plain(value):
    """numpy scalars as the Python numbers they hold (an int stays an int: ``3``, never ``3.0``)."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def canonical(data) -> str:
    """``data`` as JSON with sorted keys and no whitespace: the form that is hashed."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=_plain)


def digest(data) -> str:
    """sha256 (hex) of ``canonical(data)``."""
    return hashlib.sha256(canonical(data).encode()).hexdigest()


def file_sha256(path: os.PathLike | str) -> str:
    """Hex sha256 of a file (read in chunks: archives are hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def code_fingerprint(modules: list[str]) -> dict[str, str]:
    """``{module: sha256 of its source file}`` of the named modules (imported here to find the file)."""
    out = {}
    for name in modules:
        module = importlib.import_module(name)
        out[name] = file_sha256(module.__file__)
    return out


def library_versions(distributions: list[str]) -> dict[str, str]:
    """Versions of installed distributions (``not installed`` where absent), and zlib's runtime version
    (the PNG and GZIP bytes depend on it)."""
    out = {"zlib": zlib.ZLIB_RUNTIME_VERSION}
    for name in distributions:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def changed_keys(old: dict | None, new: dict) -> list[str]:
    """The top-level keys whose values differ between two fingerprints (all of ``new``'s without ``old``)."""
    if not isinstance(old, dict):
        return sorted(new)
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def read_json(path: os.PathLike | str):
    """A JSON file's content, or None where it is missing or unreadable (a record that cannot be read is
    as good as none: the unit it describes is made again)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def write_json(data, path: os.PathLike | str) -> Path:
    """Write ``data`` as sorted, indented JSON under a temporary name, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=_plain) + "\n")
    os.replace(tmp, path)
    return path


def file_sizes(folder: os.PathLike | str) -> dict[str, int]:
    """``{relative path: size}`` of the files below ``folder`` (POSIX separators, sorted)."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): p.stat().st_size
            for p in sorted(folder.rglob("*")) if p.is_file()}
