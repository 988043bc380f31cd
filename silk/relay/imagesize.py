"""An image's width and height from its header, for estimating what a provider bills; pure.

Only the bytes that hold the size are read (a data URL's base64 is decoded a few bytes at a
time where they lie, never whole): PNG's IHDR, GIF's screen, WebP's VP8/VP8L/VP8X header and
JPEG's frame header, reached by hopping over the segments before it. Anything else, cut short
or malformed, is None: the caller then takes the image at its most costly.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable

Read = Callable[[int, int], bytes]  # (offset, length) -> up to length bytes from offset

_DATA_HEADER_MAX = 256  # characters of "data:<media type>;base64," read before the comma
_JPEG_SEGMENTS_MAX = 512  # segments hopped over before a frame header (EXIF, ICC, XMP...)
# Start-of-frame markers: C0-CF but DHT (C4), JPG (C8) and DAC (CC), which are tables.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers that stand alone, without a length: TEM and the restart markers.
_STANDALONE = frozenset((0x01, *range(0xD0, 0xD8)))


def data_url_size(url: str) -> tuple[int, int] | None:
    """(width, height) of a base64 data: URL's image, or None if it cannot be read."""
    if not url.startswith("data:"):
        return None
    comma = url.find(",", 5, _DATA_HEADER_MAX)
    if comma < 0 or not url[5:comma].lower().endswith(";base64"):
        return None
    return image_size(_base64_reader(url, comma + 1))


def _base64_reader(text: str, start: int) -> Read:
    """Read decoded bytes at any offset of the base64 from `start` on, decoding only the
    four-character groups that hold them."""
    def read(offset: int, length: int) -> bytes:
        first = offset // 3
        chunk = text[start + first * 4:start + (offset + length + 2) // 3 * 4]
        chunk += "=" * (-len(chunk) % 4)
        try:
            raw = binascii.a2b_base64(chunk, strict_mode=True)
        except (binascii.Error, ValueError):
            return b""
        skip = offset - first * 3
        return raw[skip:skip + length]
    return read


def image_size(read: Read) -> tuple[int, int] | None:
    """(width, height) of a PNG, JPEG, GIF or WebP from its header; None for anything else,
    a header cut short, or a side of 0."""
    head = read(0, 30)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        size = _png(head)
    elif head.startswith((b"GIF87a", b"GIF89a")):
        size = _pair(_little(head, 6, 2), _little(head, 8, 2))
    elif head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        size = _webp(head)
    elif head.startswith(b"\xff\xd8"):
        size = _jpeg(read)
    else:
        return None
    return size if size is not None and size[0] and size[1] else None


def _pair(width: int | None, height: int | None) -> tuple[int, int] | None:
    """Both sides, or None if either was past the end."""
    return None if width is None or height is None else (width, height)


def _little(data: bytes, at: int, length: int) -> int | None:
    """A little-endian unsigned number of `length` bytes at `at`; None past the end."""
    field = data[at:at + length]
    return int.from_bytes(field, "little") if len(field) == length else None


def _big(data: bytes, at: int, length: int) -> int | None:
    field = data[at:at + length]
    return int.from_bytes(field, "big") if len(field) == length else None


def _png(head: bytes) -> tuple[int, int] | None:
    """IHDR, the first chunk: width and height as 4-byte big-endian numbers."""
    if head[12:16] != b"IHDR":
        return None
    return _pair(_big(head, 16, 4), _big(head, 20, 4))


def _webp(head: bytes) -> tuple[int, int] | None:
    """The first chunk: lossy (VP8), lossless (VP8L) or extended (VP8X, the canvas)."""
    kind = head[12:16]
    if kind == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":  # a key frame's start code
        size = _pair(_little(head, 26, 2), _little(head, 28, 2))  # 14 bits each, and scale
        return (size[0] & 0x3FFF, size[1] & 0x3FFF) if size else None
    bits = _little(head, 21, 4)
    if kind == b"VP8L" and head[20:21] == b"\x2f" and bits is not None:
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1  # 14 bits of each side - 1
    size = _pair(_little(head, 24, 3), _little(head, 27, 3))  # 24 bits of each side - 1
    if kind == b"VP8X" and size:
        return size[0] + 1, size[1] + 1
    return None


def _jpeg(read: Read) -> tuple[int, int] | None:
    """The first start-of-frame segment's height and width, hopping over the segments
    before it by their lengths; None at the scan or the image's end before one."""
    at = 2
    for _ in range(_JPEG_SEGMENTS_MAX):
        marker = read(at, 2)
        if len(marker) < 2 or marker[0] != 0xFF:
            return None
        kind = marker[1]
        if kind == 0xFF:  # a fill byte before the marker
            at += 1
            continue
        if kind in _STANDALONE:
            at += 2
            continue
        if kind in (0xD8, 0xD9, 0xDA):  # another start, the end, or the scan: no frame
            return None
        segment = read(at + 2, 7)
        length = _big(segment, 0, 2)
        if length is None or length < 2:
            return None
        if kind in _SOF:  # length, precision, height, width
            return _pair(_big(segment, 5, 2), _big(segment, 3, 2))
        at += 2 + length
    return None
