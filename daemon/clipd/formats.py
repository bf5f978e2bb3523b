"""Which image format some bytes hold, by content alone, and whether this install can read it.

Pillow reads JPEG, PNG, WebP, GIF, BMP and TIFF itself, and AVIF when its wheel was built with
libavif (PyPI's wheels are, from Pillow 11.2). HEIC/HEIF needs pillow-heif and JPEG XL needs
pillow-jxl-plugin; both register with Pillow when imported here, once, before any loader thread
runs. Camera RAW (clipd.raw) needs rawpy. A format whose decoder is missing is still recognised
by its magic number, so the failure names the package to install instead of "not an image".
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from PIL import Image, features

from clipd.errors import CorruptImage, MissingDecoder, NotAnImage

# Pillow's built-in formats, tried by their own magic-number checks, in this order.
_BUILTIN = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
NOT_SUPPORTED = "not a JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC, AVIF, JPEG XL or camera RAW image"


@dataclass(frozen=True, slots=True)
class Decoder:
    """An optional decoder: the formats it adds and what to install for it."""

    label: str  # as a person names the format
    install: str  # what to install, as a command or a package


HEIF = Decoder("HEIC/HEIF", "pip install pillow-heif")
AVIF = Decoder("AVIF", "Pillow with AVIF (PyPI's Pillow 11.2 or newer: pip install -U Pillow)")
JXL = Decoder("JPEG XL", "pip install pillow-jxl-plugin")
RAW = Decoder("camera RAW", "pip install rawpy")


def _register_heif() -> bool:
    try:
        import pillow_heif
    except ImportError:
        return False
    # Only the primary image is ever used: skip reading thumbnails, depth maps and aux images.
    pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)
    return True


def _register_jxl() -> bool:
    try:
        import pillow_jxl  # noqa: F401  (registers its plugin with Pillow on import)
    except ImportError:
        return False
    return True


def _has_rawpy() -> bool:
    from importlib.util import find_spec

    # Only looked for: libraw is loaded in the RAW worker process, never in the daemon.
    return find_spec("rawpy") is not None


Image.init()  # every built-in plugin registered now, not lazily inside concurrent threads
AVAILABLE: dict[Decoder, bool] = {
    HEIF: _register_heif(),
    AVIF: bool(features.check("avif")),
    JXL: _register_jxl(),
    RAW: _has_rawpy(),
}
_PILLOW_NAME = {HEIF: "HEIF", AVIF: "AVIF", JXL: "JXL"}

# ISO base media (ftyp) brands. AVIF files and HEIC files share the generic mif1/msf1 brands, so
# a file is AVIF if any of its brands says so, HEIF if any says HEVC or generic HEIF.
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HEIF_BRANDS = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"}
)
_JXL_CODESTREAM = b"\xff\x0a"
_JXL_CONTAINER = b"\x00\x00\x00\x0cJXL \r\n\x87\n"


def ftyp_brands(data: bytes) -> tuple[bytes, ...]:
    """The major and compatible brands of an ISO base media file, or () if it is not one."""
    if data[4:8] != b"ftyp" or len(data) < 12:
        return ()
    (size,) = struct.unpack(">I", data[:4])
    end = min(max(size, 12), len(data), 256)
    major = data[8:12]
    compatible = [data[i : i + 4] for i in range(16, end - 3, 4)]
    return (major, *compatible)


def identify(data: bytes) -> str:
    """The Pillow format name to parse data with; NotAnImage or MissingDecoder if none."""
    brands = set(ftyp_brands(data))
    if brands & _AVIF_BRANDS:
        return _optional(AVIF)
    if brands & _HEIF_BRANDS:
        return _optional(HEIF)
    if data.startswith((_JXL_CODESTREAM, _JXL_CONTAINER)):
        return _optional(JXL)
    prefix = data[:16]
    for fmt in _BUILTIN:
        _, accept = Image.OPEN[fmt]
        verdict = accept(prefix) if accept else True
        # A str verdict is Pillow saying "this format, but its codec is not installed".
        if isinstance(verdict, str):
            raise NotAnImage(f"{fmt} not readable here: {verdict}")
        if verdict:
            return fmt
    raise NotAnImage(f"{NOT_SUPPORTED}: {describe(data)}")


def _optional(decoder: Decoder) -> str:
    if not AVAILABLE[decoder]:
        raise missing(decoder)
    return _PILLOW_NAME[decoder]


def missing(decoder: Decoder) -> MissingDecoder:
    """The failure for a file whose decoder is not installed."""
    return MissingDecoder(
        f"{decoder.label} image, but its decoder is not installed: {decoder.install}"
    )


# -- JPEG XL dimensions -----------------------------------------------------------------------

# The JPEG XL plugin decodes every pixel while "opening" a file, so its size is read here first,
# from the codestream's SizeHeader (ISO/IEC 18181-1, section D.2), to apply the pixel cap.
_JXL_RATIOS = {1: (1, 1), 2: (12, 10), 3: (4, 3), 4: (3, 2), 5: (16, 9), 6: (5, 4), 7: (2, 1)}
_JXL_U32_BITS = (9, 13, 18, 30)


def jxl_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG XL file's header; CorruptImage if it cannot be read."""
    codestream = data if data.startswith(_JXL_CODESTREAM) else _jxl_codestream(data)
    if not codestream.startswith(_JXL_CODESTREAM):
        raise CorruptImage("damaged JXL header: no codestream")
    bits = _Bits(codestream[2:18])
    small = bits.read(1)
    height = (bits.read(5) + 1) * 8 if small else bits.read(_JXL_U32_BITS[bits.read(2)]) + 1
    ratio = bits.read(3)
    if ratio:
        numerator, denominator = _JXL_RATIOS[ratio]
        width = height * numerator // denominator
    elif small:
        width = (bits.read(5) + 1) * 8
    else:
        width = bits.read(_JXL_U32_BITS[bits.read(2)]) + 1
    return width, height


def _jxl_codestream(data: bytes) -> bytes:
    """The first bytes of the codestream in a JPEG XL container (a jxlc or first jxlp box)."""
    offset = 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        header = 8
        if size == 1:
            if offset + 16 > len(data):
                break
            (size,) = struct.unpack(">Q", data[offset + 8 : offset + 16])
            header = 16
        elif size == 0:
            size = len(data) - offset
        if kind == b"jxlc":
            return data[offset + header : offset + header + 18]
        if kind == b"jxlp":  # a 4-byte part index comes first
            return data[offset + header + 4 : offset + header + 22]
        if size < header:
            break
        offset += size
    return b""


class _Bits:
    """Least-significant-bit-first reader, as JPEG XL packs its headers."""

    def __init__(self, data: bytes) -> None:
        self._value = int.from_bytes(data, "little")
        self._left = 8 * len(data)

    def read(self, count: int) -> int:
        if count > self._left:
            raise CorruptImage("damaged JXL header: truncated")
        value = self._value & ((1 << count) - 1)
        self._value >>= count
        self._left -= count
        return value


# -- naming what is not an image --------------------------------------------------------------

# Leading bytes of common non-image (or unsupported image) files, for NotAnImage messages.
_SIGNATURES = (
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (or an Office/EPUB document)"),
    (b"\x1f\x8b", "gzip-compressed data"),
    (b"8BPS", "a Photoshop document"),
    (b"\x00\x00\x01\x00", "an ICO icon"),
    (b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 image"),
    (b"\xff\x4f\xff\x51", "a JPEG 2000 codestream"),
    (b"RIFF", "a RIFF file that is not WebP (AVI, WAV, ...)"),
    (b"\x7fELF", "an ELF executable"),
)


def describe(data: bytes) -> str:
    """Name what the bytes look like, for a NotAnImage message."""
    if not data:
        return "empty file"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        return f"an MP4/QuickTime file (brand {brand!r})"
    for magic, name in _SIGNATURES:
        if data.startswith(magic):
            return name
    if looks_like_text(data):
        head = data[:1024].lower()
        if b"<svg" in head:
            return "an SVG drawing (vector images are not supported)"
        if b"<html" in head or b"<!doctype html" in head:
            return "an HTML document"
        return "plain text"
    return f"unrecognised data starting {data[:8].hex(' ')}"


def looks_like_text(data: bytes) -> bool:
    """True if the first bytes contain no control characters but whitespace (UTF-8 allowed)."""
    head = data[:512]
    return bool(head) and not any(b < 32 and b not in b"\t\n\r\f" for b in head)
