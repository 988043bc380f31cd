"""An image's size read from its header: each format as Pillow writes it, and anything cut
short or malformed is None, never an exception or a wrong size."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from silk.relay.imagesize import data_url_size, image_size
from tests.support.images import image_bytes, png_header

# An EXIF block and an ICC profile big enough to take several segments: the frame header
# comes after 130 kB of them.
_BIG_META = {"exif": b"Exif\x00\x00" + b"x" * 60000, "icc_profile": b"y" * 70000}
IMAGES = {
    "png": ("PNG", {}),
    "gif": ("GIF", {}),
    "jpeg": ("JPEG", {}),
    "jpeg-progressive": ("JPEG", {"progressive": True}),
    "jpeg-metadata": ("JPEG", _BIG_META),
    "webp-lossy": ("WEBP", {}),
    "webp-lossless": ("WEBP", {"lossless": True}),
    "webp-extended": ("WEBP", {"exif": b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x00"}),
}


def _read(data: bytes):
    return lambda offset, length: data[offset:offset + length]


@pytest.mark.parametrize("name", IMAGES)
def test_each_format_reads_as_pillow_writes_it(name):
    fmt, save = IMAGES[name]
    data = image_bytes(333, 77, fmt, **save)
    assert image_size(_read(data)) == (333, 77)
    encoded = base64.b64encode(data).decode()
    assert data_url_size(f"data:image/{fmt.lower()};base64,{encoded}") == (333, 77)
    assert data_url_size(f"data:image/x;name=a.b;BASE64,{encoded}") == (333, 77)


@pytest.mark.parametrize("name", IMAGES)
def test_an_image_cut_short_is_none_or_its_size(name):
    """Cut anywhere (bytes or base64 characters), the header gives the right size or None."""
    fmt, save = IMAGES[name]
    data = image_bytes(333, 77, fmt, **save)
    encoded = base64.b64encode(data).decode()
    cuts = [*range(0, 80), *range(80, len(data), 997)]
    for cut in cuts:
        assert image_size(_read(data[:cut])) in (None, (333, 77)), cut
        assert data_url_size("data:image/png;base64," + encoded[:cut]) in (None, (333, 77))
    assert image_size(_read(data[:8])) is None


def test_malformed_headers_are_none():
    assert image_size(_read(png_header(4096, 2048))) == (4096, 2048)
    assert image_size(_read(png_header(0, 2048))) is None  # a side of 0
    assert image_size(_read(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)) is None  # no IHDR
    assert image_size(_read(b"\xff\xd8\xff\xe0\x00\x01" + b"\0" * 40)) is None  # length 1
    assert image_size(_read(b"\xff\xd8\xff\xda\x00\x08" + b"\0" * 40)) is None  # scan first
    assert image_size(_read(b"\xff\xd8" + b"\xff\xfe\x00\x02" * 600)) is None  # no frame
    assert image_size(_read(b"RIFF\0\0\0\0WEBPVP8 " + b"\0" * 30)) is None  # no start code
    assert image_size(_read(b"<svg width='9000' height='9000'/>")) is None
    header = base64.b64encode(png_header(100, 100)).decode()
    for url in ("https://example.com/a.png", "data:image/png," + header,  # not base64
                "data:image/png;base64," + header[:10] + "\n" + header[10:],  # a line break
                "data:image/png;base64," + header.replace("A", "*"),  # not the alphabet
                "data:image/png;base64", "data:" + "x" * 300 + ";base64," + header):
        assert data_url_size(url) is None, url
    assert data_url_size("data:image/png;base64," + header) == (100, 100)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"GIF89a",
                                                b"\xff\xd8", b"RIFF\0\0\0\0WEBPVP8L",
                                                b"RIFF\0\0\0\0WEBPVP8X"]))
def test_garbage_never_raises(tail, head):
    data = head + tail
    size = image_size(_read(data))
    assert size is None or all(side > 0 for side in size)
    assert data_url_size("data:;base64," + base64.b64encode(data).decode()) == size


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_any_data_url_text_never_raises(text):
    data_url_size("data:image/png;base64," + text)
    data_url_size(text)
