"""Reading and writing the PNGs of PROBA-V scenes, faster than Pillow for the files that matter.

Reading is most of ``probav score``'s time once the score itself is fast, so ``decode_png``
decodes the common case itself: grayscale, not interlaced, bit depth 1, 8 or 16, and every row
filtered with None (0), Sub (1) or Up (2). That covers every official PROBA-V file (all rows None)
and every file ``encode_png`` writes. The steps: walk the chunks and check each CRC, check the IHDR,
inflate the IDAT data in one call, undo the filters with numpy (Sub: a running sum along the row in
uint8, which wraps mod 256 as PNG requires, per byte lane; Up: a running sum down the rows, restarted
at each row that is not Up), and unpack 1-bit rows or swap 16-bit ones from big-endian.

Anything else (Average or Paeth rows, colour or palette images, interlacing, 2- or 4-bit depth,
a tRNS chunk or any other chunk that could change the pixels) goes to Pillow, so the array is always
the one ``np.array(PIL.Image.open(…))`` gives: uint16 for 16-bit, uint8 for 8-bit, bool for 1-bit.

Errors are ``PNGError`` with the problem in words: not a PNG, truncated, a bad CRC (Pillow checks only
the header chunks' CRCs; here every chunk's is checked, about 0.5 µs per kB), a corrupt zlib stream,
a bad filter type, image data of the wrong length.

``encode_png`` writes a grayscale image (8- or 16-bit) as the official files are written: filter None
on every row, zlib level 6, one IDAT chunk (see ``FILTER`` and ``LEVEL`` for the measurements).

Inflating is libdeflate's (the ``deflate`` package) where it is installed, about twice as fast as the
standard library's zlib on these images; zlib otherwise, with the same results.
"""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Chunks that cannot change the pixels Pillow returns for a grayscale image: text, time, physical
# size, colour-space hints (Pillow does not apply gAMA, cHRM, sRGB, iCCP), significant bits and
# background colour. A file with any other chunk besides IHDR, IDAT and IEND (tRNS, PLTE, an unknown
# one) is decoded by Pillow.
HARMLESS_CHUNKS = frozenset({b"tEXt", b"zTXt", b"iTXt", b"tIME", b"pHYs", b"gAMA", b"cHRM", b"sRGB",
                             b"iCCP", b"sBIT", b"bKGD"})

try:  # libdeflate: about twice as fast as zlib at inflating these images (see ``inflate``)
    import deflate as _libdeflate
except ImportError:  # pragma: no cover - depends on the environment
    _libdeflate = None
_crc32 = zlib.crc32 if _libdeflate is None else _libdeflate.crc32
INFLATE = "zlib" if _libdeflate is None else "libdeflate"


def header(data: bytes) -> tuple[int, int, int, int] | None:
    """(width, height, bit depth, colour type) from the first 26 bytes of a PNG (signature and IHDR),
    or None where they are not a PNG's: enough to check a file's kind without decoding it."""
    if len(data) < 26 or not data.startswith(SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height, depth, colour = struct.unpack_from(">IIBB", data, 16)
    return width, height, depth, colour


# Rows inflated first to look for filter types this reader leaves to Pillow (see ``decode_fast``).
PROBE_ROWS = 8


class PNGError(ValueError):
    """A file that is not a readable PNG; the message says why."""


# --------------------------------------------------------------------------- reading

def inflate(data: bytes, size: int) -> bytes:
    """The zlib stream ``data`` inflated; it must hold exactly ``size`` bytes (PNGError otherwise)."""
    if _libdeflate is not None:
        try:
            out = _libdeflate.zlib_decompress(data, size)
        except Exception:  # noqa: BLE001 - libdeflate's errors: let zlib say what is wrong
            out = None
        if out is not None and len(out) == size:
            return out
    try:
        out = zlib.decompress(data, bufsize=size)  # checks the stream's Adler-32; ignores bytes after its end
    except zlib.error as err:
        raise PNGError(f"corrupt or truncated image data: {err}") from None
    if len(out) != size:
        raise PNGError(f"image data of {len(out)} bytes, expected {size}")
    return out


def read_chunks(data: bytes) -> tuple[tuple[int, int, int, int, int, int, int], list[bytes], bool]:
    """(IHDR fields, IDAT payloads, whether every other chunk is harmless) of a PNG's bytes.

    IHDR fields: width, height, bit depth, colour type, compression, filter method, interlace.
    Checks the signature, that every chunk lies within the data with a correct CRC, that IHDR comes
    first and that IDAT and IEND are there."""
    if not data.startswith(SIGNATURE):
        raise PNGError("not a PNG file: no PNG signature")
    view = memoryview(data)
    pos, end = len(SIGNATURE), len(data)
    ihdr, idat, harmless, seen_end = None, [], True, False
    while pos < end:
        if pos + 8 > end:
            raise PNGError(f"truncated file: the chunk header at byte {pos} is cut short")
        length, kind = struct.unpack_from(">I4s", data, pos)
        body = pos + 8
        if body + length + 4 > end:
            raise PNGError(f"truncated file: the {kind.decode('latin-1')!r} chunk of {length} bytes at byte {pos} "
                           f"runs past the end of the file ({end} bytes)")
        crc = struct.unpack_from(">I", data, body + length)[0]
        if _crc32(view[body:body + length], _crc32(kind)) != crc:
            raise PNGError(f"corrupt file: bad CRC in the {kind.decode('latin-1')!r} chunk at byte {pos}")
        if ihdr is None:
            if kind != b"IHDR" or length != 13:
                raise PNGError("corrupt file: the first chunk is not a 13-byte IHDR")
            ihdr = struct.unpack_from(">IIBBBBB", data, body)
        elif kind == b"IDAT":
            idat.append(view[body:body + length])
        elif kind == b"IEND":
            seen_end = True
            break
        elif kind not in HARMLESS_CHUNKS:
            harmless = False
        pos = body + length + 4
    if ihdr is None:
        raise PNGError("truncated file: no IHDR chunk")
    if not idat:
        raise PNGError("no image data: no IDAT chunk")
    if not seen_end:
        raise PNGError("truncated file: no IEND chunk")
    return ihdr, idat, harmless


def _unfilter(rows: np.ndarray, kinds: np.ndarray, bpp: int) -> np.ndarray:
    """Undo filters None, Sub and Up on ``rows`` (height, stride) uint8; ``kinds`` the rows' types."""
    height, stride = rows.shape
    sub = kinds == 1
    if sub.any():
        # per byte lane: bytes k, k + bpp, k + 2·bpp … of a row are summed together
        lanes = (lambda x: x) if bpp == 1 else (lambda x: x.reshape(len(x), stride // bpp, bpp))
        if sub.all():
            rows = np.cumsum(lanes(rows), axis=1, dtype=np.uint8).reshape(height, stride)
        else:
            rows = rows.copy()
            rows[sub] = np.cumsum(lanes(rows[sub]), axis=1, dtype=np.uint8).reshape(-1, stride)
    up = kinds == 2
    if up.all():  # row 0's prior row is zeros
        rows = np.cumsum(rows, axis=0, dtype=np.uint8)
    elif up.any():
        # Each run of Up rows adds to the last row above it that is not Up (already reconstructed):
        # with C the running sum down all rows, row r is C[r] − C[a − 1], a its anchor row.
        total = np.zeros((height + 1, stride), np.uint8)
        np.cumsum(rows, axis=0, dtype=np.uint8, out=total[1:])
        anchor = np.maximum.accumulate(np.where(up, 0, np.arange(height)))
        rows = total[1:] - total[anchor]
    return rows


def decode_fast(data: bytes) -> np.ndarray | None:
    """The image of a PNG's bytes, or None where it needs Pillow (see the module docstring)."""
    (width, height, depth, colour, compression, filter_method, interlace), idat, harmless = read_chunks(data)
    if (colour != 0 or depth not in (1, 8, 16) or interlace != 0 or compression != 0 or filter_method != 0
            or not harmless or width == 0 or height == 0):
        return None
    stride = (width * depth + 7) // 8
    stream = idat[0] if len(idat) == 1 else b"".join(idat)
    if height > PROBE_ROWS:
        # Files written by other encoders (Pillow's adaptive filtering, libpng's) have Average or
        # Paeth rows from the first few on: look at those before inflating everything, so that such a
        # file costs Pillow's decoding and little more.
        try:
            head = zlib.decompressobj().decompress(stream, PROBE_ROWS * (stride + 1))
        except zlib.error:
            head = b""  # the full inflate below says what is wrong
        if max(head[::stride + 1], default=0) in (3, 4):
            return None
    raw = inflate(stream, height * (stride + 1))
    kinds = raw[::stride + 1]  # each row's filter type
    lines = np.frombuffer(raw, np.uint8).reshape(height, stride + 1)
    if kinds.count(0) == height:  # all None (the official files, and ours): no copy before the conversion
        if depth == 16:
            big = np.ndarray((height, width), ">u2", raw, offset=1, strides=(stride + 1, 2))
            return big.astype(np.uint16)
        rows = lines[:, 1:]
    else:
        top = max(kinds)
        if top > 4:
            raise PNGError(f"corrupt image data: filter type {top} on a row")
        if top > 2:
            return None  # Average or Paeth rows
        rows = _unfilter(lines[:, 1:], np.frombuffer(kinds, np.uint8), 2 if depth == 16 else 1)
    if depth == 16:
        return np.ascontiguousarray(rows).view(">u2").astype(np.uint16)
    if depth == 8:
        return np.array(rows, np.uint8)
    return np.unpackbits(rows, axis=1, count=width).view(bool)


def decode_pillow(data: bytes) -> np.ndarray:
    """The image of a file's bytes as Pillow decodes it (``np.array(Image.open(…))``)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return np.array(im)
    except UnidentifiedImageError:
        raise PNGError("not a PNG file, nor another image format Pillow reads") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise PNGError(str(err)) from None


def decode_png(data: bytes) -> np.ndarray:
    """A PNG's bytes as an array, exactly as ``np.array(PIL.Image.open(…))`` gives it; PNGError if unreadable.

    Bytes without the PNG signature go to Pillow as they are (which reads other formats, as
    ``read_png`` always did)."""
    if not data.startswith(SIGNATURE):
        return decode_pillow(data)
    image = decode_fast(data)
    return decode_pillow(data) if image is None else image


# --------------------------------------------------------------------------- writing

# Filter None on every row, zlib level 6, one IDAT chunk: the official archive's own encoding (every
# 16-bit file of the real sample, 162 of them, comes out byte for byte the same from ``encode_png``),
# and the fastest to read: no filter to undo. Measured against Pillow's writer (adaptive filtering, a
# mix of Sub, Up and Paeth rows, which the fast reader leaves to Pillow; level 6 too), file size
# relative to Pillow's:
#                              None    Sub     Up     None at level 1
#   real HR (imgset0000)       1.045   1.004   1.032  1.181
#   161 real LR frames         1.095   1.029   1.045  1.136
#   synthetic HR (simulator)   1.109   1.026   1.009  1.204
#   bench SR / HR              1.13    1.02    1.00–1.02  1.13–1.17
#   masks as 8-bit 0/255       0.86–0.95  0.94–0.96  0.98–1.02
# Sub would keep 16-bit files within 0.4–3% of Pillow's size but costs a running sum along the rows
# when read, about 0.2 ms per 384×384 image (a tenth of what ``probav score`` spends on a scene);
# None costs 5–14% more disk. Level 1 writes faster but files 10–20% larger.
# Writing the real HR takes about 70 ms here against Pillow's 115 (no trial of five filters per row).
FILTER = 0
LEVEL = 6


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))


def encode_png(image: np.ndarray, filter_type: int | None = None, level: int = LEVEL) -> bytes:
    """A 2-D uint8 or uint16 array as the bytes of an 8- or 16-bit grayscale PNG, every row filtered
    with ``filter_type`` (0 None, 1 Sub, 2 Up; default ``FILTER``), compressed at zlib ``level``."""
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype.kind != "u" or image.dtype.itemsize > 2 or 0 in image.shape:
        raise ValueError(f"encode_png takes a non-empty 2-D uint8 or uint16 array, got {image.dtype} {image.shape}")
    height, width = image.shape
    depth = image.dtype.itemsize * 8
    filter_type = FILTER if filter_type is None else filter_type
    rows = np.ascontiguousarray(image, image.dtype.newbyteorder(">")).view(np.uint8).reshape(height, -1)
    if filter_type not in (0, 1, 2):
        raise ValueError(f"filter_type must be 0 (None), 1 (Sub) or 2 (Up), got {filter_type}")
    lines = np.empty((height, rows.shape[1] + 1), np.uint8)
    lines[:, 0] = filter_type
    if filter_type == 1:
        bpp = depth // 8
        lines[:, 1:bpp + 1] = rows[:, :bpp]
        np.subtract(rows[:, bpp:], rows[:, :-bpp], out=lines[:, bpp + 1:])
    elif filter_type == 2:
        lines[0, 1:] = rows[0]
        np.subtract(rows[1:], rows[:-1], out=lines[1:, 1:])
    else:
        lines[:, 1:] = rows
    header = struct.pack(">IIBBBBB", width, height, depth, 0, 0, 0, 0)
    return (SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(lines, level))
            + _chunk(b"IEND", b""))
