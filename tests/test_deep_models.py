"""The deep models (residual_single, residual_multi, srgan) and their shared layers, on tiny
synthetic data following the training input contract."""
from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from probav.losses import make_loss  # noqa: E402
from probav.metrics.tf_score import CPSNR, shifted_cpsnr  # noqa: E402
from probav.models.deep import (BicubicUpsample, ClearMedian, DeepModel, FramesToChannels,  # noqa: E402
                                SplineUpsample, dihedral, dihedral_inverse)
from probav.models.median import clear_median  # noqa: E402
from probav.models.registry import load_model, model_class  # noqa: E402
from probav.scene import Scene  # noqa: E402

MODELS = ["residual_single", "residual_multi", "srgan"]
FRAMES = 4


def tiny_params(**model) -> dict:
    return {"seed": 5, "input": {"frames": FRAMES, "batch_size": 8},
            "model": {"blocks": 1, "filters": 8, **model}}


def smooth_field(rng, n, size, width=9):
    big = rng.normal(size=(n, size, size))
    kernel = np.ones(width) / width
    for axis in (1, 2):
        big = np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="same"), axis, big)
    return 0.1 + 0.03 * big / big.std()


def synthetic_arrays(n, frames=FRAMES, patch=12, seed=0, noise=0.02, clouds=True, padded=0):
    """Easy multi-frame data: LR frames = 3×3 means of a smooth HR shifted by −2…2 HR pixels, plus
    strong noise (so combining frames and denoising pays, quickly);
    some frames get a bright cloud (QM 0) and the last ``padded`` frames are padding."""
    rng = np.random.default_rng(seed)
    m, hp = 6, 3 * patch
    big = smooth_field(rng, n, hp + 2 * m)
    hr = big[:, m:m + hp, m:m + hp]
    lr = np.empty((n, frames, patch, patch))
    qm = np.ones((n, frames, patch, patch))
    for i in range(n):
        for k in range(frames):
            dy, dx = rng.integers(-2, 3, 2)
            shifted = big[i, m + dy:m + dy + hp, m + dx:m + dx + hp]
            lr[i, k] = shifted.reshape(patch, 3, patch, 3).mean(axis=(1, 3)) + rng.normal(0, noise, (patch, patch))
            if clouds and rng.random() < 0.3:
                y, x = rng.integers(0, patch - 4, 2)
                lr[i, k, y:y + 4, x:x + 4] = 0.5
                qm[i, k, y:y + 4, x:x + 4] = 0
    fm = np.ones((n, frames))
    if padded:
        fm[:, frames - padded:] = 0
        lr[:, frames - padded:] = 0
        qm[:, frames - padded:] = 0
    reference = np.zeros((n, frames), np.float32)
    reference[:, 0] = 1.0  # the first frame marked as the reference, as select_frames puts it
    inputs = {"lr": lr.astype(np.float32), "qm": qm.astype(np.float32), "frame_mask": fm.astype(np.float32),
              "reference": reference}
    target = np.stack([hr, np.ones_like(hr)], -1).astype(np.float32)
    return inputs, target


def datasets(n_train=64, n_dev=16, batch=8, **kwargs):
    x, y = synthetic_arrays(n_train, seed=1, **kwargs)
    xd, yd = synthetic_arrays(n_dev, seed=2, **kwargs)
    train = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(n_train, seed=0).batch(batch)
    dev = tf.data.Dataset.from_tensor_slices((xd, yd)).batch(batch)
    return train, dev


def built(name: str, params: dict | None = None) -> DeepModel:
    keras.utils.set_random_seed(0)
    model = model_class(name)(params or tiny_params())
    model.set_normalisation(0.1, 0.03)
    model.build()
    return model


def random_inputs(rng, b=2, k=FRAMES, size=12):
    return {"lr": (0.1 + 0.03 * rng.random((b, k, size, size))).astype(np.float32),
            "qm": (rng.random((b, k, size, size)) > 0.2).astype(np.float32),
            "frame_mask": np.ones((b, k), np.float32), "reference": np.tile(np.eye(1, k, dtype=np.float32), (b, 1))}


# --- shared layers ------------------------------------------------------------------------------

def test_clear_median_matches_numpy():
    rng = np.random.default_rng(0)
    lr = rng.random((2, 5, 8, 8)).astype(np.float32)
    qm = rng.random((2, 5, 8, 8)) > 0.4
    qm[0, :, 0, 0] = False  # no clear frame at one pixel: the median of all frames
    fm = np.ones((2, 5), np.float32)
    got = ClearMedian()(lr, qm.astype(np.float32), fm).numpy()
    for i in range(2):
        np.testing.assert_allclose(got[i], clear_median(lr[i], qm[i]), rtol=1e-6)
    # Padded frames (frame_mask 0) are ignored, whatever they hold.
    fm[1, 3:] = 0
    padded = ClearMedian()(lr, qm.astype(np.float32), fm).numpy()
    np.testing.assert_allclose(padded[1], clear_median(lr[1, :3], qm[1, :3]), rtol=1e-6)


def test_bicubic_upsample_and_frame_channels_shapes():
    x = np.random.default_rng(1).random((2, 10, 12, 1)).astype(np.float32)
    up = BicubicUpsample(3)(x).numpy()
    assert up.shape == (2, 30, 36, 1)
    np.testing.assert_allclose(up.mean(), x.mean(), atol=0.02)
    flat = np.full((1, 4, 4, 1), 0.3, np.float32)
    np.testing.assert_allclose(BicubicUpsample(3)(flat).numpy(), 0.3, atol=1e-6)
    rng = np.random.default_rng(2)
    inputs = random_inputs(rng, k=3, size=6)
    median = ClearMedian()(inputs["lr"], inputs["qm"], inputs["frame_mask"])
    channels = FramesToChannels(0.1, 0.03)(inputs["lr"], inputs["qm"], inputs["frame_mask"], median,
                                           inputs["reference"])
    assert channels.shape == (2, 6, 6, 13)
    np.testing.assert_array_equal(channels.numpy()[..., 10:], np.broadcast_to([1.0, 0.0, 0.0], (2, 6, 6, 3)))


def test_dihedral_transforms_invert():
    x = np.arange(2 * 4 * 4).reshape(2, 4, 4)
    for t in range(8):
        np.testing.assert_array_equal(dihedral_inverse(dihedral(x, t), t), x)
    assert len({dihedral(x, t).tobytes() for t in range(8)}) == 8


# --- the models ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MODELS)
def test_model_is_registered_and_fully_convolutional(name):
    cls = model_class(name)
    assert cls.trainable and issubclass(cls, DeepModel)
    model = built(name)
    rng = np.random.default_rng(3)
    for size in (12, 32):
        out = model.network(random_inputs(rng, size=size))
        assert out.shape == (2, 3 * size, 3 * size, 1)
    assert model.count_params() > 0


@pytest.mark.parametrize("name", MODELS)
def test_untrained_model_outputs_its_upscaled_anchor(name):
    """The correction's last conv starts at zero: training starts from the upscaled anchor (the clear
    median; for ``residual_single`` the reference frame, its clouds filled by the median), with the
    official baseline's cubic spline (``model.upsampling: spline``) or tf bicubic."""
    inputs = random_inputs(np.random.default_rng(4))
    anchor = ClearMedian()(inputs["lr"], inputs["qm"], inputs["frame_mask"]).numpy()
    if name == "residual_single":
        anchor = np.where(inputs["qm"][:, 0] > 0.5, inputs["lr"][:, 0], anchor)
    model = built(name)
    np.testing.assert_allclose(model.network(inputs).numpy(), SplineUpsample(3)(anchor[..., None]).numpy(), atol=1e-6)
    model = built(name, tiny_params(upsampling="bicubic"))
    np.testing.assert_allclose(model.network(inputs).numpy(), BicubicUpsample(3)(anchor[..., None]).numpy(), atol=1e-6)


def test_spline_upsample_is_the_official_baselines_interpolation():
    from scipy import ndimage

    from probav.models.baseline import bicubic_upscale

    image = ndimage.gaussian_filter(np.random.default_rng(11).random((40, 40)), 1.5)
    ours = SplineUpsample(3)(image[None, :, :, None].astype(np.float32)).numpy()[0, :, :, 0]
    # skimage also clips to the input's range; compare where it does not.
    np.testing.assert_allclose(np.clip(ours, image.min(), image.max()), bicubic_upscale(image), atol=2e-5)


def test_padded_frames_do_not_change_the_output():
    model = built("residual_multi")
    rng = np.random.default_rng(5)
    inputs = random_inputs(rng)
    inputs["frame_mask"][:, -1] = 0
    # Make the network non-trivial (the output conv starts at zero).
    for w in model.network.trainable_weights:
        w.assign(np.random.default_rng(6).normal(0, 0.1, w.shape).astype(np.float32))
    other = {k: v.copy() for k, v in inputs.items()}
    other["lr"][:, -1] = 0.9
    other["qm"][:, -1] = 1 - other["qm"][:, -1]
    np.testing.assert_allclose(model.network(inputs).numpy(), model.network(other).numpy(), atol=1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_training_lowers_the_loss_and_multi_frame_beats_one_bicubic_frame(name):
    train, dev = datasets(padded=1)
    model = built(name)
    trainer = model.compile_training_model(keras.optimizers.Adam(3e-3, epsilon=1e-10), make_loss("l1"), [CPSNR()])
    before_train = trainer.evaluate(train, verbose=0, return_dict=True)
    before = trainer.evaluate(dev, verbose=0, return_dict=True)
    history = trainer.fit(train.repeat(), steps_per_epoch=40, epochs=1, verbose=0, validation_data=dev)
    after_train = trainer.evaluate(train, verbose=0, return_dict=True)
    after = trainer.evaluate(dev, verbose=0, return_dict=True)
    logs = {k: v[-1] for k, v in history.history.items()}
    assert logs["val_cpsnr"] == pytest.approx(after["cpsnr"], abs=1e-4)
    if name == "srgan":  # the adversarial losses are logged for training only
        for key in ("adversarial_loss", "generator_loss", "discriminator_loss"):
            assert np.isfinite(logs[key]) and f"val_{key}" not in logs
        assert trainer.discriminator.count_params() > 0
    assert np.isfinite(after_train["loss"]) and after_train["loss"] < 0.95 * before_train["loss"]
    assert after["loss"] < before["loss"]
    assert after["cpsnr"] > before["cpsnr"] + 0.3
    if name != "residual_single":
        # A trivial baseline: the bicubic upscale of one (the first) frame.
        x, y = synthetic_arrays(16, seed=2, padded=1)
        one = tf.image.resize(x["lr"][:, 0, :, :, None], (36, 36), "bicubic")
        baseline = float(tf.reduce_mean(shifted_cpsnr(one, y[..., 0], y[..., 1])))
        assert after["cpsnr"] > baseline + 1.0


def scene_of(rng, frames=11) -> Scene:
    lr = (2000 + 1000 * rng.random((frames, 128, 128))).astype(np.uint16)
    qm = rng.random((frames, 128, 128)) > 0.1
    return Scene(name="imgset9999", band="RED", lr=lr, qm=qm)


@pytest.mark.parametrize("name", MODELS)
def test_save_load_round_trip_gives_identical_predictions(name, tmp_path):
    model = built(name)
    for w in model.network.trainable_weights:  # a non-trivial network
        w.assign(np.random.default_rng(7).normal(0, 0.05, w.shape).astype(np.float32))
    scene = scene_of(np.random.default_rng(8))
    sr = model.predict(scene)
    assert sr.shape == (384, 384) and sr.dtype == np.uint16
    model.save(tmp_path / name)
    again = load_model(name, tiny_params(), tmp_path / name)
    assert type(again) is type(model) and again.settings["normalisation"] == {"mean": 0.1, "std": 0.03}
    np.testing.assert_array_equal(again.predict(scene), sr)


def test_self_ensemble_averages_frame_orders_and_flips(tmp_path):
    model = built("residual_multi", tiny_params(self_ensemble=6))
    assert model.self_ensemble == 6
    rng = np.random.default_rng(9)
    inputs = random_inputs(rng, b=1, size=16)
    inputs["frame_mask"][0, -1] = 0
    arrays = (inputs["lr"][0], inputs["qm"][0], inputs["frame_mask"][0])
    reference = inputs["reference"][0]
    # Untrained, the network is the bicubic median: invariant to frame order, equivariant to flips.
    single = model.network(inputs).numpy()[0, ..., 0]
    np.testing.assert_allclose(model.predict_arrays(*arrays, reference=reference), single, atol=1e-6)
    for w in model.network.trainable_weights:
        w.assign(np.random.default_rng(10).normal(0, 0.05, w.shape).astype(np.float32))
    ensemble = model.predict_arrays(*arrays, reference=reference)
    single = model.network(inputs).numpy()[0, ..., 0]
    assert ensemble.shape == single.shape and np.abs(ensemble - single).max() > 1e-6
    np.testing.assert_array_equal(model.predict_arrays(*arrays, reference=reference), ensemble)  # seeded
    # self_ensemble is an inference setting: the params given to load decide it.
    model.save(tmp_path / "m")
    plain = load_model("residual_multi", tiny_params(self_ensemble=0), tmp_path / "m")
    np.testing.assert_allclose(plain.predict_arrays(*arrays, reference=reference), single, atol=1e-6)


def test_load_rejects_a_missing_or_foreign_model(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_model("residual_multi", tiny_params(), tmp_path / "nothing")
    model = built("residual_single")
    model.save(tmp_path / "single")
    with pytest.raises(FileNotFoundError, match="network.keras|settings.json"):
        model_class("residual_multi").load(tmp_path / "empty", tiny_params())
    with pytest.raises(ValueError, match="residual_single"):
        model_class("residual_multi").load(tmp_path / "single", tiny_params())


def test_building_without_normalisation_is_an_error():
    model = model_class("residual_multi")(tiny_params())
    with pytest.raises(RuntimeError, match="set_normalisation"):
        model.build()
    with pytest.raises(ValueError):
        model.set_normalisation(0.1, 0.0)
