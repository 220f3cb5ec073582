"""Producing ``data/raw/`` in the official archive layout from the source chosen by ``params.yaml``.

``data.source`` is one of:

- ``synthetic``: scenes made by ``probav.data.synthetic.generate`` (no download);
- ``kelvins``: the official zip, downloaded with resume, retries and a checksum check;
- ``archive``: a zip the user already has (``data.archive``);
- ``folder``: an unpacked copy the user already has (``data.folder``).

An archive or a folder is unpacked or copied into a temporary sibling folder, renamed to its final name
only when complete, so a half-made copy never exists under the final name. The simulator writes in
place instead, scene by scene (each scene under a temporary name, renamed when complete), so that an
interrupted run resumes; ``norm.csv`` is written last, so a half-made ``data/raw`` is never complete.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
import zipfile
import zlib
from contextlib import contextmanager
from datetime import datetime, timezone
from http.client import HTTPException
from pathlib import Path, PurePosixPath
from typing import Iterator
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse
from urllib.request import Request, urlopen

from tqdm import tqdm

from probav.data.resume import file_sha256

OFFICIAL_URL = "https://kelvins.esa.int/media/competitions/proba-v-super-resolution/probav_data.zip"
SOURCES = ("synthetic", "kelvins", "archive", "folder")
LAYOUT = ("norm.csv", "train", "test")  # what the official archive's root holds
SEARCH_DEPTH = 2  # how many folder levels below the given one the layout root may sit
CHUNK = 1 << 20
DEFAULTS = {
    "source": "synthetic",
    "url": OFFICIAL_URL,
    "sha256": None,
    "size": None,
    "archive": None,
    "folder": None,
    "timeout": 60,
    "retries": 5,
    "backoff": 2.0,
    "on_bad_scene": "stop",
    "workers": 2,
}
# HTTP statuses worth another attempt; any other 4xx means the address itself is wrong.
RETRY_STATUSES = {408, 425, 429}


class DataSourceError(Exception):
    """The data could not be produced; the message says what to do about it."""


class DownloadError(DataSourceError):
    """The official archive could not be downloaded."""


class ChecksumError(DownloadError):
    """The downloaded file is not the expected one (size or sha256)."""


class BadArchiveError(DataSourceError):
    """A zip or folder that is corrupt or does not hold the official layout."""


class _IncompleteDownload(Exception):
    """One attempt ended early; the next one resumes."""


# --------------------------------------------------------------------------- settings

def data_settings(params: dict) -> dict:
    """``params['data']`` with defaults filled in, validated."""
    settings = {**DEFAULTS, **(params.get("data") or {})}
    if settings["source"] not in SOURCES:
        raise DataSourceError(f"params.yaml data.source is {settings['source']!r}; expected one of {', '.join(SOURCES)}")
    if settings["on_bad_scene"] not in ("stop", "skip"):
        raise DataSourceError(f"params.yaml data.on_bad_scene is {settings['on_bad_scene']!r}; expected stop or skip")
    if int(settings["retries"]) < 1:
        raise DataSourceError("params.yaml data.retries must be at least 1")
    return settings


def manual_download_help(url: str = OFFICIAL_URL) -> str:
    """How to supply the archive by hand when the download does not work."""
    return (
        f"Supply the archive by hand instead: download {url} in a browser (or on another machine), then in "
        "params.yaml set\n"
        "  data:\n    source: archive\n    archive: /path/to/probav_data.zip\n"
        "or, for an already unpacked copy (the folder holding norm.csv, train/ and test/):\n"
        "  data:\n    source: folder\n    folder: /path/to/probav_data"
    )


# --------------------------------------------------------------------------- entry point

def prepare_raw(params: dict, out: os.PathLike | str, cache: os.PathLike | str = "data/interim") -> Path:
    """Produce ``out`` (``data/raw``) in the official layout from ``params['data']['source']``.

    ``cache`` holds the downloaded zip (and its partial download) for ``source: kelvins``.
    """
    settings = data_settings(params)
    out = Path(out)
    source = settings["source"]
    if source == "synthetic":
        return generate_synthetic(params, out)
    if source == "kelvins":
        zip_path = download_archive(settings, cache)
        try:
            return unpack_archive(zip_path, out)
        except BadArchiveError as err:
            # The cached copy is bad: drop it (and its record) so that the next run downloads afresh.
            zip_path.unlink(missing_ok=True)
            _record_path(zip_path).unlink(missing_ok=True)
            raise BadArchiveError(f"{err}\nThe cached download {zip_path} was deleted; run again to download it "
                                  f"afresh.\n{manual_download_help(settings['url'])}") from err
    if source == "archive":
        return unpack_archive(_given_path(settings, "archive"), out)
    return copy_folder(_given_path(settings, "folder"), out)


def _given_path(settings: dict, key: str) -> Path:
    """The path of ``data.archive`` / ``data.folder``, which must exist."""
    value = settings.get(key)
    if not value:
        raise DataSourceError(f"params.yaml data.source is {key!r} but data.{key} is not set: "
                              f"set it to the path of your {'probav_data.zip' if key == 'archive' else 'unpacked archive'}")
    path = Path(value).expanduser()
    if not path.exists():
        raise DataSourceError(f"{path}: not found (params.yaml data.{key}); check the path "
                              f"(relative paths are taken from the folder the stage runs in)")
    return path


def prepare_labels(params: dict, raw: os.PathLike | str, cache: os.PathLike | str = "data/interim") -> Path | None:
    """Put the reference labels of the data in ``raw/reference.json``; returns its path (None without labels).

    The simulator writes its own. For real data ``reference.labels`` decides: ``download`` fetches
    PROBA-V-REF's file (``reference.url``, checked against ``reference.size``/``reference.sha256``), a path
    copies a ``reference.json`` the user has, ``none`` leaves the data unlabelled (only the challenge track
    is scored then)."""
    from probav.data.reference_labels import LABELS_FILE, read_labels, reference_settings

    raw = Path(raw)
    if data_settings(params)["source"] == "synthetic":
        return raw / LABELS_FILE if (raw / LABELS_FILE).is_file() else None
    cfg = reference_settings(params)
    if cfg["labels"] == "none":
        print("no reference labels (reference.labels: none): only the challenge track can be scored")
        return None
    if cfg["labels"] == "download":
        settings = data_settings(params)
        help_text = ("Supply PROBA-V-REF's reference.json by hand instead: download it from the address above "
                     "(or from github.com/centreborelli/ProbaVref) and set reference.labels in params.yaml to its "
                     "path, or set reference.labels: none to run without labels (challenge track only).")
        source = download_file(cfg["url"], Path(cache) / LABELS_FILE, size=cfg["size"], sha256=cfg["sha256"],
                               timeout=float(settings["timeout"]), retries=int(settings["retries"]),
                               backoff=float(settings["backoff"]), expect_zip=False, help_text=help_text,
                               params_keys="reference.size/reference.sha256")
    else:
        source = Path(str(cfg["labels"])).expanduser()
        if not source.is_file():
            raise DataSourceError(f"{source}: not found (params.yaml reference.labels); give the path of a "
                                  f"PROBA-V-REF reference.json, download to fetch it, or none")
    read_labels(source)  # a bad file fails here, naming itself
    dest = raw / LABELS_FILE
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, dest)
    print(f"reference labels: {source} -> {dest}")
    return dest


# --------------------------------------------------------------------------- download

def download_archive(settings: dict, cache: os.PathLike | str) -> Path:
    """Download ``settings['url']`` into ``cache`` (kept there for later runs); returns the zip's path."""
    name = PurePosixPath(urlparse(settings["url"]).path).name or "probav_data.zip"
    return download_file(settings["url"], Path(cache) / name, size=settings["size"], sha256=settings["sha256"],
                         timeout=float(settings["timeout"]), retries=int(settings["retries"]),
                         backoff=float(settings["backoff"]))


def download_file(url: str, dest: os.PathLike | str, *, size: int | None = None, sha256: str | None = None,
                  timeout: float = 60, retries: int = 5, backoff: float = 2.0, expect_zip: bool = True,
                  help_text: str | None = None, params_keys: str = "data.size/data.sha256") -> Path:
    """Download ``url`` to ``dest``, resuming ``dest.part`` with HTTP Range, and check its size and sha256.

    Where ``size``/``sha256`` are None, those recorded by an earlier download (``dest.sha256.json``) are
    used, or, on the first download, the measured ones are recorded there. ``expect_zip``: the file must
    also be a zip archive. ``help_text`` says what to do when the download fails (default: how to supply
    the official archive by hand); ``params_keys`` names the params that pin size and sha256.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    expected_size, expected_sha, origin = _expected_checksums(url, size, sha256, _record_path(dest), params_keys)
    help_text = manual_download_help(url) if help_text is None else help_text

    if dest.exists() and _reuse_cached(dest, url, expected_size, expected_sha, expect_zip):
        return dest

    completed, last_error = False, "no attempt made"
    for attempt in range(1, retries + 1):
        if attempt > 1:
            delay = backoff * 2 ** (attempt - 2)
            print(f"download attempt {attempt - 1}/{retries} failed ({last_error}); retrying in {delay:g} s")
            time.sleep(delay)
        try:
            _download_attempt(url, part, expected_size, origin, timeout)
            completed = True
            break
        except HTTPError as err:
            last_error = f"HTTP {err.code} {err.reason}"
            if 400 <= err.code < 500 and err.code not in RETRY_STATUSES:
                break  # the address is wrong or forbidden: retrying will not help
        except (_IncompleteDownload, URLError, HTTPException, OSError) as err:
            last_error = str(err) or type(err).__name__
    if not completed:
        kept = f"\nThe partial download is kept in {part} and resumes on the next run." if part.exists() else ""
        raise DownloadError(f"Could not download {url} ({last_error}; {attempt} attempt(s)).{kept}\n"
                            f"{help_text}")

    _verify_download(part, url, expected_size, expected_sha, origin, expect_zip, help_text)
    os.replace(part, dest)
    if expected_sha is None:
        _record_checksums(dest, url)
    return dest


def _download_attempt(url: str, part: Path, expected_size: int | None, origin: str, timeout: float) -> None:
    """One HTTP request, appending to ``part`` from where it stops; raises _IncompleteDownload when cut short."""
    offset = part.stat().st_size if part.exists() else 0
    if expected_size is not None and offset >= expected_size:
        if offset == expected_size:
            return
        part.unlink()  # longer than the file can be: not ours to resume
        offset = 0
    headers = {"User-Agent": "probav-download/1.0"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as err:
        if err.code == 416 and offset:
            # Range not satisfiable: either the partial file is already whole, or it does not fit; start over.
            total = _parse_content_range(err.headers.get("Content-Range", "") or "")[1]
            if total == offset:
                return
            part.unlink()
            raise _IncompleteDownload("the server refused to resume; restarting from zero") from err
        raise
    with response:
        if offset and response.status == 206:
            start, total = _parse_content_range(response.headers.get("Content-Range", ""))
            if start != offset:
                part.unlink()
                raise _IncompleteDownload(f"the server resumed at byte {start}, not {offset}; restarting from zero")
            mode = "ab"
        else:
            # A 200 answer to a Range request: the server ignores Range, so the body starts at byte 0.
            offset, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        if expected_size is not None and total is not None and total != expected_size:
            part.unlink(missing_ok=True)
            raise ChecksumError(f"{url}: the server offers {total} bytes but {origin} expects {expected_size}.\n"
                                f"{_change_hint(origin)}{manual_download_help(url)}")
        if total is None:
            total = expected_size  # no Content-Length: only the expected size tells a cut-short body
        _copy_body(response, part, mode, offset, total)
    received = part.stat().st_size
    if total is not None and received < total:
        raise _IncompleteDownload(f"connection closed after {received} of {total} bytes")


def _copy_body(response, part: Path, mode: str, offset: int, total: int | None) -> None:
    """Stream the response body into ``part`` with a progress bar."""
    with open(part, mode) as f, tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                                     desc=part.name.removesuffix(".part"), mininterval=0.5) as bar:
        while chunk := response.read(CHUNK):
            f.write(chunk)
            bar.update(len(chunk))


def _parse_content_range(value: str) -> tuple[int, int | None]:
    """``bytes START-END/TOTAL`` → (START, TOTAL or None when ``*``); ``bytes */TOTAL`` → (-1, TOTAL)."""
    try:
        span, total = value.split(" ", 1)[1].split("/", 1)
        start = -1 if span.strip() == "*" else int(span.split("-", 1)[0])  # '*' in a 416 answer
        return start, (None if total.strip() == "*" else int(total))
    except (ValueError, IndexError) as err:
        raise _IncompleteDownload(f"unreadable Content-Range {value!r}") from err


# --------------------------------------------------------------------------- integrity

def _record_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256.json")


def _expected_checksums(url: str, size, sha256, record_path: Path,
                        params_keys: str = "data.size/data.sha256") -> tuple[int | None, str | None, str]:
    """Expected (size, sha256, where they come from): params first, else an earlier download's record."""
    if size is not None or sha256 is not None:
        return (None if size is None else int(size)), (None if sha256 is None else str(sha256).strip().lower()), \
            f"params.yaml ({params_keys})"
    try:
        record = json.loads(record_path.read_text())
        if record.get("url") == url:
            return int(record["size"]), str(record["sha256"]), f"the record {record_path}"
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None, None, ""


def _mismatch(path: Path, size: int | None, sha256: str | None) -> str | None:
    """What differs from the expected size/sha256, or None."""
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        return f"size {actual_size} bytes, expected {size}"
    if sha256 is not None:
        actual_sha = file_sha256(path)
        if actual_sha != sha256:
            return f"sha256 {actual_sha}, expected {sha256}"
    return None


def _reuse_cached(dest: Path, url: str, size: int | None, sha256: str | None, expect_zip: bool = True) -> bool:
    """Whether an earlier complete download can be used as is (else it is deleted)."""
    if size is not None or sha256 is not None:
        problem = _mismatch(dest, size, sha256)
    else:
        problem = None if not expect_zip or zipfile.is_zipfile(dest) else "not a zip"
    if problem is None:
        print(f"using the earlier download {dest}")
        if sha256 is None:
            _record_checksums(dest, url)
        return True
    print(f"the earlier download {dest} does not match ({problem}); downloading again")
    dest.unlink()
    return False


def _verify_download(part: Path, url: str, size: int | None, sha256: str | None, origin: str,
                     expect_zip: bool = True, help_text: str | None = None) -> None:
    """Check a complete download; a bad one is deleted and raises ChecksumError."""
    problem = _mismatch(part, size, sha256)
    if problem is None and expect_zip and not zipfile.is_zipfile(part):
        problem = "the server did not send a zip archive (the address may have moved, or answer with a web page)"
    if problem is None:
        return
    part.unlink(missing_ok=True)
    raise ChecksumError(f"{url}: downloaded file rejected: {problem} (checked against "
                        f"{origin or 'the zip format'}). The file was deleted.\n"
                        f"{_change_hint(origin)}{manual_download_help(url) if help_text is None else help_text}")


def _change_hint(origin: str) -> str:
    """What to do when the file behind the address really changed, given where the expected values came from."""
    if origin.startswith("params"):
        keys = origin[origin.index("(") + 1:origin.rindex(")")].replace("/", " and ")
        return (f"If the file really changed, update {keys} in params.yaml (or set them to null to record the new "
                f"ones); otherwise run again.\n")
    if origin:
        return f"If the file really changed, delete {origin.removeprefix('the record ')} to record the new one.\n"
    return ""


def _record_checksums(dest: Path, url: str) -> None:
    """Record the measured size and sha256 beside the download, and say how to pin them."""
    size, digest = dest.stat().st_size, file_sha256(dest)
    record = {"url": url, "size": size, "sha256": digest,
              "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    record_path = _record_path(dest)
    tmp = record_path.with_name(f".{record_path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, record_path)
    print(f"\nRecorded the size and sha256 of {dest.name} in {record_path} (later downloads are checked "
          f"against them):\n  size: {size}\n  sha256: {digest}\n"
          f"To pin them for everyone, set in params.yaml:\n  data:\n    size: {size}\n    sha256: {digest}\n")


# --------------------------------------------------------------------------- unpacking and copying

@contextmanager
def _staging_folder(out: Path) -> Iterator[Path]:
    """A temporary sibling of ``out``, renamed to ``out`` when the block completes; removed on any error."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for kind in ("partial", "old"):
        for stale in out.parent.glob(f".{out.name}.{kind}-*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by an interrupted earlier run
    staging = _new_sibling(out, "partial")
    try:
        yield staging
        _replace_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _new_sibling(out: Path, kind: str) -> Path:
    """A new empty folder ``.<out>.<kind>-<unique>`` beside ``out`` (mode from the umask, unlike mkdtemp's 0700)."""
    folder = out.parent / f".{out.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    return folder


def _replace_folder(new: Path, out: Path) -> None:
    """Rename ``new`` to ``out``, moving an existing ``out`` aside first and deleting it after."""
    if not (out.exists() or out.is_symlink()):
        os.replace(new, out)
        return
    old = _new_sibling(out, "old")
    os.replace(out, old / out.name)
    os.replace(new, out)
    shutil.rmtree(old, ignore_errors=True)


def _has_layout(folder: Path) -> bool:
    return (folder / "norm.csv").is_file() and (folder / "train").is_dir() and (folder / "test").is_dir()


def find_data_root(folder: os.PathLike | str, max_depth: int = SEARCH_DEPTH) -> Path:
    """The folder holding ``norm.csv``, ``train/`` and ``test/``: ``folder`` itself or up to ``max_depth`` below."""
    folder = Path(folder)
    level = [folder]
    for _ in range(max_depth + 1):
        for candidate in level:
            if _has_layout(candidate):
                return candidate
        level = sorted(p for d in level for p in d.iterdir() if p.is_dir() and p.name != "__MACOSX")
    raise BadArchiveError(f"{folder}: no folder holding norm.csv, train/ and test/ found here or up to "
                          f"{max_depth} levels below. Point data.folder at the unpacked PROBA-V archive.")


def _zip_root(names: list[str], zip_path: Path, max_depth: int) -> str:
    """The prefix ('' or 'top/…/') of the zip entries that hold norm.csv, train/ and test/."""
    prefixes = sorted({n[: -len("norm.csv")] for n in names if PurePosixPath(n).name == "norm.csv"
                       and not n.startswith("__MACOSX/")}, key=lambda p: (p.count("/"), p))
    for prefix in prefixes:
        if prefix.count("/") > max_depth:
            break
        if (any(n.startswith(prefix + "train/") for n in names)
                and any(n.startswith(prefix + "test/") for n in names)):
            return prefix
    raise BadArchiveError(f"{zip_path}: no folder holding norm.csv, train/ and test/ found in this zip (searched "
                          f"{max_depth} levels down). Is it the PROBA-V archive probav_data.zip?")


def _layout_member(name: str, prefix: str) -> str | None:
    """The path below the layout root of a zip entry to extract, or None to leave it out."""
    if not name.startswith(prefix):
        return None
    rest = name[len(prefix):]
    return rest if rest == "norm.csv" or rest.startswith(("train/", "test/")) else None


def _safe_target(root: Path, relative: str, zip_path: Path) -> Path:
    """``root/relative``, refusing entries that would land outside ``root``."""
    parts = PurePosixPath(relative).parts
    if PurePosixPath(relative).is_absolute() or ".." in parts or "\\" in relative:
        raise BadArchiveError(f"{zip_path}: refusing the entry {relative!r}, whose path leaves the archive's folder")
    return root.joinpath(*parts)


def unpack_archive(zip_path: os.PathLike | str, out: os.PathLike | str, max_depth: int = SEARCH_DEPTH) -> Path:
    """Extract the official layout (norm.csv, train/, test/) of a zip into ``out``; returns ``out``.

    The zip may or may not hold a top folder; only its layout root's content is kept.
    """
    zip_path, out = Path(zip_path), Path(out)
    try:
        with zipfile.ZipFile(zip_path) as archive:
            infos = archive.infolist()
            prefix = _zip_root([i.filename for i in infos], zip_path, max_depth)
            members = [(i, rel) for i in infos if (rel := _layout_member(i.filename, prefix))]
            with _staging_folder(out) as staging:
                _extract(archive, members, staging, zip_path)
    except (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError, RuntimeError) as err:
        raise BadArchiveError(f"{zip_path}: corrupt or truncated zip ({err}). Download it again, or check it "
                              f"with `unzip -t {zip_path}`.") from err
    print(f"unpacked {zip_path} into {out}")
    return out


def _extract(archive: zipfile.ZipFile, members: list, staging: Path, zip_path: Path) -> None:
    """Extract (ZipInfo, relative path) pairs below ``staging``; CRC errors raise BadZipFile."""
    total = sum(info.file_size for info, _ in members)
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"unpacking {zip_path.name}",
              mininterval=0.5) as bar:
        for info, relative in members:
            target = _safe_target(staging, relative, zip_path)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with archive.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
            except (zipfile.BadZipFile, EOFError, zlib.error) as err:
                raise zipfile.BadZipFile(f"{info.filename}: {err}") from err
            bar.update(info.file_size)


def _link_or_copy(src: str, dst: str) -> str:
    """Hardlink (no extra space, same filesystem only), else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def copy_folder(folder: os.PathLike | str, out: os.PathLike | str, max_depth: int = SEARCH_DEPTH) -> Path:
    """Copy (hardlink where possible) the official layout found in ``folder`` into ``out``; returns ``out``."""
    out = Path(out)
    root = find_data_root(folder, max_depth)
    if out.resolve() == root.resolve() or out.resolve() in root.resolve().parents:
        raise DataSourceError(f"{folder}: data.folder is the output folder {out} itself (or inside it); "
                              f"point it at a copy kept elsewhere")
    with _staging_folder(out) as staging:
        _link_or_copy(str(root / "norm.csv"), str(staging / "norm.csv"))
        for split in ("train", "test"):
            shutil.copytree(root / split, staging / split, copy_function=_link_or_copy)
    print(f"copied {root} into {out}")
    return out


# --------------------------------------------------------------------------- synthetic

def generate_synthetic(params: dict, out: os.PathLike | str) -> Path:
    """Generate synthetic scenes (``probav.data.synthetic.generate``) into ``out``; returns ``out``.

    Unlike the other sources this writes in place and resumes: an interrupted run's complete scenes are
    kept when they were made under the same settings (seed, simulator settings, code, libraries) and the
    rest is made again, so that the result is byte-identical to an uninterrupted run (dvc.yaml keeps
    ``data/raw`` with ``persist: true`` for this). Whatever ``out`` held before under other settings,
    or from another source, is deleted first."""
    from probav.data.synthetic import generate  # lazily: only this source needs the simulator

    out = Path(out)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise DataSourceError(f"{out}: not a folder; the synthetic source writes its scenes into a folder here "
                              f"(delete it, or point --out elsewhere)")
    generate(out, params, resume=True)
    missing = [name for name in LAYOUT if not (out / name).exists()]
    if missing:
        raise DataSourceError(f"probav.data.synthetic.generate did not write {', '.join(missing)} "
                              f"(expected the official layout under its root folder)")
    return out
