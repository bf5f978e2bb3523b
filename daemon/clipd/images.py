"""Turn any file from a photo folder into an RGB PIL image for the embedder, or a typed ImageError.

Everything here runs concurrently in loader threads, so no global Pillow setting is changed
(MAX_IMAGE_PIXELS, LOAD_TRUNCATED_IMAGES) and no warnings filter is touched (catch_warnings() is
not thread-safe). Pillow's avoidable warnings are avoided instead: DecompressionBombWarning by
identifying files without Image.open (see _open), the palette-transparency one by compositing
via RGBA. What remains are UserWarnings about damaged metadata, raised by Pillow's EXIF/TIFF
directory parser while it reads headers; they are ordinary log lines under default filters, and
in a process that turns warnings into errors they surface as CorruptImage.
"""

from __future__ import annotations

import io
import os
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from PIL import ExifTags, Image, ImageFile

from clipd.config import DEFAULT_MAX_PIXELS
from clipd.errors import CorruptImage, ImageTooLarge, NotAnImage, Unreadable

# Checked against the file size before reading it into memory; no sane photo comes near it.
MAX_FILE_BYTES = 512 * 1024 * 1024

# Pillow format names tried, by their magic numbers; nothing else is ever parsed.
_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
_NOT_SUPPORTED = "not a JPEG, PNG, WebP, GIF, BMP or TIFF image"

# Where the composited background shows through transparent pixels. Mid grey rather than white or
# black: dark artwork (text, line drawings) and light artwork (icons made for dark themes) both
# stay visible against it, so neither embeds as a blank picture.
_BACKGROUND = (128, 128, 128)

# What Pillow raises on damaged data. Its header parsers also let IndexError/TypeError/KeyError
# escape from some plugins; Warning is here because a process running with warnings as errors
# (the test suite) gets Pillow's metadata warnings raised from inside these calls.
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    IndexError,
    TypeError,
    KeyError,
    Warning,
)
_BOMB_ERRORS = (Image.DecompressionBombError, Image.DecompressionBombWarning)
_Factory = Callable[[IO[bytes], str | bytes], ImageFile.ImageFile]

# Names for what a non-regular path is, for Unreadable messages.
_FILE_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}

# EXIF Orientation value -> the transpose that shows the image upright (as ImageOps.exif_transpose).
_TRANSPOSES = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_SIDES = frozenset(
    {
        Image.Transpose.TRANSPOSE,
        Image.Transpose.TRANSVERSE,
        Image.Transpose.ROTATE_90,
        Image.Transpose.ROTATE_270,
    }
)

# Leading bytes of common non-image (or unsupported image) files, for NotAnImage messages.
_SIGNATURES = (
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (or an Office/EPUB document)"),
    (b"\x1f\x8b", "gzip-compressed data"),
    (b"8BPS", "a Photoshop document"),
    (b"\x00\x00\x01\x00", "an ICO icon"),
    (b"\xff\x0a", "a JPEG XL image"),
    (b"\x00\x00\x00\x0cJXL ", "a JPEG XL image"),
    (b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 image"),
    (b"\xff\x4f\xff\x51", "a JPEG 2000 codestream"),
    (b"RIFF", "a RIFF file that is not WebP (AVI, WAV, ...)"),
    (b"\x7fELF", "an ELF executable"),
)
# ISO base media files (ftyp box at offset 4) by brand.
_FTYP_BRANDS = {
    b"heic": "a HEIC image",
    b"heix": "a HEIC image",
    b"mif1": "a HEIF image",
    b"msf1": "a HEIF image sequence",
    b"avif": "an AVIF image",
    b"avis": "an AVIF image sequence",
}

# Register every Pillow plugin now, once, instead of lazily inside concurrent loader threads.
Image.init()


@dataclass(frozen=True, slots=True)
class DecodedImage:
    """An upright RGB image ready for the embedder, with the size a user sees."""

    image: Image.Image  # RGB, EXIF orientation applied, possibly downscaled (min_side)
    width: int  # original width after orientation, not the downscaled one
    height: int
    format: str  # Pillow format name, e.g. "JPEG" (or "MPO" for multi-picture JPEGs)


def decode_file(
    path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int | None = None
) -> DecodedImage:
    """Read and decode the image file at path; raise an ImageError subclass on any failure."""
    return decode_bytes(_read_file(path), max_pixels=max_pixels, min_side=min_side)


def decode_bytes(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int | None = None
) -> DecodedImage:
    """Decode an image held in memory; raise an ImageError subclass on any failure.

    min_side is a speed hint: the result's shorter side is reduced towards it, never below it,
    and never upscaled. width/height always report the full-size, upright dimensions.
    """
    if min_side is not None and min_side < 1:
        raise ValueError(f"min_side must be at least 1, not {min_side}")
    _check_byte_count(len(data))
    im = _open(data)
    fmt = im.format or "image"
    _check_pixels(im.size, max_pixels)
    original_size = im.size
    try:
        if min_side is not None:
            # JPEG decodes at 1/2, 1/4 or 1/8 scale in the DCT domain, keeping both sides (hence
            # the shorter side, whichever way the image is rotated) >= min_side; no-op otherwise.
            im.draft("RGB", (min_side, min_side))
        im.load()
        transpose = _orientation(im)
        rgb = _downscale(_to_rgb(im), min_side)
        if transpose is not None:
            rgb = rgb.transpose(transpose)
    except _BOMB_ERRORS as e:
        raise ImageTooLarge(f"{fmt} over Pillow's own size limit: {_one_line(e)}") from e
    except _DECODE_ERRORS as e:
        raise CorruptImage(f"damaged or truncated {fmt}: {_one_line(e)}") from e
    width, height = original_size
    if transpose in _SWAPS_SIDES:
        width, height = height, width
    return DecodedImage(image=rgb, width=width, height=height, format=fmt)


def _read_file(path: Path) -> bytes:
    """The file's bytes, refusing anything but a regular file without ever blocking on it."""
    try:
        _check_regular(os.stat(path))
        # O_NONBLOCK: if a FIFO replaced the file since the stat, opening it must not wait for a
        # writer; the fstat below then refuses it. Regular files ignore the flag when reading.
        with open(path, "rb", opener=_open_nonblocking) as f:
            size = _check_regular(os.fstat(f.fileno())).st_size
            _check_byte_count(size)
            data = f.read()
    except FileNotFoundError as e:
        raise Unreadable("no such file (deleted, moved, or a broken symlink)") from e
    except PermissionError as e:
        raise Unreadable("permission denied") from e
    except OSError as e:
        raise Unreadable(f"cannot read file: {e.strerror or e}") from e
    _check_byte_count(len(data))  # the file may have grown since the fstat
    return data


def require_regular(path: Path) -> None:
    """Raise Unreadable unless path is a regular file (FIFO, device, socket, directory...)."""
    try:
        _check_regular(os.stat(path))
    except FileNotFoundError as e:
        raise Unreadable("no such file (deleted, moved, or a broken symlink)") from e
    except OSError as e:
        raise Unreadable(f"cannot read file: {e.strerror or e}") from e


def _open_nonblocking(path: str, flags: int) -> int:
    """os.open for open(opener=...), adding O_NONBLOCK so FIFOs and devices cannot hang us."""
    return os.open(path, flags | os.O_NONBLOCK)


def _check_regular(st: os.stat_result) -> os.stat_result:
    """Return st if it describes a regular file, else raise Unreadable naming what it is."""
    if stat.S_ISREG(st.st_mode):
        return st
    kind = _FILE_KINDS.get(stat.S_IFMT(st.st_mode), "a special file")
    raise Unreadable(f"not a regular file: {kind}")


def _check_byte_count(size: int) -> None:
    """Refuse inputs over MAX_FILE_BYTES before (or instead of) holding them in memory."""
    if size > MAX_FILE_BYTES:
        raise ImageTooLarge(
            f"file is {size / 2**20:,.0f} MiB, over the {MAX_FILE_BYTES // 2**20} MiB cap"
        )


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    """Decompression-bomb guard on the header's dimensions, before any pixel is decoded."""
    width, height = size
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"image is {width}x{height} ({width * height:,} pixels), "
            f"over the {max_pixels:,}-pixel cap"
        )


def _open(data: bytes) -> ImageFile.ImageFile:
    """Parse the header of a supported format, identified by content; no pixels are decoded.

    This is Image.open's identification loop restricted to _FORMATS, run by hand because
    Image.open also applies Pillow's global MAX_IMAGE_PIXELS, warning (DecompressionBombWarning)
    above it; _check_pixels applies the caller's cap instead.
    """
    prefix = data[:16]
    for fmt in _FORMATS:
        factory, accept = Image.OPEN[fmt]
        verdict = accept(prefix) if accept else True
        # A str verdict is Pillow saying "this format, but its codec is not installed".
        if isinstance(verdict, str):
            raise NotAnImage(f"{fmt} not readable here: {verdict}")
        if verdict:
            return _parse_header(factory, fmt, data)
    raise NotAnImage(f"{_NOT_SUPPORTED}: {_describe(data)}")


def _parse_header(factory: _Factory, fmt: str, data: bytes) -> ImageFile.ImageFile:
    """Run the format's header parser; the magic number matched, so failures mean damage."""
    try:
        return factory(io.BytesIO(data), "")
    except _BOMB_ERRORS as e:
        raise ImageTooLarge(f"{fmt} over Pillow's own size limit: {_one_line(e)}") from e
    except _DECODE_ERRORS as e:
        # BMP's magic is only "BM": a text file starting "BMW..." lands here and is not an image.
        if _looks_like_text(data):
            raise NotAnImage(f"{_NOT_SUPPORTED}: {_describe(data)}") from e
        raise CorruptImage(f"damaged {fmt} header: {_one_line(e)}") from e


def _orientation(im: Image.Image) -> Image.Transpose | None:
    """The transpose that EXIF asks for, or None; damaged EXIF means no rotation, not a failure.

    Read after load(): PNG may keep eXIf after the pixels, and TIFF applies its own orientation
    while loading and drops the tag (its header size is already upright), so it is never applied
    twice.
    """
    try:
        value = im.getexif().get(ExifTags.Base.Orientation)
    except _DECODE_ERRORS:
        return None
    return _TRANSPOSES.get(value) if isinstance(value, int) else None


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any mode Pillow yields for _FORMATS to RGB, with correct levels and no alpha."""
    if im.mode.startswith("I"):
        im = _int_to_l(im)
    elif im.mode == "F":
        im = _float_to_l(im)
    if im.has_transparency_data:
        return _composite(im)
    return im if im.mode == "RGB" else im.convert("RGB")


def _int_to_l(im: Image.Image) -> Image.Image:
    """Scale 16-bit samples (I;16*, and I, which Pillow uses for 16-bit data) to 8 bits.

    Pillow's own convert() clips instead of scaling: a 16-bit mid grey would come out white.
    """
    scaled = im.convert("I").point(lambda v: v * (1 / 257)).convert("L")
    # A tRNS grey level is a 16-bit value that means nothing at 8 bits: drop it.
    scaled.info.pop("transparency", None)
    return scaled


def _float_to_l(im: Image.Image) -> Image.Image:
    """Stretch float samples' own range to 0..255; float images have no standard range."""
    low, high = cast(tuple[float, float], im.getextrema())  # F images have one band
    scale = 255 / (high - low) if high > low else 0.0
    return im.point(lambda v: (v - low) * scale).convert("L")


def _composite(im: Image.Image) -> Image.Image:
    """Flatten alpha (or a transparent palette entry/colour key) over the neutral background.

    Going through RGBA also avoids the warning Pillow gives when converting a palette image with
    byte transparency straight to RGB.
    """
    rgba = im if im.mode == "RGBA" else im.convert("RGBA")
    flat = Image.new("RGB", rgba.size, _BACKGROUND)
    flat.paste(rgba, mask=rgba.getchannel("A"))
    return flat


def _downscale(im: Image.Image, min_side: int | None) -> Image.Image:
    """Box-reduce by the largest integer factor that keeps the shorter side >= min_side."""
    if min_side is None:
        return im
    factor = min(im.size) // min_side
    return im.reduce(factor) if factor >= 2 else im


def _describe(data: bytes) -> str:
    """Name what the bytes look like, for a NotAnImage message."""
    if not data:
        return "empty file"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        return _FTYP_BRANDS.get(brand, f"an MP4/QuickTime file (brand {brand!r})")
    for magic, name in _SIGNATURES:
        if data.startswith(magic):
            return name
    if _looks_like_text(data):
        head = data[:1024].lower()
        if b"<svg" in head:
            return "an SVG drawing (vector images are not supported)"
        if b"<html" in head or b"<!doctype html" in head:
            return "an HTML document"
        return "plain text"
    return f"unrecognised data starting {data[:8].hex(' ')}"


def _looks_like_text(data: bytes) -> bool:
    """True if the first bytes contain no control characters but whitespace (UTF-8 allowed)."""
    head = data[:512]
    return bool(head) and not any(b < 32 and b not in b"\t\n\r\f" for b in head)


def _one_line(e: BaseException) -> str:
    """An exception as one line: its message, or its type name when the message is empty."""
    text = " ".join(str(e).split())
    return text or type(e).__name__
