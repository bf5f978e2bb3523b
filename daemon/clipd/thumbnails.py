"""Small pictures of indexed images for clients that cannot decode images themselves.

clipq never imports PIL, so the daemon fits the picture and encodes it: PNG for terminals whose
protocols carry image files (kitty, iTerm2), or sixel, which a terminal draws from text.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Literal

from PIL import Image

Format = Literal["png", "sixel"]

# Sixel draws 6 pixel rows per character; each character is 63 + a 6-bit column of pixels.
_BAND = 6
_SIXEL_BASE = 63
# A mask value 0..63 -> its sixel character; the other byte values never occur.
_TO_SIXEL = bytes(range(_SIXEL_BASE, _SIXEL_BASE + 64)) + bytes(256 - 64)
# Runs of 4 or more of one character are shorter as "!N<char>".
_RUN = re.compile(rb"(.)\1{3,}", re.DOTALL)
_INTRODUCER = b"\x1bPq"
_TERMINATOR = b"\x1b\\"


@dataclass(frozen=True, slots=True)
class Thumbnail:
    """An encoded thumbnail and its size in pixels."""

    data: bytes
    width: int
    height: int


def render(image: Image.Image, max_side: int, fmt: Format) -> Thumbnail:
    """Fit an RGB image within max_side x max_side (never enlarging it) and encode it."""
    fitted = _fit(image, max_side)
    data = _png(fitted) if fmt == "png" else _sixel(fitted)
    return Thumbnail(data=data, width=fitted.width, height=fitted.height)


def _fit(image: Image.Image, max_side: int) -> Image.Image:
    scale = max_side / max(image.size)
    if scale >= 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _sixel(image: Image.Image) -> bytes:
    """The image as one DEC sixel sequence: 7-bit ASCII between its DCS and ST.

    Quantised to at most 256 colours, the number of colour registers terminals commonly have.
    """
    indexed = image.quantize(colors=256)
    width, height = indexed.size
    pixels = indexed.tobytes()
    used = sorted(set(pixels))
    palette = indexed.getpalette() or []
    parts = [_INTRODUCER, b'"1;1;%d;%d' % (width, height)]
    parts.extend(_colour_register(index, palette[index * 3 : index * 3 + 3]) for index in used)
    bands = (
        _band(pixels[top * width : min(top + _BAND, height) * width], width)
        for top in range(0, height, _BAND)
    )
    parts.append(b"-".join(bands))
    parts.append(_TERMINATOR)
    return b"".join(parts)


def _colour_register(index: int, rgb: list[int]) -> bytes:
    """Define register `index` as an RGB colour; sixel gives each channel in percent."""
    red, green, blue = (round(channel * 100 / 255) for channel in rgb)
    return b"#%d;2;%d;%d;%d" % (index, red, green, blue)


def _band(rows: bytes, width: int) -> bytes:
    """One band of up to 6 pixel rows: per colour, its pixels, each colour drawn from the left.

    `$` returns to the band's left edge before the next colour; `-` (between bands) goes down.
    """
    masks: dict[int, bytearray] = {}
    for bit, start in enumerate(range(0, len(rows), width)):
        for x, colour in enumerate(rows[start : start + width]):
            mask = masks.get(colour)
            if mask is None:
                mask = masks[colour] = bytearray(width)
            mask[x] |= 1 << bit
    lines = []
    for colour in sorted(masks):
        # Trailing "?" are empty columns: nothing is drawn there, so they can be left out.
        pixels = masks[colour].translate(_TO_SIXEL).rstrip(b"?")
        lines.append(b"#%d" % colour + _RUN.sub(_run_length, pixels))
    return b"$".join(lines)


def _run_length(match: re.Match[bytes]) -> bytes:
    run = match.group()
    return b"!%d%c" % (len(run), run[0])
