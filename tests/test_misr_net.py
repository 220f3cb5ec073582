"""misr_net: shapes (patches and whole scenes, any K), frame-order invariance, padded and clouded
frames, the untrained network equals its prior (or, with ``misr_base: median``, the ``median``
model), hyper-parameters from params, short training runs with the project's loss that beat the
prior, a save/load round trip, and inference recomputing the prior as it was made for training."""
from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from probav.models.misr_net import MisrNet, build_misr_net  # noqa: E402

MEAN, STD = 0.1, 0.03
SMALL = dict(blocks=1, filters=8, filters_3d=8, mean=MEAN, std=STD)


FRAME_KEYS = ("lr", "qm", "frame_mask", "reference")


def _inputs(rng, b=2, k=9, p=32, real=None, prior=True):
    lr = rng.uniform(0.02, 0.2, (b, k, p, p)).astype(np.float32)
    qm = (rng.uniform(size=(b, k, p, p)) > 0.2).astype(np.float32)
    fm = np.ones((b, k), np.float32)
    if real is not None:
        fm[:, real:] = 0
        lr[:, real:] = 0
        qm[:, real:] = 0
    reference = np.zeros((b, k), np.float32)
    reference[:, 0] = 1.0  # the first frame is the reference, as select_frames puts it
    inputs = {"lr": lr, "qm": qm, "frame_mask": fm, "reference": reference}
    if prior:
        inputs["prior"] = rng.uniform(0.05, 0.15, (b, 3 * p, 3 * p)).astype(np.float32)
    return inputs


def _reorder(inputs, order):
    """The frames of ``inputs`` in another order (the prior is one image, not per frame)."""
    return {key: value[:, order] if key in FRAME_KEYS else value for key, value in inputs.items()}


def _randomise(model, seed=0):
    """Give the zero-initialised parts (attention scores, last conv, anchor gate) random weights."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.name in ("feat_scores", "img_scores", "upsample_conv"):
            layer.set_weights([rng.normal(0, 0.3, w.shape).astype(np.float32) for w in layer.get_weights()])
        elif layer.name == "anchor":
            layer.set_weights([np.float32(0.8)])
    return model


def _run(model, inputs):
    return np.asarray(model(inputs, training=False))


@pytest.fixture(scope="module")
def net():
    return _randomise(build_misr_net(9, blocks=2, filters=16, filters_3d=8, mean=MEAN, std=STD))


def test_output_shapes_patch_and_scene(net):
    rng = np.random.default_rng(1)
    assert _run(net, _inputs(rng, b=2, p=32)).shape == (2, 96, 96, 1)
    assert _run(net, _inputs(rng, b=1, p=128)).shape == (1, 384, 384, 1)
    assert _run(net, _inputs(rng, b=1, p=20)).shape == (1, 60, 60, 1)


@pytest.mark.parametrize("k", [5, 12])
def test_builds_for_other_frame_counts(k):
    model = build_misr_net(k, **SMALL)
    out = _run(model, _inputs(np.random.default_rng(k), b=1, k=k, p=16))
    assert out.shape == (1, 48, 48, 1) and np.isfinite(out).all()


def test_default_size_is_modest():
    model = build_misr_net(9, mean=MEAN, std=STD)  # blocks 4, filters 32
    assert 30_000 < model.count_params() < 300_000


def test_untrained_network_outputs_its_prior():
    rng = np.random.default_rng(2)
    inputs = _inputs(rng, b=2, p=16, real=7)
    out = _run(build_misr_net(9, **SMALL), inputs)[..., 0]
    np.testing.assert_array_equal(out, inputs["prior"])


def test_prior_is_required_and_base_is_checked():
    model = build_misr_net(9, **SMALL)
    assert sorted(t.name for t in model.inputs) == ["frame_mask", "lr", "prior", "qm", "reference"]
    assert sorted(t.name for t in build_misr_net(9, base="median", **SMALL).inputs) == ["frame_mask", "lr", "qm",
                                                                                         "reference"]
    with pytest.raises(ValueError, match="misr_base"):
        build_misr_net(9, base="mean", **SMALL)


def test_untrained_network_is_the_median_model():
    from probav.models.median import median_sr

    rng = np.random.default_rng(3)
    k, p = 9, 20
    smooth = rng.uniform(0.05, 0.15, (k, p // 4, p // 4)).repeat(4, axis=1).repeat(4, axis=2)
    lr_u16 = np.round(smooth * 65535).astype(np.uint16)
    qm = rng.uniform(size=(k, p, p)) > 0.3
    expected = median_sr(lr_u16, qm)
    model = build_misr_net(k, base="median", **SMALL)
    out = _run(model, {"lr": (lr_u16 / 65535.0)[None].astype(np.float32), "qm": qm[None].astype(np.float32),
                       "frame_mask": np.ones((1, k), np.float32),
                       "reference": np.eye(1, k, dtype=np.float32)})[0, :, :, 0]
    median_lr = np.asarray(expected)
    np.testing.assert_allclose(np.clip(out, median_lr.min(), median_lr.max()), expected, atol=1e-4)


def test_output_invariant_to_frame_order(net):
    rng = np.random.default_rng(4)
    inputs = _inputs(rng, b=2, p=24, real=7)
    out = _run(net, inputs)
    perm = np.concatenate([rng.permutation(7), [7, 8]])
    np.testing.assert_allclose(_run(net, _reorder(inputs, perm)), out, atol=1e-5)
    padding_first = np.concatenate([[7, 8], np.arange(7)])
    np.testing.assert_allclose(_run(net, _reorder(inputs, padding_first)), out, atol=1e-5)


def test_rams_like_temporal_kernel_runs():
    model = _randomise(build_misr_net(9, temporal_kernel=3, **SMALL))
    rng = np.random.default_rng(5)
    inputs = _inputs(rng, b=1, p=16)
    out = _run(model, inputs)
    assert out.shape == (1, 48, 48, 1) and np.isfinite(out).all()
    assert np.isfinite(_run(model, _reorder(inputs, np.roll(np.arange(9), 4)))).all()
    with pytest.raises(ValueError, match="misr_temporal_kernel"):
        build_misr_net(9, temporal_kernel=2, **SMALL)


@pytest.mark.parametrize("temporal_kernel", [1, 3])
def test_padded_frames_content_has_no_effect(temporal_kernel):
    model = _randomise(build_misr_net(9, temporal_kernel=temporal_kernel, **SMALL))
    rng = np.random.default_rng(6)
    inputs = _inputs(rng, b=2, p=16, real=6)
    out = _run(model, inputs)
    garbage = {key: value.copy() for key, value in inputs.items()}
    garbage["lr"][:, 6:] = rng.uniform(0, 1, garbage["lr"][:, 6:].shape)
    garbage["qm"][:, 6:] = 1
    np.testing.assert_allclose(_run(model, garbage), out, atol=1e-6)


def test_flagged_clouds_do_not_show():
    """A bright cloud in one frame, flagged by its QM, leaves the fusion (gate open) unchanged."""
    model = build_misr_net(9, base="median", **SMALL)
    model.get_layer("anchor").set_weights([np.float32(1.0)])
    rng = np.random.default_rng(7)
    inputs = _inputs(rng, b=1, p=16, prior=False)
    inputs["lr"] = (0.1 + rng.normal(0, 0.002, inputs["lr"].shape)).astype(np.float32)
    inputs["qm"][:] = 1
    clean = _run(model, inputs)
    inputs["lr"][0, 0, 4:12, 4:12] = 0.9
    unflagged = _run(model, inputs)
    inputs["qm"][0, 0, 4:12, 4:12] = 0
    flagged = _run(model, inputs)
    assert np.abs(unflagged - clean)[0, 18:30, 18:30].min() > 0.05  # the deviation is fused in …
    assert np.abs(flagged - clean)[0, 18:30, 18:30].max() < 0.005  # … unless the QM flags it


def _params(**model):
    return {"seed": 1, "input": {"frames": 9}, "model": {"blocks": 1, "filters": 8, "misr_filters_3d": 8, **model}}


def test_hyperparameters_come_from_params():
    from probav.models.registry import model_class

    assert model_class("misr_net") is MisrNet
    small = MisrNet(_params())
    small.set_normalisation(MEAN, STD)
    small.build()
    bigger = MisrNet(_params(blocks=3, misr_blocks_3d=2, misr_attention_reduction=4))
    bigger.set_normalisation(MEAN, STD)
    bigger.build()
    names = {layer.name for layer in bigger.network.layers}
    assert {"rfab2d_2_add", "rfab3d_1_add"} <= names and "rfab2d_1_add" not in {l.name for l in small.network.layers}
    assert bigger.count_params() > small.count_params()


def _synthetic_batch(rng, b=8, k=9, p=12):
    """Smooth HR images; LR frames = 3×3 block means of the HR shifted by 0–2 HR pixels, plus noise."""
    hp = 3 * p
    big = rng.normal(size=(b, hp + 8, hp + 8))
    kernel = np.ones(5) / 5
    for axis in (1, 2):
        big = np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="same"), axis, big)
    big = 0.1 + 0.03 * big / big.std()
    hr = big[:, 4:4 + hp, 4:4 + hp]
    lr = np.empty((b, k, p, p))
    for i in range(k):
        dy, dx = rng.integers(-2, 3, 2)
        shifted = big[:, 4 + dy:4 + dy + hp, 4 + dx:4 + dx + hp]
        lr[:, i] = shifted.reshape(b, p, 3, p, 3).mean(axis=(2, 4)) + rng.normal(0, 0.002, (b, p, p))
    # A trivial prior: the mean of the frames, each LR pixel repeated 3×3 (blocky, blurred).
    prior = lr.mean(axis=1).repeat(3, axis=1).repeat(3, axis=2)
    inputs = {"lr": lr.astype(np.float32), "qm": np.ones((b, k, p, p), np.float32),
              "frame_mask": np.ones((b, k), np.float32), "reference": np.tile(np.eye(1, k, dtype=np.float32), (b, 1)),
              "prior": prior.astype(np.float32)}
    target = np.stack([hr, np.ones_like(hr)], axis=-1).astype(np.float32)
    return inputs, target


@pytest.mark.parametrize("base", ["prior", "median"])
def test_training_with_the_project_loss_beats_the_untrained_network(base):
    """Untrained, the network is its prior (or the median model); a few steps must do better."""
    from probav.losses import make_loss

    keras.utils.set_random_seed(0)
    inputs, target = _synthetic_batch(np.random.default_rng(8))
    if base == "median":
        inputs.pop("prior")
    model = build_misr_net(9, blocks=1, filters=16, filters_3d=8, mean=MEAN, std=STD, base=base)
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss=make_loss("mse"))
    before = float(model.evaluate(inputs, target, verbose=0))
    model.fit(inputs, target, batch_size=8, epochs=30, verbose=0)
    after = float(model.evaluate(inputs, target, verbose=0))
    assert np.isfinite(after) and after < 0.85 * before


def _scene(rng, frames=11):
    from probav.scene import Scene

    lr = rng.integers(6000, 9000, (frames, 16, 16)).astype(np.uint16)
    qm = rng.random((frames, 16, 16)) > 0.2
    return Scene(name="imgset9999", band="RED", lr=lr, qm=qm)


def test_save_load_round_trip_through_the_base_class(tmp_path):
    from probav.models.median import Median
    from probav.models.registry import load_model

    model = MisrNet(_params(misr_blocks_3d=1))
    model.set_normalisation(MEAN, STD)
    model.build()
    model.set_prior({"model": "median", "classical": {}})
    _randomise(model.network)
    scene = _scene(np.random.default_rng(9))
    expected = model.predict(scene)
    model.save(tmp_path / "misr")
    again = load_model("misr_net", _params(), tmp_path / "misr")
    assert isinstance(again, MisrNet) and again.hp("misr_blocks_3d") == 1 and again.uses_prior
    np.testing.assert_array_equal(again.predict(scene), expected)
    assert expected.shape == (48, 48)
    # The prior is recomputed as it was made for training (here the median model) …
    with_prior = _scene(np.random.default_rng(9))
    with_prior.extra["prior"] = Median().predict(scene)
    np.testing.assert_array_equal(again.predict(with_prior), expected)
    # … and a different prior read with the scene (from the TFRecords) is used as given.
    with_prior.extra["prior"] = np.full((48, 48), 7000, np.uint16)
    assert not np.array_equal(again.predict(with_prior), expected)


def test_a_prior_network_saved_without_its_prior_settings_says_so(tmp_path):
    model = MisrNet(_params())
    model.set_normalisation(MEAN, STD)
    model.build()
    with pytest.raises(ValueError, match="tfrecords.prior"):
        model.predict(_scene(np.random.default_rng(10)))


def test_median_base_round_trip(tmp_path):
    from probav.models.registry import load_model

    model = MisrNet(_params(misr_base="median"))
    model.set_normalisation(MEAN, STD)
    model.build()
    _randomise(model.network)
    inputs = _inputs(np.random.default_rng(9), b=1, p=16, real=7, prior=False)
    arrays = (inputs["lr"][0], inputs["qm"][0], inputs["frame_mask"][0])
    expected = model.predict_arrays(*arrays)
    model.save(tmp_path / "misr")
    again = load_model("misr_net", _params(), tmp_path / "misr")
    assert not again.uses_prior
    np.testing.assert_array_equal(again.predict_arrays(*arrays), expected)
