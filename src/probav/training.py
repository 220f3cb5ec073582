"""Training of the deep models (``probav.models.deep.DeepModel``): ``train(name, params, …)``.

What one run does, in order:

1. Distribution strategy from ``train.strategy``: ``default`` (the default device),
   ``mirrored`` (``tf.distribute.MirroredStrategy`` over ``train.devices``, default all local
   GPUs, or the CPU), ``multi_worker`` (``MultiWorkerMirroredStrategy``, cluster from ``TF_CONFIG``,
   below). ``input.batch_size`` is the global batch (summed over all replicas of all workers), and
   the validation batch ``input.eval_batch_size`` is rounded up to a multiple of the replicas.
2. Seeds: ``keras.utils.set_random_seed(derive_seed(params, "train", name))``; the training
   dataset gets its own derived seed.
3. Data: the pipeline's ``training_dataset`` (patches, repeated) and ``evaluation_dataset`` (full
   128×128 val scenes: the split's ``val`` subset, never the dev scenes whose scores are reported,
   so that choosing the best epoch does not choose on them; ``train.validation_scenes`` > 0 keeps
   only the first N, to bound the time of a validation). The network gets the
   inputs it declares; one that takes the classical ``prior`` needs TFRecords built with
   ``tfrecords.prior`` and saves how that prior was made (meta.json's ``prior``) with the model.
4. Normalisation: mean/std of the clear LR values of the train scenes (the tfrecords' meta.json
   statistics; without them, of ``train.stats_batches`` training batches), given to the model
   (``DeepModel.set_normalisation``) and stored with it.
5. Loss ``train.loss`` (``l1`` | ``mse``, shift-aware and bias-corrected: ``probav.losses``),
   Adam with ``train.learning_rate`` and schedule ``train.schedule`` (``cosine`` decay to
   ``train.min_learning_rate_factor``× over all steps, or ``constant``); metric: cPSNR
   (``probav.metrics.tf_score.CPSNR``), so the logs hold ``loss``, ``cpsnr`` (patches),
   ``val_loss`` and ``val_cpsnr`` (the val cPSNR), plus ``learning_rate``.
6. ``train.epochs`` epochs of ``train.steps_per_epoch`` steps; after each one a checkpoint
   (training model weights with optimizer state, best weights so far, state JSON) is written
   into a fresh folder that is then renamed into place and pointed to by ``latest`` (replaced
   atomically), so an interruption at any moment leaves the previous checkpoint usable. A later
   run with the same settings (``fingerprint``: seed, input, model, train, model name and the
   data's meta.json) resumes from it: weights, optimizer, learning-rate schedule position,
   early-stopping state and the epoch count (``initial_epoch``, DVCLive resumed at that step).
   A checkpoint of other settings is ignored (and replaced).
7. Early stopping on ``val_cpsnr`` (``train.patience`` epochs without a gain of
   ``train.min_delta`` dB); the best epoch's weights are restored at the end.
8. DVCLive (``dvclive.keras.DVCLiveCallback(live=Live(dir, dvcyaml=False))``) logs every epoch.
9. The final model (``DeepModel.save``) and ``training.json`` (parameters, training seconds,
   epochs run, best epoch, best val cPSNR, normalisation, sha256 of the weights, ...) are written
   into a temporary folder renamed to ``out_dir``; the checkpoints are then deleted.

Per-model overrides: any ``train:`` key can be set for one model under ``train.<model name>:``
(e.g. ``train: {misr_net: {steps_per_epoch: 20}}``).

Multi-worker training (``train.strategy: multi_worker``; README, "Training on several machines").
Every worker runs the same command with the same params and TFRecords, and its own ``TF_CONFIG``
(``{"cluster": {"worker": ["host0:port", "host1:port"]}, "task": {"type": "worker", "index": i}}``);
worker 0 (or a ``chief`` task) is the chief. The strategy is created first, before any other
TensorFlow op (it configures the collectives of the process), with RING all-reduce on CPUs (AUTO,
i.e. NCCL, where GPUs are visible). Every worker computes the same thing (same seeds, same global
batch, same steps, same early-stopping decisions from globally reduced metrics) and writes the
same things, the standard ``tf.distribute`` pattern (a save may take part in collectives, so all
must save): the chief into ``out_dir``, the DVCLive folder and the checkpoint folder, every other
worker into temporary folders of its own, deleted at the end. Only the chief's outputs exist.
``training.json`` (and the stage's stdout) gets a ``worker`` entry: index, workers, chief, the steps
this worker ran and the shard policies. A restarted run resumes only where every worker finds a
checkpoint of the same epoch (the chief's in the checkpoint folder, another worker's in its temporary
folder, named after the run's fingerprint so that a restart finds it again), else all start afresh:
workers resuming from different epochs would run different steps and wait on each other forever.

Sharding (``shard_policy``; the ``tf.data`` auto-shard policy is always set explicitly, never left
to AUTO; each worker's batches are ``input.batch_size`` / workers elements):

- training data by ``FILE`` when there are at least as many ``train-*.tfrecord.gz`` files as
  workers, else by ``DATA``. ``FILE``: every worker opens only its share of the files, so no worker
  decompresses and parses a scene that another one uses (the input pipeline's cost). The pipeline
  shards its own stream of file names (``pipeline.file_stream``: seeded, reshuffled every round,
  repeated, the same on every worker; worker i takes the occurrences i, i+W, i+2W, …) and the
  dataset's policy is ``OFF``: tf.data's own ``FILE`` rewrite fails on this pipeline ("did not find
  a shardable source": its walk back to the reader stops at the pipeline's ``scan``, the watchdog
  on rejected patches), and a fixed split of the files would be unfair to our layout, 64 scenes a file
  (``tfrecords.scenes_per_shard``) with a short last one (the default data: 64 + 8 train scenes):
  one worker would cut all its patches from 8 scenes. Sharding the reshuffled stream, every worker
  reads every file over the rounds. Each worker draws its patches with seeds of its own.
  ``DATA`` (fewer files than workers, or data given as a dataset): every worker runs the whole
  pipeline, identically seeded, and keeps its own part of each global batch (policy ``DATA``);
  correct, but every worker decodes every scene.
- validation data: always ``DATA``, so that the first ``train.validation_scenes`` val scenes of the
  one stream are validated once, split between the workers (by file, it would be the first N of
  each worker's files); a worker with no scene left in the last step gets an empty batch.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterable

import keras
import numpy as np

log = logging.getLogger(__name__)

TRAIN_DEFAULTS = {
    "strategy": "default",         # default | mirrored | multi_worker
    "devices": None,               # mirrored: device names (default: all local GPUs, else the CPU)
    "loss": "l1",                  # l1 | mse (shift-aware, bias-corrected, clear pixels)
    "epochs": 6,
    "steps_per_epoch": 30,
    "learning_rate": 1.0e-3,
    "schedule": "cosine",          # cosine | constant
    "min_learning_rate_factor": 0.1,
    "patience": 3,                 # early stopping: epochs without val cPSNR gain
    "min_delta": 0.0,              # dB
    "validation_scenes": 32,       # val scenes validated each epoch (0 = all)
    "stats_batches": 8,            # training batches measured for the normalisation
    "verbose": 2,                  # Keras fit verbosity
}
# Keys that do not change what is computed: a checkpoint stays valid when they change.
_NOT_FINGERPRINTED = ("strategy", "devices", "verbose")
CHECKPOINTS = "checkpoints"
LATEST = "latest"
STATE_FILE = "state.json"
WEIGHTS_FILE = "latest.weights.h5"
BEST_FILE = "best.weights.h5"
TRAINING_JSON = "training.json"


# ----------------------------------------------------------------------------- settings

def train_settings(params: dict, name: str | None = None) -> dict:
    """``train:`` with defaults filled in and the per-model overrides (``train.<name>:``) applied."""
    group = dict(params.get("train") or {})
    merged = {**TRAIN_DEFAULTS, **{k: v for k, v in group.items() if k in TRAIN_DEFAULTS}}
    if name is not None and isinstance(group.get(name), dict):
        merged.update(group[name])
    unknown = set(merged) - set(TRAIN_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown train settings {sorted(unknown)}; known: {sorted(TRAIN_DEFAULTS)}")
    if merged["loss"] not in ("l1", "mse"):
        raise ValueError(f"train.loss must be l1 or mse, got {merged['loss']!r}")
    if merged["schedule"] not in ("cosine", "constant"):
        raise ValueError(f"train.schedule must be cosine or constant, got {merged['schedule']!r}")
    for key in ("epochs", "steps_per_epoch"):
        if int(merged[key]) < 1:
            raise ValueError(f"train.{key} must be at least 1, got {merged[key]}")
    return merged


def fingerprint(params: dict, name: str, settings: dict, data_meta: str = "") -> str:
    """Hash of everything that determines the training: a checkpoint resumes only under the same one."""
    key = {
        "name": name,
        "seed": params.get("seed"),
        "input": params.get("input"),
        "model": params.get("model"),
        "train": {k: v for k, v in settings.items() if k not in _NOT_FINGERPRINTED},
        "data": data_meta,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- strategy

def tf_config() -> dict:
    raw = os.environ.get("TF_CONFIG", "")
    return json.loads(raw) if raw.strip() else {}


def is_chief() -> bool:
    """True unless TF_CONFIG names this process a non-chief worker (worker 0 is chief without a chief)."""
    config = tf_config()
    task = config.get("task") or {}
    kind, index = task.get("type"), int(task.get("index", 0) or 0)
    if kind is None:
        return True
    if kind == "chief":
        return True
    return kind == "worker" and index == 0 and "chief" not in (config.get("cluster") or {})


def cluster_workers(config: dict | None = None) -> int:
    """Number of workers of the ``TF_CONFIG`` cluster (its chief and workers; 1 without one)."""
    cluster = (tf_config() if config is None else config).get("cluster") or {}
    return max(len(cluster.get("chief") or []) + len(cluster.get("worker") or []), 1)


def worker_index(config: dict | None = None) -> int:
    """This process's number among the cluster's workers as ``tf.distribute`` counts them (the input
    pipeline id): the chief 0, then the workers in order; 0 without ``TF_CONFIG``."""
    config = tf_config() if config is None else config
    task = config.get("task") or {}
    kind, index = task.get("type"), int(task.get("index", 0) or 0)
    if kind == "worker" and "chief" in (config.get("cluster") or {}):
        return index + 1
    return index if kind == "worker" else 0


def shard_policy(files: int | None, workers: int) -> str:
    """How multi-worker training shards the training data (``AutoShardPolicy`` name): ``FILE`` when
    there are at least as many TFRecord files as workers, else ``DATA`` (module docstring; ``files``
    None: data given as a dataset)."""
    return "FILE" if files is not None and int(files) >= int(workers) else "DATA"


def with_shard_policy(dataset, policy: str):
    """``dataset`` with an explicit ``auto_shard_policy`` (``FILE``, ``DATA`` or ``OFF``)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = getattr(tf.data.experimental.AutoShardPolicy, policy)
    return dataset.with_options(options)


def make_strategy(settings: dict):
    """The ``tf.distribute`` strategy named by ``train.strategy`` (create it before any other
    TensorFlow op: a multi-worker strategy configures the process's collectives)."""
    import tensorflow as tf

    kind = settings.get("strategy", "default")
    if kind == "default":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        devices = settings.get("devices")
        if not devices:
            gpus = tf.config.list_logical_devices("GPU")
            devices = [d.name for d in gpus] or ["/cpu:0"]
        return tf.distribute.MirroredStrategy(devices=list(devices))
    if kind == "multi_worker":
        if not tf_config():
            log.warning("train.strategy=multi_worker without TF_CONFIG: training as a single worker")
        kinds = tf.distribute.experimental.CommunicationImplementation
        # RING all-reduce between CPUs; AUTO picks NCCL where there are GPUs.
        implementation = kinds.AUTO if tf.config.list_physical_devices("GPU") else kinds.RING
        return tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(implementation=implementation))
    raise ValueError(f"train.strategy must be default, mirrored or multi_worker, got {kind!r}")


def agreed_epochs(strategy, epoch: int) -> bool:
    """Whether every worker of ``strategy`` holds a checkpoint of the same ``epoch`` (-1: none); a
    collective, so every worker must call it. Workers that resumed from different epochs would run
    different numbers of steps and wait for each other forever."""
    import tensorflow as tf

    @tf.function
    def gather():
        return strategy.gather(strategy.run(lambda: tf.constant([float(epoch)], tf.float32)), axis=0)

    epochs = np.asarray(gather())
    return bool(np.all(epochs == epochs[0]))


# ----------------------------------------------------------------------------- data

def data_meta(tfrecords: os.PathLike | str | None) -> str:
    if tfrecords is None:
        return ""
    meta = Path(tfrecords) / "meta.json"
    return meta.read_text() if meta.is_file() else ""


def pipeline_datasets(tfrecords: os.PathLike | str, params: dict, seed: int, shard: tuple[int, int] | None = None):
    """Training and validation datasets of the pipeline (the split's ``train`` and ``val`` subsets; the
    validation one None when there are no val records: early stopping then watches the training cPSNR);
    ``shard`` = (workers, index): the training files sharded by file (``training_dataset``)."""
    from probav.data.pipeline import evaluation_dataset, training_dataset
    from probav.data.tfrecords import subset_files

    train_files = subset_files(tfrecords, "train")
    if not train_files:
        raise FileNotFoundError(f"{tfrecords}: no train-*.tfrecord.gz files (run `dvc repro tfrecords`)")
    val_files = subset_files(tfrecords, "val")
    train_ds = training_dataset(train_files, params, seed, shard)
    val_ds = evaluation_dataset(val_files, params) if val_files else None
    return train_ds, val_ds


def require_prior(name: str, tfrecords: os.PathLike | str | None, train_data) -> dict | None:
    """How the TFRecords' priors were made (their meta.json), for a network that takes a prior; an
    error that says what to do when they have none. Data given directly (no ``tfrecords``) must hold
    ``prior`` itself; its spec is then unknown (None)."""
    if tfrecords is None:
        if "prior" not in train_data.element_spec[0]:
            raise ValueError(f"{name} takes a prior input: the training data must hold 'prior'")
        return None
    meta = Path(tfrecords) / "meta.json"
    spec = json.loads(meta.read_text()).get("prior") if meta.is_file() else None
    if not spec:
        raise ValueError(f"{name} takes a classical prior, but the TFRecords in {tfrecords} have none: set "
                         f"tfrecords.prior (e.g. shift_and_add) and rebuild them (`dvc repro tfrecords`), or "
                         f"train it without one (model.misr_base: median)")
    return spec


def network_inputs(dataset, names: list[str]):
    """``dataset`` with only the inputs the network declares (the pipeline gives them all)."""
    names = list(names)
    missing = [n for n in names if n not in dataset.element_spec[0]]
    if missing:
        raise ValueError(f"the data lacks the network inputs {missing}")
    return dataset.map(lambda inputs, target: ({n: inputs[n] for n in names}, target))


def meta_statistics(tfrecords: os.PathLike | str | None) -> tuple[float, float] | None:
    """Mean and std of the clear LR values of the train subset, from the tfrecords' meta.json."""
    if tfrecords is None or not (Path(tfrecords) / "meta.json").is_file():
        return None
    meta = json.loads((Path(tfrecords) / "meta.json").read_text())
    stats = ((meta.get("statistics") or {}).get("lr") or {}).get("all") or {}
    mean, std = stats.get("mean"), stats.get("std")
    if mean is None or std is None or not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        return None
    return float(mean), float(std)


def validation_data(val_data, params: dict, limit: int = 0, tfrecords: os.PathLike | str | None = None,
                    replicas: int = 1):
    """Val scenes (at most ``limit``, 0 = all) rebatched by ``input.eval_batch_size`` rounded up to a
    multiple of ``replicas`` (so that every replica gets scenes), with a known number of batches (from
    meta.json, else counted), so Keras knows where validation ends."""
    import tensorflow as tf

    batch = int((params.get("input") or {}).get("eval_batch_size", 1) or 1)
    replicas = max(int(replicas), 1)
    batch = -(-batch // replicas) * replicas
    data = val_data.unbatch()
    if limit > 0:
        data = data.take(limit)
    data = data.batch(batch)
    scenes = None
    if tfrecords is not None and (Path(tfrecords) / "meta.json").is_file():
        meta = json.loads((Path(tfrecords) / "meta.json").read_text())
        scenes = ((meta.get("subsets") or {}).get("val") or {}).get("scenes")
    if scenes is not None:
        scenes = min(int(scenes), limit) if limit > 0 else int(scenes)
        batches = math.ceil(scenes / batch)
    else:
        batches = int(data.reduce(tf.constant(0, tf.int64), lambda count, _: count + 1))
    if batches == 0:
        return None
    return data.apply(tf.data.experimental.assert_cardinality(batches))


def clear_statistics(dataset, batches: int) -> tuple[float, float]:
    """Mean and standard deviation of the clear LR values (qm·frame_mask > 0) of the first batches."""
    total = total_sq = count = 0.0
    for inputs, _ in dataset.take(int(batches)):
        lr = np.asarray(inputs["lr"], np.float64)
        weight = np.asarray(inputs["qm"], np.float64) > 0.5
        weight &= np.asarray(inputs["frame_mask"], np.float64)[:, :, None, None] > 0.5
        values = lr[weight]
        total += values.sum()
        total_sq += np.square(values).sum()
        count += values.size
    if count == 0:
        raise ValueError("no clear LR pixel in the training batches: cannot normalise")
    mean = total / count
    std = math.sqrt(max(total_sq / count - mean * mean, 0.0))
    return float(mean), float(max(std, 1e-4))


# ----------------------------------------------------------------------------- checkpoints

def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float) + "\n")
    os.replace(tmp, path)


def read_checkpoint(directory: os.PathLike | str) -> tuple[dict, Path] | None:
    """The state and folder of the latest complete checkpoint, or None."""
    directory = Path(directory)
    pointer = directory / LATEST
    if not pointer.is_file():
        return None
    folder = directory / pointer.read_text().strip()
    state_path = folder / STATE_FILE
    if not (state_path.is_file() and (folder / WEIGHTS_FILE).is_file()):
        return None
    return json.loads(state_path.read_text()), folder


class TrainingState(keras.callbacks.Callback):
    """Checkpointing, best-weights tracking and early stopping, all resumable (a Keras callback).

    ``state`` (a JSON-able dict) is updated after every epoch: ``epoch`` (epochs done), ``best``,
    ``best_epoch``, ``wait``, ``stopped``, ``seconds``, ``history``; then written with the weights.
    """

    def __init__(self, directory: Path, state: dict, monitor: str, patience: int, min_delta: float,
                 write: bool = True):
        super().__init__()
        self.directory = Path(directory)
        self.state = state
        self.monitor = monitor
        self.patience = int(patience)
        self.min_delta = float(min_delta)
        self.write = write
        self._epoch_start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        optimizer = self.model.optimizer
        if optimizer is not None:
            logs["learning_rate"] = float(np.asarray(optimizer.learning_rate))
        state = self.state
        state["epoch"] = epoch + 1
        state["seconds"] = state.get("seconds", 0.0) + (time.perf_counter() - (self._epoch_start or time.perf_counter()))
        for key, value in logs.items():
            state.setdefault("history", {}).setdefault(key, []).append(float(value))
        value = logs.get(self.monitor)
        improved = False
        if value is not None and np.isfinite(value):
            if state.get("best") is None or value > state["best"] + self.min_delta:
                state["best"], state["best_epoch"], state["wait"] = float(value), epoch + 1, 0
                improved = True
            else:
                state["wait"] = state.get("wait", 0) + 1
        else:
            state["wait"] = state.get("wait", 0) + 1
        if state["wait"] >= self.patience:
            state["stopped"] = True
            self.model.stop_training = True
        if self.write:
            self._save(improved)

    def _save(self, improved: bool) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{self.state['epoch']:04d}"
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=self.directory))
        self.model.save_weights(tmp / WEIGHTS_FILE)
        previous = read_checkpoint(self.directory)
        if improved or previous is None or not (previous[1] / BEST_FILE).is_file():
            _link_or_copy(tmp / WEIGHTS_FILE, tmp / BEST_FILE)
        else:
            _link_or_copy(previous[1] / BEST_FILE, tmp / BEST_FILE)
        (tmp / STATE_FILE).write_text(json.dumps(self.state, indent=2, default=float) + "\n")
        final = self.directory / name
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        pointer_tmp = self.directory / f".{LATEST}.tmp"
        pointer_tmp.write_text(name + "\n")
        os.replace(pointer_tmp, self.directory / LATEST)
        for old in self.directory.iterdir():  # older checkpoints and leftovers of interrupted writes
            if old.is_dir() and old.name != name:
                shutil.rmtree(old, ignore_errors=True)


class StepCounter(keras.callbacks.Callback):
    """The training steps this process ran (each worker of a multi-worker run counts its own)."""

    def __init__(self):
        super().__init__()
        self.steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1


def weights_digest(network) -> str:
    """sha256 of a network's weights (the workers of a synchronous run end with the same one)."""
    digest = hashlib.sha256()
    for weight in network.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


@contextlib.contextmanager
def keras_multi_worker_fixes(trainer):
    """Work around two bugs of Keras 3's TensorFlow trainer under ``MultiWorkerMirroredStrategy``
    while ``trainer`` fits (found by the two-worker test; restored afterwards):

    - keras-team/keras#20329: before training, ``fit`` and ``evaluate`` take one batch and reduce it
      over all workers (``strategy.reduce``) only to learn its shapes, which fails on any nested
      batch (here ``(inputs dict, target)``: "Attempt to convert a value ({'frame_mask': PerReplica:
      …}) to a Tensor"). The build needs shapes and dtypes only: taken here from this worker's own
      part of the batch (the same shapes; no collective).
    - ``reduce_per_replica`` averages each step's outputs over the workers with
      ``strategy.reduce("MEAN", v, axis=0)``, which fails on the scalar logs ("Invalid reduction
      dimension 0 for input with 0 dimensions"): here ``axis=None``, the mean over the replicas of
      all workers. (The epoch logs, which the callbacks see, are read from the metrics' variables,
      summed over all replicas: exact global values either way.)
    """
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer as tf_trainer

    strategy = trainer.distribute_strategy
    original = tf_trainer.reduce_per_replica

    def local(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def symbolic_build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(local, next(batches))
                break
        with strategy.scope():
            trainer._symbolic_build(data_batch=data_batch)

    def reduce_per_replica(values, strategy, reduction="auto"):
        if reduction in ("auto", "mean") and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return tf.nest.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original(values, strategy, reduction=reduction)

    tf_trainer.reduce_per_replica = reduce_per_replica
    trainer._maybe_symbolic_build = symbolic_build
    try:
        yield trainer
    finally:
        tf_trainer.reduce_per_replica = original
        del trainer._maybe_symbolic_build


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


# ----------------------------------------------------------------------------- training

def make_optimizer(settings: dict, total_steps: int):
    lr = float(settings["learning_rate"])
    if settings["schedule"] == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(int(total_steps), 1),
                                                    alpha=float(settings["min_learning_rate_factor"]))
    # Losses are in [0,1] image units (small gradients): a small epsilon keeps Adam scale-free.
    return keras.optimizers.Adam(lr, epsilon=1e-10)


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move the complete folder ``tmp`` to ``out``, replacing what is there."""
    old = out.with_name(f".{out.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        os.rename(out, old)
    os.rename(tmp, out)
    if old.exists():
        shutil.rmtree(old)


def train(name: str, params: dict, out_dir: os.PathLike | str, live_dir: os.PathLike | str | None = None, *,
          tfrecords: os.PathLike | str | None = None, train_data=None, val_data=None,
          checkpoint_dir: os.PathLike | str | None = None, callbacks: Iterable = (),
          verbose: int | None = None, strategy=None) -> dict:
    """Train model ``name`` and write it to ``out_dir``; returns the ``training.json`` summary.

    Data: the pipeline's datasets from ``tfrecords``, or ``train_data`` / ``val_data`` (tf.data
    datasets following the training input contract; ``val_data`` may be None: early stopping then
    watches the patch cPSNR). ``checkpoint_dir`` defaults to ``out_dir/checkpoints``. ``strategy``:
    a ``tf.distribute`` strategy to use instead of the one ``train.strategy`` names (one process
    training several models should create one strategy and pass it to every call: collective
    ops of two MirroredStrategy objects in one process can collide).
    """
    started = time.perf_counter()
    settings = train_settings(params, name)
    if strategy is None:
        strategy = make_strategy(settings)  # first: multi-worker strategies must precede other TF work

    import tensorflow as tf

    from probav.losses import make_loss
    from probav.metrics.tf_score import CPSNR
    from probav.models.registry import model_class
    from probav.params import derive_seed

    out_dir = Path(out_dir)
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    chief = is_chief() if multi_worker else True
    workers, index = (cluster_workers(), worker_index()) if multi_worker else (1, 0)
    fp = fingerprint(params, name, settings, data_meta(tfrecords))
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else out_dir / CHECKPOINTS
    model_dir, scratch = out_dir, None
    if not chief:
        # Other workers write the same things (their saves must run) into a temporary folder of their
        # own, named after the run so that a restarted worker finds its checkpoints again; deleted at
        # the end.
        scratch = Path(tempfile.gettempdir()) / f"probav-{name}-worker{index}-{fp}"
        checkpoint_dir, model_dir = scratch / CHECKPOINTS, scratch / "model"
        live_dir = None if live_dir is None else scratch / "dvclive"
    keras.utils.set_random_seed(derive_seed(params, "train", name))

    policies = stats_data = None
    if train_data is None:
        if tfrecords is None:
            raise ValueError("give tfrecords (a folder of the tfrecords stage) or train_data")
        from probav.data.tfrecords import subset_files

        if multi_worker:
            policies = {"train": shard_policy(len(subset_files(tfrecords, "train")), workers), "val": "DATA"}
        shard = (workers, index) if policies and policies["train"] == "FILE" else None
        data_seed = derive_seed(params, "train", name, "data")
        train_data, val_data = pipeline_datasets(tfrecords, params, data_seed, shard)
        if shard is not None:  # normalisation statistics from the whole stream, the same on every worker
            stats_data = pipeline_datasets(tfrecords, params, data_seed)[0]
    elif multi_worker:
        policies = {"train": shard_policy(None, workers), "val": "DATA"}
    if val_data is not None:
        val_data = validation_data(val_data, params, int(settings["validation_scenes"]), tfrecords,
                                   replicas=strategy.num_replicas_in_sync)
    if multi_worker:
        # FILE: the pipeline already holds this worker's files only (tf.data's FILE rewrite cannot find
        # the reader past the pipeline's scan), so tf.distribute must not shard again.
        train_data = with_shard_policy(train_data, "OFF" if policies["train"] == "FILE" else "DATA")
        val_data = None if val_data is None else with_shard_policy(val_data, policies["val"])
        log.info("%s: worker %d of %d%s, sharding %s", name, index, workers, " (chief)" if chief else "", policies)
    train_data = train_data.repeat()

    resumed = read_checkpoint(checkpoint_dir)
    if resumed is not None and resumed[0].get("fingerprint") != fp:
        log.warning("%s: ignoring the checkpoint in %s (made with other settings)", name, checkpoint_dir)
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        resumed = None
    if multi_worker and not agreed_epochs(strategy, -1 if resumed is None else int(resumed[0]["epoch"])):
        log.warning("%s: the workers' checkpoints are of different epochs: every worker starts afresh", name)
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        resumed = None
    if resumed is not None:
        state = resumed[0]
        mean, std = state["normalisation"]["mean"], state["normalisation"]["std"]
        log.info("%s: resuming from %s after epoch %d", name, resumed[1], state["epoch"])
    else:
        from_meta = meta_statistics(tfrecords)
        if from_meta is not None:
            (mean, std), source = from_meta, "meta.json"
        else:
            mean, std = clear_statistics(train_data if stats_data is None else stats_data,
                                         int(settings["stats_batches"]))
            source = f"{settings['stats_batches']} training batches"
        state = {"fingerprint": fp, "epoch": 0, "best": None, "best_epoch": None, "wait": 0,
                 "stopped": False, "seconds": 0.0, "history": {}, "normalisation": {"mean": mean, "std": std, "source": source}}

    epochs, steps = int(settings["epochs"]), int(settings["steps_per_epoch"])
    model = model_class(name)(params)
    model.set_normalisation(mean, std)
    with strategy.scope():
        model.build()
    if model.uses_prior:
        model.set_prior(require_prior(name, tfrecords, train_data))
    train_data, val_data = (None if d is None else network_inputs(d, model.input_names) for d in (train_data, val_data))
    with strategy.scope():
        metrics = [CPSNR(name="cpsnr")]
        trainer = model.compile_training_model(make_optimizer(settings, epochs * steps),
                                               make_loss(settings["loss"]), metrics)
        if resumed is not None:
            model.build_optimizers(trainer)
            trainer.load_weights(resumed[1] / WEIGHTS_FILE)

    monitor = "val_cpsnr" if val_data is not None else "cpsnr"
    tracker = TrainingState(checkpoint_dir, state, monitor, int(settings["patience"]),
                            float(settings["min_delta"]), write=True)
    counter = StepCounter()
    all_callbacks = [tracker, counter] if multi_worker else [tracker]
    live = None
    if live_dir is not None:
        from dvclive import Live
        from dvclive.keras import DVCLiveCallback

        live = Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, resume=resumed is not None)
        if resumed is not None:
            live.step = int(state["epoch"])
        all_callbacks.append(DVCLiveCallback(live=live))
    all_callbacks += list(callbacks)

    initial_epoch = int(state["epoch"])
    if initial_epoch < epochs and not state.get("stopped"):
        with keras_multi_worker_fixes(trainer) if multi_worker else contextlib.nullcontext():
            trainer.fit(train_data, epochs=epochs, initial_epoch=initial_epoch, steps_per_epoch=steps,
                        validation_data=val_data, callbacks=all_callbacks, shuffle=False,
                        verbose=settings["verbose"] if verbose is None else verbose)
    elif live is not None:
        live.end()

    best_path = (read_checkpoint(checkpoint_dir) or (None, None))[1]
    if best_path is not None and (best_path / BEST_FILE).is_file():
        trainer.load_weights(best_path / BEST_FILE)  # restore the best epoch's weights

    history = state.get("history", {})
    summary = {
        "model": name,
        "parameters": model.count_params(),
        "training_seconds": round(float(state.get("seconds", 0.0)), 2),
        "wall_seconds": round(time.perf_counter() - started, 2),
        "epochs_run": int(state["epoch"]),
        "epochs": epochs,
        "steps_per_epoch": steps,
        "batch_size": int(params.get("input", {}).get("batch_size", 16)),
        "early_stopped": bool(state.get("stopped")) and int(state["epoch"]) < epochs,
        "best_epoch": state.get("best_epoch"),
        "monitor": monitor,
        "best_val_cpsnr": state.get("best") if monitor == "val_cpsnr" else None,
        "final_loss": (history.get("loss") or [None])[-1],
        "final_val_loss": (history.get("val_loss") or [None])[-1],
        "loss": settings["loss"],
        "strategy": settings["strategy"],
        "replicas": int(strategy.num_replicas_in_sync),
        "normalisation": state["normalisation"],
        "fingerprint": fp,
        "weights_sha256": weights_digest(model.network),
        **model.training_summary(),
    }
    if multi_worker:
        summary["worker"] = {"index": index, "workers": workers, "chief": chief, "steps": counter.steps,
                             "shard_policy": policies}
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{model_dir.name}.tmp-", dir=model_dir.parent))
    try:
        model.save(tmp)
        _write_json_atomic(tmp / TRAINING_JSON, summary)
        _replace_dir(tmp, model_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if checkpoint_dir.exists():
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)
    return summary
