"""A PROBA-V scene in memory, and reading/writing it in the official archive layout.

Layout: ``<root>/<split>/<band>/imgsetNNNN/{LR000.png…, QM000.png…, HR.png, SM.png}``
with ``<root>/norm.csv`` beside ``train/`` and ``test/``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

LR_SIZE = 128
SCALE = 3
HR_SIZE = LR_SIZE * SCALE
MIN_FRAMES = 9
NO_DATA = 65520
BANDS = ("RED", "NIR")
SPLITS = ("train", "test")
SCENE_NAME = re.compile(r"^imgset\d{4}$")
LR_NAME = re.compile(r"^LR(\d{3})\.png$")


class BadSceneError(ValueError):
    """A scene (or one of its files) that cannot be used; the message names the file and the problem."""

    def __init__(self, path: os.PathLike | str, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass
class Scene:
    """One image set: ``lr`` (T,128,128) uint16, ``qm`` (T,128,128) bool, ``hr``/``sm`` (384,384) or None."""

    name: str
    band: str
    lr: np.ndarray
    qm: np.ndarray
    hr: np.ndarray | None = None
    sm: np.ndarray | None = None
    norm: float | None = None
    split: str = "train"
    extra: dict = field(default_factory=dict)
    frame_ids: np.ndarray | None = None           # the file number NNN of each frame (LRNNN.png); None: 0…T−1
    reference: int | None = None                  # index of the frame taken on the HR's own pass, when labelled
    reference_weights: np.ndarray | None = None   # (T,) how likely each frame is that one, as the track decides
    has_qm: bool = True                           # False: LR-only material, every pixel taken as clear

    @property
    def frames(self) -> int:
        return int(self.lr.shape[0])

    @property
    def ids(self) -> np.ndarray:
        """File numbers of the frames (``LRNNN.png``)."""
        return np.arange(self.frames) if self.frame_ids is None else np.asarray(self.frame_ids)

    def frame_index(self, number: int) -> int:
        """Index into ``lr`` of the frame stored as ``LR{number:03d}.png``."""
        hits = np.flatnonzero(self.ids == int(number))
        if not len(hits):
            raise KeyError(f"{self.name} has no frame LR{int(number):03d}.png")
        return int(hits[0])

    @property
    def clearance(self) -> np.ndarray:
        """Fraction of clear pixels of each LR frame, shape (T,)."""
        return self.qm.reshape(self.frames, -1).mean(axis=1)

    @property
    def hr_clearance(self) -> float | None:
        return None if self.sm is None else float(self.sm.mean())

    @property
    def has_hr(self) -> bool:
        return self.hr is not None


def read_png(path: os.PathLike | str, expected_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a PNG as a 2-D array; raise BadSceneError naming the file if unreadable or of the wrong size.

    The array is the one Pillow gives (uint16 for 16-bit, uint8 for 8-bit, bool for 1-bit files);
    ``probav.png.decode_png`` decodes the official files and ours itself, faster, and others with Pillow."""
    from probav.png import PNGError, decode_png

    path = Path(path)
    if not path.is_file():
        raise BadSceneError(path, "file is missing")
    try:
        array = decode_png(path.read_bytes())
    except PNGError as err:
        raise BadSceneError(path, f"unreadable PNG ({err})") from err
    except OSError as err:
        raise BadSceneError(path, f"unreadable file ({err})") from err
    if array.ndim != 2:
        raise BadSceneError(path, f"expected a single-band grayscale image, got shape {array.shape}")
    if expected_shape is not None and array.shape != tuple(expected_shape):
        raise BadSceneError(path, f"wrong image size {array.shape[1]}x{array.shape[0]}, "
                                  f"expected {expected_shape[1]}x{expected_shape[0]}")
    return array


def read_image(path: os.PathLike | str, expected_shape: tuple[int, int]) -> np.ndarray:
    """A 16-bit image (LR or HR) as uint16."""
    array = read_png(path, expected_shape)
    if array.dtype != np.uint16 and (array.dtype.kind not in "ui"
                                     or (array.size and (array.min() < 0 or array.max() > 65535))):
        raise BadSceneError(path, f"expected 16-bit unsigned values, got {array.dtype}")
    return array.astype(np.uint16, copy=False)


def read_mask(path: os.PathLike | str, expected_shape: tuple[int, int]) -> np.ndarray:
    """A quality/status mask (1-bit or 0/255 PNG) as bool, true = clear."""
    return read_png(path, expected_shape) != 0


def write_png(path: os.PathLike | str, array: np.ndarray) -> None:
    """Write a uint16 image (16-bit grayscale) or a bool mask (8-bit, 0/255) as PNG, atomically
    (temporary name, then rename), with ``probav.png.encode_png``: files that ``read_png`` decodes
    on its fast path, and that Pillow, scikit-image and the organisers' scorer read the same."""
    from probav.png import encode_png

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    if array.dtype == bool:
        data = encode_png(array.astype(np.uint8) * np.uint8(255))
    elif array.dtype == np.uint16:
        data = encode_png(array)
    else:
        raise TypeError(f"write_png takes uint16 or bool arrays, got {array.dtype}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def frame_indices(scene_dir: os.PathLike | str) -> list[int]:
    """Sorted indices NNN of the LRNNN.png files of a scene folder."""
    return sorted(int(m.group(1)) for p in Path(scene_dir).iterdir() if (m := LR_NAME.match(p.name)))


def read_scene(scene_dir: os.PathLike | str, norm: float | None = None, min_frames: int = MIN_FRAMES,
               require_hr: bool | None = None, require_qm: bool = True) -> Scene:
    """Read a scene folder; every problem raises BadSceneError naming the file.

    ``require_hr`` defaults to True for scenes under ``train/`` and False under ``test/``. With
    ``require_qm`` False a frame without its QM is taken as clear everywhere (LR-only material).
    """
    scene_dir = Path(scene_dir)
    if not scene_dir.is_dir():
        raise BadSceneError(scene_dir, "scene folder is missing")
    band = scene_dir.parent.name
    split = scene_dir.parent.parent.name
    if require_hr is None:
        require_hr = split != "test"
    indices = frame_indices(scene_dir)
    if len(indices) < min_frames:
        raise BadSceneError(scene_dir, f"too few LR frames: {len(indices)}, at least {min_frames} needed")
    lr = np.empty((len(indices), LR_SIZE, LR_SIZE), np.uint16)
    qm = np.empty((len(indices), LR_SIZE, LR_SIZE), bool)
    has_qm = True
    for k, i in enumerate(indices):
        qm_path = scene_dir / f"QM{i:03d}.png"
        lr[k] = read_image(scene_dir / f"LR{i:03d}.png", (LR_SIZE, LR_SIZE))
        if qm_path.is_file():
            qm[k] = read_mask(qm_path, (LR_SIZE, LR_SIZE))
        elif require_qm:
            raise BadSceneError(qm_path, f"missing quality mask for LR{i:03d}.png")
        else:
            qm[k] = True
            has_qm = False
    hr = sm = None
    hr_path, sm_path = scene_dir / "HR.png", scene_dir / "SM.png"
    if hr_path.exists() or require_hr:
        if not hr_path.exists():
            raise BadSceneError(hr_path, "missing HR image (every train scene needs HR.png)")
        hr = read_image(hr_path, (HR_SIZE, HR_SIZE))
    if sm_path.exists() or hr is not None:
        if not sm_path.exists():
            raise BadSceneError(sm_path, "missing status mask SM.png for the HR image")
        sm = read_mask(sm_path, (HR_SIZE, HR_SIZE))
    return Scene(name=scene_dir.name, band=band, split=split, lr=lr, qm=qm, hr=hr, sm=sm, norm=norm,
                 frame_ids=np.array(indices), has_qm=has_qm)


def write_scene(scene: Scene, root: os.PathLike | str) -> Path:
    """Write a scene into ``root/<split>/<band>/<name>/`` in the official layout; returns the folder."""
    scene_dir = Path(root) / scene.split / scene.band / scene.name
    scene_dir.mkdir(parents=True, exist_ok=True)
    for i, number in enumerate(scene.ids):
        write_png(scene_dir / f"LR{number:03d}.png", scene.lr[i])
        write_png(scene_dir / f"QM{number:03d}.png", scene.qm[i])
    if scene.hr is not None:
        write_png(scene_dir / "HR.png", scene.hr)
    if scene.sm is not None:
        write_png(scene_dir / "SM.png", scene.sm)
    return scene_dir


def scene_dirs(root: os.PathLike | str, split: str) -> list[Path]:
    """The scene folders of one split, RED then NIR, sorted by name."""
    out = []
    for band in BANDS:
        band_dir = Path(root) / split / band
        if band_dir.is_dir():
            out += sorted(p for p in band_dir.iterdir() if p.is_dir() and SCENE_NAME.match(p.name))
    return out


def read_norm(path: os.PathLike | str) -> dict[str, float]:
    """``norm.csv``: lines ``imgsetNNNN <baseline cPSNR>``, space separated, no header."""
    path = Path(path)
    if not path.is_file():
        raise BadSceneError(path, "norm.csv is missing")
    norms = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            name, value = parts[0], float(parts[1])
        except (IndexError, ValueError) as err:
            raise BadSceneError(path, f"line {lineno} is not '<imgsetNNNN> <cPSNR>': {line!r}") from err
        norms[name] = value
    return norms


def write_norm(path: os.PathLike | str, norms: dict[str, float]) -> None:
    """Write ``norm.csv`` in the official format (no trailing newline), atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(f"{name} {value!r}" for name, value in sorted(norms.items())))
    os.replace(tmp, path)


def to_unit(image: np.ndarray) -> np.ndarray:
    """uint16 → float64 in [0, 1], the scale of the official score."""
    return np.asarray(image, np.float64) / 65535.0


def to_uint16(image: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] → uint16, rounded and clipped."""
    return np.clip(np.rint(np.asarray(image, np.float64) * 65535.0), 0, 65535).astype(np.uint16)
