"""Statistics of a data folder in the official layout: the report's data section and the realism scorecard.

Cheap numbers (frames per scene, clearance of frames and of the HR) come from the scene index
``data/scenes.csv`` and cover every scene. Numbers that need the pixels (value histograms, values
above 14 bits, the no-data value, power spectra, shifts between frames) are computed on an evenly
spaced, deterministic sample of scenes per band, read from disk.

Shifts are estimated with ``probav.registration.register`` (masked phase correlation, then a
Gauss-Newton sub-pixel refinement) of every frame onto the scene's clearest frame; its convention
is skimage's: the shift ``s`` registers the moving frame onto the reference, so with the simulator's
true per-frame offsets ``d`` (``synthetic/shifts.csv``) ``s ≈ d_reference − d_frame``.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from probav.scene import BANDS, NO_DATA, SPLITS, Scene, read_norm, read_scene, scene_dirs

FOURTEEN_BITS = 2 ** 14 - 1          # 16383: the nominal maximum of the 14-bit data
VALUE_BIN = 256                      # histogram bin width, DN (256 bins over 0…65535)
SPECTRUM_BINS = 24
MIN_REGISTRATION_CLEARANCE = 0.6     # frames less clear are not registered (as the inclusion rule)


@dataclass
class BandStats:
    """Pixel statistics of the sampled scenes of one band."""

    band: str
    scenes: list[str] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)
    clearance: list[float] = field(default_factory=list)       # per frame
    hr_clearance: list[float] = field(default_factory=list)    # per scene with an SM
    lr_all_hist: np.ndarray = field(default_factory=lambda: np.zeros(65536 // VALUE_BIN, np.int64))
    lr_clear_hist: np.ndarray = field(default_factory=lambda: np.zeros(65536 // VALUE_BIN, np.int64))
    hr_clear_hist: np.ndarray = field(default_factory=lambda: np.zeros(65536 // VALUE_BIN, np.int64))
    lr_pixels: int = 0
    lr_clear_pixels: int = 0
    above_14bit: int = 0               # LR pixels (any) above 16383, no-data excluded
    above_14bit_clear: int = 0         # clear LR pixels above 16383
    nodata: int = 0                    # LR pixels equal to 65520
    nodata_clear: int = 0              # …of them marked clear by the QM (should be 0)
    nodata_frames: int = 0
    not_multiple_16: int = 0           # LR/HR values that are not multiples of 16
    max_clear: int = 0
    lr_spectra: list[np.ndarray] = field(default_factory=list)
    hr_spectra: list[np.ndarray] = field(default_factory=list)
    shifts: list[dict] = field(default_factory=list)   # scene, frame, dy, dx, ok, true_dy, true_dx

    @property
    def spectrum_freq(self) -> np.ndarray:
        edges = np.linspace(0, 0.5, SPECTRUM_BINS + 1)
        return 0.5 * (edges[1:] + edges[:-1])

    def mean_spectrum(self, which: str) -> np.ndarray | None:
        spectra = self.lr_spectra if which == "lr" else self.hr_spectra
        return np.mean(spectra, axis=0) if spectra else None

    def shift_table(self) -> pd.DataFrame:
        return pd.DataFrame(self.shifts, columns=["scene", "frame", "dy", "dx", "ok", "true_dy", "true_dx"])


def hist_edges() -> np.ndarray:
    return np.arange(0, 65536 + VALUE_BIN, VALUE_BIN, dtype=np.float64)


def radial_spectrum(image: np.ndarray, bins: int = SPECTRUM_BINS) -> np.ndarray:
    """Radially averaged power spectrum (mean removed, Hann window) in DN² per ring of ``bins``
    rings from 0 to 0.5 cycles per pixel."""
    img = np.asarray(image, np.float64)
    img = img - img.mean()
    window = np.outer(np.hanning(img.shape[0]), np.hanning(img.shape[1]))
    power = np.abs(np.fft.fft2(img * window)) ** 2 / (window ** 2).sum()
    fy = np.fft.fftfreq(img.shape[0])[:, None]
    fx = np.fft.fftfreq(img.shape[1])[None, :]
    idx = np.minimum((np.hypot(fy, fx) / 0.5 * bins).astype(int), bins).ravel()
    sums = np.bincount(idx, power.ravel(), bins + 1)[:bins]
    counts = np.maximum(np.bincount(idx, minlength=bins + 1)[:bins], 1)
    return sums / counts


def _hist(values: np.ndarray) -> np.ndarray:
    return np.bincount(np.asarray(values, np.int64).ravel() // VALUE_BIN, minlength=65536 // VALUE_BIN)


def read_truth(raw: os.PathLike | str) -> dict[tuple[str, int], tuple[float, float]] | None:
    """The simulator's true per-frame offsets ``{(scene, frame): (dy, dx)}`` or None (real data)."""
    path = Path(raw) / "synthetic" / "shifts.csv"
    if not path.is_file():
        return None
    out = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            try:
                out[(row["name"], int(row["frame"]))] = (float(row["dy"]), float(row["dx"]))
            except (KeyError, ValueError):
                continue
    return out


def scene_shifts(scene: Scene, truth: dict | None = None) -> list[dict]:
    """Shift of every usable frame onto the clearest frame (the reference itself is left out)."""
    from probav.registration import register

    clearance = scene.clearance
    ref = int(np.argmax(clearance))
    reference = scene.lr[ref].astype(np.float64)
    rows = []
    for k in range(scene.frames):
        if k == ref or clearance[k] < MIN_REGISTRATION_CLEARANCE:
            continue
        reg = register(reference, scene.lr[k].astype(np.float64), scene.qm[ref], scene.qm[k])
        row = {"scene": scene.name, "frame": k, "dy": float(reg.shift[0]), "dx": float(reg.shift[1]),
               "ok": bool(reg.ok), "true_dy": np.nan, "true_dx": np.nan}
        if truth is not None and (scene.name, ref) in truth and (scene.name, k) in truth:
            (ry, rx), (ky, kx) = truth[(scene.name, ref)], truth[(scene.name, k)]
            row["true_dy"], row["true_dx"] = ry - ky, rx - kx
        rows.append(row)
    return rows


def add_scene(stats: BandStats, scene: Scene, shifts: bool, truth: dict | None) -> None:
    lr, qm = scene.lr, scene.qm
    stats.scenes.append(scene.name)
    stats.frames.append(scene.frames)
    stats.clearance.extend(float(c) for c in scene.clearance)
    nodata = lr == NO_DATA
    clear = lr[qm]
    stats.lr_all_hist += _hist(lr)
    stats.lr_clear_hist += _hist(clear)
    stats.lr_pixels += lr.size
    stats.lr_clear_pixels += clear.size
    stats.above_14bit += int(((lr > FOURTEEN_BITS) & ~nodata).sum())
    stats.above_14bit_clear += int((clear > FOURTEEN_BITS).sum())
    stats.nodata += int(nodata.sum())
    stats.nodata_clear += int((nodata & qm).sum())
    stats.nodata_frames += int(nodata.reshape(scene.frames, -1).any(axis=1).sum())
    stats.not_multiple_16 += int((lr % 16 != 0).sum())
    if clear.size:
        stats.max_clear = max(stats.max_clear, int(clear.max()))
    for k in np.flatnonzero(scene.clearance >= 0.999):
        stats.lr_spectra.append(radial_spectrum(lr[k]))
    if scene.sm is not None:
        stats.hr_clearance.append(float(scene.sm.mean()))
    if scene.hr is not None and scene.sm is not None:
        stats.hr_clear_hist += _hist(scene.hr[scene.sm])
        stats.not_multiple_16 += int((scene.hr % 16 != 0).sum())
        if scene.sm.mean() >= 0.999:
            stats.hr_spectra.append(radial_spectrum(scene.hr))
    if shifts:
        stats.shifts.extend(scene_shifts(scene, truth))


def sample_evenly(items: list, count: int | None) -> list:
    """``count`` items spread evenly over the list (all of them if ``count`` is None or larger)."""
    if count is None or len(items) <= count:
        return list(items)
    if count <= 0:
        return []
    idx = np.unique(np.linspace(0, len(items) - 1, count).round().astype(int))
    return [items[i] for i in idx]


def collect(raw: os.PathLike | str, dirs_by_band: dict[str, list[Path]], shift_scenes: int | None = None,
            truth: dict | None = None) -> dict[str, BandStats]:
    """BandStats per band for the given scene folders; shifts on the first ``shift_scenes`` of each
    band's (already evenly spread) list (None = all)."""
    out = {}
    for band in BANDS:
        stats = BandStats(band)
        dirs = dirs_by_band.get(band, [])
        with_shifts = set(map(str, sample_evenly(dirs, shift_scenes)))
        for d in dirs:
            scene = read_scene(d, require_hr=False, min_frames=1)
            add_scene(stats, scene, str(d) in with_shifts, truth)
        out[band] = stats
    return out


def index_sample(raw: os.PathLike | str, index: pd.DataFrame, per_band: int) -> dict[str, list[Path]]:
    """Evenly spaced usable scenes per band from the scene index (train scenes first: they have HR)."""
    raw = Path(raw)
    out = {}
    ok = index[index["status"] == "ok"] if "status" in index else index
    for band in BANDS:
        rows = ok[ok["band"] == band]
        train = [raw / p for p in rows.loc[rows["split"] == "train", "path"]]
        test = [raw / p for p in rows.loc[rows["split"] != "train", "path"]]
        n_train = min(len(train), max(per_band - min(len(test), per_band // 4), 0))
        chosen = sample_evenly(train, n_train) + sample_evenly(test, per_band - n_train)
        out[band] = [d for d in chosen if d.is_dir()]
    return out


def folder_sample(root: os.PathLike | str, per_band: int | None = None) -> dict[str, list[Path]]:
    """Scene folders per band of a folder in the official layout (e.g. the real sample)."""
    out: dict[str, list[Path]] = {b: [] for b in BANDS}
    for split in SPLITS:
        for d in scene_dirs(root, split):
            out.setdefault(d.parent.name, []).append(d)
    return {b: sample_evenly(v, per_band) for b, v in out.items()}


def official_band(name: str) -> str | None:
    """Band of an official scene by its number (train RED 0000–0593, NIR 0594–1159; test RED
    1160–1305, NIR 1306–1449)."""
    try:
        n = int(name[6:])
    except ValueError:
        return None
    if 0 <= n < 594 or 1160 <= n < 1306:
        return "RED"
    if 594 <= n < 1160 or 1306 <= n < 1450:
        return "NIR"
    return None


def norms_by_band(norm_csv: os.PathLike | str, index: pd.DataFrame | None = None) -> dict[str, np.ndarray]:
    """norm.csv values per band: bands from the scene index when given, else the official numbering."""
    path = Path(norm_csv)
    if not path.is_file():
        return {}
    norms = read_norm(path)
    if index is not None and {"name", "band"} <= set(index.columns):
        bands = dict(zip(index["name"], index["band"]))
    else:
        bands = {name: official_band(name) for name in norms}
    out: dict[str, list[float]] = {b: [] for b in BANDS}
    for name, value in norms.items():
        if bands.get(name) in out:
            out[bands[name]].append(value)
    return {b: np.array(v) for b, v in out.items() if v}
