"""The submission: one 384×384 16-bit grayscale PNG per test scene, ``imgsetNNNN.png``, all at the
root of one zip (290 for the real test set).

- ``write_submission(images, zip_path)`` writes the zip from ``(name, image)`` pairs under a temporary
  name and renames it into place (a failed run never leaves half a zip).
- ``predict_submission(model, scenes, zip_path)`` predicts the scenes with a model and writes the zip.
- ``validate_submission(zip_path, expected_names)`` lists every problem (unreadable zip, names,
  folders, duplicates, missing or unexpected scenes, count, unreadable PNG, size, bit depth, colour type).
- ``read_prediction(data, name)`` / ``open_predictions(path)`` read a zip or a folder of such PNGs
  (for ``probav score``), raising ``SubmissionError`` with a clear message on bad input.
"""
from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from tqdm import tqdm

from probav import png
from probav.models.registry import SRModel
from probav.scene import HR_SIZE, Scene

PNG_NAME = re.compile(r"^(imgset\d{4})\.png$")
REAL_TEST_SCENES = 290


class SubmissionError(ValueError):
    """A submission (zip or folder of PNGs) that cannot be used; the message says what is wrong."""


def encode_png(image: np.ndarray) -> bytes:
    """A (384, 384) uint16 image as the bytes of a 16-bit grayscale PNG (``probav.png.encode_png``,
    as ``probav.scene.write_png`` writes them)."""
    image = np.asarray(image)
    if image.dtype != np.uint16 or image.shape != (HR_SIZE, HR_SIZE):
        raise ValueError(f"a submission image must be uint16 ({HR_SIZE}, {HR_SIZE}), got {image.dtype} {image.shape}")
    return png.encode_png(image)


def png_problem(data: bytes) -> str | None:
    """Why these bytes are not a 16-bit grayscale PNG header (None if they are)."""
    fields = png.header(data)
    if fields is None:
        return "not a PNG file"
    width, height, depth, colour = fields
    if colour != 0:
        kinds = {2: "RGB", 3: "palette", 4: "grayscale+alpha", 6: "RGBA"}
        return f"not a single-band grayscale PNG (colour type {kinds.get(colour, colour)})"
    if depth != 16:
        return f"{depth}-bit PNG, expected 16-bit (uint16)"
    if (width, height) != (HR_SIZE, HR_SIZE):
        return f"wrong image size {width}x{height}, expected {HR_SIZE}x{HR_SIZE}"
    return None


def read_prediction(data: bytes, name: str) -> np.ndarray:
    """Decode one submitted PNG to a (384, 384) uint16 array; SubmissionError naming it otherwise."""
    problem = png_problem(data)
    if problem:
        raise SubmissionError(f"{name}: {problem}")
    try:
        array = png.decode_png(data)
    except png.PNGError as err:
        raise SubmissionError(f"{name}: unreadable PNG ({err})") from None
    if array.shape != (HR_SIZE, HR_SIZE) or not (
            array.dtype == np.uint16 or (array.dtype.kind in "ui" and array.min() >= 0 and array.max() <= 65535)):
        raise SubmissionError(f"{name}: expected a {HR_SIZE}x{HR_SIZE} 16-bit image, got {array.dtype} {array.shape}")
    return array.astype(np.uint16, copy=False)


def open_predictions(path: os.PathLike | str) -> dict[str, Callable[[], bytes]]:
    """Scene name → loader of its PNG bytes, for a submission zip or a folder of ``imgsetNNNN.png``.

    Files whose names are not ``imgsetNNNN.png`` are an error (a zip or folder of something else)."""
    path = Path(path)
    if not path.exists():
        raise SubmissionError(f"{path}: no such file or folder")
    found: dict[str, Callable[[], bytes]] = {}
    if path.is_dir():
        others = []
        for item in sorted(path.iterdir()):
            match = PNG_NAME.match(item.name)
            if match and item.is_file():
                found[match.group(1)] = item.read_bytes
            elif not item.name.startswith("."):
                others.append(item.name)
        if others:
            raise SubmissionError(f"{path}: not a submission file name (imgsetNNNN.png): {', '.join(others[:5])}")
    else:
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as err:
            raise SubmissionError(f"{path}: not a readable zip file ({err})") from None
        bad = []
        for info in archive.infolist():
            match = PNG_NAME.match(info.filename)
            if not match:
                bad.append(info.filename)
            elif match.group(1) in found:
                raise SubmissionError(f"{path}: {info.filename} appears twice")
            else:
                found[match.group(1)] = (lambda n=info.filename: archive.read(n))
        if bad:
            raise SubmissionError(f"{path}: entries that are not imgsetNNNN.png at the root of the zip: "
                                  f"{', '.join(bad[:5])}")
    if not found:
        raise SubmissionError(f"{path}: no imgsetNNNN.png in it")
    return found


def write_submission(images: Iterable[tuple[str, np.ndarray]], zip_path: os.PathLike | str) -> Path:
    """Write ``(scene name, uint16 image)`` pairs as ``imgsetNNNN.png`` at the root of a zip, atomically."""
    zip_path = Path(zip_path)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = zip_path.with_name(f".{zip_path.name}.tmp")
    names = set()
    try:
        # PNGs are already compressed: store them.
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
            for name, image in images:
                if not PNG_NAME.match(f"{name}.png"):
                    raise ValueError(f"scene name {name!r} is not imgsetNNNN")
                if name in names:
                    raise ValueError(f"scene {name} given twice")
                names.add(name)
                archive.writestr(f"{name}.png", encode_png(image))
        os.replace(tmp, zip_path)
    finally:
        tmp.unlink(missing_ok=True)
    return zip_path


def predict_images(model: SRModel, scenes: Iterable[Scene], progress: bool = True,
                   total: int | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """``(scene name, prediction)`` for every scene, with a progress bar."""
    from probav.evaluate import check_prediction

    for scene in tqdm(scenes, total=total, desc=f"predict {model.name}", unit="scene", disable=not progress,
                      leave=False):
        yield scene.name, check_prediction(model.predict(scene), scene.name)


def predict_submission(model: SRModel, scenes: Iterable[Scene], zip_path: os.PathLike | str,
                       progress: bool = True, total: int | None = None) -> Path:
    """Predict every scene with ``model`` and write the submission zip."""
    return write_submission(predict_images(model, scenes, progress, total), zip_path)


def validate_submission(zip_path: os.PathLike | str, expected_names: Iterable[str] | None = None) -> list[str]:
    """Every problem of a submission zip, as readable sentences (empty list = valid).

    Checks: a readable zip; only ``imgsetNNNN.png`` entries, at its root, no duplicates; each a readable
    384×384 16-bit single-band PNG; with ``expected_names``, exactly those scenes (missing and unexpected
    ones named); without, at least one image.
    """
    zip_path = Path(zip_path)
    if not zip_path.is_file():
        return [f"{zip_path}: file not found"]
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as err:
        return [f"{zip_path}: not a readable zip file ({err})"]
    problems = []
    names = []
    with archive:
        for info in archive.infolist():
            if info.is_dir():
                problems.append(f"{info.filename}: folder in the zip (every PNG must be at its root)")
                continue
            match = PNG_NAME.match(info.filename)
            if not match:
                where = " (not at the root of the zip)" if "/" in info.filename else ""
                problems.append(f"{info.filename}: not named imgsetNNNN.png{where}")
                continue
            if match.group(1) in names:
                problems.append(f"{info.filename}: appears more than once")
                continue
            names.append(match.group(1))
            try:
                read_prediction(archive.read(info.filename), info.filename)
            except SubmissionError as err:
                problems.append(str(err))
            except (zipfile.BadZipFile, OSError, EOFError) as err:  # corrupt member (bad CRC, truncated)
                problems.append(f"{info.filename}: cannot be read from the zip ({err})")
    if expected_names is not None:
        expected = set(expected_names)
        missing = sorted(expected - set(names))
        unexpected = sorted(set(names) - expected)
        if missing:
            problems.append(f"{len(missing)} expected scene(s) missing: {_listing(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} scene(s) not in the test set: {_listing(unexpected)}")
        if not missing and not unexpected and len(names) != len(expected):
            problems.append(f"{len(names)} images for {len(expected)} scenes")
    elif not names:
        problems.append(f"{zip_path}: holds no imgsetNNNN.png")
    return problems


def _listing(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" … (+{len(names) - limit} more)" if len(names) > limit else "")
