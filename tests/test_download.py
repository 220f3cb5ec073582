"""The download stage's sources: HTTP download (resume, retries, checksums) against a local server,
zips with and without a top folder, corrupt zips, unpacked folders and the synthetic generator."""
from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import sys
import threading
import time
import types
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from probav.data import download as download_module
from probav.data.check import check_scenes
from probav.data.download import (BadArchiveError, ChecksumError, DataSourceError, DownloadError, copy_folder,
                                  download_file, find_data_root, prepare_raw, unpack_archive)
from probav.scene import Scene, write_norm, write_scene

FAST = {"timeout": 5, "retries": 3, "backoff": 0.01}  # short backoff: tests must not sleep for seconds
LAYOUT = {"norm.csv", "train", "test"}


# --------------------------------------------------------------------------- a tiny fake archive

def fake_raw(root: Path) -> Path:
    """One train and one test scene of random uint16 frames in the official layout, with norm.csv."""
    rng = np.random.default_rng(0)
    for split, band, name in [("train", "RED", "imgset0000"), ("test", "NIR", "imgset1306")]:
        hr = (rng.integers(0, 1024, (384, 384)) * 16).astype(np.uint16) if split == "train" else None
        write_scene(Scene(name=name, band=band, split=split,
                          lr=(rng.integers(0, 1024, (9, 128, 128)) * 16).astype(np.uint16),
                          qm=rng.random((9, 128, 128)) > 0.1, hr=hr, sm=rng.random((384, 384)) > 0.05), root)
    write_norm(root / "norm.csv", {"imgset0000": 52.3, "imgset1306": 47.1})
    return root


@pytest.fixture(scope="module")
def fake_tree(tmp_path_factory) -> Path:
    return fake_raw(tmp_path_factory.mktemp("fake") / "probav_data")


def zip_tree(tree: Path, top: str = "", extra: dict[str, bytes] | None = None,
             compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """The tree as zip bytes, its entries below ``top`` (e.g. 'probav_data/' or '')."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for path in sorted(tree.rglob("*")):
            archive.write(path, top + path.relative_to(tree).as_posix())
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def payload(fake_tree: Path) -> bytes:
    return zip_tree(fake_tree, "probav_data/")


def same_tree(a: Path, b: Path) -> bool:
    files = lambda root: {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    return files(a) == files(b)


def leftovers(folder: Path) -> list[str]:
    """Temporary folders/files of an interrupted unpack or download."""
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name or ".old-" in p.name
                  or p.name.endswith((".part", ".tmp")))


# --------------------------------------------------------------------------- a local HTTP server

@dataclass
class Behaviour:
    """What the fake server does; ``requests`` collects the headers it received."""

    payload: bytes
    ranges: bool = True                 # honour Range (206) or ignore it (200, whole body)
    cut_first_at: int | None = None     # first response: close the connection after this many body bytes
    fail_status: int | None = None      # answer every request with this error status
    delay: float = 0.0                  # seconds before answering (to trigger client timeouts)
    content_type: str = "application/zip"
    requests: list = field(default_factory=list)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        behaviour: Behaviour = self.server.behaviour
        behaviour.requests.append(dict(self.headers))
        if behaviour.delay:
            time.sleep(behaviour.delay)
        if behaviour.fail_status:
            self.send_error(behaviour.fail_status)
            return
        body, start = behaviour.payload, 0
        if self.headers.get("Range") and behaviour.ranges:
            start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", behaviour.content_type)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        end = len(body)
        if len(behaviour.requests) == 1 and behaviour.cut_first_at is not None:
            end = behaviour.cut_first_at
            self.close_connection = True  # the client sees the connection end before Content-Length
        try:
            self.wfile.write(body[start:end])
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up early on purpose (a size check, a timeout)

    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    """``serve(behaviour) -> url`` on 127.0.0.1; every server stops at teardown, or after 30 s by itself."""
    servers = []

    def start(behaviour: Behaviour) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.behaviour = behaviour
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        stopper = threading.Timer(30, server.shutdown)
        stopper.daemon = True
        stopper.start()
        servers.append((server, stopper))
        return f"http://127.0.0.1:{server.server_port}/media/probav_data.zip"

    yield start
    for server, stopper in servers:
        stopper.cancel()
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------- download

def test_download_records_checksums_then_reuses_the_file(serve, payload: bytes, tmp_path: Path, capsys):
    behaviour = Behaviour(payload)
    url = serve(behaviour)
    dest = download_file(url, tmp_path / "probav_data.zip", **FAST)
    assert dest.read_bytes() == payload
    record = json.loads((tmp_path / "probav_data.zip.sha256.json").read_text())
    assert record["size"] == len(payload) and record["sha256"] == hashlib.sha256(payload).hexdigest()
    out = capsys.readouterr().out
    assert "Recorded" in out and f"sha256: {record['sha256']}" in out and "params.yaml" in out
    # a later run uses the cached, checked zip without asking the server again
    download_file(url, dest, **FAST)
    assert len(behaviour.requests) == 1 and "using the earlier download" in capsys.readouterr().out


def test_download_with_pinned_checksums(serve, payload: bytes, tmp_path: Path):
    url = serve(Behaviour(payload))
    dest = download_file(url, tmp_path / "z.zip", size=len(payload), sha256=hashlib.sha256(payload).hexdigest(), **FAST)
    assert dest.read_bytes() == payload
    assert not (tmp_path / "z.zip.sha256.json").exists()


def test_resume_after_a_cut_connection(serve, payload: bytes, tmp_path: Path):
    cut = len(payload) // 2
    behaviour = Behaviour(payload, cut_first_at=cut)
    dest = download_file(serve(behaviour), tmp_path / "probav_data.zip", **FAST)
    assert dest.read_bytes() == payload
    assert len(behaviour.requests) == 2
    assert "Range" not in behaviour.requests[0] and behaviour.requests[1]["Range"] == f"bytes={cut}-"
    assert leftovers(tmp_path) == []


def test_a_whole_partial_file_is_finished_without_downloading_again(serve, payload: bytes, tmp_path: Path):
    (tmp_path / "probav_data.zip.part").write_bytes(payload)  # a run killed between download and rename
    behaviour = Behaviour(payload)
    dest = download_file(serve(behaviour), tmp_path / "probav_data.zip", **FAST)
    assert dest.read_bytes() == payload and behaviour.requests[0]["Range"] == f"bytes={len(payload)}-"
    assert len(behaviour.requests) == 1 and leftovers(tmp_path) == []


def test_server_without_range_support_restarts_from_zero(serve, payload: bytes, tmp_path: Path):
    behaviour = Behaviour(payload, ranges=False, cut_first_at=len(payload) // 3)
    dest = download_file(serve(behaviour), tmp_path / "probav_data.zip", **FAST)
    assert dest.read_bytes() == payload
    assert "Range" in behaviour.requests[1]  # asked to resume, got the whole file (200) instead


def test_checksum_mismatch_leaves_nothing_behind(serve, payload: bytes, tmp_path: Path):
    cache = tmp_path / "interim"
    with pytest.raises(ChecksumError) as caught:
        download_file(serve(Behaviour(payload)), cache / "probav_data.zip", sha256="0" * 64, **FAST)
    message = str(caught.value)
    assert "sha256" in message and "deleted" in message and "data.sha256" in message
    assert list(cache.iterdir()) == []


def test_size_announced_by_the_server_is_checked_first(serve, payload: bytes, tmp_path: Path):
    with pytest.raises(ChecksumError, match=f"offers {len(payload)} bytes"):
        download_file(serve(Behaviour(payload)), tmp_path / "z.zip", size=len(payload) + 1, **FAST)
    assert list(tmp_path.iterdir()) == []


def test_a_web_page_instead_of_the_zip_is_rejected(serve, tmp_path: Path):
    page = b"<html><body>Please log in</body></html>"
    with pytest.raises(ChecksumError, match="did not send a zip"):
        download_file(serve(Behaviour(page, content_type="text/html")), tmp_path / "z.zip", **FAST)
    assert list(tmp_path.iterdir()) == []


def test_recorded_checksums_guard_later_downloads(serve, payload: bytes, tmp_path: Path):
    behaviour = Behaviour(payload)
    url = serve(behaviour)
    dest = download_file(url, tmp_path / "probav_data.zip", **FAST)
    dest.unlink()
    behaviour.payload = payload[:-1] + bytes([payload[-1] ^ 1])  # the file behind the same address changed
    with pytest.raises(ChecksumError, match="sha256.json"):
        download_file(url, dest, **FAST)
    assert not dest.exists() and leftovers(tmp_path) == []


def test_final_failure_says_how_to_supply_the_archive(serve, payload: bytes, tmp_path: Path):
    behaviour = Behaviour(payload, fail_status=503)
    with pytest.raises(DownloadError) as caught:
        download_file(serve(behaviour), tmp_path / "probav_data.zip", **FAST)
    message = str(caught.value)
    assert len(behaviour.requests) == 3 and "HTTP 503" in message
    assert "source: archive" in message and "archive: /path/to/probav_data.zip" in message
    assert "source: folder" in message


def test_missing_file_fails_without_retrying(serve, payload: bytes, tmp_path: Path):
    behaviour = Behaviour(payload, fail_status=404)
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(serve(behaviour), tmp_path / "probav_data.zip", **FAST)
    assert len(behaviour.requests) == 1


def test_silent_server_times_out(serve, payload: bytes, tmp_path: Path):
    behaviour = Behaviour(payload, delay=1.0)
    with pytest.raises(DownloadError, match="timed out"):
        download_file(serve(behaviour), tmp_path / "probav_data.zip", timeout=0.2, retries=2, backoff=0.01)
    assert len(behaviour.requests) == 2


def test_kelvins_source_downloads_and_unpacks(serve, payload: bytes, fake_tree: Path, tmp_path: Path):
    params = {"data": {"source": "kelvins", "url": serve(Behaviour(payload)), **FAST}}
    raw = prepare_raw(params, tmp_path / "data" / "raw", tmp_path / "data" / "interim")
    assert {p.name for p in raw.iterdir()} == LAYOUT and same_tree(raw, fake_tree)
    assert (tmp_path / "data" / "interim" / "probav_data.zip").read_bytes() == payload
    assert leftovers(tmp_path / "data") == []


# --------------------------------------------------------------------------- zips and folders

@pytest.mark.parametrize("top", ["", "probav_data/", "downloads/probav_data/"])
def test_zip_with_or_without_a_top_folder(fake_tree: Path, tmp_path: Path, top: str):
    zip_path = tmp_path / "probav_data.zip"
    junk = {"__MACOSX/._norm.csv": b"junk", f"{top}README.txt": b"not part of the layout"}
    zip_path.write_bytes(zip_tree(fake_tree, top, junk))
    raw = unpack_archive(zip_path, tmp_path / "data" / "raw")
    assert {p.name for p in raw.iterdir()} == LAYOUT
    assert same_tree(raw, fake_tree)
    assert leftovers(tmp_path / "data") == []


def test_unpacking_replaces_an_existing_output(fake_tree: Path, tmp_path: Path):
    zip_path = tmp_path / "probav_data.zip"
    zip_path.write_bytes(zip_tree(fake_tree))
    out = tmp_path / "raw"
    (out / "train").mkdir(parents=True)
    (out / "stale.txt").write_text("from an earlier run")
    unpack_archive(zip_path, out)
    assert same_tree(out, fake_tree) and leftovers(tmp_path) == []


def test_truncated_zip_is_a_clear_error(payload: bytes, tmp_path: Path):
    zip_path = tmp_path / "probav_data.zip"
    zip_path.write_bytes(payload[: len(payload) * 2 // 3])
    with pytest.raises(BadArchiveError, match="corrupt or truncated zip") as caught:
        unpack_archive(zip_path, tmp_path / "raw")
    assert str(zip_path) in str(caught.value)
    assert not (tmp_path / "raw").exists() and leftovers(tmp_path) == []


def test_corrupt_member_fails_its_crc_check(fake_tree: Path, tmp_path: Path):
    data = bytearray(zip_tree(fake_tree, "", compression=zipfile.ZIP_STORED))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("HR.png"))
    data[info.header_offset + 100 + info.file_size // 2] ^= 0xFF  # inside HR.png's stored bytes
    zip_path = tmp_path / "probav_data.zip"
    zip_path.write_bytes(bytes(data))
    with pytest.raises(BadArchiveError, match="CRC") as caught:
        unpack_archive(zip_path, tmp_path / "raw")
    assert str(zip_path) in str(caught.value) and "HR.png" in str(caught.value)
    assert not (tmp_path / "raw").exists() and leftovers(tmp_path) == []


def test_zip_without_the_layout(tmp_path: Path):
    zip_path = tmp_path / "other.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("photos/cat.png", b"meow")
    with pytest.raises(BadArchiveError, match="no folder holding norm.csv"):
        unpack_archive(zip_path, tmp_path / "raw")


def test_folder_source_links_or_copies(fake_tree: Path, tmp_path: Path, monkeypatch):
    raw = copy_folder(fake_tree.parent, tmp_path / "data" / "raw")  # the layout is one level down
    assert same_tree(raw, fake_tree)
    assert os.path.samefile(raw / "norm.csv", fake_tree / "norm.csv")  # same filesystem: hardlinked
    monkeypatch.setattr(download_module.os, "link", lambda *a: (_ for _ in ()).throw(OSError("cross-device")))
    copied = copy_folder(fake_tree, tmp_path / "copied")
    assert same_tree(copied, fake_tree) and not os.path.samefile(copied / "norm.csv", fake_tree / "norm.csv")


def test_folder_without_the_layout(tmp_path: Path):
    (tmp_path / "a" / "b" / "c").mkdir(parents=True)
    with pytest.raises(BadArchiveError, match="no folder holding norm.csv"):
        find_data_root(tmp_path)


def test_folder_source_on_the_real_sample(probav_mini: Path, tmp_path: Path):
    raw = prepare_raw({"data": {"source": "folder", "folder": str(probav_mini)}}, tmp_path / "raw")
    table = check_scenes(raw)
    assert len(table) == 3 and (table["status"] == "ok").all()


@pytest.mark.parametrize("source, key, problem", [("archive", None, "data.archive is not set"),
                                                  ("archive", "nowhere.zip", "not found"),
                                                  ("folder", None, "data.folder is not set"),
                                                  ("ftp", None, "expected one of")])
def test_unusable_source_settings(tmp_path: Path, source, key, problem):
    data = {"source": source, "archive": key and str(tmp_path / key), "folder": None}
    with pytest.raises(DataSourceError, match=problem):
        prepare_raw({"data": data}, tmp_path / "raw")


# --------------------------------------------------------------------------- synthetic source

def fake_synthetic_module(monkeypatch, generate) -> list:
    """Install a stand-in ``probav.data.synthetic`` whose ``generate`` records its calls."""
    calls = []
    module = types.ModuleType("probav.data.synthetic")

    def recording_generate(root, params, resume=False):
        calls.append((Path(root), resume))
        generate(Path(root), params)

    module.generate = recording_generate
    monkeypatch.setitem(sys.modules, "probav.data.synthetic", module)
    return calls


def test_synthetic_source_generates_in_place_resuming(monkeypatch, fake_tree: Path, tmp_path: Path):
    def generate(root: Path, params: dict):
        root.mkdir(parents=True, exist_ok=True)
        copy_folder(fake_tree, root / "tmp-copy")
        for name in LAYOUT:
            os.replace(root / "tmp-copy" / name, root / name)
        (root / "tmp-copy").rmdir()
        (root / "synthetic").mkdir()
        (root / "synthetic" / "truth.json").write_text(json.dumps({"seed": params["seed"]}))

    calls = fake_synthetic_module(monkeypatch, generate)
    out = tmp_path / "data" / "raw"
    prepare_raw({"seed": 7, "data": {"source": "synthetic"}}, out)
    assert calls == [(out, True)]  # in place, resuming: the simulator keeps or wipes what is there
    assert {p.name for p in out.iterdir()} == LAYOUT | {"synthetic"}
    assert json.loads((out / "synthetic" / "truth.json").read_text()) == {"seed": 7}
    assert leftovers(out.parent) == []


def test_failing_generator_is_reported_and_its_work_kept_for_the_next_run(monkeypatch, tmp_path: Path):
    def generate(root: Path, params: dict):
        (root / "train").mkdir(parents=True)
        raise RuntimeError("simulator crashed")

    fake_synthetic_module(monkeypatch, generate)
    with pytest.raises(RuntimeError, match="simulator crashed"):
        prepare_raw({"data": {"source": "synthetic"}}, tmp_path / "raw")
    assert (tmp_path / "raw" / "train").is_dir()


def test_synthetic_source_refuses_a_file_in_place_of_the_folder(tmp_path: Path):
    (tmp_path / "raw").write_text("not a folder")
    with pytest.raises(DataSourceError, match="not a folder"):
        prepare_raw({"data": {"source": "synthetic"}}, tmp_path / "raw")


# --------------------------------------------------------------------------- the stage script

def load_stage(repo_root: Path):
    spec = importlib.util.spec_from_file_location("download_stage", repo_root / "stages" / "download.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    return stage


def test_stage_writes_raw_and_index(repo_root: Path, fake_tree: Path, tmp_path: Path, capsys):
    zip_path = tmp_path / "probav_data.zip"
    zip_path.write_bytes(zip_tree(fake_tree, "probav_data/"))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"seed": 1, "data": {"source": "archive", "archive": str(zip_path)},
                                      "reference": {"labels": "none"}}))
    out, index = tmp_path / "data" / "raw", tmp_path / "data" / "scenes.csv"
    stage = load_stage(repo_root)
    assert stage.main(["--params", str(params), "--out", str(out), "--index", str(index),
                       "--cache", str(tmp_path / "data" / "interim")]) == 0
    table = pd.read_csv(index)
    assert list(table["path"]) == ["train/RED/imgset0000", "test/NIR/imgset1306"]
    assert (table["status"] == "ok").all()
    # a broken archive: exit status 1 and a message naming the file, no traceback
    zip_path.write_bytes(b"PK\x03\x04 truncated")
    assert stage.main(["--params", str(params), "--out", str(out), "--index", str(index)]) == 1
    assert str(zip_path) in capsys.readouterr().err
