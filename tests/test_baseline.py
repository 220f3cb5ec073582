"""The official baseline: frame choice, output format, and its score on a real scene."""
from __future__ import annotations

import numpy as np
import pytest

from probav.metrics.reference import shifted_cpsnr_naive
from probav.metrics.score import score, shifted_cpsnr
from probav.models.baseline import baseline_sr, bicubic_upscale, clearest_frames
from probav.models.registry import load_model
from probav.scene import Scene, read_norm, read_scene


def test_clearest_frames_keeps_every_tie():
    qm = np.ones((6, 128, 128), bool)
    qm[0, :10] = False  # 1280 cloudy pixels
    qm[2, 5, 5] = False  # 1
    qm[4, :, :3] = False  # 384
    np.testing.assert_array_equal(clearest_frames(qm), [1, 3, 5])
    qm[[1, 3, 5], 0, 0] = False  # now frames 1, 2, 3, 5 tie with one cloudy pixel each
    np.testing.assert_array_equal(clearest_frames(qm), [1, 2, 3, 5])
    np.testing.assert_array_equal(clearest_frames(qm[:1]), [0])


def test_baseline_is_the_mean_of_the_chosen_upscales():
    rng = np.random.default_rng(0)
    lr = rng.integers(0, 16384, (4, 128, 128)).astype(np.uint16)
    qm = np.ones((4, 128, 128), bool)
    qm[1, 0, 0] = False  # frames 0, 2 and 3 are the clearest
    expected = np.mean([bicubic_upscale(lr[i] / 65535.0) for i in (0, 2, 3)], axis=0)
    np.testing.assert_allclose(baseline_sr(lr, qm), expected, rtol=0, atol=1e-15)


def test_predict_gives_384_uint16():
    rng = np.random.default_rng(1)
    scene = Scene(name="imgset9999", band="RED",
                  lr=rng.integers(0, 16384, (9, 128, 128)).astype(np.uint16),
                  qm=rng.random((9, 128, 128)) > 0.1)
    sr = load_model("baseline").predict(scene)
    assert sr.shape == (384, 384) and sr.dtype == np.uint16


def test_baseline_matches_norm_on_real_scene(probav_mini):
    scene = read_scene(probav_mini / "train" / "RED" / "imgset0000")
    norm = read_norm(probav_mini / "norm.csv")["imgset0000"]
    assert norm == pytest.approx(52.35, abs=0.01)
    # The scene's 17 frames: 9 of them tie at 128×128 clear pixels, and all 9 are used.
    counts = scene.qm.reshape(scene.frames, -1).sum(axis=1)
    chosen = clearest_frames(scene.qm)
    np.testing.assert_array_equal(chosen, np.flatnonzero(counts == counts.max()))
    assert len(chosen) == 9

    sr = load_model("baseline").predict(scene)
    assert sr.shape == (384, 384) and sr.dtype == np.uint16
    cpsnr = shifted_cpsnr(sr, scene.hr, scene.sm)
    assert cpsnr == pytest.approx(shifted_cpsnr_naive(sr, scene.hr, scene.sm), abs=1e-9)
    # A reimplementation lands near norm.csv, not on it: 52.50 dB here against 52.35.
    assert abs(cpsnr - norm) < 0.3
    assert cpsnr == pytest.approx(52.50, abs=0.01)
    assert score(cpsnr, norm) == pytest.approx(1.0, abs=0.006)
