"""Multi-worker training (``train.strategy: multi_worker``, probav.training): the cluster helpers and
the shard policy; what each worker's input is under FILE and DATA sharding (TensorFlow's own rebatch
and auto-shard rewrite, in one process); and, slow, two worker processes on loopback ports running
the train stage, against a single-worker run of the same global batch and steps."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import probav  # noqa: E402
from probav import training  # noqa: E402
from probav.data.pipeline import file_stream, training_dataset  # noqa: E402
from probav.data.tfrecords import shard_name, subset_files, write_scenes  # noqa: E402
from probav.scene import Scene  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from test_deep_models import synthetic_arrays  # noqa: E402

MODEL = "residual_multi"
TAG_BITS = 3  # the low bits of every HR value of a probe scene hold its number


def tagged_scene(tag: int, seed: int, frames: int = 4) -> Scene:
    """A small complete scene (128×128 LR, 384×384 HR, all clear) whose HR values all end in the
    bits of ``tag``: any training patch (crops, flips and rotations keep values) says its scene."""
    x, y = synthetic_arrays(1, frames=frames, patch=128, seed=seed, clouds=False)
    lr = np.clip(np.rint(x["lr"][0] * 65535), 0, 65535).astype(np.uint16)
    hr = np.clip(np.rint(y[0, ..., 0] * 65535), 0, 65535 - 8).astype(np.uint16)
    hr = (hr & ~np.uint16((1 << TAG_BITS) - 1)) | np.uint16(tag)
    return Scene(name=f"imgset{tag:04d}", band="RED", lr=lr, qm=np.ones(lr.shape, bool), hr=hr,
                 sm=np.ones(hr.shape, bool))


def write_records(root: Path, train_sizes: list[int], val: int = 0) -> Path:
    """Train files of ``train_sizes`` scenes (tagged 0, 1, … in order) and a val file of ``val`` scenes."""
    tag = 0
    for i, size in enumerate(train_sizes):
        scenes = [tagged_scene(tag + j, seed=100 + tag + j) for j in range(size)]
        write_scenes(scenes, root / shard_name("train", i, len(train_sizes)))
        tag += size
    if val:
        write_scenes([tagged_scene(j % 8, seed=500 + j) for j in range(val)], root / shard_name("val", 0, 1))
    return root


def tags(target) -> list[int]:
    """The scene number of each patch of a target batch (B, 3P, 3P, 2)."""
    values = np.rint(np.asarray(target)[..., 0].astype(np.float64) * 65535).astype(np.int64) & ((1 << TAG_BITS) - 1)
    per_patch = values.reshape(len(values), -1)
    assert (per_patch == per_patch[:, :1]).all(), "a patch mixes scenes"
    return per_patch[:, 0].tolist()


def probe_params(batch: int = 8) -> dict:
    return {"seed": 5, "input": {"frames": 4, "patch_size": 16, "batch_size": batch, "min_patch_clearance": 0.5,
                                 "patches_per_scene": 2, "shuffle_buffer": 4}}


def worker_batches(dataset, workers: int, index: int, steps: int) -> list[np.ndarray]:
    """The first ``steps`` batches worker ``index`` of ``workers`` (one replica each) trains on: what
    ``MultiWorkerMirroredStrategy.experimental_distribute_dataset`` builds on a worker (TensorFlow's
    input_lib: rebatch for the worker, then the auto-shard rewrite under the dataset's policy)."""
    from tensorflow.python.data.experimental.ops import distribute as tf_distribute
    from tensorflow.python.distribute import input_ops

    sizes = tf_distribute.batch_sizes_for_worker(tf_distribute.compute_batch_size(dataset), workers, 1, index)
    local = input_ops.auto_shard_dataset(dataset.rebatch(sizes), workers, index, workers)
    return [np.asarray(target) for _, target in local.take(steps)]


# ----------------------------------------------------------------------------- fast

def test_cluster_helpers_and_shard_policy():
    two = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}
    assert training.cluster_workers(two) == 2 and training.worker_index(two) == 1
    with_chief = {"cluster": {"chief": ["c:0"], "worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}
    assert training.cluster_workers(with_chief) == 3 and training.worker_index(with_chief) == 2
    assert training.worker_index({**with_chief, "task": {"type": "chief", "index": 0}}) == 0
    assert training.cluster_workers({}) == 1 and training.worker_index({}) == 0
    # FILE only where every worker gets files; DATA otherwise and for data given as a dataset.
    assert training.shard_policy(2, 2) == "FILE" and training.shard_policy(14, 4) == "FILE"
    assert training.shard_policy(1, 2) == "DATA" and training.shard_policy(None, 2) == "DATA"


def test_each_worker_gets_its_own_share_of_the_training_stream(tmp_path):
    """DATA (one file, two workers): each worker gets its half of every global batch of the one
    stream. FILE (two files of 3 and 1 scenes, like the default data's 64 + 8): each occurrence of a
    file in the reshuffled file stream goes to one worker, local batches are half the global batch,
    and over the rounds each worker reads every file (none is stuck on the short file)."""
    p = probe_params(batch=8)
    one = subset_files(write_records(tmp_path / "one", [4]), "train")
    two = subset_files(write_records(tmp_path / "two", [3, 1]), "train")
    assert training.shard_policy(len(one), 2) == "DATA" and training.shard_policy(len(two), 2) == "FILE"

    # A fresh dataset for every stream: the seeded shuffles reshuffle at each new iteration (the same
    # on every worker, which builds and iterates its datasets the same way).
    def data():
        return training.with_shard_policy(training_dataset(one, p, seed=3), "DATA")

    steps = 6
    whole = [np.asarray(t) for _, t in data().take(steps)]
    w0, w1 = (worker_batches(data(), 2, i, steps) for i in (0, 1))
    for k in range(steps):
        assert len(w0[k]) == len(w1[k]) == 4
        np.testing.assert_array_equal(np.concatenate([w0[k], w1[k]]), whole[k])

    rounds = 8
    names = [n.decode() for n in file_stream(two, seed=3).take(2 * rounds).as_numpy_iterator()]
    mine = [[n.decode() for n in file_stream(two, seed=3, shard=(2, i)).take(rounds).as_numpy_iterator()]
            for i in (0, 1)]
    assert mine[0] == names[0::2] and mine[1] == names[1::2]
    assert set(mine[0]) == set(mine[1]) == set(two)  # every worker reads both files over the rounds
    with pytest.raises(ValueError, match="at least as many files as workers"):
        file_stream(one, seed=3, shard=(2, 1))

    steps = 24

    def files(i):
        return training.with_shard_policy(training_dataset(two, p, seed=3, shard=(2, i)), "OFF")

    w0, w1 = (worker_batches(files(i), 2, i, steps) for i in (0, 1))
    assert all(len(b) == 4 for b in w0 + w1)
    assert not any(np.array_equal(a, b) for a in w0 for b in w1)
    seen0, seen1 = ({t for b in w for t in tags(b)} for w in (w0, w1))
    assert seen0 == seen1 == {0, 1, 2, 3}, (seen0, seen1)
    # tf.data's own FILE rewrite cannot shard this pipeline: hence the sharding in file_stream.
    with pytest.raises(tf.errors.NotFoundError, match="shardable source"):
        worker_batches(training.with_shard_policy(training_dataset(two, p, seed=3), "FILE"), 2, 0, 1)


# ----------------------------------------------------------------------------- two worker processes

def tsv_steps(path: Path) -> list[int]:
    return [int(line.split("\t")[0]) for line in path.read_text().strip().splitlines()[1:]]


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def stage_env(tmpdir: Path, tf_config: dict | None = None) -> dict:
    """The environment of a train stage process: this test's probav (the worktree's, not whatever the
    virtual environment installed), its own TMPDIR, no GPU."""
    src = str(Path(probav.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", "TMPDIR": str(tmpdir),
           "DVC_NO_ANALYTICS": "1"}
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    tmpdir.mkdir(parents=True, exist_ok=True)
    return env


def start_stage(run: Path, params: Path, records: Path, log: Path, env: dict) -> subprocess.Popen:
    run.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(REPO / "stages" / "train.py"), MODEL, "--params", str(params),
               "--tfrecords", str(records), "--out", f"models/{MODEL}", "--live", f"dvclive/{MODEL}"]
    # Output into files, not pipes: a worker blocked on a full pipe would stall the other one too.
    with open(log.with_suffix(".out"), "w") as out, open(log.with_suffix(".err"), "w") as err:
        return subprocess.Popen(command, cwd=run, env=env, stdout=out, stderr=err)


def finish(processes: list[subprocess.Popen], logs: list[Path], deadline: float) -> list[dict]:
    """Wait for the processes until ``deadline`` and return the summaries they printed; a failed or
    late one fails the test (``running`` kills what is left)."""
    for process, log in zip(processes, logs):
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            pytest.fail(f"{log.name} still running at the deadline:\n{log.with_suffix('.err').read_text()[-3000:]}")
        assert process.returncode == 0, f"{log.name} failed:\n{log.with_suffix('.err').read_text()[-3000:]}"
    summaries = []
    for log in logs:
        out = log.with_suffix(".out").read_text()
        summaries.append(json.loads(out[out.index("{"):]))  # the stage prints its summary as JSON
    return summaries


@contextlib.contextmanager
def running():
    """A list to put started processes in; whatever still runs at the end (a failure, a hung worker
    waiting for its peer) is killed, each by its own handle, so a hang fails the test, never CI."""
    processes: list[subprocess.Popen] = []
    try:
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)


# Tiny but real: 2 × 20 steps take the val cPSNR from the untrained network's 35.9 dB to about
# 36.6 dB; most of the run is start-up (imports, tracing), not steps.
EPOCHS, STEPS, BATCH = 2, 20, 8
# |val cPSNR of two workers − of one worker| at most this (dB). The two runs see different patches
# (each worker cuts its own from its own files), so they can match only as closely as single-worker
# runs of different seeds do: on these records, 5 seeds gave 36.56–36.67 dB (sd 0.045 dB); 0.2 dB is
# over 4 sd, and under a third of what training gains, which each run must show (> 2 × tolerance),
# so that a run that does not train (or diverges) cannot pass.
TOLERANCE_DB = 0.2


def stage_params(strategy: str, **train) -> dict:
    return {"seed": 7,
            "input": {"frames": 4, "patch_size": 16, "batch_size": BATCH, "eval_batch_size": 2,
                      "min_patch_clearance": 0.5, "patches_per_scene": 2, "shuffle_buffer": 4},
            "model": {"blocks": 1, "filters": 8},
            "train": {"strategy": strategy, "epochs": EPOCHS, "steps_per_epoch": STEPS, "learning_rate": 5e-3,
                      "patience": EPOCHS, "validation_scenes": 0, "verbose": 0, **train}}


@pytest.mark.slow
def test_two_workers_train_like_one(tmp_path):
    records = write_records(tmp_path / "tfrecords", [3, 2], val=4)
    params = {}
    for strategy in ("default", "multi_worker"):
        params[strategy] = tmp_path / f"params-{strategy}.yaml"
        params[strategy].write_text(json.dumps(stage_params(strategy)))  # JSON is YAML

    started = time.monotonic()
    deadline = started + 300
    cluster = {"worker": [f"localhost:{port}" for port in free_ports(2)]}
    logs = [tmp_path / "worker0", tmp_path / "worker1", tmp_path / "single"]
    with running() as processes:
        for i in range(2):
            config = {"cluster": cluster, "task": {"type": "worker", "index": i}}
            processes.append(start_stage(tmp_path / "two", params["multi_worker"], records, logs[i],
                                         stage_env(tmp_path / f"tmp{i}", config)))
        # The single-worker run alongside (the workers spend most of their time starting up).
        processes.append(start_stage(tmp_path / "one", params["default"], records, logs[2],
                                     stage_env(tmp_path / "tmp-single")))
        # Meanwhile, here: the untrained network's val cPSNR (learning rate 0: the weights stay).
        untrained = training.train(MODEL, stage_params("default", learning_rate=0.0, epochs=1, steps_per_epoch=1),
                                   tmp_path / "untrained", None, tfrecords=records)["best_val_cpsnr"]
        chief, other, single = finish(processes, logs, deadline)
    elapsed = time.monotonic() - started

    # Both workers took part: every step on each, two replicas in sync, the same weights at the end.
    for i, summary in enumerate((chief, other)):
        assert summary["worker"] == {"index": i, "workers": 2, "chief": i == 0, "steps": EPOCHS * STEPS,
                                     "shard_policy": {"train": "FILE", "val": "DATA"}}
        assert summary["replicas"] == 2 and summary["epochs_run"] == EPOCHS
    assert chief["weights_sha256"] == other["weights_sha256"]
    # The same normalisation everywhere (measured on the whole stream, not on a worker's files).
    assert chief["normalisation"] == other["normalisation"] == single["normalisation"]
    assert single["replicas"] == 1 and "worker" not in single

    # Only the chief wrote, into the real outputs; the other worker's temporary folders are gone.
    run = tmp_path / "two"
    assert sorted(p.name for p in run.iterdir()) == ["dvclive", "models"]
    assert sorted(p.name for p in (run / "models").iterdir()) == [MODEL]
    assert sorted(p.name for p in (run / "models" / MODEL).iterdir()) == ["network.keras", "settings.json",
                                                                          "training.json"]
    written = json.loads((run / "models" / MODEL / "training.json").read_text())
    assert written == chief and written["worker"]["chief"]
    assert sorted(p.name for p in (run / "dvclive").iterdir()) == [MODEL]
    assert tsv_steps(run / "dvclive" / MODEL / "plots" / "metrics" / "eval" / "cpsnr.tsv") == list(range(EPOCHS))
    assert not list((tmp_path / "tmp1").glob("probav-*")), "the non-chief's temporary folders were left behind"

    # It trained like one worker: same global batch and steps, val cPSNR within the tolerance, and
    # both far above the untrained network.
    two, one = chief["best_val_cpsnr"], single["best_val_cpsnr"]
    print(f"val cPSNR: untrained {untrained:.3f} dB, two workers {two:.3f} dB, one worker {one:.3f} dB, "
          f"gap {abs(two - one):.3f} dB (tolerance {TOLERANCE_DB}); {elapsed:.0f} s")
    assert min(two, one) - untrained > 2 * TOLERANCE_DB
    assert abs(two - one) <= TOLERANCE_DB
