"""The realism scorecard: each statistic on constructed cases with known answers, the distances, and the
stage on a tiny simulated archive against itself and against missing real material."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from probav.data.realism import (SceneStats, coherence, ks_distance, scene_statistics, scorecard, spectral_level,
                                 spectral_slope)
from probav.data.stats import radial_spectrum
from probav.scene import NO_DATA, Scene

REPO = Path(__file__).resolve().parents[1]


def power_law_field(beta: float, size: int = 128, seed: int = 0) -> np.ndarray:
    """A random field whose power spectrum falls as f^-beta."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.fftfreq(size)[None, :]
    f = np.maximum(np.hypot(fy, fx), 1.0 / size)
    spectrum = np.fft.fft2(rng.standard_normal((size, size))) * f ** (-beta / 2)
    return np.real(np.fft.ifft2(spectrum))


@pytest.mark.parametrize("beta", [2.0, 3.0])
def test_spectral_slope_of_a_power_law(beta):
    slopes = [spectral_slope(radial_spectrum(power_law_field(beta, seed=s), 24)) for s in range(4)]
    assert np.mean(slopes) == pytest.approx(-beta, abs=0.25)


def test_spectral_level_of_white_noise():
    """White noise of variance v has a flat spectrum at v (DN²): its level is log10 v."""
    noise = np.random.default_rng(1).normal(0, 30.0, (128, 128))
    assert spectral_level(radial_spectrum(noise, 24)) == pytest.approx(math.log10(900.0), abs=0.1)


def test_coherence_of_stripes_and_of_isotropic_texture():
    yy, xx = np.mgrid[:128, :128]
    stripes = np.sin(2 * np.pi * (0.8 * yy + 0.6 * xx) / 9.0)
    assert coherence(stripes) > 0.95
    blobs = ndi.gaussian_filter(np.random.default_rng(2).standard_normal((128, 128)), 2.0)
    assert coherence(blobs) < 0.5
    assert coherence(stripes) - coherence(blobs) > 0.45


def _scene(lr, qm=None, band="RED", name="imgset0000") -> Scene:
    lr = np.asarray(lr, np.uint16)
    return Scene(name=name, band=band, lr=lr, qm=np.ones(lr.shape, bool) if qm is None else qm)


def test_shift_statistics_of_frames_on_and_off_the_grid():
    """Frames at whole-pixel offsets have shifts 0 from the whole pixel; frames half a pixel off, 0.5."""
    rng = np.random.default_rng(3)
    big = ndi.gaussian_filter(rng.standard_normal((420, 420)), 3.0)
    big = 3000 + 600 * big / big.std()

    def frames(offsets):
        out = []
        for dy, dx in offsets:
            moved = ndi.shift(big, (3 * dy, 3 * dx), order=3, mode="nearest")[18:402, 18:402]
            out.append(moved.reshape(128, 3, 128, 3).mean(axis=(1, 3)))
        return np.round(np.array(out) / 16) * 16

    on = scene_statistics(_scene(frames([(0, 0), (1, 0), (0, -1), (1, 1), (0, 0)])))
    assert np.max(on.shift_fraction) < 0.05 and sorted(np.round(on.shift_magnitude, 1)) == [0.0, 1.0, 1.0, 1.4]
    off = scene_statistics(_scene(frames([(0, 0), (0.5, 0.5), (-0.5, 0.5), (0.5, -0.5), (0, 0)])))
    assert np.median(off.shift_fraction) > 0.4
    assert on.reference_fraction == [] and on.reference_cell == []   # no known reference frame: not measured

    # The reference frame (frame 0) a third of a pixel from the others' common position: the frames are on
    # one another's grid (shift_fraction small: the clearest frame is one of them) but off the reference's.
    scene = _scene(frames([(0, 0), (0.33, 0.33), (0.33, 0.33), (1.33, 0.33), (0.33, -0.67)]))
    scene.reference = 0
    ref = scene_statistics(scene)
    assert len(ref.reference_fraction) == 8 and len(ref.reference_cell) == 4
    assert np.median(ref.reference_fraction) == pytest.approx(0.33, abs=0.05)
    assert ref.reference_cell == [0.0] * 4
    assert np.median(ref.shift_fraction) < 0.1


def test_values_clouds_and_bits():
    lr = np.full((3, 128, 128), 4000, np.uint16)
    lr[0, :10, :10] = 20000            # a bright cloud above 14 bits, masked
    lr[1, :4, :] = NO_DATA             # no-data: not counted above 14 bits
    qm = np.ones(lr.shape, bool)
    qm[0, :10, :10] = False
    qm[0, 50:53, 50:54] = False        # a second cloud object of 12 px
    qm[1, :4, :] = False
    stats = scene_statistics(_scene(lr, qm), shifts=False)
    assert stats.above_14bit == pytest.approx(100 / (3 * 128 * 128 - 4 * 128))
    assert sorted(stats.cloud_objects) == [12, 100, 512]
    assert stats.cloud_cover[0] == pytest.approx(112 / 128 ** 2)
    assert np.all(stats.values == 4000)
    no_qm = scene_statistics(Scene("imgset0001", "NIR", lr, np.ones(lr.shape, bool), has_qm=False), shifts=False)
    assert no_qm.cloud_cover == [] and no_qm.values.size  # the per-pixel median of the frames stands in


def test_ks_distance_and_scorecard_rows():
    assert ks_distance([1, 2, 3], [1, 2, 3]) == 0.0
    assert ks_distance([1, 2, 3], [10, 11, 12]) == 1.0
    assert ks_distance([], [1]) is None
    a = SceneStats("imgset0000", "RED", True, 10, shift_magnitude=[0.1, 0.2], shift_fraction=[0.1, 0.2, 0.05, 0.1],
                   reference_fraction=[0.1, 0.3], reference_cell=[0.0],
                   spectra=[radial_spectrum(power_law_field(2.5), 24)], coherence=[0.4], values=np.array([3000.0]),
                   above_14bit=1e-3, cloud_cover=[0.0, 0.1], cloud_objects=[5, 9])
    rows = scorecard([a], [a], {"RED": np.array([47.0])}, {"RED": np.array([47.0])}, [1.0], [1.0])
    assert rows and all(r["distance"] in (None, 0.0) for r in rows)
    assert {r["statistic"] for r in rows} >= {"shift magnitude (LR px, median)", "spectral slope (log-log)",
                                               "position relative to the reference frame: distance to its LR grid "
                                               "(LR px, median)", "frames in the reference frame's own HR cell (share)",
                                               "directionality (structure-tensor coherence)",
                                               "baseline cPSNR (norm.csv, dB, median)",
                                               "reference frame's margin over the next-best frame (dB, median)"}


def test_the_stage_on_a_tiny_archive(tmp_path: Path):
    """Real material: the tiny archive itself (distances near 0), then none (an empty scorecard that says why)."""
    import importlib.util

    import yaml

    from probav.data.check import check_scenes
    from probav.data.synthetic import generate

    raw = tmp_path / "raw"
    generate(raw, {"seed": 5, "synthetic": {"train_scenes_per_band": 2, "test_scenes_per_band": 0,
                                            "min_frames": 9, "max_frames": 10, "mean_frames": 9.5, "workers": 1}},
             progress=False)
    check_scenes(raw, workers=1, index_csv=tmp_path / "scenes.csv")
    spec = importlib.util.spec_from_file_location("realism_stage", REPO / "stages" / "realism.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"real": {"folder": str(raw), "lr_only": None}}))
    out = tmp_path / "realism.json"
    assert stage.main(["--params", str(params), "--raw", str(raw), "--scenes", str(tmp_path / "scenes.csv"),
                       "--reference-table", str(tmp_path / "none.csv"), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["simulator_version"] >= 3 and result["real"]["scenes"] == 4
    distances = {k: v["distance"] for k, v in result["statistics"].items()}
    assert distances["shift magnitude (LR px, median) [all]"] == 0.0     # the same scenes on both sides
    assert distances["spectral slope (log-log) [RED]"] == pytest.approx(0.0, abs=1e-9)
    params.write_text(yaml.safe_dump({"real": {"folder": str(tmp_path / "nowhere"), "lr_only": None}}))
    assert stage.main(["--params", str(params), "--raw", str(raw), "--scenes", str(tmp_path / "scenes.csv"),
                       "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["statistics"] == {} and "not found" in result["real"]["absent"][0]
