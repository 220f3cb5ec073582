"""probav.png: the fast PNG reader gives exactly Pillow's array (real files, every filter, bit depth
and fallback case), corrupt files are clear errors naming the file, and what write_png writes is read
the same by read_png, Pillow and scikit-image, on the fast path."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from probav import png
from probav.scene import BadSceneError, read_image, read_mask, read_png, write_png
from probav.submission import SubmissionError, encode_png, read_prediction

from conftest import PROBAV_MINI

LR_ONLY = PROBAV_MINI.parent / "probav-lr-only"


def pillow(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.array(im)


def assert_same(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    assert got.flags.c_contiguous and got.flags.writeable


# --------------------------------------------------------------------------- PNGs written by hand

def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def filter_rows(rows: np.ndarray, kinds: list[int], bpp: int) -> bytes:
    """Scanlines (filter byte + filtered bytes) of raw rows (height, stride) uint8, by the PNG spec."""
    out = bytearray()
    prior = np.zeros(rows.shape[1], np.int64)
    for row, kind in zip(rows.astype(np.int64), kinds):
        filtered = []
        for i, x in enumerate(row):
            a = row[i - bpp] if i >= bpp else 0
            b = prior[i]
            c = prior[i - bpp] if i >= bpp else 0
            predictor = (0, a, b, (a + b) // 2, _paeth(a, b, c))[kind]
            filtered.append((x - predictor) % 256)
        out += bytes([kind]) + bytes(filtered)
        prior = row
    return bytes(out)


def raw_rows(image: np.ndarray, depth: int) -> np.ndarray:
    """Packed big-endian bytes of each row of a grayscale image of bit depth ``depth``."""
    if depth == 16:
        return image.astype(">u2").view(np.uint8).reshape(image.shape[0], -1)
    if depth == 8:
        return image.astype(np.uint8)
    per_byte = 8 // depth
    width = image.shape[1]
    padded = np.zeros((image.shape[0], -(-width // per_byte) * per_byte), np.uint8)
    padded[:, :width] = image
    shifts = depth * np.arange(per_byte - 1, -1, -1)
    return (padded.reshape(image.shape[0], -1, per_byte) << shifts).sum(axis=2).astype(np.uint8)


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def hand_png(image: np.ndarray, depth: int, kinds: list[int] | None = None, colour: int = 0,
             interlace: bool = False, extra: list[tuple[bytes, bytes]] = (), idat_parts: int = 1) -> bytes:
    """A grayscale PNG of ``image`` with the given filter type on each row (not interlaced), or
    Adam7-interlaced with filter None; ``extra`` chunks go before the IDAT."""
    height, width = image.shape
    bpp = max(depth // 8, 1)
    if interlace:
        scanlines = b""
        for x0, y0, dx, dy in ADAM7:
            sub = image[y0::dy, x0::dx]
            if sub.size:
                scanlines += filter_rows(raw_rows(sub, depth), [0] * sub.shape[0], bpp)
    else:
        kinds = [0] * height if kinds is None else kinds
        scanlines = filter_rows(raw_rows(image, depth), kinds, bpp)
    stream = zlib.compress(scanlines)
    cuts = np.linspace(0, len(stream), idat_parts + 1).astype(int)
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, int(interlace))
    return (png.SIGNATURE + chunk(b"IHDR", header) + b"".join(chunk(k, b) for k, b in extra)
            + b"".join(chunk(b"IDAT", stream[a:b]) for a, b in zip(cuts[:-1], cuts[1:])) + chunk(b"IEND", b""))


def random_image(rng: np.random.Generator, depth: int, shape=(13, 21)) -> np.ndarray:
    if depth == 16:
        # smooth plus noise, some values near 0 and 65535 so that the byte arithmetic wraps
        base = np.cumsum(rng.integers(-900, 900, shape), axis=1) + rng.choice([50, 32000, 65400])
        return np.clip(base, 0, 65535).astype(np.uint16)
    return rng.integers(0, 2 ** depth, shape).astype(np.uint8)


# --------------------------------------------------------------------------- the real files

def _real_files() -> list[Path]:
    return sorted(PROBAV_MINI.glob("**/*.png")) + sorted(LR_ONLY.glob("**/*.png"))


def test_real_files_are_read_exactly_as_pillow_reads_them_on_the_fast_path(probav_mini):
    files = _real_files()
    kinds = {f.name[:2] for f in files}
    assert {"LR", "QM", "HR", "SM"} <= kinds
    for path in files:
        data = path.read_bytes()
        fast = png.decode_fast(data)
        assert fast is not None, f"{path} left to Pillow"
        assert_same(fast, pillow(data))
        assert_same(read_png(path), pillow(data))
    # 16-bit images as uint16, 1-bit masks as bool: what read_png returned with Pillow
    scene = probav_mini / "train" / "RED" / "imgset0000"
    assert read_png(scene / "HR.png").dtype == np.uint16 and read_png(scene / "SM.png").dtype == bool
    assert read_image(scene / "LR000.png", (128, 128)).dtype == np.uint16


def test_official_files_are_written_byte_for_byte(probav_mini):
    """encode_png writes the 16-bit images exactly as the official archive holds them (filter None,
    zlib level 6, one IDAT chunk)."""
    for path in sorted(probav_mini.glob("**/*.png")):
        image = read_png(path)
        if image.dtype == np.uint16:
            assert png.encode_png(image) == path.read_bytes(), path
    hr = probav_mini / "train" / "RED" / "imgset0000" / "HR.png"
    assert encode_png(read_png(hr)) == hr.read_bytes()  # a submission's image too


def test_real_files_without_libdeflate(probav_mini, monkeypatch):
    """The standard library's zlib and CRC-32 give the same arrays (libdeflate is optional)."""
    monkeypatch.setattr(png, "_libdeflate", None)
    monkeypatch.setattr(png, "_crc32", zlib.crc32)
    scene = probav_mini / "train" / "RED" / "imgset0000"
    for path in sorted(scene.glob("*.png"))[:8] + [scene / "HR.png", scene / "SM.png"]:
        data = path.read_bytes()
        assert_same(png.decode_png(data), pillow(data))


# --------------------------------------------------------------------------- filters and bit depths

@pytest.mark.parametrize("depth", [1, 8, 16])
@pytest.mark.parametrize("kinds", ["none", "sub", "up", "mixed", "up first", "sub then up"])
def test_fast_path_equals_pillow_for_each_filter(depth, kinds):
    rng = np.random.default_rng(depth)
    image = random_image(rng, depth, (14, 19))
    rows = {"none": [0] * 14, "sub": [1] * 14, "up": [2] * 14, "mixed": list(rng.integers(0, 3, 14)),
            "up first": [2, 2, 0, 2, 2, 1, 2, 2, 2, 0, 0, 2, 1, 1],
            "sub then up": [1] + [2] * 13}[kinds]
    data = hand_png(image, depth, rows)
    fast = png.decode_fast(data)
    assert fast is not None
    assert_same(fast, pillow(data))
    expected = image.astype(bool) if depth == 1 else image
    assert_same(fast, expected)


@pytest.mark.parametrize("depth", [1, 8, 16])
def test_odd_widths_and_split_idat(depth):
    rng = np.random.default_rng(7)
    for width in (1, 7, 9, 17):
        image = random_image(rng, depth, (11, width))
        data = hand_png(image, depth, list(rng.integers(0, 3, 11)), idat_parts=3)
        assert png.decode_fast(data) is not None
        assert_same(png.decode_png(data), pillow(data))


@pytest.mark.parametrize("depth", [1, 8, 16])
@pytest.mark.parametrize("kind", [3, 4])
def test_average_and_paeth_rows_go_to_pillow(depth, kind):
    rng = np.random.default_rng(kind)
    image = random_image(rng, depth, (20, 15))
    for rows in ([kind] * 20, [1] * 12 + [kind] + [2] * 7):  # early (seen by the probe) and late
        data = hand_png(image, depth, rows)
        assert png.decode_fast(data) is None
        assert_same(png.decode_png(data), pillow(data))


def test_pillow_written_files_go_to_pillow_and_read_the_same(tmp_path):
    rng = np.random.default_rng(3)
    image = random_image(rng, 16, (384, 384))
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")  # adaptive filters: Sub, Up and Paeth rows
    assert png.decode_fast(buffer.getvalue()) is None
    assert_same(png.decode_png(buffer.getvalue()), image)


@pytest.mark.parametrize("case", ["interlaced 16-bit", "interlaced 1-bit", "2-bit", "4-bit", "tRNS",
                                  "unknown critical"])
def test_other_grayscale_files_go_to_pillow(case):
    rng = np.random.default_rng(11)
    depth = {"interlaced 1-bit": 1, "2-bit": 2, "4-bit": 4, "tRNS": 8, "unknown critical": 8}.get(case, 16)
    image = random_image(rng, depth, (19, 23))
    extra = {"tRNS": [(b"tRNS", b"\x00\x07")], "unknown critical": [(b"ABCD", b"xyz")]}.get(case, [])
    data = hand_png(image, depth, interlace=case.startswith("interlaced"), extra=extra)
    assert png.decode_fast(data) is None
    if case == "unknown critical":
        return  # Pillow's business what it makes of it
    assert_same(png.decode_png(data), pillow(data))


def test_harmless_chunks_stay_on_the_fast_path():
    image = random_image(np.random.default_rng(2), 16, (9, 10))
    data = hand_png(image, 16, extra=[(b"tEXt", b"Comment\x00hello"), (b"pHYs", bytes(9)), (b"gAMA", bytes(4))])
    assert_same(png.decode_fast(data), image)
    assert_same(pillow(data), image)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "P"])
def test_colour_files_go_to_pillow_and_read_png_refuses_them(tmp_path, mode):
    rng = np.random.default_rng(5)
    image = Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), "RGB").convert(mode)
    path = tmp_path / "colour.png"
    image.save(path)
    assert png.decode_fast(path.read_bytes()) is None
    assert_same(png.decode_png(path.read_bytes()), np.array(image))
    if mode != "P":
        with pytest.raises(BadSceneError, match="single-band") as err:
            read_png(path)
        assert str(path) in str(err.value)


# --------------------------------------------------------------------------- errors

@pytest.fixture
def good_png(tmp_path) -> Path:
    path = tmp_path / "HR.png"
    write_png(path, random_image(np.random.default_rng(1), 16, (384, 384)))
    return path


def _idat_span(data: bytes) -> tuple[int, int]:
    pos = 8
    while True:
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"IDAT":
            return pos + 8, pos + 8 + length
        pos += 12 + length


def _with_idat(data: bytes, stream: bytes) -> bytes:
    start, end = _idat_span(data)
    return data[:start - 8] + chunk(b"IDAT", stream) + data[end + 4:]


def damaged(data: bytes, damage: str) -> bytes:
    start, end = _idat_span(data)
    stream = data[start:end]
    scanlines = bytearray(zlib.decompress(stream))
    if damage == "truncated":
        return data[:len(data) // 2]
    if damage == "no IEND":
        return data[:-12]
    if damage == "bad IHDR CRC":
        return data[:29] + bytes([data[29] ^ 1]) + data[30:]
    if damage == "bad IDAT CRC":
        return data[:end] + bytes([data[end] ^ 1]) + data[end + 1:]
    if damage == "corrupt zlib stream":  # a byte changed, the CRC recomputed: only zlib can tell
        return _with_idat(data, stream[:100] + bytes([stream[100] ^ 0x55]) + stream[101:])
    if damage == "short zlib stream":
        return _with_idat(data, stream[:len(stream) // 3])
    if damage == "too little image data":
        return _with_idat(data, zlib.compress(bytes(scanlines[:-50])))
    if damage == "too much image data":
        return _with_idat(data, zlib.compress(bytes(scanlines) + bytes(10)))
    if damage == "bad filter type":
        scanlines[0] = 7
        return _with_idat(data, zlib.compress(bytes(scanlines)))
    if damage == "not a PNG":
        return b"GIF89a" + data[6:]
    if damage == "empty":
        return b""
    raise ValueError(damage)


DAMAGES = ["truncated", "no IEND", "bad IHDR CRC", "bad IDAT CRC", "corrupt zlib stream", "short zlib stream",
           "too little image data", "too much image data", "bad filter type", "not a PNG", "empty"]


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_file_is_a_bad_scene_naming_it(good_png, damage):
    good_png.write_bytes(damaged(good_png.read_bytes(), damage))
    with pytest.raises(BadSceneError, match="unreadable PNG") as err:
        read_png(good_png, (384, 384))
    assert err.value.path == good_png and str(good_png) in str(err.value)


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_prediction_is_a_submission_error_naming_it(good_png, damage):
    data = damaged(good_png.read_bytes(), damage)
    with pytest.raises(SubmissionError, match="imgset0007.png: ") as err:
        read_prediction(data, "imgset0007.png")
    assert "PNG" in str(err.value)


def test_damaged_fallback_files_are_errors_too(tmp_path):
    """A Paeth-filtered file (left to Pillow) with a bad CRC or a cut stream is still an error."""
    data = hand_png(random_image(np.random.default_rng(4), 16, (40, 30)), 16, [4] * 40)
    path = tmp_path / "LR000.png"
    for damage in ("bad IDAT CRC", "truncated", "corrupt zlib stream"):
        path.write_bytes(damaged(data, damage))
        with pytest.raises(BadSceneError, match="unreadable PNG") as err:
            read_png(path)
        assert str(path) in str(err.value)


def test_other_image_formats_are_read_by_pillow_as_before(tmp_path):
    image = random_image(np.random.default_rng(8), 8, (12, 10))
    path = tmp_path / "LR000.png"
    Image.fromarray(image).save(path, format="TIFF")  # a TIFF under a PNG name: Pillow always read it
    assert_same(read_png(path), image)


def test_missing_file_and_wrong_size_are_named(tmp_path):
    with pytest.raises(BadSceneError, match="file is missing") as err:
        read_png(tmp_path / "LR001.png")
    assert "LR001.png" in str(err.value)
    path = tmp_path / "HR.png"
    write_png(path, np.zeros((128, 128), np.uint16))
    with pytest.raises(BadSceneError, match="wrong image size 128x128, expected 384x384") as err:
        read_image(path, (384, 384))
    assert str(path) in str(err.value)


# --------------------------------------------------------------------------- writing

def test_write_png_round_trips_and_pillow_and_skimage_read_it_the_same(tmp_path):
    import skimage.io

    rng = np.random.default_rng(9)
    image = random_image(rng, 16, (384, 384))
    mask = rng.random((128, 128)) > 0.3
    write_png(tmp_path / "HR.png", image)
    write_png(tmp_path / "QM000.png", mask)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["HR.png", "QM000.png"]  # no temporary left
    for path, expected in ((tmp_path / "HR.png", image), (tmp_path / "QM000.png", mask.astype(np.uint8) * 255)):
        data = path.read_bytes()
        assert png.decode_fast(data) is not None  # our files take the fast path
        assert_same(read_png(path), expected)
        assert_same(pillow(data), expected)
        np.testing.assert_array_equal(skimage.io.imread(path), expected)
    assert_same(read_mask(tmp_path / "QM000.png", (128, 128)), mask)
    assert_same(read_image(tmp_path / "HR.png", (384, 384)), image)


@pytest.mark.parametrize("filter_type", [0, 1, 2])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_encode_png_each_filter(filter_type, dtype):
    rng = np.random.default_rng(filter_type)
    image = rng.integers(0, np.iinfo(dtype).max, (31, 45), dtype=dtype, endpoint=True)
    data = png.encode_png(image, filter_type)
    assert_same(pillow(data), image)
    assert_same(png.decode_fast(data), image)
    with pytest.raises(ValueError):
        png.encode_png(image, 4)


def test_encode_png_filters_and_refusals():
    assert png.FILTER == 0  # as the official files: see test_official_files_are_written_byte_for_byte
    data = png.encode_png(np.zeros((5, 6), np.uint16))
    (width, height, depth, colour, _, _, interlace), _, _ = png.read_chunks(data)
    assert (width, height, depth, colour, interlace) == (6, 5, 16, 0, 0)
    big_endian = np.arange(12, dtype=">u2").reshape(3, 4)
    assert_same(png.decode_png(png.encode_png(big_endian)), big_endian.astype(np.uint16))
    for bad in (np.zeros((4, 4), np.int16), np.zeros((4, 4, 3), np.uint8), np.zeros((0, 4), np.uint8),
                np.zeros((4, 4), np.uint32)):
        with pytest.raises(ValueError):
            png.encode_png(bad)
    with pytest.raises(TypeError):
        write_png("never.png", np.zeros((4, 4), np.float32))


def test_submission_images_round_trip():
    image = random_image(np.random.default_rng(6), 16, (384, 384))
    data = encode_png(image)
    assert png.decode_fast(data) is not None
    assert_same(read_prediction(data, "imgset1160.png"), image)
    assert_same(pillow(data), image)


def test_header_reads_the_ihdr_fields_without_decoding():
    data = png.encode_png(np.zeros((5, 7), np.uint16))
    assert png.header(data) == (7, 5, 16, 0) and png.header(data[:26]) == (7, 5, 16, 0)
    assert png.header(png.encode_png(np.zeros((3, 2), np.uint8))) == (2, 3, 8, 0)
    for broken in (data[:25], b"GIF89a" + data[6:], data[:12] + b"IDAT" + data[16:]):
        assert png.header(broken) is None
