"""Thumbnails: fitting, PNG, and the sixel encoder checked by decoding its output back."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import cast

import pytest
from PIL import Image

from clipd.thumbnails import render

_DCS = b"\x1bPq"
_ST = b"\x1b\\"
_TOKEN = re.compile(
    rb'"(\d+);(\d+);(\d+);(\d+)|#(\d+)(?:;2;(\d+);(\d+);(\d+))?|!(\d+)(.)|([?-~])|\$|-'
)


@dataclass
class Sixel:
    """A decoded sixel image: its declared size, colour registers in percent, and pixels."""

    width: int = 0
    height: int = 0
    palette: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    pixels: dict[tuple[int, int], int] = field(default_factory=dict)


def decode_sixel(data: bytes) -> Sixel:
    """Just enough of a sixel decoder for what render() emits; a pixel painted twice fails."""
    assert data.startswith(_DCS)
    assert data.endswith(_ST)
    body = data[len(_DCS) : -len(_ST)]
    image = Sixel()
    x = top = colour = 0
    position = 0
    while position < len(body):
        token = _TOKEN.match(body, position)
        assert token is not None, f"unexpected sixel data at {body[position : position + 10]!r}"
        position = token.end()
        raster, register, count, repeated, single = (
            token.group(1),
            token.group(5),
            token.group(9),
            token.group(10),
            token.group(11),
        )
        if raster is not None:
            image.width, image.height = int(token.group(3)), int(token.group(4))
        elif register is not None:
            colour = int(register)
            if token.group(6) is not None:
                rgb = (int(token.group(6)), int(token.group(7)), int(token.group(8)))
                image.palette[colour] = rgb
        elif count is not None or single is not None:
            char = repeated if count is not None else single
            for _ in range(int(count) if count is not None else 1):
                _paint(image, x, top, colour, char[0] - 63)
                x += 1
        elif token.group() == b"$":
            x = 0
        else:
            x, top = 0, top + 6
    return image


def _paint(image: Sixel, x: int, top: int, colour: int, bits: int) -> None:
    for row in range(6):
        if bits & (1 << row):
            assert (x, top + row) not in image.pixels, f"pixel {(x, top + row)} painted twice"
            image.pixels[x, top + row] = colour


def rgb_at(image: Image.Image, xy: tuple[int, int]) -> tuple[int, int, int]:
    return cast(tuple[int, int, int], image.getpixel(xy))


def as_percent(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    red, green, blue = (round(channel * 100 / 255) for channel in rgb)
    return red, green, blue


def blocks(size: tuple[int, int]) -> Image.Image:
    """Four flat colours in quarters: exact under quantisation, with long runs."""
    width, height = size
    image = Image.new("RGB", size, (255, 0, 0))
    image.paste((0, 0, 255), (width // 2, 0, width, height // 2))
    image.paste((10, 200, 30), (0, height // 2, width // 2, height))
    image.paste((250, 250, 250), (width // 2, height // 2, width, height))
    return image


def gradient(size: tuple[int, int]) -> Image.Image:
    """Thousands of distinct colours, more than sixel's 256 registers."""
    width, height = size
    image = Image.new("RGB", size)
    image.putdata(
        [
            (x * 255 // width, y * 255 // height, (x + y) % 256)
            for y in range(height)
            for x in range(width)
        ]
    )
    return image


@pytest.mark.parametrize("size", [(1, 1), (7, 13), (64, 48), (30, 6)])
def test_sixel_decodes_back_to_the_same_pixels(size: tuple[int, int]) -> None:
    original = blocks(size)
    thumbnail = render(original, 256, "sixel")
    decoded = decode_sixel(thumbnail.data)
    assert (decoded.width, decoded.height) == size == (thumbnail.width, thumbnail.height)
    # Every pixel painted exactly once (twice fails in the decoder), none outside the image.
    assert set(decoded.pixels) == {(x, y) for x in range(size[0]) for y in range(size[1])}
    for (x, y), register in decoded.pixels.items():
        assert decoded.palette[register] == as_percent(rgb_at(original, (x, y)))
    assert set(decoded.palette) == set(decoded.pixels.values())


def test_sixel_quantises_to_256_colours_close_to_the_original() -> None:
    original = gradient((200, 100))
    decoded = decode_sixel(render(original, 256, "sixel").data)
    assert len(decoded.palette) <= 256
    assert len(decoded.pixels) == 200 * 100
    error = [
        max(
            abs(a * 2.55 - b)
            for a, b in zip(decoded.palette[reg], rgb_at(original, xy), strict=True)
        )
        for xy, reg in decoded.pixels.items()
    ]
    assert sum(error) / len(error) < 12


def test_sixel_is_ascii_between_its_introducer_and_terminator() -> None:
    data = render(gradient((90, 40)), 256, "sixel").data
    body = data[len(_DCS) : -len(_ST)]
    assert all(32 <= byte < 127 for byte in body)


def test_sixel_run_length_encodes_flat_rows() -> None:
    data = render(Image.new("RGB", (100, 6), (0, 128, 0)), 256, "sixel").data
    assert b"!100~" in data
    assert len(data) < 60


@pytest.mark.parametrize(
    ("size", "max_side", "fitted"),
    [
        ((800, 600), 256, (256, 192)),
        ((600, 800), 256, (192, 256)),
        ((3000, 10), 300, (300, 1)),
        ((100, 50), 256, (100, 50)),  # never enlarged
    ],
)
def test_png_fits_within_max_side_keeping_the_aspect(
    size: tuple[int, int], max_side: int, fitted: tuple[int, int]
) -> None:
    thumbnail = render(blocks(size), max_side, "png")
    with Image.open(io.BytesIO(thumbnail.data)) as png:
        assert png.format == "PNG"
        assert png.size == fitted == (thumbnail.width, thumbnail.height)


def test_png_of_a_small_image_keeps_its_pixels() -> None:
    original = blocks((40, 30))
    with Image.open(io.BytesIO(render(original, 40, "png").data)) as png:
        assert png.mode == "RGB"
        assert png.tobytes() == original.tobytes()
