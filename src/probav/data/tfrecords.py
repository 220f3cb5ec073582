"""Scenes as sharded, GZIP-compressed TFRecords (stage ``tfrecords``), and reading them back.

Files (``docs/architecture.md``): ``<out>/{train,val,dev,test}-SSSSS-of-NNNNN.tfrecord.gz`` with at most
``tfrecords.scenes_per_shard`` scenes each (no file for an empty subset), one ``tf.train.Example``
per scene:

- ``name``, ``band`` bytes; ``frames`` int64; ``norm`` float (float32; NaN when norm.csv lacks the
  scene); ``has_hr`` int64 (0/1)
- ``lr`` bytes: T×128×128 uint16 little-endian; ``qm`` bytes: T×128×128 uint8 0/1
- ``hr`` bytes: 384×384 uint16 little-endian (empty without HR), ``sm`` bytes: 384×384 uint8 0/1
  (empty without SM.png; official test scenes have an SM.png but no HR.png, and keep their SM)
- ``reference`` int64: index of the labelled reference frame (the HR's pass; -1 without a label);
  ``reference_probs`` bytes: T float32 little-endian, the reference estimator's probability of each
  frame (``probav.reference``; the estimator of the ``reference`` stage, else the hand-set rule)
- ``prior`` bytes: 384×384 uint16 little-endian, the prediction of the classical model named by
  ``tfrecords.prior`` (default ``shift_and_add``; empty when null) in the challenge track (on the
  estimated reference): the starting point that networks such as ``misr_net`` refine; ``prior_ref``
  the same in the ref track (on the labelled reference; empty without a label). Computed here, once
  per scene, because registering and fusing every frame (about 0.5 s a scene) is far too slow for
  the training input pipeline.

so the arrays are stored losslessly. ``<out>/meta.json`` holds the counts, shards, bands, frame
counts and bytes of each subset and statistics of the train subset for normalisation (mean/std of
the clear LR and HR values per band and overall, in [0, 1] units = uint16/65535). It depends only
on the data and the parameters (no timings, no absolute paths): the train stage fingerprints it.

Writing reads the PNGs (the cost) in a pool of worker processes (``tfrecords.workers``, spawned);
the main process serialises (deterministically: protobuf maps are otherwise serialised in a
varying order) and writes in a fixed order, so the output is byte-identical from run to run and
whatever the number of workers. Shard by shard, each under a temporary name renamed when complete and
recorded with its key in ``<out>/resume/``, so that an interrupted run resumes (``write_tfrecords``);
``meta.json`` is written last.
Scene order: dev and test as in ``scenes.csv``; train in a fixed pseudo-random order (a hash of the
scene name), so that every shard mixes the bands and the training pipeline's shuffle buffer can
stay small.

TensorFlow is imported only inside the functions that need it, so the worker processes (which only
read PNGs) start fast.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from probav.data.resume import code_fingerprint, digest, file_sha256, library_versions, read_json, write_json
from probav.scene import HR_SIZE, LR_SIZE, Scene, read_norm

SUBSETS = ("train", "val", "dev", "test")
COMPRESSION = "GZIP"
SUFFIX = ".tfrecord.gz"
META_FILE = "meta.json"
META_VERSION = 2
# Below this many scenes, starting worker processes (about 0.5 s each) costs more than it saves.
POOL_MIN_SCENES = 16
# zlib level of the GZIP compression. Level 1 makes files about 12% larger than the default level 6
# on real scenes but compresses about 10× faster; at level 6 compression, not reading PNGs, would
# be the cost of the build.
DEFAULT_LEVEL = 1
# Resuming: shards already written under the same key are kept (``write_tfrecords``).
RESUME_FORMAT = 1
RESUME_DIR = "resume"  # out/resume/<shard file>.json: a complete shard's key and what meta.json needs of it
FINGERPRINT_MODULES = ["probav.data.tfrecords", "probav.data.index", "probav.scene", "probav.png",
                       "probav.reference", "probav.registration", "probav.order_statistics", "probav.resample",
                       "probav.models.registry",
                       "probav.models.baseline", "probav.models.shift_and_add", "probav.metrics.score",
                       "probav.data.reference_labels"]
FINGERPRINT_LIBRARIES = ["tensorflow", "tensorflow-cpu", "protobuf", "numpy", "scipy", "scikit-image", "Pillow",
                         "pandas", "numba"]


def shard_name(subset: str, index: int, count: int) -> str:
    """``train-00003-of-00014.tfrecord.gz``."""
    return f"{subset}-{index:05d}-of-{count:05d}{SUFFIX}"


def subset_files(root: os.PathLike | str, subset: str) -> list[str]:
    """The shard files of one subset in a tfrecords folder, sorted."""
    return sorted(str(p) for p in Path(root).glob(f"{subset}-*-of-*{SUFFIX}"))


tfrecord_files = subset_files


# ----------------------------------------------------------------------------- records

def prior_model(params: dict | None):
    """The classical model named by ``tfrecords.prior`` (built from ``params``), or None."""
    name = ((params or {}).get("tfrecords") or {}).get("prior")
    if not name:
        return None
    from probav.models.registry import model_class

    cls = model_class(str(name))
    if cls.trainable:
        raise ValueError(f"tfrecords.prior must name a classical model (no training), got the trainable {name!r}")
    return cls(params)


def prior_spec(params: dict | None) -> dict | None:
    """What makes the prior: the model's name and the ``classical`` params group (stored in meta.json
    and with every network trained on it, so inference recomputes exactly the same prior)."""
    name = ((params or {}).get("tfrecords") or {}).get("prior")
    if not name:
        return None
    return {"model": str(name), "classical": dict((params or {}).get("classical") or {})}


def read_scene_arrays(raw_root: os.PathLike | str, path: str, norm: float | None,
                      prior: dict | None = None, reference: int | None = None,
                      estimator: dict | None = None) -> dict:
    """One scene read from its PNGs (in a worker process): the record's fields (with the reference
    estimator's probabilities and, given a ``prior_spec``, the priors of both tracks) and its sums of
    clear LR/HR values (exact integers: count, sum, sum of squares, uint16 units) for the statistics.
    ``reference``: the labelled reference frame's number; ``estimator``: a ``ReferenceEstimator.to_dict``."""
    from probav.data.index import read_indexed_scene

    scene = read_indexed_scene(raw_root, path, norm, reference)
    record = scene_record(scene, prior, estimator)
    clear_lr = scene.lr[scene.qm].astype(np.int64)
    record["lr_stats"] = (int(clear_lr.size), int(clear_lr.sum()), int(np.dot(clear_lr, clear_lr)))
    record["hr_stats"] = (0, 0, 0)
    if scene.has_hr:
        clear_hr = scene.hr[scene.sm].astype(np.int64)
        record["hr_stats"] = (int(clear_hr.size), int(clear_hr.sum()), int(np.dot(clear_hr, clear_hr)))
    return record


def prior_image(scene: Scene, prior: dict | None) -> np.ndarray | None:
    """The (384,384) uint16 prior of a scene for a ``prior_spec`` (None without one), on the reference
    the scene's ``reference_weights`` give (its track)."""
    if prior is None:
        return None
    model = prior_model({"tfrecords": {"prior": prior["model"]}, "classical": prior.get("classical") or {}})
    return model.predict(scene)


def _estimator(spec: dict | None):
    from probav.reference import ReferenceEstimator

    if spec is None:
        return ReferenceEstimator.rule()
    return ReferenceEstimator(spec["weights"], kind=spec.get("kind", "fitted"), info=spec.get("info"))


def scene_record(scene: Scene, prior: dict | None = None, estimator: dict | None = None) -> dict:
    """The fields of the example of an in-memory scene (arrays as little-endian bytes): the reference
    estimator's probabilities (``estimator``: a ``ReferenceEstimator.to_dict``, default the hand-set
    rule) and, given a ``prior_spec``, the priors of both tracks."""
    from probav.reference import reference_weights

    has_hr = scene.hr is not None
    probs = _estimator(estimator).probabilities(scene)
    priors = {"challenge": None, "ref": None}
    if prior is not None:
        scene.reference_weights = probs
        priors["challenge"] = prior_image(scene, prior)
        if scene.reference is not None:
            scene.reference_weights = reference_weights(scene, "ref")
            priors["ref"] = prior_image(scene, prior)
        scene.reference_weights = None

    def image(array):
        return b"" if array is None else np.ascontiguousarray(array, "<u2").tobytes()

    return {"name": scene.name, "band": scene.band, "frames": scene.frames,
            "norm": math.nan if scene.norm is None else float(scene.norm), "has_hr": has_hr,
            "lr": np.ascontiguousarray(scene.lr, "<u2").tobytes(),
            "qm": np.ascontiguousarray(scene.qm, np.uint8).tobytes(),
            "hr": image(scene.hr) if has_hr else b"",
            "sm": b"" if scene.sm is None else np.ascontiguousarray(scene.sm, np.uint8).tobytes(),
            "reference": -1 if scene.reference is None else int(scene.reference),
            "reference_probs": np.ascontiguousarray(probs, "<f4").tobytes(),
            "prior": image(priors["challenge"]), "prior_ref": image(priors["ref"])}


def serialize_record(record: dict) -> bytes:
    """The serialized ``tf.train.Example`` of a record (``scene_record`` / ``read_scene_arrays``)."""
    import tensorflow as tf

    def b(value: bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def i(value: int):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))

    features = {
        "name": b(record["name"].encode()), "band": b(record["band"].encode()),
        "frames": i(record["frames"]), "has_hr": i(bool(record["has_hr"])),
        "norm": tf.train.Feature(float_list=tf.train.FloatList(value=[float(record["norm"])])),
        "lr": b(record["lr"]), "qm": b(record["qm"]), "hr": b(record["hr"]), "sm": b(record["sm"]),
        "reference": i(record.get("reference", -1)), "reference_probs": b(record.get("reference_probs", b"")),
        "prior": b(record.get("prior", b"")), "prior_ref": b(record.get("prior_ref", b"")),
    }
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString(deterministic=True)


def serialize_scene(scene: Scene, prior: dict | None = None, estimator: dict | None = None) -> bytes:
    """One in-memory scene as a serialized ``tf.train.Example`` (with the priors of a ``prior_spec``)."""
    return serialize_record(scene_record(scene, prior, estimator))


def write_scenes(scenes: Iterable[Scene], path: os.PathLike | str, prior: dict | None = None,
                 estimator: dict | None = None) -> Path:
    """Write in-memory scenes into one GZIP TFRecord file (tests, small tools); ``prior`` a ``prior_spec``,
    ``estimator`` a ``ReferenceEstimator.to_dict`` (default: the hand-set rule)."""
    import tensorflow as tf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path), options=tf.io.TFRecordOptions(compression_type=COMPRESSION)) as writer:
        for scene in scenes:
            writer.write(serialize_scene(scene, prior, estimator))
    return path


# ----------------------------------------------------------------------------- the stage

def _train_order(name: str) -> bytes:
    return hashlib.sha256(f"tfrecords/{name}".encode()).digest()


def plan_subsets(scenes_csv: os.PathLike | str, split_csv: os.PathLike | str) -> dict:
    """``{subset: table}`` of the scenes to write, in writing order."""
    from probav.data.index import subset_table

    for path, what in ((scenes_csv, "scene index (run the download stage)"),
                       (split_csv, "train/dev split (run the split stage)")):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: {what} not found")
    tables = {}
    for subset in SUBSETS:
        table = subset_table(scenes_csv, split_csv, subset)
        if subset == "train":
            order = sorted(range(len(table)), key=lambda i: _train_order(str(table["name"].iloc[i])))
            table = table.iloc[order].reset_index(drop=True)
        tables[subset] = table
    return tables


def _settings(params: dict | None, workers: int | None) -> tuple[int, int, int]:
    group = (params or {}).get("tfrecords") or {}
    per_shard = int(group.get("scenes_per_shard", 64))
    if per_shard < 1:
        raise ValueError(f"tfrecords.scenes_per_shard must be at least 1, got {per_shard}")
    level = int(group.get("compression_level", DEFAULT_LEVEL))
    if not 0 <= level <= 9:
        raise ValueError(f"tfrecords.compression_level must be in 0…9, got {level}")
    if workers is None:
        workers = int(group.get("workers", 2))
    return per_shard, level, max(int(workers), 1)


def _process_pool(workers: int, scenes: int) -> ProcessPoolExecutor | None:
    """Worker processes reading PNGs ('spawn': the caller holds TensorFlow's threads), or None."""
    workers = min(workers, os.cpu_count() or 1, scenes)
    if workers <= 1 or scenes < POOL_MIN_SCENES:
        return None
    return ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))


class _Stats:
    """Exact sums of clear values per band: count, sum, sum of squares (uint16 units)."""

    def __init__(self):
        self.sums: dict[str, list[int]] = {}

    def add(self, band: str, stats: tuple[int, int, int]) -> None:
        acc = self.sums.setdefault(band, [0, 0, 0])
        for k in range(3):
            acc[k] += int(stats[k])

    def summary(self) -> dict:
        out, total = {}, [0, 0, 0]
        for band in sorted(self.sums):
            out[band] = _moments(*self.sums[band])
            total = [t + s for t, s in zip(total, self.sums[band])]
        out["all"] = _moments(*total)
        return out


def _moments(count: int, total: int, total_sq: int) -> dict:
    if count == 0:
        return {"pixels": 0, "mean": None, "std": None}
    mean = total / count
    var = max((total_sq - total * total / count) / count, 0.0)
    return {"pixels": int(count), "mean": mean / 65535.0, "std": math.sqrt(var) / 65535.0}


def _read_job(raw: Path, prior: dict | None, estimator: dict | None, job: tuple) -> dict:
    path, norm, reference = job
    return read_scene_arrays(raw, path, norm, prior=prior, reference=reference, estimator=estimator)


def _scene_digest(folder: Path) -> str:
    """sha256 over the names and contents of a scene folder's files: what a shard's records are read from."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        h.update(f"{path.name}\0{file_sha256(path)}\0".encode())
    return h.hexdigest()


def fingerprint_modules(prior: dict | None) -> list[str]:
    """The modules whose source decides a shard's bytes (their sha256 go into every shard's key): reading
    and serialising a scene, the reference estimator, and the prior model with what it uses."""
    modules = list(FINGERPRINT_MODULES)
    if prior is not None:
        from probav.models.registry import model_class

        module = model_class(prior["model"]).__module__
        if module not in modules:
            modules.append(module)
    return modules


def plan_shards(raw: Path, tables: dict, norms: dict, per_shard: int, base: dict) -> list[dict]:
    """Every shard to write, in order: ``subset``, ``file``, ``jobs`` (path, norm, label) and ``key``, the
    sha256 of everything its bytes depend on (``base``: format, code, libraries, compression, prior,
    estimator; its place; and each of its scenes' path, norm, label and file contents)."""
    shards = []
    for subset, table in tables.items():
        jobs = [(row.path, norms.get(row.name), _label(row)) for row in table.itertuples(index=False)]
        count = math.ceil(len(jobs) / per_shard)
        for index in range(count):
            part = jobs[index * per_shard:(index + 1) * per_shard]
            scenes = [{"path": path, "norm": norm, "reference": label, "files": _scene_digest(raw / path)}
                      for path, norm, label in part]
            key = digest({**base, "subset": subset, "index": index, "count": count, "scenes": scenes})
            shards.append({"subset": subset, "file": shard_name(subset, index, count), "jobs": part, "key": key})
    return shards


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _prepare_out(out: Path, shards: list[dict]) -> dict[str, dict]:
    """Keep in ``out`` only the shards of ``shards`` already complete under their key; returns their
    records by file name. meta.json (written last) and everything else go."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise FileExistsError(f"{out}: not a folder; the TFRecords are written into a folder here")
    out.mkdir(parents=True, exist_ok=True)
    _remove(out / META_FILE)
    _remove(out.parent / f".{out.name}.tmp")  # the temporary folder of an interrupted run of the older writer
    records = out / RESUME_DIR
    reused = {}
    for shard in shards:
        path, record_path = out / shard["file"], records / f"{shard['file']}.json"
        record = read_json(record_path)
        if (isinstance(record, dict) and record.get("key") == shard["key"] and path.is_file()
                and path.stat().st_size == record.get("bytes")):
            reused[shard["file"]] = record
        else:
            _remove(path)
            _remove(record_path)
    planned = {shard["file"] for shard in shards}
    for child in list(out.iterdir()):
        if child.name != RESUME_DIR and child.name not in planned:
            _remove(child)  # shards of another plan, partial shards, stray files
    for child in list(records.iterdir()) if records.is_dir() else []:
        if not (child.name.endswith(".json") and child.name[:-len(".json")] in planned):
            _remove(child)
    return reused


def write_tfrecords(raw: os.PathLike | str, scenes: os.PathLike | str, split: os.PathLike | str,
                    out: os.PathLike | str, params: dict | None = None, workers: int | None = None,
                    progress: bool = True, estimator: os.PathLike | str | None = None) -> dict:
    """Write the train, dev and test scenes of ``raw`` (index ``scenes``, split ``split``) as TFRecords
    into ``out``; returns the content of ``meta.json``.

    ``params``: group ``tfrecords`` (``scenes_per_shard``, ``compression_level``, ``workers``, ``prior``;
    the prior model reads its settings from group ``classical``);
    ``workers`` overrides the latter. With more than one worker and at least ``POOL_MIN_SCENES`` scenes, worker processes are
    spawned: a script calling this must do so under ``if __name__ == "__main__":``.
    ``estimator``: the reference estimator's JSON (the ``reference`` stage's; default the hand-set rule).

    Resumes: every shard is written under a temporary name, renamed when complete and recorded in
    ``out/resume/<shard>.json`` with its key (``plan_shards``: the sha256 of everything its bytes depend
    on, the contents of its scenes' files included). A shard already in ``out`` with its record and the
    same key is kept; every other file is deleted and the missing shards written, then ``meta.json``
    (last). The bytes are those of an uninterrupted run into an empty folder.
    """
    from probav.reference import load_estimator

    import tensorflow as tf
    from tqdm import tqdm

    raw, out = Path(raw), Path(out)
    per_shard, level, workers = _settings(params, workers)
    prior = prior_spec(params)
    prior_model(params)  # an unknown or trainable model fails now, not in a worker
    reference = load_estimator(estimator).to_dict()
    tables = plan_subsets(scenes, split)
    norms = read_norm(raw / "norm.csv")
    total = sum(len(t) for t in tables.values())
    if total == 0:
        raise ValueError(f"{scenes}: no usable scene to write")

    base = {"format": RESUME_FORMAT, "meta_version": META_VERSION, "compression": COMPRESSION,
            "compression_level": level, "prior": prior, "reference_estimator": reference,
            "code": code_fingerprint(fingerprint_modules(prior)), "libraries": library_versions(FINGERPRINT_LIBRARIES)}
    shards = plan_shards(raw, tables, norms, per_shard, base)
    done = _prepare_out(out, shards)
    todo = [shard for shard in shards if shard["file"] not in done]
    reused_scenes = sum(len(shard["jobs"]) for shard in shards if shard["file"] in done)

    options = tf.io.TFRecordOptions(compression_type=COMPRESSION, compression_level=level)
    jobs = [job for shard in todo for job in shard["jobs"]]
    pool = _process_pool(workers, len(jobs))
    started = time.perf_counter()
    try:
        desc = "writing TFRecords" + (f" (with {prior['model']} priors)" if prior else "")
        if done:
            desc += f" ({len(done)} of {len(shards)} shards reused)"
        with tqdm(total=total, initial=reused_scenes, desc=desc, unit="scene", mininterval=0.5,
                  disable=not progress) as bar:
            read = partial(_read_job, raw, prior, reference)
            records = iter(pool.map(read, jobs, chunksize=2) if pool else map(read, jobs))
            for shard in todo:
                done[shard["file"]] = _write_shard(out, shard, records, options, bar)
    finally:
        if pool:
            pool.shutdown(wait=True, cancel_futures=True)

    meta = {"version": META_VERSION, "compression": COMPRESSION, "compression_level": level,
            "scenes_per_shard": per_shard,
            "example": {"name": "bytes", "band": "bytes", "frames": "int64", "norm": "float (NaN when unknown)",
                        "has_hr": "int64 0/1", "lr": "T*128*128 uint16 little-endian", "qm": "T*128*128 uint8 0/1",
                        "hr": "384*384 uint16 little-endian, empty without HR", "sm": "384*384 uint8 0/1, empty without SM",
                        "reference": "int64 index of the labelled reference frame, -1 without a label",
                        "reference_probs": "T float32 little-endian, the reference estimator's probabilities",
                        "prior": "384*384 uint16 little-endian, the prior model's prediction on the estimated "
                                 "reference (challenge track), empty without one",
                        "prior_ref": "384*384 uint16 little-endian, the same on the labelled reference (ref "
                                     "track), empty without a prior or a label"},
            "prior": prior, "reference_estimator": reference, "subsets": {}}
    lr_stats, hr_stats = _Stats(), _Stats()
    for subset in tables:
        mine = [done[shard["file"]] for shard in shards if shard["subset"] == subset]
        frames = [f for record in mine for f in record["frames"]]
        bands: dict[str, int] = {}
        for record in mine:
            for band, n in record["bands"].items():
                bands[band] = bands.get(band, 0) + n
            if subset == "train":
                for band, sums in record["lr_stats"].items():
                    lr_stats.add(band, sums)
                for band, sums in record["hr_stats"].items():
                    hr_stats.add(band, sums)
        meta["subsets"][subset] = {
            "scenes": len(frames), "shards": len(mine), "files": [record["file"] for record in mine],
            "bytes": int(sum(record["bytes"] for record in mine)),
            "uncompressed_bytes": int(sum(record["uncompressed_bytes"] for record in mine)),
            "bands": dict(sorted(bands.items())),
            "frames": ({"min": int(min(frames)), "mean": float(np.mean(frames)), "max": int(max(frames))}
                       if frames else None)}
    written = sum(s["bytes"] for s in meta["subsets"].values())
    meta["scenes"] = total
    meta["bytes"] = int(written)
    meta["bytes_per_scene"] = written / total
    meta["statistics"] = {"subset": "train", "units": "[0,1] = uint16/65535; clear pixels only (QM, SM true)",
                          "lr": lr_stats.summary(), "hr": hr_stats.summary()}
    tmp = out / f".{META_FILE}.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, out / META_FILE)
    elapsed = time.perf_counter() - started
    if progress:
        counts = ", ".join(f"{s} {meta['subsets'][s]['scenes']}" for s in SUBSETS)
        reused = f"; {reused_scenes} scenes in {len(shards) - len(todo)} shards reused" if reused_scenes else ""
        print(f"wrote {total} scenes ({counts}) to {out}: {written / 2**20:.1f} MiB, "
              f"{written / total / 2**20:.2f} MiB/scene, {(total - reused_scenes) / max(elapsed, 1e-9):.1f} "
              f"scenes/s{reused}")
    return meta


def _write_shard(out: Path, shard: dict, records: Iterator[dict], options, bar) -> dict:
    """Write one shard from the next ``len(shard['jobs'])`` records under a temporary name, rename it, then
    write its record (the mark of a complete shard); returns the record."""
    import tensorflow as tf

    tmp = out / f".{shard['file']}.partial"
    frames, bands, raw_bytes = [], {}, 0
    lr_stats: dict[str, list[int]] = {}
    hr_stats: dict[str, list[int]] = {}
    try:
        with tf.io.TFRecordWriter(str(tmp), options=options) as writer:
            for _ in shard["jobs"]:
                record = next(records)
                serialized = serialize_record(record)
                writer.write(serialized)
                raw_bytes += len(serialized)
                frames.append(int(record["frames"]))
                bands[record["band"]] = bands.get(record["band"], 0) + 1
                for sums, stats in ((lr_stats, record["lr_stats"]), (hr_stats, record["hr_stats"])):
                    acc = sums.setdefault(record["band"], [0, 0, 0])
                    for k in range(3):
                        acc[k] += int(stats[k])
                bar.update()
        os.replace(tmp, out / shard["file"])
    except BaseException:
        _remove(tmp)
        raise
    record = {"key": shard["key"], "file": shard["file"], "bytes": (out / shard["file"]).stat().st_size,
              "frames": frames, "bands": dict(sorted(bands.items())), "uncompressed_bytes": raw_bytes,
              "lr_stats": lr_stats, "hr_stats": hr_stats}
    write_json(record, out / RESUME_DIR / f"{shard['file']}.json")
    return record


def _label(row) -> int | None:
    """The labelled reference frame number of an index row (None without one)."""
    import pandas as pd

    value = getattr(row, "reference", None)
    return None if value is None or pd.isna(value) else int(value)


def build_tfrecords(raw: os.PathLike | str, scenes_csv: os.PathLike | str, split_csv: os.PathLike | str,
                    out: os.PathLike | str, scenes_per_shard: int = 64, workers: int = 2,
                    progress: bool = True) -> dict:
    """``write_tfrecords`` with the settings given directly rather than as params."""
    return write_tfrecords(raw, scenes_csv, split_csv, out, {"tfrecords": {"scenes_per_shard": scenes_per_shard}},
                           workers=workers, progress=progress)


def read_meta(root: os.PathLike | str) -> dict:
    """``meta.json`` of a tfrecords folder."""
    path = Path(root) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (run the tfrecords stage)")
    return json.loads(path.read_text())


# ----------------------------------------------------------------------------- reading

_FEATURES: dict | None = None


def feature_spec() -> dict:
    """The ``tf.io.parse_single_example`` spec of the example."""
    import tensorflow as tf

    global _FEATURES
    if _FEATURES is None:
        _FEATURES = {
            "name": tf.io.FixedLenFeature([], tf.string), "band": tf.io.FixedLenFeature([], tf.string),
            "frames": tf.io.FixedLenFeature([], tf.int64), "norm": tf.io.FixedLenFeature([], tf.float32),
            "has_hr": tf.io.FixedLenFeature([], tf.int64),
            "lr": tf.io.FixedLenFeature([], tf.string), "qm": tf.io.FixedLenFeature([], tf.string),
            "hr": tf.io.FixedLenFeature([], tf.string), "sm": tf.io.FixedLenFeature([], tf.string),
            # Absent from records written before priors or references existed: read as "none".
            "prior": tf.io.FixedLenFeature([], tf.string, default_value=""),
            "prior_ref": tf.io.FixedLenFeature([], tf.string, default_value=""),
            "reference": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
            "reference_probs": tf.io.FixedLenFeature([], tf.string, default_value=""),
        }
    return _FEATURES


def parse_example(serialized) -> dict:
    """One serialized example → tensors: ``lr`` (T,128,128) uint16, ``qm`` (T,128,128) bool, ``hr``
    (384,384) uint16 and ``sm`` (384,384) bool (zeros / all false where the scene has none), ``name``,
    ``band`` (string), ``frames`` int32, ``norm`` float32 (NaN when unknown), ``has_hr`` bool and
    ``has_sm`` bool (test scenes may have an SM without HR; ``sm`` is all false without one), ``prior``
    and ``prior_ref`` (384,384) uint16 (zeros without one) with ``has_prior`` and ``has_prior_ref`` bool,
    ``reference`` int32 (-1 without a label) and ``reference_probs`` (T,) float32.
    Works eagerly and inside ``Dataset.map``."""
    import tensorflow as tf

    ex = tf.io.parse_single_example(serialized, feature_spec())
    frames = tf.cast(ex["frames"], tf.int32)
    lr = tf.reshape(tf.io.decode_raw(ex["lr"], tf.uint16, little_endian=True), [frames, LR_SIZE, LR_SIZE])
    qm = tf.reshape(tf.io.decode_raw(ex["qm"], tf.uint8), [frames, LR_SIZE, LR_SIZE]) > 0
    hr_raw = tf.io.decode_raw(ex["hr"], tf.uint16, little_endian=True)
    sm_raw = tf.io.decode_raw(ex["sm"], tf.uint8)
    # Without HR the vectors are empty: padded with zeros to the full size, so every example has one shape.
    hr = tf.reshape(tf.pad(hr_raw, [[0, HR_SIZE * HR_SIZE - tf.size(hr_raw)]]), [HR_SIZE, HR_SIZE])
    sm = tf.reshape(tf.pad(sm_raw, [[0, HR_SIZE * HR_SIZE - tf.size(sm_raw)]]), [HR_SIZE, HR_SIZE]) > 0
    priors = {}
    for key in ("prior", "prior_ref"):
        raw = tf.io.decode_raw(ex[key], tf.uint16, little_endian=True)
        priors[key] = tf.reshape(tf.pad(raw, [[0, HR_SIZE * HR_SIZE - tf.size(raw)]]), [HR_SIZE, HR_SIZE])
        priors[f"has_{key}"] = tf.size(raw) > 0
    probs = tf.io.decode_raw(ex["reference_probs"], tf.float32, little_endian=True)
    # Without the estimator's probabilities (older records): every frame alike.
    probs = tf.cond(tf.size(probs) > 0, lambda: probs,
                    lambda: tf.fill([frames], 1.0 / tf.cast(tf.maximum(frames, 1), tf.float32)))
    return {"name": ex["name"], "band": ex["band"], "frames": frames, "norm": ex["norm"],
            "has_hr": ex["has_hr"] > 0, "has_sm": tf.size(sm_raw) > 0, "lr": lr, "qm": qm, "hr": hr, "sm": sm,
            "reference": tf.cast(ex["reference"], tf.int32), "reference_probs": tf.reshape(probs, [frames]),
            **priors}


def record_dataset(files, num_parallel_reads: int | None = None):
    """A ``tf.data.TFRecordDataset`` of the (GZIP) files: serialized examples in file order."""
    import tensorflow as tf

    files = [str(f) for f in ([files] if isinstance(files, (str, os.PathLike)) else files)]
    return tf.data.TFRecordDataset(files, compression_type=COMPRESSION, num_parallel_reads=num_parallel_reads)


def read_scenes(files) -> Iterator[Scene]:
    """The scenes of TFRecord files as numpy ``Scene`` objects, in file order (round-trip checks, tools).
    ``split`` is ``test`` for files named ``test-…``, else ``train``; ``extra["subset"]`` is the prefix,
    ``extra["prior"]``/``extra["prior_ref"]`` the prior images where the record has them,
    ``extra["reference_probs"]`` the estimator's probabilities."""
    files = [files] if isinstance(files, (str, os.PathLike)) else list(files)
    for file in files:
        prefix = Path(file).name.split("-")[0]
        for ex in record_dataset([file]).map(parse_example).as_numpy_iterator():
            has_hr = bool(ex["has_hr"])
            norm = float(ex["norm"])
            reference = int(ex["reference"])
            yield Scene(name=ex["name"].decode(), band=ex["band"].decode(), lr=ex["lr"], qm=ex["qm"],
                        hr=ex["hr"] if has_hr else None, sm=ex["sm"] if ex["has_sm"] else None,
                        norm=None if math.isnan(norm) else norm, split="test" if prefix == "test" else "train",
                        reference=None if reference < 0 else reference,
                        extra={"subset": prefix, "reference_probs": ex["reference_probs"],
                               **({"prior": ex["prior"]} if ex["has_prior"] else {}),
                               **({"prior_ref": ex["prior_ref"]} if ex["has_prior_ref"] else {})})
