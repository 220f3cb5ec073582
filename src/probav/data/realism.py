"""The realism scorecard: how far the simulator's scenes are from real PROBA-V scenes, statistic by statistic.

For every statistic: the value on the simulated data, the value on the real material, and one distance
(0 = alike). Real material: scenes in the official layout with QMs (``../shared/probav-mini``), LR-only
scenes without QMs (``../shared/probav-lr-only``: statistics there must not be fooled by unmasked clouds),
and the official ``norm.csv`` (all 1450 scenes).

Per scene (``scene_statistics``), computed the same way on both sides:

- ``shift``: every usable frame registered to the scene's clearest frame (``probav.reference
  .clear_alignment``): the shift's magnitude (LR px) and each component's distance to the nearest whole
  pixel (0 on the LR grid, 0.25 on average for positions spread evenly over the pixel);
- ``reference``: where the scene's reference frame is known (the simulator's labels, PROBA-V-REF for real
  scenes), every usable frame registered to *that* frame, as ``probav.report.positions`` does: each
  component's distance to the reference's LR grid, and whether the frame lies in the reference's own HR
  cell (within 1/6 LR pixel in both directions). The clearest frame is one frame among others; the
  reference sits on the HR's grid, and real frames' common position is further from it than from each
  other (simulator version 3 placed the others' common position within about 0.05 LR px of it);
- ``spectrum``: the radially averaged power spectrum (DN²) of the frames that are clear (QM; without a
  QM, the half of the frames closest to the scene's median, which keeps unmasked clouds out): its log-log
  slope over 0.05–0.45 cycles per pixel and its level (log10 of the mean power over 0.2–0.3);
- ``coherence``: how directional the texture is: the energy-weighted mean coherence of the local gradient
  structure tensor (0 = no preferred direction, 1 = straight parallel lines), on the same frames;
- ``values``: clear LR values (QM), or without a QM the per-pixel median over the frames;
- ``above_14bit``: the share of LR pixels (no-data excepted) above 16383;
- ``cloud_cover`` and ``cloud_objects``: per frame, the share of pixels the QM masks and the sizes (LR px)
  of its connected masked regions (scenes with a QM only);
- ``frames``: frames per scene.

Per source: ``norm`` (baseline cPSNR by band: the simulator's norm.csv against the official one) and
``margin`` (the reference frame alone over the next-best frame alone, dB: the reference stage's dev table
against the real scenes with an HR and a label).

Distances (``DISTANCES``): two-sample Kolmogorov–Smirnov D for distributions (0–1); the absolute difference
for slopes and coherence; the absolute difference of log10 for power levels and the share above 14 bits
(orders of magnitude); the absolute difference of medians (dB) for the margin. Each row also says how many
real scenes or values it rests on: where that is a handful, the real value is a rough one.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from probav.data.stats import FOURTEEN_BITS, radial_spectrum
from probav.scene import BANDS, NO_DATA, Scene

SPECTRUM_BINS = 24
SLOPE_BAND = (0.05, 0.45)        # cycles per LR pixel: the fit of the spectral slope
LEVEL_BAND = (0.2, 0.3)          # cycles per LR pixel: the power level
COHERENCE_SIGMA = 3.0            # LR pixels: the structure tensor's window
VALUE_SAMPLE = 20_000            # values kept per scene (evenly spaced)
MIN_SHIFT_CLEARANCE = 0.6        # frames less clear are not registered


@dataclass
class SceneStats:
    """The raw material of the scorecard for one scene."""

    name: str
    band: str
    has_qm: bool
    frames: int
    shift_magnitude: list[float] = field(default_factory=list)
    shift_fraction: list[float] = field(default_factory=list)
    reference_fraction: list[float] = field(default_factory=list)
    reference_cell: list[float] = field(default_factory=list)
    spectra: list[np.ndarray] = field(default_factory=list)
    coherence: list[float] = field(default_factory=list)
    values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    above_14bit: float = 0.0
    cloud_cover: list[float] = field(default_factory=list)
    cloud_objects: list[int] = field(default_factory=list)


def frequencies(bins: int = SPECTRUM_BINS) -> np.ndarray:
    edges = np.linspace(0, 0.5, bins + 1)
    return 0.5 * (edges[1:] + edges[:-1])


def spectral_slope(power: np.ndarray) -> float:
    """Log-log slope of a radial power spectrum over ``SLOPE_BAND``."""
    f = frequencies(len(power))
    ok = (f >= SLOPE_BAND[0]) & (f <= SLOPE_BAND[1]) & (power > 0)
    return float(np.polyfit(np.log10(f[ok]), np.log10(power[ok]), 1)[0]) if ok.sum() >= 2 else math.nan


def spectral_level(power: np.ndarray) -> float:
    """log10 of the mean power (DN²) over ``LEVEL_BAND``."""
    f = frequencies(len(power))
    ok = (f >= LEVEL_BAND[0]) & (f <= LEVEL_BAND[1])
    return float(np.log10(np.mean(power[ok]))) if ok.any() and np.mean(power[ok]) > 0 else math.nan


def coherence(image: np.ndarray, mask: np.ndarray | None = None, sigma: float = COHERENCE_SIGMA) -> float:
    """Energy-weighted mean coherence of the gradient structure tensor: ``sqrt((Jxx−Jyy)² + 4Jxy²) / (Jxx+Jyy)``
    with J the gradient products smoothed over ``sigma``; 0 for isotropic texture, 1 for parallel lines."""
    img = np.asarray(image, np.float64)
    gy, gx = ndi.sobel(img, axis=0), ndi.sobel(img, axis=1)
    jxx, jyy, jxy = (ndi.gaussian_filter(v, sigma) for v in (gx * gx, gy * gy, gx * gy))
    energy = jxx + jyy
    coh = np.sqrt((jxx - jyy) ** 2 + 4 * jxy ** 2) / np.maximum(energy, 1e-12)
    keep = np.ones(img.shape, bool) if mask is None else ndi.binary_erosion(mask, iterations=int(2 * sigma) + 1)
    margin = int(2 * sigma) + 1
    keep[:margin], keep[-margin:], keep[:, :margin], keep[:, -margin:] = False, False, False, False
    if keep.sum() < 64 or energy[keep].sum() <= 0:
        return math.nan
    return float(np.sum(coh[keep] * energy[keep]) / np.sum(energy[keep]))


def _fraction_to_grid(values: np.ndarray) -> np.ndarray:
    """Distance of each value to the nearest whole number (0…0.5)."""
    return np.abs(values - np.round(values))


def _clear_looking_frames(scene: Scene, features: np.ndarray | None) -> list[int]:
    """Frames to measure texture on: the fully clear ones (QM), or without a QM the half of the frames
    closest to the scene's median (unmasked clouds make a frame far from it)."""
    if scene.has_qm:
        return [int(k) for k in np.flatnonzero(scene.clearance >= 0.999)]
    from probav.reference import FEATURES

    distance = features[:, FEATURES.index("median_distance")]
    return [int(k) for k in np.argsort(distance, kind="stable")[: max(1, scene.frames // 2)]]


def reference_positions(scene: Scene, out: SceneStats) -> None:
    """Fill ``out.reference_fraction`` and ``out.reference_cell``: every usable frame (clearance at least
    ``MIN_SHIFT_CLEARANCE``, registration checks passed) registered to the scene's reference frame."""
    from probav.registration import Alignment
    from probav.scene import SCALE

    ref = int(scene.reference)
    alignment = Alignment.to(np.asarray(scene.lr, np.float64) / 65535.0, np.asarray(scene.qm, bool), ref,
                             range(scene.frames))
    for k in alignment.frames:
        r = alignment.results[k]
        if k == ref or scene.clearance[k] < MIN_SHIFT_CLEARANCE or not r.ok:
            continue
        fraction = _fraction_to_grid(np.asarray(r.shift, np.float64))
        out.reference_fraction.extend(fraction.tolist())
        out.reference_cell.append(float(np.all(fraction < 0.5 / SCALE)))


def scene_statistics(scene: Scene, shifts: bool = True) -> SceneStats:
    """``SceneStats`` of one scene (see the module doc); ``shifts`` registers its frames (the costly part)."""
    from probav.reference import cached_alignment, frame_features

    lr = np.asarray(scene.lr)
    has_qm = bool(scene.has_qm)
    out = SceneStats(scene.name, scene.band, has_qm, scene.frames)
    valid = lr != NO_DATA
    out.above_14bit = float(((lr > FOURTEEN_BITS) & valid).sum() / max(valid.sum(), 1))
    features = frame_features(scene) if (shifts or not has_qm) else None
    if shifts:
        aligned = cached_alignment(scene)
        for k in aligned.frames:
            if k == aligned.ref or scene.clearance[k] < MIN_SHIFT_CLEARANCE:
                continue
            s = np.asarray(aligned.results[k].shift, np.float64)
            out.shift_magnitude.append(float(np.hypot(*s)))
            out.shift_fraction.extend(_fraction_to_grid(s).tolist())
        if scene.reference is not None:
            reference_positions(scene, out)
    for k in _clear_looking_frames(scene, features):
        out.spectra.append(radial_spectrum(lr[k], SPECTRUM_BINS))
        out.coherence.append(coherence(lr[k].astype(np.float64)))
    if has_qm:
        values = lr[scene.qm]
        for k in range(scene.frames):
            masked = ~scene.qm[k]
            out.cloud_cover.append(float(masked.mean()))
            labels, count = ndi.label(masked, structure=np.ones((3, 3)))
            if count:
                out.cloud_objects.extend(np.bincount(labels.ravel())[1:].tolist())
    else:
        values = np.median(lr.astype(np.float64), axis=0).ravel()
    step = max(1, values.size // VALUE_SAMPLE)
    out.values = np.asarray(values[::step], np.float64)
    return out


# --------------------------------------------------------------------------- aggregation and distances

def ks_distance(a, b) -> float | None:
    """Two-sample Kolmogorov–Smirnov statistic D (None when a side is empty)."""
    from scipy.stats import ks_2samp

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if not a.size or not b.size:
        return None
    return float(ks_2samp(a, b).statistic)


def _median(values) -> float | None:
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else None


def _spread(values) -> list[float] | None:
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    return [float(v) for v in np.percentile(values, [10, 90])] if values.size else None


def _pool(stats: list[SceneStats], attribute: str, band: str | None = None) -> np.ndarray:
    parts = [np.atleast_1d(np.asarray(getattr(s, attribute), np.float64)) for s in stats
             if band is None or s.band == band]
    return np.concatenate(parts) if parts else np.zeros(0)


def _spectrum_rows(stats: list[SceneStats], band: str) -> tuple[list[float], list[float]]:
    spectra = [p for s in stats if s.band == band for p in s.spectra]
    return [spectral_slope(p) for p in spectra], [spectral_level(p) for p in spectra]


def _row(statistic: str, band: str | None, synthetic, real, distance: float | None, kind: str,
         real_scenes: int, real_values: int, note: str = "") -> dict:
    return {"statistic": statistic, "band": band or "all", "synthetic": synthetic, "real": real,
            "distance": distance, "distance_kind": kind, "real_scenes": int(real_scenes),
            "real_values": int(real_values), "note": note}


def scorecard(synthetic: list[SceneStats], real: list[SceneStats], synthetic_norms: dict | None = None,
              real_norms: dict | None = None, synthetic_margins=None, real_margins=None) -> list[dict]:
    """The scorecard rows (see the module doc): ``synthetic`` and ``real`` per-scene statistics, norms by
    band ``{band: array}``, reference-frame margins (dB) of each side."""
    rows = []

    def distribution(name, attribute, band, note="", only_qm=False):
        syn = [s for s in synthetic if not only_qm or s.has_qm]
        rl = [s for s in real if not only_qm or s.has_qm]
        a, b = _pool(syn, attribute, band), _pool(rl, attribute, band)
        scenes = len({s.name for s in rl if (band is None or s.band == band) and len(np.atleast_1d(getattr(s, attribute)))})
        spread = f"real 10–90%: {', '.join(f'{v:.3g}' for v in _spread(b))}" if b.size else ""
        rows.append(_row(name, band, _median(a), _median(b), ks_distance(a, b), "KS D", scenes, b.size,
                         "; ".join(p for p in (note, spread) if p)))

    distribution("shift magnitude (LR px, median)", "shift_magnitude", None)
    distribution("shift distance to the whole pixel (LR px, median)", "shift_fraction", None,
                 "0.25 for positions spread evenly over the pixel")
    distribution("position relative to the reference frame: distance to its LR grid (LR px, median)",
                 "reference_fraction", None, "per axis; scenes with a known reference frame")
    a, b = _pool(synthetic, "reference_cell"), _pool(real, "reference_cell")
    if a.size and b.size:
        rows.append(_row("frames in the reference frame's own HR cell (share)", None, float(a.mean()),
                         float(b.mean()), abs(float(a.mean()) - float(b.mean())), "|difference|",
                         sum(1 for s in real if s.reference_cell), b.size,
                         "within 1/6 LR px of its grid in both directions; 1/9 for positions spread evenly"))
    for band in BANDS:
        syn_slopes, syn_levels = _spectrum_rows(synthetic, band)
        real_slopes, real_levels = _spectrum_rows(real, band)
        n = len({s.name for s in real if s.band == band and s.spectra})
        a, b = _median(syn_slopes), _median(real_slopes)
        rows.append(_row("spectral slope (log-log)", band, a, b, None if a is None or b is None else abs(a - b),
                         "|difference|", n, len(real_slopes)))
        a, b = _median(syn_levels), _median(real_levels)
        rows.append(_row("spectral level (log10 DN², 0.2–0.3 cycles/px)", band, a, b,
                         None if a is None or b is None else abs(a - b), "|difference of log10|", n, len(real_levels)))
        a, b = _median(_pool(synthetic, "coherence", band)), _median(_pool(real, "coherence", band))
        rows.append(_row("directionality (structure-tensor coherence)", band, a, b,
                         None if a is None or b is None else abs(a - b), "|difference|", n,
                         _pool(real, "coherence", band).size))
        distribution("clear LR values (DN, median)", "values", band,
                     "without a QM, the per-pixel median over the frames")
        a = float(np.mean([s.above_14bit for s in synthetic if s.band == band] or [math.nan]))
        b = float(np.mean([s.above_14bit for s in real if s.band == band] or [math.nan]))
        rows.append(_row("LR pixels above 14 bits (share)", band, a, b,
                         None if not (np.isfinite(a) and np.isfinite(b)) else
                         abs(math.log10(max(a, 1e-7)) - math.log10(max(b, 1e-7))), "|difference of log10|",
                         sum(1 for s in real if s.band == band), sum(1 for s in real if s.band == band),
                         "floor 1e-7; real LR-only frames' clouds count too"))
        if synthetic_norms is not None and real_norms is not None and band in synthetic_norms and band in real_norms:
            a, b = synthetic_norms[band], real_norms[band]
            rows.append(_row("baseline cPSNR (norm.csv, dB, median)", band, _median(a), _median(b), ks_distance(a, b),
                             "KS D", len(b), len(b), f"real 10–90%: {', '.join(f'{v:.1f}' for v in _spread(b))}"))
    distribution("cloud cover per frame (share, median)", "cloud_cover", None, "scenes with a QM only", only_qm=True)
    distribution("cloud object size (LR px, median)", "cloud_objects", None, "scenes with a QM only", only_qm=True)
    rows.append(_row("frames per scene (median)", None, _median([s.frames for s in synthetic]),
                     _median([s.frames for s in real]), ks_distance([s.frames for s in synthetic], [s.frames for s in real]),
                     "KS D", len(real), len(real), "LR-only scenes may miss frames"))
    if synthetic_margins is not None and real_margins is not None and len(synthetic_margins) and len(real_margins):
        a, b = _median(synthetic_margins), _median(real_margins)
        rows.append(_row("reference frame's margin over the next-best frame (dB, median)", None, a, b, abs(a - b),
                         "|difference|", len(real_margins), len(real_margins),
                         "real: the scenes with an HR and a PROBA-V-REF label"))
    return rows


def collect(folders: list[Path], shifts: int | None = None, read=None, progress: bool = False,
            desc: str = "scenes") -> list[SceneStats]:
    """``scene_statistics`` of scene folders (``read(folder)`` reads one; shifts on the first ``shifts``
    of each band, evenly spread, all when None)."""
    from tqdm import tqdm

    from probav.data.stats import sample_evenly

    with_shifts = set()
    for band in BANDS:
        of_band = [d for d in folders if d.parent.name == band]
        with_shifts |= set(map(str, sample_evenly(of_band, shifts)))
    out = []
    for folder in tqdm(folders, desc=f"realism: {desc}", unit="scene", disable=not progress, leave=False):
        out.append(scene_statistics(read(folder), str(folder) in with_shifts))
    return out


def real_margins(folder: os.PathLike | str | None, labels: os.PathLike | str | None) -> list[float]:
    """The reference frame's margin over the next-best single frame on the real scenes with an HR and a label."""
    from probav.real import real_scenes_with_hr, real_settings
    from probav.reference import single_frame_cpsnr

    scenes, _ = real_scenes_with_hr(real_settings({"real": {"folder": folder, "labels": labels}}))
    margins = []
    for scene in scenes:
        if scene.reference is None:
            continue
        single = single_frame_cpsnr(scene)
        margins.append(float(single[scene.reference] - np.delete(single, scene.reference).max()))
    return margins


# --------------------------------------------------------------------------- the stage

def _labelled(scene: Scene, labels: dict) -> Scene:
    """The scene with its labelled reference frame (``labels``: ``read_labels``), when it has one."""
    if scene.name in labels and int(labels[scene.name][1]) in set(scene.ids.tolist()):
        scene.reference = scene.frame_index(int(labels[scene.name][1]))
    return scene


def run_scorecard(raw: os.PathLike | str, index_csv: os.PathLike | str, params: dict,
                  reference_table: os.PathLike | str | None = None, base: os.PathLike | str = ".",
                  scenes_per_band: int = 24, shift_scenes: int = 12, progress: bool = True) -> dict:
    """The scorecard of the pipeline's data (``raw``, its index) against the real material of params.yaml's
    ``real`` group (``folder``: official layout with QMs and its ``norm.csv``; ``lr_only``) and the reference
    stage's margins (``reference_table``). Returns ``{"simulator_version", "statistics": {"<statistic> [<band>]":
    row}, "synthetic": {...}, "real": {...}}``."""
    import json

    import pandas as pd

    from probav.data.stats import norms_by_band, sample_evenly
    from probav.real import find_scene_folders, missing, read_any_scene, real_settings
    from probav.scene import read_scene

    raw = Path(raw)
    index = pd.read_csv(index_csv, dtype={"name": str})
    ok = index[index["status"] == "ok"] if "status" in index else index
    folders = [raw / p for band in BANDS
               for p in sample_evenly(list(ok.loc[(ok["band"] == band) & (ok["split"] == "train"), "path"]),
                                      scenes_per_band)]
    from probav.data.reference_labels import LABELS_FILE, read_labels

    syn_labels = read_labels(raw / LABELS_FILE) if (raw / LABELS_FILE).is_file() else {}
    synthetic = collect(folders, shift_scenes, lambda d: _labelled(read_scene(d, require_hr=False), syn_labels),
                        progress, "this run's data")
    cfg = real_settings(params, base)
    real_labels = (read_labels(cfg["labels"]) if cfg["labels"] is not None and Path(cfg["labels"]).is_file()
                   else {})
    real_folders, absent = [], []
    for key, what in (("folder", "real scenes (official layout)"), ("lr_only", "real LR-only scenes")):
        why = missing(cfg[key], what)
        if why:
            absent.append(why)
        else:
            real_folders += find_scene_folders(cfg[key])
    real = collect(real_folders, None, lambda d: read_any_scene(d, None, real_labels), progress, "real scenes")
    real_norm_path = Path(cfg["folder"]) / "norm.csv" if cfg["folder"] is not None else None
    real_norms = norms_by_band(real_norm_path) if real_norm_path is not None and real_norm_path.is_file() else None
    margins = None
    if reference_table is not None and Path(reference_table).is_file():
        margins = pd.read_csv(reference_table)["margin"].dropna().to_numpy()
    real_margin_values = real_margins(cfg["folder"], cfg["labels"]) if not missing(cfg["folder"], "") else []
    rows = scorecard(synthetic, real, norms_by_band(raw / "norm.csv", index), real_norms, margins,
                     real_margin_values) if real else []
    settings_path = raw / "synthetic" / "settings.json"
    version = json.loads(settings_path.read_text()).get("version") if settings_path.is_file() else None
    # Keyed by statistic and band (a mapping, as DVC reads metrics), in the scorecard's order.
    statistics = {f"{r['statistic']} [{r['band']}]": r for r in rows}
    return {"simulator_version": version, "statistics": statistics,
            "synthetic": {"scenes": len(synthetic), "shift_scenes": sum(1 for s in synthetic if s.shift_magnitude)},
            "real": {"scenes": len(real), "with_qm": sum(1 for s in real if s.has_qm),
                     "norms": None if real_norms is None else {b: int(len(v)) for b, v in real_norms.items()},
                     "margin_scenes": len(real_margin_values), "absent": absent}}
