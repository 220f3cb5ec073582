"""The built-in PROBA-V simulator: the project's default data source (``data.source: synthetic``).

``generate(root, params)`` writes scenes in the official archive layout
(``train|test/RED|NIR/imgsetNNNN/{LR…, QM…, HR, SM}.png`` and ``norm.csv``; test scenes have no
``HR.png``), the reference labels of the train scenes in PROBA-V-REF's format (``reference.json``,
see ``probav.data.reference_labels``), plus ``root/synthetic/``: the true shift, gain, offset and
acquisition day of every frame (``shifts.csv``), one row per scene (``scenes.csv``), the simulator
settings (``settings.json``), and the hidden HR/SM (``test_hr/imgsetNNNN/``) and reference labels
(``test_reference.json``) of the test scenes, so test predictions can be scored locally.

How a scene is made (one random generator per scene, seeded from params.yaml's ``seed`` and the
scene's split, band and name, so the result does not depend on the number of worker processes):

1. Landscape, rendered at the HR resolution (100 m) with a margin of ``MARGIN`` pixels: land-use
   zones (fields / natural), field parcels (a warped, rotated brick grid, their texture stretched
   along the grid: furrows and strips) and natural patches (classes from quantiles of a smooth
   multi-scale field stretched along one direction: ridges, dunes, drainage), each parcel or
   patch of a land class whose RED/NIR levels follow real
   reflectances (vegetation dark in RED and bright in NIR, water dark in both and darkest in NIR,
   towns, bare soil and sand medium-to-bright in both), texture and relief shading from
   power-law noise, a regional low-frequency modulation, lakes, meandering rivers with riparian
   vegetation, towns, roads. Both bands are rendered for every scene; the scene keeps the one of its
   band. Clear LR values (scorecard, median): RED about 3000, NIR about 8900 (vegetated scenes near
   12000, arid ones near 6000); real scenes here: RED medians 2500–8200 per scene, NIR 5600–12600.
2. HR: the landscape on its acquisition day (day 0) with a slight blur and noise, clouds on some
   HR images (SM marks them, slightly dilated; at least 75% clear), quantised to multiples of 16.
3. LR frames (9–35, Beta-distributed around ``mean_frames``), in random order (the frame number
   says nothing about the date). One of them, the *reference*, is the 300 m image of the HR's own
   pass: the HR's signal, its clouds included, binned 3×3 at a whole-LR-pixel offset (−1, 0 or +1
   per axis), slightly more blurred, with the pass's gain (1 ± 0.4%) and its own noise; its QM comes
   from the HR's clouds, so it matches the SM. This is what the real archive shows: on imgset0000
   the reference LR004 equals the 3×3-binned HR, one LR pixel over, to 28 DN rms (the other frames:
   160 DN and more), and it beats every other single frame by 1.3 dB (2.5 dB on a second real scene).
   The other frames are acquired on other days within a 30-day window around day 0. Each: the
   landscape changed by parcel-wise trends and jitter and a smooth field, growing with the distance
   in days from day 0, and by a per-parcel difference between passes whatever their dates (view
   angle, atmosphere); shifted as real frames are, close to one another's grid (a sub-pixel jitter of
   about 0.1 LR px around a whole-pixel offset that is 0 for most frames and ±1 for some, plus an
   offset common to the scene's other frames, about 0.12 LR px per axis, that the reference frame on
   the HR's grid does not share; a few strays); blurred by a PSF of its own (a Gaussian of its own width per axis and, for half of the
   frames, a box of pixel integration and resampling: no method gets the exact forward model) and
   averaged 3×3 (all in Fourier); per-frame gain, offset and haze; sometimes detector striping; clouds
   (thresholded smooth noise, puffy or layered, mostly below 14 bits, a few up to about 30000) with
   their shadows; noise; quantised to multiples of 16. The QM marks clouds and (mostly) shadows with imperfect edges:
   thin cloud edges are missed, masks are randomly dilated or eroded. The no-data value 65520
   fills swath edges and some cloud cores, always masked. Frames are at least 60% clear.
4. ``norm.csv``: the official baseline's cPSNR computed by the project
   (``shifted_cpsnr(to_uint16(baseline_sr(lr, qm)), hr, sm)``), for test scenes on the HR that is
   then withheld.

Shift convention (``shifts.csv``): ``dy, dx`` in LR pixels is where the frame sees the ground
relative to the HR's grid: a feature at LR position ``p`` of the HR (downsampled) appears at
``p + (dy, dx)`` in the frame. ``skimage.registration.phase_cross_correlation(frame_a, frame_b)``
therefore returns about ``(dy_a - dy_b, dx_a - dx_b)``.

Version 3 moved the realism scorecard (``probav.data.realism``) toward the real scenes: real shift
statistics (median shift 0.40 → 0.18 LR px, real 0.16; the distance to the whole pixel 0.22 → 0.085,
real 0.081), directional texture (RED coherence 0.24 → 0.33, real 0.46), NIR levels, LR pixels above 14
bits 0.0129 → 0.0005 (real 0.0003), a varied forward model, texture power and change rates retuned to
keep the norms by band.

Version 4 moved the other frames' common position off the reference frame's grid (``shift_scene_sigma``
0.05 → 0.12 LR px per axis; the random draws are the same, only their scale changed). Registered to the
labelled reference frame (as the report's positions figure does), the 119 frames of the 7 labelled real
scenes lie 0.100 LR px per axis from its grid (median) and 44% of them in its own HR cell (within 1/6 LR px
in both directions); version 3 on 96 scenes: 0.076 and 73%, outside what 7-scene samples of it give
(95%: 0.064–0.089 and 63–82%); version 4 on the same 96 scenes: 0.108 and 49% (7-scene samples 95%: 0.086–0.145
and 33–65%). The per-scene offset of the other frames' median position from the reference: real rms 0.116
LR px per axis, version 3 0.057, version 4 0.124. The distance to the whole pixel measured from the clearest
frame (the scorecard's older shift statistic, which does not see this offset since the clearest frame is
one of the others on most scenes) moves 0.084 → 0.090 (real 0.081; 7-scene samples of version 4, 95%:
0.073–0.113). The scorecard (24 train scenes per band, 12 registered): position relative to the reference,
distance to its grid 0.073 → 0.105 (KS D 0.19 → 0.08), share in its HR cell 0.74 → 0.51 (real 0.44);
distance to the whole pixel 0.085 → 0.089 (KS D 0.05 → 0.06); the reference frame's margin over the
next-best frame on 24 of the scenes 0.93 → 1.09 dB (real 1.29 on one scene).

Calibration (against the real sample ``probav-mini`` and the official ``norm.csv``; measured by the
realism scorecard on 24 train scenes per band): the per-scene contrast factors, the texture power, the
change rates and the river density were tuned so that the simulated norms match the real ones by band
(official norm.csv medians: RED 47.2 dB, NIR 45.4 dB; simulated: RED 48.1, NIR 44.9), the texture's power
spectrum matches the real frames' (RED slope −2.31 against −2.32), and the pass-to-pass differences so that
the reference frame alone beats the next-best single frame by as much as on the real scenes (median over
the dev scenes 1.28 dB, 10th–90th percentile 0.49–2.69 dB; real: 1.28 dB on imgset0000 and 2.5 dB on a
second real scene). Version 1 had no such frame: its day-0 frame was shifted, blurred and clouded like
any other, was the best single frame on only 29% of scenes, and 15% of scenes had none.

How real the result is, statistic by statistic, is measured by ``probav.data.realism`` (the realism
scorecard of the ``realism`` stage).
"""
from __future__ import annotations

import csv
import json
import math
import multiprocessing
import os
import shutil
import uuid
from functools import lru_cache
from pathlib import Path

import numpy as np
import scipy.fft
from scipy import ndimage as ndi

from probav.data.reference_labels import LABELS_FILE, write_labels
from probav.data.resume import (changed_keys, code_fingerprint, digest, file_sizes, library_versions, read_json,
                                write_json)
from probav.params import derive_seed
from probav.scene import (BANDS, HR_SIZE, LR_SIZE, NO_DATA, SCALE, SPLITS, Scene, to_uint16, write_norm, write_png,
                          write_scene)

VERSION = 4
MARGIN = 24                      # HR pixels rendered around the 384×384 crop (shifts + PSF support)
FULL = HR_SIZE + 2 * MARGIN      # 432: side of the rendered landscape
QUANTUM = 16                     # every stored value is a multiple of 16, as in the real files
MAX_VALUE = NO_DATA - QUANTUM    # 65504: the largest value a real pixel may take
PROFILES = ("default", "large")
# Scene counts of the official archive (the 'large' profile).
OFFICIAL_COUNTS = {("train", "RED"): 594, ("train", "NIR"): 566, ("test", "RED"): 146, ("test", "NIR"): 144}
# Resuming (``generate(..., resume=True)``): where scenes are made before being renamed into place, where
# their records and the run's fingerprint live, the files written last, and what the fingerprint covers.
RESUME_FORMAT = 1
RESUME_DIR = "resume"            # root/synthetic/resume/{fingerprint.json, scenes/<name>.json}
PARTIAL = ".partial"             # root/.partial/<name>-<pid>-<random>/: scenes being written
FINAL_FILES = ("norm.csv", LABELS_FILE, "synthetic/shifts.csv", "synthetic/scenes.csv", "synthetic/settings.json",
               "synthetic/test_reference.json")
FINGERPRINT_MODULES = ["probav.data.synthetic", "probav.scene", "probav.png", "probav.params",
                       "probav.models.baseline", "probav.metrics.score", "probav.data.reference_labels"]
FINGERPRINT_LIBRARIES = ["numpy", "scipy", "scikit-image", "Pillow"]
SHIFT_COLUMNS = ["name", "frame", "dy", "dx", "gain", "offset", "days", "band", "split", "clearance",
                 "cloud_cover", "nodata", "psf_sigma"]
SCENE_COLUMNS = ["name", "band", "split", "biome", "frames", "norm", "hr_clearance", "mean_clearance",
                 "contrast", "change_rate", "reference", "water_flagged"]

# name: (RED, NIR, parcel relative sd, texture relative sd, vegetation 0..1)
CLASSES = {
    "water":    (1150, 650, 0.10, 0.02, 0.0),
    "turbid":   (1900, 1300, 0.12, 0.03, 0.0),
    "forest":   (1700, 10400, 0.08, 0.06, 1.0),
    "crop":     (2050, 12400, 0.10, 0.03, 1.0),
    "crop_dry": (3300, 7600, 0.10, 0.04, 0.5),
    "soil":     (4600, 5600, 0.12, 0.05, 0.0),
    "grass":    (2800, 10200, 0.08, 0.05, 0.8),
    "shrub":    (3500, 6800, 0.08, 0.06, 0.5),
    "sand":     (7300, 9600, 0.06, 0.04, 0.0),
    "rock":     (5200, 6900, 0.10, 0.08, 0.0),
    "wetland":  (1900, 5300, 0.15, 0.08, 0.6),
    "town":     (4300, 5600, 0.06, 0.15, 0.0),
}
CLASS_NAMES = list(CLASSES)
CLASS_TABLE = np.array([CLASSES[c] for c in CLASS_NAMES], np.float64)  # (C, 5)
ROAD = (4500, 5300)

BIOMES = {
    "cropland": dict(weight=0.30, field_share=0.8, field={"crop": 4, "crop_dry": 3, "soil": 2, "grass": 1},
                     natural={"forest": 2, "grass": 2, "shrub": 1}, lakes=0.01, rivers=(0, 1), towns=0.015,
                     roads=(1, 4), relief=0.02, change=1.2, field_size=(4, 13)),
    "forest": dict(weight=0.15, field_share=0.15, field={"crop": 2, "grass": 2, "soil": 1},
                   natural={"forest": 6, "grass": 1, "wetland": 1}, lakes=0.03, rivers=(0, 1), towns=0.003,
                   roads=(0, 2), relief=0.06, change=0.6, field_size=(4, 10)),
    "savanna": dict(weight=0.20, field_share=0.15, field={"crop_dry": 2, "soil": 2, "grass": 1},
                    natural={"grass": 3, "shrub": 3, "soil": 1, "forest": 1}, lakes=0.005, rivers=(0, 1),
                    towns=0.005, roads=(0, 2), relief=0.04, change=1.0, field_size=(4, 10)),
    "desert": dict(weight=0.08, field_share=0.03, field={"crop": 1, "soil": 1},
                   natural={"sand": 4, "rock": 2, "shrub": 1}, lakes=0.0, rivers=(0, 1), towns=0.003,
                   roads=(0, 2), relief=0.08, change=0.4, field_size=(5, 12)),
    "wetland": dict(weight=0.09, field_share=0.3, field={"crop": 2, "grass": 2},
                    natural={"wetland": 3, "grass": 2, "forest": 1}, lakes=0.06, rivers=(1, 2), towns=0.005,
                    roads=(0, 2), relief=0.01, change=1.0, field_size=(4, 12)),
    "mixed": dict(weight=0.18, field_share=0.5, field={"crop": 3, "crop_dry": 2, "soil": 2},
                  natural={"forest": 2, "grass": 2, "shrub": 1}, lakes=0.015, rivers=(0, 1), towns=0.02,
                  roads=(1, 3), relief=0.04, change=1.0, field_size=(4, 12)),
}

# Physical knobs of the simulator (recorded in synthetic/settings.json).
DEFAULT_SETTINGS = {
    "min_frames": 9,
    "max_frames": 35,
    "mean_frames": 19,
    "contrast_sigma": {"RED": 0.4, "NIR": 0.8},   # log-sd of the per-scene contrast factor
    "contrast_median": {"RED": 0.9, "NIR": 0.26},  # NIR detail is weaker relative to its level
    "class_contrast": {"RED": 0.85, "NIR": 0.5},    # compression of the class levels around their mean
    "class_contrast_sigma": 0.4,     # log-sd of the class compression (same draw as the scene contrast)
    "texture_beta": [1.3, 2.1],      # power-law exponent of the within-parcel texture
    "texture_anisotropy": [1.3, 2.5],  # stretch of the within-parcel texture along the field grid
    "natural_anisotropy": [1.2, 3.0],  # stretch of the natural patches and the relief along one direction
    "texture_gain": {"RED": 3.4, "NIR": 1.5},  # multiplies the classes' relative texture sd
    "ecotone": [0.5, 1.5],           # HR pixels, blur between natural patches
    "regional": [0.01, 0.05],        # relative amplitude of the low-frequency regional modulation
    "red_offset": [-300.0, 500.0],   # per-scene additive RED level (atmosphere)
    "nir_gain": [0.9, 1.1],          # per-scene NIR gain
    "hr_blur": [0.35, 0.6],          # HR pixels, Gaussian sigma of the HR's own PSF
    "hr_read_noise": [3.0, 7.0],
    "psf_sigma": [0.3, 0.8],         # HR pixels, Gaussian sigma of each LR frame's PSF per axis (on top of the 3×3 average)
    "psf_box_prob": 0.5,             # frames whose PSF also integrates over a box (resampling onto the product grid)
    "psf_box": [0.2, 1.0],           # HR pixels, that box's width
    "shift_jitter": 0.10,            # LR pixels, per-frame sub-pixel jitter sd around a whole-pixel offset
    "shift_whole_prob": 0.05,        # per frame and axis: the chance of a whole-pixel offset (±1)
    "shift_scene_sigma": 0.12,       # LR pixels, per-scene offset sd of the other frames' common position from the
                                     # HR's grid (where the reference frame sits); version 3: 0.05
    "shift_outlier_prob": 0.03,
    "shift_outlier_sigma": 0.6,
    "max_shift": 2.0,
    "window_days": 30,
    "reference_extra_blur": [0.0, 0.35],  # HR pixels: blur of the reference frame beyond the HR's own
    "reference_gain_sigma": 0.004,   # the reference frame's gain (and relative offset) spread: same pass as the HR
    "change_trend": 0.06,            # relative parcel change per 30 days (growth / harvest)
    "change_jitter": 0.05,           # relative random parcel change at 30 days (grows as sqrt of days)
    "change_field": 0.03,            # relative smooth-field change at 30 days
    "pass_jitter": {"RED": 0.018, "NIR": 0.018},  # relative per-parcel difference between passes, whatever their dates (view
                                     # angle, atmosphere): frames of the next days are not the HR's pass either
    "change_sigma": 0.35,            # log-sd of the per-scene change rate
    "change_band": {"RED": 1.6, "NIR": 0.4},  # NIR changes less relative to its (higher) level
    "gain_sigma": 0.05,
    "offset_sigma": 0.03,            # relative to the scene mean
    "haze": 0.01,                    # relative amplitude of a smooth additive haze field
    "stripe_prob": 0.12,
    "stripe_amplitude": [0.01, 0.035],
    "read_noise": [4.0, 10.0],       # DN
    "shot_noise": 0.12,              # DN per sqrt(DN)
    "clear_frame_prob": 0.55,        # frames without any cloud
    "light_cloud_prob": 0.30,        # frames with cloud cover up to 10%; the rest up to 40%
    "cloud_brightness": [6000.0, 15000.0],
    "bright_cloud_prob": 0.05,       # clouds brighter than that, up to bright_cloud_max (above 14 bits)
    "bright_cloud_max": 30000.0,
    "shadow_darkening": [0.3, 0.6],
    "shadow_mask_prob": 0.75,
    "swath_prob": 0.04,              # frames with a no-data swath edge
    "cloud_nodata_prob": 0.03,       # cloudy frames with no-data in cloud cores
    "hr_cloud_prob": 0.35,
    "hr_max_cloud": 0.2,
    "water_flag_prob": 0.1,          # scenes whose water is flagged in every QM and the SM
    "min_frame_clearance": 0.6,
    "min_hr_clearance": 0.75,
}


# --------------------------------------------------------------------------- settings and plan

def resolve_settings(params: dict) -> dict:
    """Simulator settings: ``DEFAULT_SETTINGS`` with the frame counts of ``params['synthetic']``."""
    syn = dict(params.get("synthetic") or {})
    settings = dict(DEFAULT_SETTINGS)
    for key in ("min_frames", "max_frames", "mean_frames"):
        if syn.get(key) is not None:
            settings[key] = syn[key]
    lo, hi, mean = int(settings["min_frames"]), int(settings["max_frames"]), float(settings["mean_frames"])
    if lo < 1 or hi < lo or not lo <= mean <= hi:
        raise ValueError(f"synthetic: need 1 <= min_frames <= mean_frames <= max_frames, got "
                         f"min {lo}, mean {mean}, max {hi}")
    settings.update(min_frames=lo, max_frames=hi, mean_frames=mean)
    return settings


def scene_counts(params: dict) -> dict[tuple[str, str], int]:
    """Scenes per (split, band) for the profile of ``params['synthetic']``."""
    syn = params.get("synthetic") or {}
    profile = syn.get("profile", "default") or "default"
    if profile not in PROFILES:
        raise ValueError(f"synthetic.profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    if profile == "large":
        return dict(OFFICIAL_COUNTS)
    counts = {}
    for split, key, default in (("train", "train_scenes_per_band", 48), ("test", "test_scenes_per_band", 8)):
        n = int(syn.get(key, default))
        if n < 0:
            raise ValueError(f"synthetic.{key} must be >= 0, got {n}")
        for band in BANDS:
            counts[(split, band)] = n
    return counts


def scene_plan(params: dict) -> list[tuple[str, str, str, int]]:
    """``(split, band, name, seed)`` of every scene, numbered like the real archive:
    train RED, train NIR, test RED, test NIR, from imgset0000."""
    counts = scene_counts(params)
    plan, index = [], 0
    for split in SPLITS:
        for band in BANDS:
            for _ in range(counts[(split, band)]):
                name = f"imgset{index:04d}"
                plan.append((split, band, name, derive_seed(params, "synthetic", split, band, name)))
                index += 1
    return plan


# --------------------------------------------------------------------------- random fields

@lru_cache(maxsize=8)
def _radial_freq(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    return fy, fx, np.hypot(fy, fx)


def _field(rng: np.random.Generator, shape: tuple[int, int], beta: float | None = None,
           sigma: float | None = None, anisotropy: float = 1.0, angle: float = 0.0) -> np.ndarray:
    """Periodic Gaussian random field with unit sd: power spectrum f^-beta, or white noise smoothed
    by a Gaussian of ``sigma`` pixels. ``anisotropy`` a > 1 stretches its structures by a along the
    direction ``angle`` (radians from the row axis) and shrinks them by a across it: strips, furrows,
    ridges."""
    fy, fx, f = _radial_freq(tuple(shape))
    if anisotropy != 1.0:
        along = fy * math.cos(angle) + fx * math.sin(angle)
        across = -fy * math.sin(angle) + fx * math.cos(angle)
        f = np.hypot(along * anisotropy, across / anisotropy)
    spectrum = scipy.fft.rfft2(rng.standard_normal(shape, dtype=np.float32))
    if beta is not None:
        amp = np.power(np.maximum(f, 1.0 / max(shape)), -beta / 2.0, dtype=np.float32)
    else:
        amp = np.exp(-2.0 * (math.pi * f * sigma) ** 2).astype(np.float32)
    amp[0, 0] = 0.0
    out = scipy.fft.irfft2(spectrum * amp, s=shape).astype(np.float64)
    return out / max(out.std(), 1e-12)


def _gaussian_fft(image: np.ndarray, sigma: float) -> np.ndarray:
    _, _, f = _radial_freq(image.shape)
    return scipy.fft.irfft2(scipy.fft.rfft2(image) * np.exp(-2.0 * (math.pi * f * sigma) ** 2), s=image.shape)


def _path(rng: np.random.Generator, n: int, wiggle: float, smooth: float) -> np.ndarray:
    """Points (K, 2) of a random smooth path that enters the n×n square on one side and crosses it."""
    side = rng.integers(4)
    t = rng.uniform(0.15, 0.85) * n
    start = [(0.0, t), (t, n - 1.0), (n - 1.0, t), (t, 0.0)][side]
    heading = [0.0, -0.5 * math.pi, math.pi, 0.5 * math.pi][side] + rng.uniform(-0.6, 0.6)  # (dy, dx) = (cos, sin)
    step, count = 0.7, int(3.5 * n / 0.7)
    turns = ndi.gaussian_filter1d(rng.normal(0.0, wiggle, count), smooth)
    angles = heading + np.cumsum(turns)
    pts = np.asarray(start) + np.cumsum(step * np.stack([np.cos(angles), np.sin(angles)], 1), axis=0)
    inside = (pts >= 0).all(1) & (pts <= n - 1).all(1)
    stop = np.flatnonzero(~inside)
    return pts[: stop[0]] if len(stop) else pts


def _distance_to_paths(paths: list[np.ndarray], n: int) -> np.ndarray:
    grid = np.ones((n, n), bool)
    for pts in paths:
        if len(pts):
            ij = np.clip(np.rint(pts).astype(int), 0, n - 1)
            grid[ij[:, 0], ij[:, 1]] = False
    if grid.all():
        return np.full((n, n), np.inf)
    return ndi.distance_transform_edt(grid)


def _choice(rng: np.random.Generator, weights: dict, size: int) -> np.ndarray:
    names = list(weights)
    p = np.array([weights[k] for k in names], np.float64)
    idx = rng.choice(len(names), size=size, p=p / p.sum())
    return np.array([CLASS_NAMES.index(names[i]) for i in idx], np.int64)


# --------------------------------------------------------------------------- landscape

def render_landscape(rng: np.random.Generator, settings: dict) -> dict:
    """Noise-free landscape on the FULL×FULL HR grid, both bands.

    Returns ``red``, ``nir`` (float64 DN), ``labels`` (parcel id per pixel), ``parcel_class``,
    ``classes`` (class per pixel), ``land`` (1 - water fraction), ``water`` (water fraction),
    ``biome``, ``contrast``.
    """
    n = FULL
    names = list(BIOMES)
    weights = np.array([BIOMES[b]["weight"] for b in names])
    biome_name = names[rng.choice(len(names), p=weights / weights.sum())]
    biome = BIOMES[biome_name]
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    warp = rng.uniform(1.0, 3.0)
    u = yy + warp * _field(rng, (n, n), sigma=10.0)
    v = xx + warp * _field(rng, (n, n), sigma=10.0)

    # Land-use zones: fields where a smooth field is below its field_share quantile.
    zone = _field(rng, (n, n), sigma=rng.uniform(30, 70))
    share = float(np.clip(biome["field_share"] + rng.normal(0, 0.1), 0.0, 1.0))
    fields = zone < np.quantile(zone, share) if share > 0 else np.zeros((n, n), bool)

    # Field parcels: a rotated brick grid with random offsets per row.
    theta = rng.uniform(0, 0.5 * math.pi)
    a = rng.uniform(*biome["field_size"])
    b = a * rng.uniform(0.6, 2.2)
    p = u * math.cos(theta) + v * math.sin(theta)
    q = -u * math.sin(theta) + v * math.cos(theta)
    row = np.floor(p / a).astype(np.int64)
    row -= row.min()
    offsets = rng.uniform(0, b, row.max() + 1)
    col = np.floor((q + offsets[row]) / b).astype(np.int64)
    col -= col.min()
    field_id = row * (col.max() + 1) + col

    # Natural areas: patches of classes from quantiles of a smooth multi-scale field (so that
    # forests, grass and shrubs cluster and grade into each other along the field).
    nat_names = list(biome["natural"])
    nat_w = np.array([biome["natural"][c] for c in nat_names], np.float64)
    nat_w = nat_w * rng.uniform(0.3, 1.7, len(nat_w))
    # Natural patches follow a direction too (ridges, dunes, drainage): a mildly anisotropic field.
    nat_angle = rng.uniform(0, math.pi)
    g = (_field(rng, (n, n), beta=rng.uniform(3.0, 3.8), anisotropy=rng.uniform(*settings["natural_anisotropy"]),
                angle=nat_angle) + 0.25 * _field(rng, (n, n), sigma=2.0))
    cuts = np.quantile(g, np.cumsum(nat_w)[:-1] / nat_w.sum())
    nat_class = np.array([CLASS_NAMES.index(c) for c in nat_names])[np.searchsorted(cuts, g)]
    nat_id = np.zeros((n, n), np.int64)
    next_id = 0
    for c in np.unique(nat_class):  # every connected patch of one class is one 'parcel'
        comp, k = ndi.label(nat_class == c)
        nat_id[comp > 0] = comp[comp > 0] + next_id
        next_id += k + 1

    combined = np.where(fields, field_id, field_id.max() + 1 + nat_id)
    uniq, labels = np.unique(combined, return_inverse=True)
    labels = labels.reshape(n, n)
    count = len(uniq)
    is_field = uniq <= field_id.max()
    parcel_class = _choice(rng, biome["field"], count)
    # class of a natural patch: the class under its pixels (all the same)
    nat_of_label = np.zeros(count, np.int64)
    nat_mask = ~fields
    nat_of_label[labels[nat_mask]] = nat_class[nat_mask]
    parcel_class = np.where(is_field, parcel_class, nat_of_label)
    # Scene contrast (the main driver of how hard the scene is): it scales the relative variations
    # (parcel spread, texture, regional modulation); the class levels are only mildly compressed
    # (class_contrast), so the RED/NIR physics of each class holds. Water, towns and roads drawn
    # below keep their physical levels.
    z = float(np.clip(rng.normal(), -3.0, 3.0))
    contrast = {b: settings["contrast_median"][b] * math.exp(settings["contrast_sigma"][b] * z) for b in BANDS}
    table = CLASS_TABLE[parcel_class]
    spread = rng.uniform(0.4, 1.0)
    bright = spread * table[:, 2] * rng.standard_normal(count)
    vigour = spread * table[:, 4] * rng.standard_normal(count)
    # Fields of one region differ less than their classes' nominal levels (shared soil, season).
    field_contrast = rng.uniform(0.3, 0.8)
    levels = {}
    for col, b in ((0, "RED"), (1, "NIR")):
        level = table[:, col].copy()
        if is_field.any():
            m = level[is_field].mean()
            level[is_field] = m + field_contrast * (level[is_field] - m)
        m = level.mean()
        level = m + settings["class_contrast"][b] * math.exp(settings["class_contrast_sigma"] * z) * (level - m)
        sign = -0.08 if b == "RED" else 0.08
        levels[b] = level * (1.0 + contrast[b] * (bright + sign * vigour))
    # Natural patches grade into each other (ecotones); field edges stay sharp.
    soft = rng.uniform(*settings["ecotone"])
    base = {b: np.where(fields, levels[b][labels], _gaussian_fft(levels[b][labels], soft)) for b in BANDS}

    classes = parcel_class[labels]
    tex_sd = CLASS_TABLE[classes, 3]
    veg = CLASS_TABLE[classes, 4]
    beta = rng.uniform(*settings["texture_beta"])
    # Texture along the field grid (furrows, strips): anisotropic, aligned with the parcels.
    stretch = rng.uniform(*settings["texture_anisotropy"])
    t_bright = _field(rng, (n, n), beta=beta, anisotropy=stretch, angle=theta)
    t_vig = _field(rng, (n, n), beta=beta, anisotropy=stretch, angle=theta)
    regional = rng.uniform(*settings["regional"]) * _field(rng, (n, n), beta=rng.uniform(3.5, 4.5))
    g_red = settings["texture_gain"]["RED"] * contrast["RED"]
    g_nir = settings["texture_gain"]["NIR"] * contrast["NIR"]
    red = base["RED"] * (1.0 + contrast["RED"] * regional + g_red * tex_sd * (t_bright - 0.7 * veg * t_vig))
    nir = base["NIR"] * (1.0 + contrast["NIR"] * regional + g_nir * tex_sd * (t_bright + 0.8 * veg * t_vig))

    # Towns: small blobs, mostly in field zones, strongly textured.
    town_cover = biome["towns"] * rng.uniform(0.0, 2.0)
    if town_cover > 0.001:
        tz = _field(rng, (n, n), sigma=rng.uniform(3, 7)) - 0.8 * (~fields)
        town = np.clip((tz - np.quantile(tz, 1 - town_cover)) / 0.3, 0, 1)
        town_tex = 1.0 + 0.18 * _field(rng, (n, n), sigma=0.6)
        tr, tn = CLASSES["town"][:2]
        red = red * (1 - town) + town * tr * town_tex
        nir = nir * (1 - town) + town * tn * town_tex
        classes = np.where(town > 0.5, CLASS_NAMES.index("town"), classes)

    # Roads: thin, nearly straight lines of low contrast (a road is narrower than a 100 m pixel).
    roads = [_path(rng, n, 0.01, 40.0) for _ in range(rng.integers(biome["roads"][0], biome["roads"][1] + 1))]
    if roads:
        road = np.clip(0.75 - _distance_to_paths(roads, n), 0, 1) * rng.uniform(0.3, 0.6)
        red = red * (1 - road) + road * ROAD[0]
        nir = nir * (1 - road) + road * ROAD[1]

    # Relief: hill shading from a smooth power-law height field.
    height = _field(rng, (n, n), beta=4.0, anisotropy=rng.uniform(*settings["natural_anisotropy"]), angle=nat_angle)
    gy, gx = np.gradient(height)
    az = rng.uniform(0, 2 * math.pi)
    slope = gy * math.cos(az) + gx * math.sin(az)
    shade = 1.0 + biome["relief"] * rng.uniform(0.3, 1.5) * slope / max(slope.std(), 1e-12)
    red, nir = red * shade, nir * shade

    # Water: lakes (thresholded smooth noise) and meandering rivers with riparian vegetation.
    water = np.zeros((n, n))
    lake_cover = biome["lakes"] * rng.uniform(0.0, 2.0)
    if lake_cover > 0.001:
        lz = _field(rng, (n, n), sigma=rng.uniform(4, 14))
        water = np.clip((lz - np.quantile(lz, 1 - lake_cover)) / 0.15, 0, 1)
    rivers = [_path(rng, n, 0.08, 6.0) for _ in range(rng.integers(biome["rivers"][0], biome["rivers"][1] + 1))]
    if rivers:
        dist = _distance_to_paths(rivers, n)
        width = rng.uniform(0.5, 3.0)
        water = np.maximum(water, np.clip(width / 2 + 0.5 - dist, 0, 1))
        riparian = np.clip(1.0 - (dist - width / 2) / rng.uniform(2, 5), 0, 1) * (1 - water) * 0.5
        red = red * (1 - riparian) + riparian * CLASSES["forest"][0]
        nir = nir * (1 - riparian) + riparian * CLASSES["forest"][1]
    if water.any():
        turbid = rng.uniform(0, 0.8)
        wr = (1 - turbid) * CLASSES["water"][0] + turbid * CLASSES["turbid"][0]
        wn = (1 - turbid) * CLASSES["water"][1] + turbid * CLASSES["turbid"][1]
        wtex = 1.0 + 0.03 * _field(rng, (n, n), sigma=4.0)
        red = red * (1 - water) + water * wr * wtex
        nir = nir * (1 - water) + water * wn * wtex
        classes = np.where(water > 0.5, CLASS_NAMES.index("water"), classes)

    # Atmosphere: an additive RED level and a NIR gain per scene.
    red = red + rng.uniform(*settings["red_offset"])
    nir = nir * rng.uniform(*settings["nir_gain"])
    return dict(red=np.maximum(red, 300.0), nir=np.maximum(nir, 200.0), labels=labels,
                parcel_class=parcel_class, classes=classes, water=water, land=1.0 - water,
                biome=biome_name, contrast=contrast)


# --------------------------------------------------------------------------- sensor

def _render_frame(image: np.ndarray, psf, dy: float, dx: float) -> np.ndarray:
    """The FULL×FULL HR-grid image seen by an LR frame: shifted by (dy, dx) LR pixels, blurred by its PSF
    ``psf = (sigma_y, sigma_x, box)`` (HR pixels: an axis-aligned Gaussian, then a box of width ``box``,
    0 for none; all exact in Fourier), cropped and averaged 3×3."""
    sigma_y, sigma_x, box = psf
    fy, fx, _ = _radial_freq(image.shape)
    # Gaussian, box and shift are all separable: an outer product of two 1-D transfer functions.
    ty = np.exp(-2.0 * (math.pi * fy * sigma_y) ** 2 - 2j * math.pi * fy * SCALE * dy) * np.sinc(fy * box)
    tx = np.exp(-2.0 * (math.pi * fx * sigma_x) ** 2 - 2j * math.pi * fx * SCALE * dx) * np.sinc(fx * box)
    transfer = ty * tx
    out = scipy.fft.irfft2(scipy.fft.rfft2(image) * transfer, s=image.shape)[MARGIN:MARGIN + HR_SIZE,
                                                                             MARGIN:MARGIN + HR_SIZE]
    return out.reshape(LR_SIZE, SCALE, LR_SIZE, SCALE).mean(axis=(1, 3))


def _quantise(values: np.ndarray) -> np.ndarray:
    return (np.clip(np.rint(values / QUANTUM), 0, MAX_VALUE // QUANTUM) * QUANTUM).astype(np.uint16)


def _clouds(rng: np.random.Generator, shape: tuple[int, int], cover: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Cloud opacity (0..1) covering about ``cover`` of the image and a brightness texture (0..1)."""
    base = _field(rng, shape, sigma=scale) + 0.35 * _field(rng, shape, sigma=max(scale / 3, 0.7))
    thr = np.quantile(base, 1 - cover)
    soft = rng.uniform(0.15, 0.6)
    alpha = np.clip((base - thr) / soft, 0, 1) ** 0.8
    texture = np.clip((base - thr) / (base.max() - thr + 1e-9), 0, 1)
    return alpha, texture


def _cloud_cover(rng: np.random.Generator, settings: dict) -> float:
    r = rng.uniform()
    if r < settings["clear_frame_prob"]:
        return 0.0
    if r < settings["clear_frame_prob"] + settings["light_cloud_prob"]:
        return rng.uniform(0.002, 0.1)
    return rng.uniform(0.1, 0.4)


def _frame_count(rng: np.random.Generator, settings: dict) -> int:
    lo, hi, mean = settings["min_frames"], settings["max_frames"], settings["mean_frames"]
    if hi == lo:
        return lo
    m = float(np.clip((mean - lo) / (hi - lo), 0.02, 0.98))
    conc = 5.0
    return lo + int(round(rng.beta(m * conc, (1 - m) * conc) * (hi - lo)))


def _acquisition_days(rng: np.random.Generator, count: int, settings: dict) -> tuple[np.ndarray, int]:
    """Acquisition days of ``count`` frames in a window of ``window_days`` that contains day 0, and the
    index of the reference frame: the one acquired on day 0, on the HR's own pass. The others are
    acquired on other days. Frames are in random order, so the frame number says nothing about the date
    (as in the real archive, where the reference is spread over all positions)."""
    window = int(settings["window_days"])
    start = int(rng.integers(-window, 1))
    choices = np.array([d for d in range(start, start + window + 1) if d != 0])
    days = rng.choice(choices, size=count, replace=count > len(choices))
    reference = int(rng.integers(count))
    days[reference] = 0
    return days, reference


def _shifts(rng: np.random.Generator, count: int, settings: dict) -> np.ndarray:
    """Per-frame offsets (dy, dx) in LR pixels. Real frames sit close to the LR grid: a small sub-pixel
    jitter (``shift_jitter``) around a whole-pixel offset, which is 0 for most frames and ±1 for some
    (``shift_whole_prob`` per axis), plus an offset common to the scene (``shift_scene_sigma``) that the
    reference frame, on the HR's own grid, does not share; a few frames stray further (``shift_outlier_prob``)."""
    common = rng.normal(0, settings["shift_scene_sigma"], 2)
    whole = np.where(rng.uniform(size=(count, 2)) < settings["shift_whole_prob"],
                     rng.choice([-1.0, 1.0], size=(count, 2)), 0.0)
    shifts = common + whole + rng.normal(0, settings["shift_jitter"], (count, 2))
    outliers = rng.uniform(size=count) < settings["shift_outlier_prob"]
    shifts[outliers] = rng.normal(0, settings["shift_outlier_sigma"], (int(outliers.sum()), 2))
    return np.clip(shifts, -settings["max_shift"], settings["max_shift"])


def _swath_edge(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """No-data region beyond a slightly curved swath edge, covering 2–30% of the frame."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]] / shape[0] - 0.5
    ang = rng.uniform(0, 2 * math.pi)
    s = yy * math.cos(ang) + xx * math.sin(ang)
    t = -yy * math.sin(ang) + xx * math.cos(ang)
    s = s + rng.uniform(-1.5, 1.5) * t * t
    return s > np.quantile(s, 1 - rng.uniform(0.02, 0.3))


def _add_clouds(rng, ground, cover, settings, shape, scale, sun):
    """Clouds and shadows over ``ground``; returns (values, cloud alpha, shadow alpha, cloud texture)."""
    alpha, texture = _clouds(rng, shape, cover, scale)
    height = rng.uniform(0.5, 2.0)
    shadow = ndi.shift(alpha, (sun[0] * height, sun[1] * height), order=1, mode="constant", cval=0.0)
    darkening = rng.uniform(*settings["shadow_darkening"])
    bright = (rng.uniform(settings["cloud_brightness"][1], settings["bright_cloud_max"])
              if rng.uniform() < settings["bright_cloud_prob"] else rng.uniform(*settings["cloud_brightness"]))
    values = ground * (1 - darkening * shadow * (1 - alpha))
    cloud_value = bright * (0.7 + 0.3 * texture)
    values = values * (1 - alpha) + alpha * np.maximum(cloud_value, values)
    return values, alpha, shadow


def _frame_mask(rng, alpha, shadow, settings, conservative=False):
    """Quality mask (true = clear) with imperfect edges: the thinnest cloud edges are missed, the
    mask is randomly dilated or eroded (cores always stay masked), shadows are usually flagged.
    ``conservative`` (the HR's SM): shadows always flagged and the mask dilated by 2 pixels."""
    cloud = alpha > rng.uniform(0.02, 0.12)
    if conservative or rng.uniform() < settings["shadow_mask_prob"]:
        cloud |= shadow > rng.uniform(0.2, 0.5)
    r = rng.uniform()
    if conservative or r < 0.5:
        cloud = ndi.binary_dilation(cloud, iterations=2 if conservative else 1)
    elif r < 0.65:
        cloud = ndi.binary_erosion(cloud, iterations=1) | (alpha > 0.3)
    return ~cloud


def _bin(image: np.ndarray, shift) -> np.ndarray:
    """The 384×384 window of a FULL×FULL HR-grid image seen at a whole-LR-pixel ``shift`` (dy, dx),
    averaged over 3×3 blocks: a feature at LR position p of the HR appears at p + shift."""
    top, left = (MARGIN - SCALE * int(round(float(v))) for v in shift)
    window = image[top:top + HR_SIZE, left:left + HR_SIZE]
    return window.reshape(LR_SIZE, SCALE, LR_SIZE, SCALE).mean(axis=(1, 3))


def _reference_frame(rng, cloudy_full, hr_alpha, hr_shadow, shift, water_full, mean_level, settings):
    """The LR frame of the HR's own pass: the HR's signal (its clouds included) binned 3×3 at a whole-pixel
    offset, after a slight extra blur (the 300 m product is not exactly the binned 100 m one: on the real
    imgset0000 the two differ by about 28 DN rms), with the gain and offset of the same pass (near 1 and 0)
    and its own noise. Its quality mask comes from the HR's clouds, so it matches the SM."""
    extra = rng.uniform(*settings["reference_extra_blur"])
    vals = _bin(_gaussian_fft(cloudy_full, extra) if extra > 0 else cloudy_full, shift)
    gain = float(rng.normal(1.0, settings["reference_gain_sigma"]))
    offset = float(rng.normal(0.0, settings["reference_gain_sigma"] * mean_level))
    vals = np.maximum(gain * vals + offset, 0.0)
    vals = vals + rng.standard_normal(vals.shape) * np.sqrt(rng.uniform(*settings["read_noise"]) ** 2
                                                            + settings["shot_noise"] ** 2 * vals)
    alpha, shadow = _bin(hr_alpha, shift), _bin(hr_shadow, shift)
    mask = _frame_mask(rng, alpha, shadow, settings) if alpha.any() else np.ones(alpha.shape, bool)
    if water_full is not None:
        mask &= ~ndi.binary_dilation(_bin(water_full, shift) > 0.25, iterations=1)
    if mask.mean() < settings["min_frame_clearance"]:
        # The HR is at least 75% clear, but a coarser mask can flag a little more: keep the inclusion rule.
        mask = ~(alpha > 0.5) if (~(alpha > 0.5)).mean() >= settings["min_frame_clearance"] else np.ones_like(mask)
    row = dict(dy=float(shift[0]), dx=float(shift[1]), gain=gain, offset=offset, clearance=float(mask.mean()),
               cloud_cover=float((alpha > 0.05).mean()), nodata=0, psf_sigma=extra)
    return _quantise(vals), mask, row


# --------------------------------------------------------------------------- one scene

def simulate_scene(rng: np.random.Generator, band: str, name: str, split: str, settings: dict) -> tuple[Scene, dict]:
    """One synthetic scene and its truth.

    Returns ``(scene, truth)``: ``scene`` as read from the archive (test scenes without ``hr``;
    ``norm`` set to the official baseline's cPSNR against the simulated HR), ``truth`` a dict with
    ``hr``/``sm`` (also for test scenes), ``frames`` (one dict per frame: dy, dx, gain, offset,
    days, clearance, cloud_cover, nodata, psf_sigma), ``landscape`` (noise-free both bands on the
    384×384 grid: ``red``, ``nir``, ``classes``) and scene-level facts.
    """
    from probav.metrics.score import shifted_cpsnr
    from probav.models.baseline import baseline_sr

    if band not in BANDS:
        raise ValueError(f"band must be one of {BANDS}, got {band!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    land = render_landscape(rng, settings)
    ground = land["red"] if band == "RED" else land["nir"]
    crop = (slice(MARGIN, MARGIN + HR_SIZE),) * 2
    mean_level = float(ground[crop].mean())
    sun = rng.uniform(1.0, 4.0) * np.array([math.cos(a := rng.uniform(0, 2 * math.pi)), math.sin(a)])

    # Persistent flag of water (some real scenes mask rivers and lakes in every QM and the SM).
    water_hr = land["water"][crop]
    water_flagged = bool(rng.uniform() < settings["water_flag_prob"] and 0.002 < (water_hr > 0.5).mean() < 0.15)

    # ---- HR (day 0), rendered with the margin so that the reference frame (below) can bin it
    # The HR's pass has its own view angle and atmosphere, like any other pass: its reference frame is
    # not the most typical of the frames, only the one that shares the HR's pass.
    hr_pass = settings["pass_jitter"][band] * rng.standard_normal(len(land["parcel_class"]))
    hr_full = _gaussian_fft(ground * (1.0 + hr_pass[land["labels"]] * land["land"]), rng.uniform(*settings["hr_blur"]))
    persistent_hr = ndi.binary_dilation(water_hr > 0.3, iterations=1) if water_flagged else np.zeros_like(water_hr, bool)
    cloudy_full, sm = hr_full, ~persistent_hr
    hr_alpha = hr_shadow = np.zeros((FULL, FULL))
    if rng.uniform() < settings["hr_cloud_prob"]:
        for attempt in range(10):
            cover = rng.uniform(0.005, settings["hr_max_cloud"]) * 0.7 ** attempt
            vals, alpha, shadow = _add_clouds(rng, hr_full, cover, settings, (FULL, FULL),
                                              rng.uniform(6, 60), sun * SCALE)
            mask = _frame_mask(rng, alpha[crop], shadow[crop], settings, conservative=True) & ~persistent_hr
            if mask.mean() >= settings["min_hr_clearance"]:
                cloudy_full, sm, hr_alpha, hr_shadow = vals, mask, alpha, shadow
                break
    if sm.mean() < settings["min_hr_clearance"]:  # only a huge flagged water body could do this
        water_flagged, persistent_hr, sm = False, np.zeros_like(sm), np.ones_like(sm)
    hr_noise = rng.uniform(*settings["hr_read_noise"])
    hr_vals = cloudy_full[crop]
    hr_vals = hr_vals + rng.standard_normal(hr_vals.shape) * np.sqrt(hr_noise ** 2 + 0.5 * settings["shot_noise"] ** 2
                                                                     * np.maximum(hr_vals, 0))
    hr = _quantise(hr_vals)

    # ---- LR frames
    count = _frame_count(rng, settings)
    days, reference = _acquisition_days(rng, count, settings)
    shifts = _shifts(rng, count, settings)
    # The reference frame is the HR's pass binned to 300 m: whole-LR-pixel offset from the HR's grid.
    shifts[reference] = rng.choice([-1.0, 0.0, 1.0], size=2, p=[0.2, 0.6, 0.2])
    rate = (BIOMES[land["biome"]]["change"] * settings["change_band"][band]
            * math.exp(rng.normal(0, settings["change_sigma"])))
    labels, weight = land["labels"], land["land"]
    n_parcels = len(land["parcel_class"])
    veg = CLASS_TABLE[land["parcel_class"], 4]
    sign = -1.0 if band == "RED" else 1.0
    # Trend per parcel: vegetation growth/senescence (opposite in RED and NIR) plus brightness.
    trend = rate * settings["change_trend"] * (sign * veg * rng.standard_normal(n_parcels)
                                                + 0.5 * rng.standard_normal(n_parcels))
    trend_field = rate * settings["change_field"] * _field(rng, (LR_SIZE, LR_SIZE), sigma=rng.uniform(8, 25))
    water_lr_full = land["water"] if water_flagged else None

    lr = np.empty((count, LR_SIZE, LR_SIZE), np.uint16)
    qm = np.empty((count, LR_SIZE, LR_SIZE), bool)
    frames = []
    for i in range(count):
        if i == reference:
            frame, mask, row = _reference_frame(rng, cloudy_full, hr_alpha, hr_shadow, shifts[i],
                                                land["water"] if water_flagged else None, mean_level, settings)
            lr[i], qm[i] = frame, mask
            frames.append(dict(frame=i, days=0, **row))
            continue
        d = float(days[i])
        step = math.sqrt(abs(d) / settings["window_days"])
        jitter = rate * settings["change_jitter"] * step * rng.standard_normal(n_parcels)
        change = ((d / settings["window_days"]) * trend + jitter
                  + settings["pass_jitter"][band] * rng.standard_normal(n_parcels))
        truth_i = ground * (1.0 + change[labels] * weight)
        dy, dx = float(shifts[i, 0]), float(shifts[i, 1])
        # Each frame its own PSF: width per axis, and for some a box of pixel integration and resampling,
        # so that no method gets the exact forward model for free.
        box = rng.uniform(*settings["psf_box"]) if rng.uniform() < settings["psf_box_prob"] else 0.0
        psf_i = (rng.uniform(*settings["psf_sigma"]), rng.uniform(*settings["psf_sigma"]), box)
        sigma_i = float(np.mean(psf_i[:2]))
        vals = _render_frame(truth_i, psf_i, dy, dx)
        smooth = (d / settings["window_days"]) * trend_field + rate * settings["change_field"] * step * _field(
            rng, (LR_SIZE, LR_SIZE), sigma=rng.uniform(6, 20))
        vals = vals * (1.0 + smooth)
        gain = float(rng.normal(1.0, settings["gain_sigma"]))
        offset = float(rng.normal(0.0, settings["offset_sigma"] * mean_level))
        haze = settings["haze"] * mean_level * rng.uniform(0, 1) * _field(rng, (LR_SIZE, LR_SIZE),
                                                                            sigma=rng.uniform(15, 40))
        vals = gain * vals + offset + haze
        if rng.uniform() < settings["stripe_prob"]:
            stripes = ndi.gaussian_filter(rng.standard_normal((LR_SIZE, LR_SIZE)), (0.4, rng.uniform(6, 25)),
                                          mode="wrap")
            vals = vals * (1.0 + rng.uniform(*settings["stripe_amplitude"]) * stripes / max(stripes.std(), 1e-12))
        vals = np.maximum(vals, 0.0)
        vals = vals + rng.standard_normal(vals.shape) * np.sqrt(rng.uniform(*settings["read_noise"]) ** 2
                                                                + settings["shot_noise"] ** 2 * vals)

        persistent = np.zeros((LR_SIZE, LR_SIZE), bool)
        if water_flagged:
            persistent = ndi.binary_dilation(_render_frame(water_lr_full, psf_i, dy, dx) > 0.25, iterations=1)
        cover = _cloud_cover(rng, settings)
        final, mask, alpha = vals, ~persistent, np.zeros_like(vals)
        for attempt in range(10):
            if cover <= 0:
                break
            c = cover * 0.7 ** attempt
            v2, a2, s2 = _add_clouds(rng, vals, c, settings, (LR_SIZE, LR_SIZE),
                                     math.exp(rng.uniform(math.log(1.5), math.log(25))), sun)
            m2 = _frame_mask(rng, a2, s2, settings) & ~persistent
            if m2.mean() >= settings["min_frame_clearance"]:
                final, mask, alpha = v2, m2, a2
                break
        nodata = np.zeros((LR_SIZE, LR_SIZE), bool)
        if rng.uniform() < settings["swath_prob"]:
            edge = _swath_edge(rng, (LR_SIZE, LR_SIZE))
            if (mask & ~edge).mean() >= settings["min_frame_clearance"]:
                nodata |= edge
        if alpha.any() and rng.uniform() < settings["cloud_nodata_prob"]:
            blob = _field(rng, (LR_SIZE, LR_SIZE), sigma=3.0) > 0.5
            nodata |= blob & (alpha > 0.9) & ~mask
        frame = _quantise(final)
        frame[nodata] = NO_DATA
        mask = mask & ~nodata
        lr[i], qm[i] = frame, mask
        frames.append(dict(frame=i, dy=dy, dx=dx, gain=gain, offset=offset, days=int(d),
                           clearance=float(mask.mean()), cloud_cover=float((alpha > 0.05).mean()),
                           nodata=int(nodata.sum()), psf_sigma=sigma_i))

    norm = shifted_cpsnr(to_uint16(baseline_sr(lr, qm)), hr, sm)
    scene = Scene(name=name, band=band, split=split, lr=lr, qm=qm,
                  hr=hr if split == "train" else None, sm=sm, norm=float(norm))
    truth = dict(name=name, band=band, split=split, biome=land["biome"], contrast=land["contrast"][band],
                 change_rate=rate, reference=reference, water_flagged=water_flagged, hr=hr, sm=sm,
                 norm=float(norm), frames=frames,
                 landscape=dict(red=land["red"][crop], nir=land["nir"][crop], classes=land["classes"][crop],
                                class_names=CLASS_NAMES))
    return scene, truth


# --------------------------------------------------------------------------- the archive

def _record_path(root: Path, name: str) -> Path:
    return root / "synthetic" / RESUME_DIR / "scenes" / f"{name}.json"


def _fingerprint_path(root: Path) -> Path:
    return root / "synthetic" / RESUME_DIR / "fingerprint.json"


def _job(job: tuple) -> str:
    """Simulate one scene and put it in place: written below a temporary folder, its folder (and a test
    scene's hidden HR/SM) renamed into the layout, then its record written: the record is the mark of a
    complete scene, so a run killed at any point leaves either a whole scene or one the next run redoes."""
    split, band, name, seed, settings, root, key = job
    root = Path(root)
    scene, truth = simulate_scene(np.random.default_rng(seed), band, name, split, settings)
    tmp = root / PARTIAL / f"{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    scene_dir = write_scene(scene, tmp)
    hidden = None
    if split == "test":
        hidden = tmp / "test_hr" / name
        hidden.mkdir(parents=True)
        write_png(hidden / "HR.png", truth["hr"])
        write_png(hidden / "SM.png", truth["sm"])
    rows = [dict(name=name, band=band, split=split, **f) for f in truth["frames"]]
    summary = dict(name=name, band=band, split=split, biome=truth["biome"], frames=scene.frames,
                   norm=scene.norm, hr_clearance=float(truth["sm"].mean()),
                   mean_clearance=float(scene.clearance.mean()), contrast=truth["contrast"],
                   change_rate=truth["change_rate"], reference=truth["reference"],
                   water_flagged=truth["water_flagged"])
    record = dict(fingerprint=key, split=split, band=band, name=name, seed=seed, rows=rows, scene=summary,
                  files=file_sizes(scene_dir), hidden_files=file_sizes(hidden) if hidden else {})
    final = root / split / band / name
    os.replace(scene_dir, final)
    if hidden is not None:
        (root / "synthetic" / "test_hr").mkdir(parents=True, exist_ok=True)
        os.replace(hidden, root / "synthetic" / "test_hr" / name)
    write_json(record, _record_path(root, name))
    shutil.rmtree(tmp, ignore_errors=True)
    return name


def fingerprint(params: dict) -> dict:
    """Everything that decides the bytes of the generated scenes: the root seed, the ``synthetic`` group
    (less ``workers``, which the output does not depend on), the resolved simulator settings, the plan
    (every scene's split, band, name and seed), the simulator version, the sha256 of the source of the
    modules that simulate and write a scene, and the versions of the libraries that compute and encode it."""
    syn = {k: v for k, v in (params.get("synthetic") or {}).items() if k != "workers"}
    return {"format": RESUME_FORMAT, "simulator": VERSION, "seed": params.get("seed", 0), "synthetic": syn,
            "settings": resolve_settings(params), "plan": digest([list(p) for p in scene_plan(params)]),
            "code": code_fingerprint(FINGERPRINT_MODULES), "libraries": library_versions(FINGERPRINT_LIBRARIES)}


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _prepare_resume(root: Path, plan: list, fp: dict, key: str) -> set[str]:
    """Make ``root`` hold only complete scenes of ``plan`` made under the fingerprint ``fp`` (digest ``key``);
    returns their names. A folder made under another fingerprint (or none) is emptied first."""
    if root.is_dir() and any(root.iterdir()):
        old = read_json(_fingerprint_path(root))
        if old is None or digest(old) != key:
            why = ("no fingerprint" if old is None else
                   "made under other settings (changed: " + ", ".join(changed_keys(old, fp)) + ")")
            print(f"{root}: {why}; its content is removed and every scene made afresh")
            for child in list(root.iterdir()):
                _remove(child)
    root.mkdir(parents=True, exist_ok=True)
    for name in FINAL_FILES:  # written last: a folder without them is never taken for a complete archive
        _remove(root / name)
    _remove(root / PARTIAL)
    write_json(fp, _fingerprint_path(root))

    planned = {name: (split, band) for split, band, name, _ in plan}
    reused = set()
    for split, band, name, seed in plan:
        scene_dir, hidden = root / split / band / name, root / "synthetic" / "test_hr" / name
        record = read_json(_record_path(root, name))
        complete = (isinstance(record, dict) and record.get("fingerprint") == key
                    and [record.get(k) for k in ("split", "band", "name", "seed")] == [split, band, name, seed]
                    and scene_dir.is_dir() and file_sizes(scene_dir) == record.get("files")
                    and (split != "test" or (hidden.is_dir() and file_sizes(hidden) == record.get("hidden_files"))))
        if complete:
            reused.add(name)
        else:
            for path in (scene_dir, hidden, _record_path(root, name)):
                _remove(path)
    # Anything else is not this plan's: folders of other splits, bands or names, stray files.
    keep_top = {"train", "test", "synthetic"}
    for child in list(root.iterdir()):
        if child.name not in keep_top:
            _remove(child)
    for split in SPLITS:
        for band in BANDS:
            folder = root / split / band
            for child in list(folder.iterdir()) if folder.is_dir() else []:
                if planned.get(child.name) != (split, band):
                    _remove(child)
    for child in list((root / "synthetic").iterdir()):
        if child.name not in ("test_hr", RESUME_DIR):
            _remove(child)
    hidden_root = root / "synthetic" / "test_hr"
    for child in list(hidden_root.iterdir()) if hidden_root.is_dir() else []:
        if planned.get(child.name, ("",))[0] != "test":
            _remove(child)
    records = root / "synthetic" / RESUME_DIR / "scenes"
    for child in list(records.iterdir()) if records.is_dir() else []:
        if child.suffix != ".json" or child.stem not in planned:
            _remove(child)
    return reused


def _pool_context():
    """'fork' where available (fast, and works from scripts without a ``__main__`` guard), but
    'spawn' once TensorFlow is loaded: forking a process that runs TensorFlow's threads can hang."""
    import sys

    if "fork" in multiprocessing.get_all_start_methods() and "tensorflow" not in sys.modules:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def generate(root: os.PathLike | str, params: dict, progress: bool = True, resume: bool = False) -> dict:
    """Write a synthetic archive under ``root`` (official layout + ``root/synthetic/``); returns
    ``{"scenes", "reused", "generated"}``.

    Sizes come from ``params['synthetic']`` (``profile``, ``train_scenes_per_band``,
    ``test_scenes_per_band``, ``min/max/mean_frames``), seeds from the root ``seed``;
    ``synthetic.workers`` processes simulate scenes in parallel (the output does not depend on their
    number); ``progress`` shows a tqdm bar on stderr.

    Every scene is written under a temporary name, renamed into place when complete, and recorded in
    ``synthetic/resume/scenes/<name>.json`` with the fingerprint of the run (``fingerprint``, also in
    ``synthetic/resume/fingerprint.json``). ``resume=False``: ``root`` must be new or empty.
    ``resume=True``: ``root`` may hold an earlier run, complete or interrupted; its complete scenes made
    under the same fingerprint are kept, everything else is deleted (all of it when the fingerprint
    differs) and made again. Either way the bytes written are those of an uninterrupted run into an
    empty folder. ``norm.csv``, the reference labels and the tables of ``synthetic/`` are written last.
    """
    from tqdm import tqdm

    root = Path(root)
    settings = resolve_settings(params)
    plan = scene_plan(params)
    workers = max(1, int((params.get("synthetic") or {}).get("workers", 1) or 1))
    fp = fingerprint(params)
    key = digest(fp)
    if resume:
        reused = _prepare_resume(root, plan, fp, key)
    else:
        if root.is_dir() and any(root.iterdir()):
            raise FileExistsError(f"{root}: not empty; the simulator writes a whole archive into an empty "
                                  f"(or new) folder, so stale scenes never mix with new ones (resume=True "
                                  f"reuses the scenes of an earlier run made under the same settings)")
        root.mkdir(parents=True, exist_ok=True)
        write_json(fp, _fingerprint_path(root))
        reused = set()
    for split in SPLITS:  # the layout exists even for an empty split
        for band in BANDS:
            (root / split / band).mkdir(parents=True, exist_ok=True)
    jobs = [(split, band, name, seed, settings, str(root), key) for split, band, name, seed in plan
            if name not in reused]
    workers = min(workers, max(1, len(jobs)))
    desc = f"synthetic scenes ({len(reused)} reused)" if reused else "synthetic scenes"
    with tqdm(total=len(plan), initial=len(reused), disable=not progress, desc=desc, unit="scene") as bar:
        if workers == 1:
            for job in jobs:
                _job(job)
                bar.update()
        elif jobs:
            with _pool_context().Pool(workers) as pool:
                for _ in pool.imap(_job, jobs, chunksize=1):
                    bar.update()
    _remove(root / PARTIAL)

    # The tables come from the records as stored (the same numbers whether a scene was made now or before).
    results = []
    for split, band, name, _ in plan:
        record = read_json(_record_path(root, name))
        if not isinstance(record, dict) or record.get("fingerprint") != key:
            raise RuntimeError(f"{_record_path(root, name)}: missing or not of this run after generating")
        results.append(record)
    write_norm(root / "norm.csv", {r["scene"]["name"]: r["scene"]["norm"] for r in results})
    meta = root / "synthetic"
    meta.mkdir(exist_ok=True)
    # Reference labels as PROBA-V-REF gives them: train scenes beside norm.csv, test scenes kept apart.
    labels = {split: {r["scene"]["name"]: (r["scene"]["band"], r["scene"]["reference"])
                      for r in results if r["scene"]["split"] == split} for split in SPLITS}
    write_labels(root / LABELS_FILE, labels["train"])
    write_labels(meta / "test_reference.json", labels["test"])
    _write_csv(meta / "shifts.csv", SHIFT_COLUMNS, [row for r in results for row in r["rows"]])
    _write_csv(meta / "scenes.csv", SCENE_COLUMNS, [r["scene"] for r in results])
    syn = params.get("synthetic") or {}
    info = dict(version=VERSION, seed=params.get("seed", 0), profile=syn.get("profile", "default"),
                counts={f"{s}/{b}": c for (s, b), c in scene_counts(params).items()},
                shift_convention="a feature at LR position p of the HR grid appears at p + (dy, dx) in the frame",
                settings=settings, classes=CLASSES, biomes=BIOMES)
    tmp = meta / ".settings.json.tmp"
    tmp.write_text(json.dumps(info, indent=2, sort_keys=True))
    os.replace(tmp, meta / "settings.json")
    return {"scenes": len(plan), "reused": len(reused), "generated": len(jobs)}


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    """A table of rows (floats rounded to 6 decimals), under a temporary name then renamed."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()})
    os.replace(tmp, path)


def read_truth(root: os.PathLike | str) -> dict[str, list[dict]]:
    """``synthetic/shifts.csv`` as {scene name: [frame rows]} with numbers parsed."""
    out: dict[str, list[dict]] = {}
    with (Path(root) / "synthetic" / "shifts.csv").open() as f:
        for row in csv.DictReader(f):
            for k in ("dy", "dx", "gain", "offset", "clearance", "cloud_cover", "psf_sigma"):
                row[k] = float(row[k])
            for k in ("frame", "days", "nodata"):
                row[k] = int(row[k])
            out.setdefault(row["name"], []).append(row)
    return out
