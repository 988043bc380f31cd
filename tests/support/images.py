"""Real images made with Pillow for the tests of image estimates: bytes and data URLs."""

from __future__ import annotations

import base64
import io
import math
import struct
import zlib

# What a stream cut before usage bills an image whose size the request holds: one token per
# 28x28 pixels, as silk.relay.tokens documents (worked out here on its own).
PATCH_PIXELS = 28 * 28
# A URL the gateway does not fetch: its size is unknown, so the image allowance is billed.
IMAGE_URL = "https://images.example.com/cat.png"


def image_bytes(width: int, height: int, fmt: str = "PNG", **save) -> bytes:
    """An image of one colour (small on the wire whatever its size) in format `fmt`."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 90)).save(out, fmt, **save)
    return out.getvalue()


def data_url(width: int, height: int, fmt: str = "PNG") -> str:
    data = base64.b64encode(image_bytes(width, height, fmt)).decode()
    return f"data:image/{fmt.lower()};base64,{data}"


def patch_tokens(width: int, height: int) -> int:
    """An image's tokens by the 28-pixel patch rule."""
    return math.ceil(width * height / PATCH_PIXELS)


def png_header(width: int, height: int) -> bytes:
    """A PNG's signature and IHDR only: all a size reader needs, none of the pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
            + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)))
