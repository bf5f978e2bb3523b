"""Turn any file from a photo folder into an RGB PIL image for the embedder, or a typed ImageError.

Everything here runs concurrently in loader threads, so no global Pillow setting is changed
(MAX_IMAGE_PIXELS, LOAD_TRUNCATED_IMAGES) and no warnings filter is touched (catch_warnings() is
not thread-safe). Pillow's avoidable warnings are avoided instead: DecompressionBombWarning by
identifying files without Image.open (see _open), the palette-transparency one by compositing
via RGBA. What remains are UserWarnings about damaged metadata, raised by Pillow's EXIF/TIFF
directory parser while it reads headers; they are ordinary log lines under default filters, and
in a process that turns warnings into errors they surface as CorruptImage.

Formats are identified by content (clipd.formats); HEIC, AVIF and JPEG XL go through Pillow
plugins in this process, camera RAW through libraw in worker processes (clipd.raw).
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

from clipd import formats, raw, taken
from clipd.config import DEFAULT_MAX_PIXELS
from clipd.errors import CorruptImage, ImageTooLarge, NotAnImage, Unreadable

# Checked against the file size before reading it into memory; no sane photo comes near it.
MAX_FILE_BYTES = 512 * 1024 * 1024

# Where the composited background shows through transparent pixels. Mid grey rather than white or
# black: dark artwork (text, line drawings) and light artwork (icons made for dark themes) both
# stay visible against it, so neither embeds as a blank picture.
_BACKGROUND = (128, 128, 128)

# What Pillow raises on damaged data. Its header parsers also let IndexError/TypeError/KeyError
# escape from some plugins, and the JPEG XL plugin raises RuntimeError; Warning is here because
# a process running with warnings as errors (the test suite) gets Pillow's metadata warnings
# raised from inside these calls.
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    IndexError,
    TypeError,
    KeyError,
    RuntimeError,
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


@dataclass(frozen=True, slots=True)
class DecodedImage:
    """An upright RGB image ready for the embedder, with the size a user sees."""

    image: Image.Image  # RGB, EXIF orientation applied, possibly downscaled (min_side)
    width: int  # original width after orientation, not the downscaled one
    height: int
    format: str  # Pillow format name, e.g. "JPEG" (or "MPO" for multi-picture JPEGs), or RAW's
    taken: float | None = None  # capture time, seconds since the epoch (clipd.taken)
    # A larger copy of the picture for a thumbnail (see decode_bytes' thumbnail_side), or None.
    for_thumbnail: Image.Image | None = None


def decode_file(
    path: Path,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int | None = None,
    thumbnail_side: int | None = None,
) -> DecodedImage:
    """Read and decode the image file at path; raise an ImageError subclass on any failure."""
    return decode_bytes(
        _read_file(path), max_pixels=max_pixels, min_side=min_side, thumbnail_side=thumbnail_side
    )


def decode_bytes(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int | None = None,
    thumbnail_side: int | None = None,
) -> DecodedImage:
    """Decode an image held in memory; raise an ImageError subclass on any failure.

    min_side is a speed hint: the result's shorter side is reduced towards it, never below it,
    and never upscaled. width/height always report the full-size, upright dimensions.

    thumbnail_side asks for `for_thumbnail` too: when min_side reduced a picture that was decoded
    whole (formats with no reduced decoding: PNG, WebP, ...) to a longer side under
    thumbnail_side, a copy reduced only towards thumbnail_side, taken from the same decode. The
    embedder's image is unchanged by it (so are the vectors); the copy costs a box reduction.
    """
    if min_side is not None and min_side < 1:
        raise ValueError(f"min_side must be at least 1, not {min_side}")
    _check_byte_count(len(data))
    raw_format = raw.recognise(data)
    if raw_format is not None:
        return _decode_raw(data, raw_format, max_pixels, min_side)
    im = _open(data, max_pixels)
    fmt = im.format or "image"
    _check_pixels(im.size, max_pixels)
    width, height = im.size  # before draft() reduces it
    rgb, larger, transpose = _pixels(
        im, fmt, min_side, orient=_uses_exif_orientation(im), thumbnail_side=thumbnail_side
    )
    if transpose in _SWAPS_SIDES:
        width, height = height, width
    return DecodedImage(rgb, width, height, fmt, _taken(im), larger)


def read_metadata(path: Path) -> tuple[int, int, float | None]:
    """(width, height, capture time) of an image file from its headers; ImageError on failure.

    No pixels are decoded, but for JPEG XL and RAW (their previews). Width and height are as
    stored, except for RAW (upright): compare shapes either way round.
    """
    data = _read_file(path)
    if raw.recognise(data) is None:
        im = _open(data)
        return im.width, im.height, _taken(im)
    # min_side=1 takes any embedded preview: libraw still reports the sensor's size.
    decoded = _decode_raw(data, "RAW", DEFAULT_MAX_PIXELS, 1)
    return decoded.width, decoded.height, decoded.taken


def _pixels(
    im: ImageFile.ImageFile,
    fmt: str,
    min_side: int | None,
    *,
    orient: bool,
    thumbnail_side: int | None = None,
) -> tuple[Image.Image, Image.Image | None, Image.Transpose | None]:
    """Decode im to RGB, reduced towards min_side, upright; the larger copy for a thumbnail
    (decode_bytes); and the transpose that was applied."""
    try:
        if min_side is not None:
            # JPEG decodes at 1/2, 1/4 or 1/8 scale in the DCT domain, keeping both sides (hence
            # the shorter side, whichever way the image is rotated) >= min_side; no-op otherwise.
            im.draft("RGB", (min_side, min_side))
        im.load()
        transpose = _orientation(im) if orient else None
        whole = _to_rgb(im)
        rgb = _downscale(whole, min_side)
        larger = _for_thumbnail(whole, rgb, thumbnail_side)
        if transpose is not None:
            rgb = rgb.transpose(transpose)
            larger = None if larger is None else larger.transpose(transpose)
    except _BOMB_ERRORS as e:
        raise ImageTooLarge(f"{fmt} over Pillow's own size limit: {_one_line(e)}") from e
    except _DECODE_ERRORS as e:
        raise CorruptImage(f"damaged or truncated {fmt}: {_one_line(e)}") from e
    return rgb, larger, transpose


def _for_thumbnail(
    whole: Image.Image, reduced: Image.Image, side: int | None
) -> Image.Image | None:
    """`whole` box-reduced towards a longer side of `side`, when `reduced` fell short of it."""
    if side is None or reduced is whole or max(reduced.size) >= side:
        return None
    factor = max(whole.size) // side
    return whole.reduce(factor) if factor >= 2 else whole


def _uses_exif_orientation(im: Image.Image) -> bool:
    """False for pictures whose decoder already turned them upright by their own rules.

    pillow-heif applies HEIF's irot/imir boxes and resets EXIF's orientation to 1. A JPEG XL
    codestream carries its orientation, which the decoder applies, and the JPEG XL spec says
    EXIF's is then ignored; a JPEG XL that is a losslessly recompressed JPEG comes back as that
    JPEG, whose EXIF orientation does count.
    """
    return im.format != "JXL" or bool(getattr(im, "jpeg", False))


def _taken(im: Image.Image) -> float | None:
    try:
        exif = im.getexif()
    except _DECODE_ERRORS:
        return None
    return taken.from_exif(exif)


def _decode_raw(
    data: bytes, raw_format: str, max_pixels: int, min_side: int | None
) -> DecodedImage:
    """A camera RAW, decoded by a worker process: its preview JPEG or a half-size demosaic."""
    if not formats.AVAILABLE[formats.RAW]:
        raise formats.missing(formats.RAW)
    picture = raw.decode(data, max_pixels=max_pixels, min_side=min_side)
    if picture.jpeg is not None:
        preview = _open(picture.jpeg, max_pixels)
        _check_pixels(preview.size, max_pixels)
        # The camera's orientation is the RAW's (libraw's flip); a preview's own EXIF is not.
        image, _, _ = _pixels(preview, f"{raw_format} preview", min_side, orient=False)
    elif picture.rgb is not None:
        image = _downscale(picture.rgb, min_side)
    else:
        raise CorruptImage(f"damaged {raw_format}: no picture in it")
    if picture.transpose is not None:
        image = image.transpose(picture.transpose)
    width, height = picture.width, picture.height
    if picture.transpose in _SWAPS_SIDES:
        width, height = height, width
    when = taken.from_tiff(data)
    return DecodedImage(image, width, height, raw_format, picture.taken if when is None else when)


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


def _open(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageFile.ImageFile:
    """Parse the header of a supported format, identified by content; no pixels are decoded.

    This is Image.open's identification loop restricted to clipd.formats, run by hand because
    Image.open also applies Pillow's global MAX_IMAGE_PIXELS, warning (DecompressionBombWarning)
    above it; _check_pixels applies the caller's cap instead. JPEG XL's plugin decodes as it
    opens, so its size is checked first, from its header.
    """
    fmt = formats.identify(data)
    if fmt == "JXL":
        _check_pixels(formats.jxl_size(data), max_pixels)
    factory, _ = Image.OPEN[fmt]
    return _parse_header(factory, fmt, data)


def _parse_header(factory: _Factory, fmt: str, data: bytes) -> ImageFile.ImageFile:
    """Run the format's header parser; the magic number matched, so failures mean damage."""
    try:
        return factory(io.BytesIO(data), "")
    except _BOMB_ERRORS as e:
        raise ImageTooLarge(f"{fmt} over Pillow's own size limit: {_one_line(e)}") from e
    except _DECODE_ERRORS as e:
        # BMP's magic is only "BM": a text file starting "BMW..." lands here and is not an image.
        if formats.looks_like_text(data):
            raise NotAnImage(f"{formats.NOT_SUPPORTED}: {formats.describe(data)}") from e
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
    """Convert any mode Pillow yields for clipd.formats to RGB, with correct levels and no alpha."""
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


def _one_line(e: BaseException) -> str:
    """An exception as one line: its message, or its type name when the message is empty."""
    text = " ".join(str(e).split())
    return text or type(e).__name__
