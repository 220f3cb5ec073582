"""Training (probav.training and stages/train.py): outputs, DVCLive logs, checkpoint resume, early
stopping, the mirrored strategy on two logical CPUs, and the stage on real TFRecords."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from probav import training  # noqa: E402
from probav.losses import make_loss  # noqa: E402
from probav.metrics.tf_score import CPSNR  # noqa: E402
from probav.models.registry import load_model  # noqa: E402
from probav.scene import Scene  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from test_deep_models import synthetic_arrays  # noqa: E402

FRAMES = 4


def params(**train) -> dict:
    return {"seed": 11, "input": {"frames": FRAMES, "batch_size": 8, "eval_batch_size": 4},
            "model": {"blocks": 1, "filters": 8},
            "train": {"epochs": 3, "steps_per_epoch": 3, "learning_rate": 2e-3, "verbose": 0, **train}}


def data(n_train=32, n_dev=8):
    x, y = synthetic_arrays(n_train, frames=FRAMES, seed=1)
    xd, yd = synthetic_arrays(n_dev, frames=FRAMES, seed=2)
    train = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(n_train, seed=0).batch(8, drop_remainder=True)
    dev = tf.data.Dataset.from_tensor_slices((xd, yd)).batch(4)
    return train, dev


class Interrupt(keras.callbacks.Callback):
    """Simulates a crash at the end of an epoch (after the checkpoint of that epoch is written)."""

    def __init__(self, at_epoch: int):
        super().__init__()
        self.at_epoch = at_epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at_epoch:
            raise KeyboardInterrupt("simulated interruption")


class Record(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs, self.iterations = [], None

    def on_train_begin(self, logs=None):
        self.iterations = int(self.model.optimizer.iterations.numpy())

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


def tsv_steps(path: Path) -> list[int]:
    lines = path.read_text().strip().splitlines()[1:]
    return [int(line.split("\t")[0]) for line in lines]


def test_train_writes_the_model_logs_and_summary(tmp_path):
    train, dev = data()
    out, live = tmp_path / "models" / "residual_multi", tmp_path / "dvclive" / "residual_multi"
    summary = training.train("residual_multi", params(), out, live, train_data=train, val_data=dev)
    assert sorted(p.name for p in out.iterdir()) == ["network.keras", "settings.json", "training.json"]
    written = json.loads((out / "training.json").read_text())
    assert written == json.loads(json.dumps(summary))
    assert written["epochs_run"] == 3 and written["parameters"] > 0 and written["training_seconds"] > 0
    assert written["monitor"] == "val_cpsnr" and np.isfinite(written["best_val_cpsnr"])
    assert written["normalisation"]["source"].endswith("training batches")
    for name in ("train/loss", "train/cpsnr", "eval/loss", "eval/cpsnr", "train/learning_rate"):
        assert tsv_steps(live / "plots" / "metrics" / f"{name}.tsv") == [0, 1, 2], name
    assert json.loads((live / "metrics.json").read_text())["eval"]["cpsnr"] > 0
    assert not list(tmp_path.glob("models/.*")), "temporary folders left behind"
    # The saved model is the best epoch's: its dev cPSNR is the best one logged.
    model = load_model("residual_multi", params(), out)
    trainer = model.compile_training_model(keras.optimizers.Adam(), make_loss("l1"), [CPSNR()])
    score = trainer.evaluate(dev, verbose=0, return_dict=True)["cpsnr"]
    assert score == pytest.approx(written["best_val_cpsnr"], abs=1e-3)


def test_interrupted_training_resumes_from_the_last_checkpoint(tmp_path):
    train, dev = data()
    out, live, ckpt = tmp_path / "m", tmp_path / "live", tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        training.train("residual_single", params(), out, live, train_data=train, val_data=dev,
                       checkpoint_dir=ckpt, callbacks=[Interrupt(at_epoch=1)])
    state, folder = training.read_checkpoint(ckpt)
    assert state["epoch"] == 2 and (folder / training.BEST_FILE).is_file()
    assert [p.name for p in ckpt.iterdir()] == ["latest", "epoch-0002"] or sorted(
        p.name for p in ckpt.iterdir()) == ["epoch-0002", "latest"]
    assert not out.exists()
    stale = tmp_path / "stale"
    shutil.copytree(ckpt, stale)
    record = Record()
    summary = training.train("residual_single", params(), out, live, train_data=train, val_data=dev,
                             checkpoint_dir=ckpt, callbacks=[record])
    assert record.epochs == [2]  # only the missing epoch ran
    assert record.iterations == 2 * 3  # optimizer state (and schedule position) restored
    assert summary["epochs_run"] == 3 and len(json.loads((out / "training.json").read_text())) > 0
    assert tsv_steps(live / "plots" / "metrics" / "eval" / "cpsnr.tsv") == [0, 1, 2]
    assert not ckpt.exists()  # checkpoints go once the model is written

    # A checkpoint made with other settings is not resumed from; here the other settings also make
    # no progress (learning rate 0): early stopping after `patience` epochs, best epoch restored.
    shutil.copytree(stale, ckpt)
    record = Record()
    summary = training.train("residual_single", params(learning_rate=0.0, patience=1, epochs=5), out, None,
                             train_data=train, val_data=dev, checkpoint_dir=ckpt, callbacks=[record])
    assert record.epochs == [0, 1] and record.iterations == 0
    assert summary["early_stopped"] and summary["epochs_run"] == 2 and summary["best_epoch"] == 1


def test_train_settings_defaults_overrides_and_errors():
    s = training.train_settings({"train": {"epochs": 2, "misr_net": {"epochs": 7}}}, "misr_net")
    assert s["epochs"] == 7 and s["loss"] == "l1" and s["strategy"] == "default"
    assert training.train_settings({"train": {"epochs": 2, "misr_net": {"epochs": 7}}}, "srgan")["epochs"] == 2
    with pytest.raises(ValueError, match="unknown train settings"):
        training.train_settings({"train": {"srgan": {"epoch": 3}}}, "srgan")
    with pytest.raises(ValueError, match="train.loss"):
        training.train_settings({"train": {"loss": "l2"}})
    a = training.fingerprint(params(), "m", training.train_settings(params()))
    b = training.fingerprint(params(strategy="mirrored"), "m", training.train_settings(params(strategy="mirrored")))
    c = training.fingerprint(params(epochs=4), "m", training.train_settings(params(epochs=4)))
    assert a == b != c


def test_chief_is_decided_by_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert training.is_chief()
    cluster = {"worker": ["a:1", "b:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
    assert training.is_chief()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
    assert not training.is_chief()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["c:0"], **cluster},
                                                "task": {"type": "worker", "index": 0}}))
    assert not training.is_chief()


MIRRORED = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, sys.argv[2])
    from test_training import data, params
    from probav import training
    train, dev = data(n_train=16, n_dev=4)
    p = params(strategy="mirrored", devices=["/cpu:0", "/cpu:1"], epochs=1, steps_per_epoch=2)
    strategy = training.make_strategy(training.train_settings(p))  # one per process
    out = {}
    for name in ("srgan",):  # the custom train_step (two optimizers, two all-reduces)
        s = training.train(name, p, sys.argv[1] + "/" + name, None, train_data=train, val_data=dev,
                           strategy=strategy)
        out[name] = s
    print("RESULT" + json.dumps(out))
""")


def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", MIRRORED, str(tmp_path), str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT", 1)[1])
    for name in ("srgan",):
        assert result[name]["replicas"] == 2 and result[name]["strategy"] == "mirrored"
        assert np.isfinite(result[name]["final_loss"]) and np.isfinite(result[name]["best_val_cpsnr"])
        assert (tmp_path / name / "network.keras").is_file()
    assert result["srgan"]["discriminator_parameters"] > 0


def scene(rng, name: str, frames: int = 6) -> Scene:
    """A small but complete scene (128×128 LR, 384×384 HR) for the stage test."""
    x, y = synthetic_arrays(1, frames=frames, patch=128, seed=int(rng.integers(1 << 30)), clouds=False)
    lr = np.clip(np.rint(x["lr"][0] * 65535), 0, 65535).astype(np.uint16)
    hr = np.clip(np.rint(y[0, ..., 0] * 65535), 0, 65535).astype(np.uint16)
    return Scene(name=name, band="RED", lr=lr, qm=np.ones(lr.shape, bool), hr=hr, sm=np.ones(hr.shape, bool))


def test_stage_trains_from_tfrecords(tmp_path, monkeypatch):
    from probav.data.tfrecords import shard_name, write_scenes

    rng = np.random.default_rng(0)
    records = tmp_path / "tfrecords"
    write_scenes([scene(rng, f"imgset{i:04d}") for i in range(3)], records / shard_name("train", 0, 1))
    write_scenes([scene(rng, f"imgset{i:04d}") for i in range(3, 5)], records / shard_name("val", 0, 1))
    p = params(epochs=1, steps_per_epoch=2)
    p["input"].update({"patch_size": 16, "batch_size": 4, "min_patch_clearance": 0.5, "augment": True})
    (tmp_path / "params.yaml").write_text(json.dumps(p))  # JSON is YAML
    monkeypatch.chdir(tmp_path)
    sys.path.insert(0, str(REPO / "stages"))
    try:
        import train as stage
    finally:
        sys.path.remove(str(REPO / "stages"))
    assert stage.main(["residual_multi", "--tfrecords", str(records), "--out", "models/residual_multi",
                       "--live", "dvclive/residual_multi"]) == 0
    summary = json.loads(Path("models/residual_multi/training.json").read_text())
    assert summary["epochs_run"] == 1 and np.isfinite(summary["best_val_cpsnr"])
    assert Path("dvclive/residual_multi/plots/metrics/eval/cpsnr.tsv").is_file()
    model = load_model("residual_multi", p, "models/residual_multi")
    sr = model.predict(scene(rng, "imgset0009"))
    assert sr.shape == (384, 384) and sr.dtype == np.uint16
    assert stage.main(["baseline", "--tfrecords", str(records)]) == 1  # not trainable


def test_a_prior_network_needs_records_with_a_prior_and_gets_only_its_inputs(tmp_path):
    inputs, target = synthetic_arrays(4)
    plain = tf.data.Dataset.from_tensor_slices((inputs, target)).batch(2)
    with pytest.raises(ValueError, match="must hold 'prior'"):
        training.require_prior("misr_net", None, plain)
    (tmp_path / "meta.json").write_text(json.dumps({"prior": None}))
    with pytest.raises(ValueError, match=r"tfrecords\.prior .*dvc repro tfrecords.*misr_base: median"):
        training.require_prior("misr_net", tmp_path, plain)
    spec = {"model": "shift_and_add", "classical": {}}
    (tmp_path / "meta.json").write_text(json.dumps({"prior": spec}))
    assert training.require_prior("misr_net", tmp_path, plain) == spec

    with_prior = tf.data.Dataset.from_tensor_slices(
        ({**inputs, "prior": np.zeros((4, 36, 36), np.float32)}, target)).batch(2)
    kept = training.network_inputs(with_prior, ["lr", "qm", "frame_mask"])
    assert set(kept.element_spec[0]) == {"lr", "qm", "frame_mask"}
    with pytest.raises(ValueError, match=r"lacks the network inputs \['prior'\]"):
        training.network_inputs(plain, ["lr", "prior"])
