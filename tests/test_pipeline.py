"""The training input: frame selection, clear patches, augmentation that happens and keeps LR/HR
aligned, seeded batches, whole dev scenes."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from probav.data import pipeline
from probav.data.pipeline import (evaluation_dataset, input_settings, patch_position, select_frames,
                                  training_dataset)
from probav.data.tfrecords import write_scenes
from probav.reference import ReferenceEstimator
from probav.scene import Scene

K, P, B = 5, 16, 4


def upscale(x: np.ndarray) -> np.ndarray:
    """Nearest-neighbour ×3 of the last two axes."""
    return np.repeat(np.repeat(x, 3, axis=-2), 3, axis=-1)


def np_dihedral(x: np.ndarray, t: int) -> np.ndarray:
    if t >= 4:
        x = np.swapaxes(x, -1, -2)
    return np.rot90(x, t % 4, axes=(-2, -1))


def aligned_scene(rng, name: str, frames: int, band: str = "RED") -> Scene:
    """Distinct random frames; HR = nearest-neighbour ×3 of frame 0 and SM = ×3 of its QM (which has a
    few holes), so an aligned patch pair satisfies upscale(lr[i]) == hr and upscale(qm[i]) == sm for
    the frame i that came from frame 0."""
    lr = (rng.integers(1, 4096, (frames, 128, 128)) * 16).astype(np.uint16)
    qm = rng.random((frames, 128, 128)) < np.linspace(0.7, 0.95, frames)[:, None, None]
    qm[0] = rng.random((128, 128)) < 0.985
    return Scene(name, band, lr, qm, upscale(lr[0]), upscale(qm[0]), norm=45.0)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """Two shards: 6 scenes with 3–8 frames (some fewer than K), and 2 test scenes without HR."""
    folder = tmp_path_factory.mktemp("tfrecords")
    rng = np.random.default_rng(1)
    scenes = [aligned_scene(rng, f"imgset{i:04d}", 3 + i, "RED" if i % 2 else "NIR") for i in range(6)]
    for scene in scenes:  # what write_scenes stores: the hand-set estimator rule's probabilities
        scene.extra["probs"] = ReferenceEstimator.rule().probabilities(scene).astype(np.float32)
    write_scenes(scenes[:3], folder / "train-00000-of-00002.tfrecord.gz")
    write_scenes(scenes[3:], folder / "train-00001-of-00002.tfrecord.gz")
    test = [Scene(f"imgset{9 + i:04d}", "RED", s.lr, s.qm) for i, s in enumerate(scenes[:2])]
    write_scenes(scenes[:2] + test, folder / "dev-00000-of-00001.tfrecord.gz")
    return folder, {s.name: s for s in scenes}


def params(**changes) -> dict:
    base = {"frames": K, "selection": "top_k", "patch_size": P, "min_patch_clearance": 0.9, "batch_size": B,
            "augment": True, "patch_tries": 16, "patches_per_scene": 2, "shuffle_buffer": 8}
    return {"seed": 3, "input": {**base, **changes}}


def train_files(folder):
    return sorted(str(p) for p in folder.glob("train-*.tfrecord.gz"))


def take(dataset, n: int) -> list:
    return [(({k: v.numpy() for k, v in x.items()}), y.numpy()) for x, y in dataset.take(n)]


# ----------------------------------------------------------------------------- select_frames

def cloudy_scene(clear: list[float], rng=None) -> tuple[np.ndarray, np.ndarray]:
    rng = rng or np.random.default_rng(0)
    lr = (rng.integers(0, 4096, (len(clear), 128, 128)) * 16).astype(np.uint16)
    qm = np.zeros((len(clear), 128, 128), bool)
    for i, c in enumerate(clear):
        qm[i].flat[:int(round(c * 128 * 128))] = True
    return lr, qm


def test_top_k_picks_the_clearest_first_ties_to_lower_index():
    lr, qm = cloudy_scene([0.5, 0.9, 0.2, 1.0, 0.9, 0.7, 0.3])
    out_lr, out_qm, mask, reference = select_frames(lr, qm, 4, "top_k")
    assert not np.any(reference.numpy())                         # no reference weights given: zeros
    assert out_lr.dtype == tf.float32 and out_lr.shape == (4, 128, 128) and mask.shape == (4,)
    order = [3, 1, 4, 5]
    np.testing.assert_array_equal(out_lr.numpy(), lr[order].astype(np.float32) / 65535.0)
    np.testing.assert_array_equal(out_qm.numpy(), qm[order].astype(np.float32))
    np.testing.assert_array_equal(mask.numpy(), np.ones(4, np.float32))
    # Floats in [0, 1] are taken as they are; numpy or tensors alike.
    again, _, _, _ = select_frames(tf.constant(lr.astype(np.float32) / 65535.0), tf.constant(qm), 4)
    np.testing.assert_array_equal(again.numpy(), out_lr.numpy())


def test_padding_when_fewer_frames_than_k():
    lr, qm = cloudy_scene([0.4, 0.8, 0.6])
    out_lr, out_qm, mask, _ = select_frames(lr, qm, 5)
    np.testing.assert_array_equal(mask.numpy(), [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(out_lr.numpy()[:3], lr[[1, 2, 0]] / np.float32(65535.0))
    assert not np.any(out_lr.numpy()[3:]) and not np.any(out_qm.numpy()[3:])


def test_weighted_is_seeded_and_favours_clear_frames():
    clear = [0.0, 0.05, 0.1, 0.95, 0.9, 1.0, 0.0, 0.85]
    lr, qm = cloudy_scene(clear)
    qm_t = tf.constant(qm)

    def chosen(seed):
        out, _, _, _ = select_frames(lr, qm_t, 3, "weighted", seed)
        return tuple(int(np.argmax([np.array_equal(o, f / np.float32(65535.0)) for f in lr])) for o in out.numpy())

    assert chosen(11) == chosen(11)
    draws = [chosen(s) for s in range(40)]
    assert len(set(draws)) > 1                                   # different seeds, different draws
    counts = np.bincount(np.concatenate(draws), minlength=len(clear))
    assert counts[0] == counts[6] == 0                          # never a frame with no clear pixel
    assert counts[[3, 4, 5, 7]].sum() > 5 * counts[[1, 2]].sum()
    for d in draws:                                             # clearest first, no repeats
        assert len(set(d)) == 3 and list(d) == sorted(d, key=lambda i: -clear[i])
    with pytest.raises(ValueError, match="seed"):
        select_frames(lr, qm, 3, "weighted")


def test_the_reference_comes_first_with_its_weight_whatever_its_clearance():
    lr, qm = cloudy_scene([0.5, 0.9, 0.2, 1.0, 0.9, 0.7, 0.3])
    weights = np.array([0.05, 0.1, 0.6, 0.05, 0.1, 0.05, 0.05], np.float32)  # frame 2: cloudy, most likely
    out_lr, _, mask, reference = select_frames(lr, qm, 4, "top_k", reference=weights)
    order = [2, 3, 1, 4]
    np.testing.assert_array_equal(out_lr.numpy(), lr[order].astype(np.float32) / 65535.0)
    np.testing.assert_allclose(reference.numpy(), weights[order])
    _, _, mask, reference = select_frames(lr[:3], qm[:3], 5, "top_k", reference=np.eye(3, dtype=np.float32)[0])
    np.testing.assert_array_equal(reference.numpy(), [1, 0, 0, 0, 0])  # padding carries no weight
    for seed in range(5):                                        # weighted selection too
        out, _, _, reference = select_frames(lr, qm, 3, "weighted", seed, reference=weights)
        np.testing.assert_array_equal(out.numpy()[0], lr[2] / np.float32(65535.0))
        assert reference.numpy()[0] == pytest.approx(0.6)


def test_augmentation_keeps_the_reference_first_and_moves_the_weights_with_their_frames():
    rng = np.random.default_rng(3)
    k = 6
    lr = tf.constant(rng.random((k, P, P)).astype(np.float32))
    qm = tf.ones((k, P, P))
    mask = tf.constant([1, 1, 1, 1, 1, 0], tf.float32)
    weights = tf.constant([0.7, 0.1, 0.1, 0.05, 0.05, 0.0])
    hr = tf.zeros((3 * P, 3 * P))
    moved = 0
    for seed in range(8):
        out = pipeline.augment(lr, qm, mask, hr, hr, seed, reference=weights)
        out_lr, out_weights = out[0].numpy(), out[-1].numpy()
        t = next(t for t in range(8) if np.array_equal(out_lr[0], np_dihedral(lr.numpy()[0], t)))
        order = [next(j for j in range(k) if np.array_equal(out_lr[i], np_dihedral(lr.numpy()[j], t)))
                 for i in range(k)]
        assert order[0] == 0 and order[-1] == k - 1             # reference first, padding last
        np.testing.assert_allclose(out_weights, weights.numpy()[order])
        moved += order != list(range(k))
    assert moved >= 4


# ----------------------------------------------------------------------------- patches

def test_patch_position_respects_the_clearance_threshold():
    sm = np.zeros((384, 384), bool)
    sm[:150, :150] = True                                        # clear only in the upper-left corner
    for seed in range(20):
        y, x, ok = patch_position(tf.constant(sm), P, 0.9, 32, seed)
        if bool(ok):
            window = sm[3 * int(y):3 * int(y) + 3 * P, 3 * int(x):3 * int(x) + 3 * P]
            assert window.mean() >= 0.9
    assert any(bool(patch_position(tf.constant(sm), P, 0.9, 64, s)[2]) for s in range(5))
    _, _, ok = patch_position(tf.constant(np.zeros((384, 384), bool)), P, 0.9, 16, 0)
    assert not bool(ok)
    _, _, ok = patch_position(tf.constant(np.zeros((384, 384), bool)), P, 0.0, 16, 0)
    assert bool(ok)


def test_batches_follow_the_contract_with_clear_targets(records):
    folder, _ = records
    batches = take(training_dataset(train_files(folder), params(min_patch_clearance=0.97, patches_per_scene=1),
                                    seed=5), 3)
    for inputs, target in batches:
        assert inputs["lr"].shape == (B, K, P, P) and inputs["lr"].dtype == np.float32
        assert inputs["qm"].shape == (B, K, P, P) and inputs["frame_mask"].shape == (B, K)
        assert target.shape == (B, 3 * P, 3 * P, 2) and target.dtype == np.float32
        assert 0 <= inputs["lr"].min() and inputs["lr"].max() <= 1
        assert set(np.unique(inputs["qm"])) <= {0.0, 1.0} and set(np.unique(target[..., 1])) <= {0.0, 1.0}
        assert np.all(target[..., 1].mean(axis=(1, 2)) >= 0.97)
        # Padding frames (scenes with fewer than K frames) are zero and masked.
        pad = inputs["frame_mask"] == 0
        assert not np.any(inputs["lr"][pad]) and not np.any(inputs["qm"][pad])
    assert any(np.any(inputs["frame_mask"] == 0) for inputs, _ in batches)


def test_no_clear_patch_anywhere_is_an_error_not_a_hang(records, monkeypatch):
    folder, _ = records
    monkeypatch.setattr(pipeline, "MAX_CONSECUTIVE_REJECTS", 10)
    dataset = training_dataset(train_files(folder), params(min_patch_clearance=1.0, patch_size=64), seed=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="min_patch_clearance"):
        take(dataset, 1)


# ----------------------------------------------------------------------------- augmentation

def source_frame(patch: np.ndarray, hr: np.ndarray) -> list[int]:
    """Frames of a (K,P,P) LR patch whose ×3 upscale is the HR patch."""
    return [i for i in range(len(patch)) if np.array_equal(upscale(patch[i]), hr)]


def test_augmentation_changes_outputs_and_keeps_lr_hr_aligned(records):
    folder, _ = records
    files = train_files(folder)
    plain = take(training_dataset(files, params(augment=False), seed=9), 4)
    augmented = take(training_dataset(files, params(augment=True), seed=9), 4)
    transforms, reordered = set(), 0
    for (x0, y0), (x1, y1) in zip(plain, augmented):
        assert not np.array_equal(x0["lr"], x1["lr"])              # augmentation actually happened
        for b in range(B):
            # Same scene and patch position (the same seed draws them), transformed together.
            for xs, ys in ((x0, y0), (x1, y1)):
                hr, sm = ys[b, ..., 0], ys[b, ..., 1]
                match = source_frame(xs["lr"][b], hr)
                assert len(match) == 1, "LR and HR patches are misaligned"
                np.testing.assert_array_equal(upscale(xs["qm"][b, match[0]]), sm)
            ts = [t for t in range(8)
                  if np.array_equal(np.stack([np_dihedral(y0[b, ..., c], t) for c in range(2)], -1), y1[b])]
            assert ts, "the augmented target is not a flip/rotation of the plain one"
            t = ts[0]
            transforms.add(t)
            # The augmented frames are the plain frames, flipped/rotated the same way, in some order
            # of the real frames (padding stays last, with its mask).
            n = int(x0["frame_mask"][b].sum())
            np.testing.assert_array_equal(x1["frame_mask"][b], x0["frame_mask"][b])
            plain_frames = [np_dihedral(f, t) for f in x0["lr"][b][:n]]
            order = [next(j for j, f in enumerate(plain_frames) if np.array_equal(f, g)) for g in x1["lr"][b][:n]]
            assert sorted(order) == list(range(n))
            np.testing.assert_array_equal(x1["qm"][b][:n], np.stack([np_dihedral(x0["qm"][b][j], t) for j in order]))
            reordered += order != list(range(n))
    assert len(transforms) >= 3 and reordered >= 4


def test_dihedral_matches_numpy():
    x = np.arange(2 * 4 * 4).reshape(2, 4, 4)
    for t in range(8):
        np.testing.assert_array_equal(pipeline.dihedral(tf.constant(x), t).numpy(), np_dihedral(x, t))


# ----------------------------------------------------------------------------- seeds

def test_same_seed_same_batches_different_seed_different_batches(records):
    folder, _ = records
    files = train_files(folder)
    p = params(selection="weighted")
    a = take(training_dataset(files, p, seed=21), 3)
    b = take(training_dataset(files, p, seed=21), 3)
    c = take(training_dataset(files, p, seed=22), 3)
    for (xa, ya), (xb, yb) in zip(a, b):
        for key in xa:
            np.testing.assert_array_equal(xa[key], xb[key])
        np.testing.assert_array_equal(ya, yb)
    assert any(not np.array_equal(xa["lr"], xc["lr"]) for (xa, _), (xc, _) in zip(a, c))


# ----------------------------------------------------------------------------- evaluation

def test_evaluation_dataset_gives_whole_dev_scenes(records):
    folder, scenes = records
    batches = take(evaluation_dataset([folder / "dev-00000-of-00001.tfrecord.gz"], params()), 10)
    assert len(batches) == 2                                     # the two test scenes without HR are left out
    for (inputs, target), name in zip(batches, ["imgset0000", "imgset0001"]):
        scene = scenes[name]
        assert inputs["lr"].shape == (1, K, 128, 128) and target.shape == (1, 384, 384, 2)
        lr, qm, mask, reference = select_frames(scene.lr, scene.qm, K, "top_k", reference=scene.extra["probs"])
        np.testing.assert_array_equal(inputs["reference"][0], reference.numpy())
        np.testing.assert_array_equal(inputs["lr"][0], lr.numpy())
        np.testing.assert_array_equal(inputs["qm"][0], qm.numpy())
        np.testing.assert_array_equal(inputs["frame_mask"][0], mask.numpy())
        np.testing.assert_array_equal(target[0, ..., 0], scene.hr / np.float32(65535.0))
        np.testing.assert_array_equal(target[0, ..., 1], scene.sm.astype(np.float32))
    again = take(evaluation_dataset([folder / "dev-00000-of-00001.tfrecord.gz"], params(), batch_size=2), 10)
    assert len(again) == 1 and again[0][1].shape == (2, 384, 384, 2)


def test_input_settings_are_checked():
    assert input_settings({})["frames"] == 9
    for bad in ({"selection": "random"}, {"patch_size": 200}, {"min_patch_clearance": 1.5}, {"frames": 0}):
        with pytest.raises(ValueError, match="input."):
            input_settings({"input": bad})
    with pytest.raises(ValueError, match="no TFRecord files"):
        training_dataset([], params(), 0)


def test_prior_patches_are_cut_and_transformed_with_the_hr(tmp_path):
    """Records whose prior is the HR itself: every training patch's prior equals its HR target
    (same position, same flip/rotation), and whole dev scenes carry their prior."""
    from probav.data.tfrecords import COMPRESSION, scene_record, serialize_record

    rng = np.random.default_rng(4)
    scenes = [aligned_scene(rng, f"imgset{i:04d}", 6) for i in range(3)]
    path = tmp_path / "train-00000-of-00001.tfrecord.gz"
    with tf.io.TFRecordWriter(str(path), options=tf.io.TFRecordOptions(compression_type=COMPRESSION)) as writer:
        for scene in scenes:
            record = scene_record(scene)
            record["prior"] = np.ascontiguousarray(scene.hr, "<u2").tobytes()
            writer.write(serialize_record(record))
    for inputs, target in take(training_dataset([str(path)], params(), seed=2), 3):
        assert inputs["prior"].shape == (B, 3 * P, 3 * P)
        np.testing.assert_array_equal(inputs["prior"], target[..., 0])
    (inputs, target), = take(evaluation_dataset([str(path)], params(), batch_size=3), 1)
    np.testing.assert_array_equal(inputs["prior"], target[..., 0])


def test_records_without_a_prior_give_zeros(records):
    folder, _ = records
    inputs, _ = take(training_dataset(train_files(folder), params(), seed=1), 1)[0]
    assert inputs["prior"].shape == (B, 3 * P, 3 * P) and not np.any(inputs["prior"])


def test_tracks_in_training_and_validation(tmp_path):
    """A labelled scene whose frame 0 is the HR's (its labelled reference) and whose estimator would
    pick another: patches given the reference see it first, one-hot, with the ref-track prior (here the
    HR); the others see the estimate, with the challenge-track prior (here zeros). Validation follows
    reference.track."""
    from probav.data.tfrecords import COMPRESSION, scene_record, serialize_record

    rng = np.random.default_rng(5)
    scene = aligned_scene(rng, "imgset0000", 6)
    scene.reference = 0
    record = scene_record(scene)
    probs = np.full(6, 0.04, np.float32)
    probs[3] = 0.8
    record["reference_probs"] = probs.tobytes()
    record["prior_ref"] = np.ascontiguousarray(scene.hr, "<u2").tobytes()
    record["prior"] = np.zeros((384, 384), "<u2").tobytes()
    path = tmp_path / "train-00000-of-00001.tfrecord.gz"
    with tf.io.TFRecordWriter(str(path), options=tf.io.TFRecordOptions(compression_type=COMPRESSION)) as writer:
        writer.write(serialize_record(record))
    given = no = 0
    for inputs, target in take(training_dataset([str(path)], params(frames=4, reference_given=0.5), seed=4), 6):
        for b in range(B):
            first = inputs["lr"][b, 0]
            if inputs["reference"][b, 0] == 1.0:   # given: the labelled frame (the HR's) first, its prior
                given += 1
                np.testing.assert_array_equal(inputs["reference"][b], [1, 0, 0, 0])
                np.testing.assert_array_equal(inputs["prior"][b], target[b, ..., 0])
                np.testing.assert_array_equal(upscale(first), target[b, ..., 0])
            else:                                  # estimated: frame 3 first, the challenge prior
                no += 1
                assert inputs["reference"][b, 0] == pytest.approx(0.8)
                assert not np.any(inputs["prior"][b])
    assert given > 2 and no > 2
    for track, expected in (("ref", 1.0), ("challenge", 0.8)):
        (inputs, target), = take(evaluation_dataset([str(path)], {**params(frames=4), "reference": {"track": track}}), 1)
        assert inputs["reference"][0, 0] == pytest.approx(expected)
        assert np.array_equal(inputs["prior"][0], target[0, ..., 0]) == (track == "ref")
