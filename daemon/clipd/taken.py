"""When a photo was taken, from its EXIF metadata, as seconds since the Unix epoch.

EXIF's DateTimeOriginal is the camera's clock when the shutter fired, "YYYY:MM:DD HH:MM:SS",
with no time zone; OffsetTimeOriginal (EXIF 2.31, written by phones and recent cameras) gives
the zone, and SubSecTimeOriginal the fraction of a second. Without an offset the time is read as
local time of the machine that indexes it, which is right for the common case of photos taken
where they are kept. DateTimeDigitized (and its offset) stands in when the original is missing;
DateTime (0x0132) is not used: editors rewrite it whenever they save the file.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from PIL import ExifTags, Image

# (time, its zone offset, its sub-seconds) tags, in order of preference.
_CANDIDATES = (
    (
        ExifTags.Base.DateTimeOriginal,
        ExifTags.Base.OffsetTimeOriginal,
        ExifTags.Base.SubsecTimeOriginal,
    ),
    (
        ExifTags.Base.DateTimeDigitized,
        ExifTags.Base.OffsetTimeDigitized,
        ExifTags.Base.SubsecTimeDigitized,
    ),
)
_STAMP = re.compile(r"(\d{4})[:-](\d\d)[:-](\d\d)[ T](\d\d):(\d\d):(\d\d)")
_OFFSET = re.compile(r"([+-])(\d\d):?(\d\d)")
# Before photography, or a clock that was never set to anything meaningful.
_FIRST_YEAR = 1826

# What Pillow's EXIF directory parser raises (or warns, under warnings-as-errors) on damage.
_EXIF_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    TypeError,
    KeyError,
    Warning,
)


def from_exif(exif: Image.Exif) -> float | None:
    """The capture time in `exif` (its EXIF sub-directory, else its first directory), or None."""
    try:
        directories = [exif.get_ifd(ExifTags.IFD.Exif), dict(exif)]
    except _EXIF_ERRORS:
        return None
    for directory in directories:
        for stamp, offset, subsec in _CANDIDATES:
            when = parse(directory.get(stamp), directory.get(offset), directory.get(subsec))
            if when is not None:
                return when
    return None


def from_tiff(data: bytes) -> float | None:
    """The capture time in a TIFF-structured file's EXIF (DNG, CR2, NEF, ARW, ORF, RW2...)."""
    if data[:2] not in (b"II", b"MM"):
        return None
    tiff = data
    if data[:4] not in (b"II*\x00", b"MM\x00*"):
        # ORF and RW2 are TIFF with magic numbers of their own: give the parser the standard
        # one (a copy of the file, which standard TIFF is spared).
        tiff = (b"II*\x00" if data[:2] == b"II" else b"MM\x00*") + data[4:]
    exif = Image.Exif()
    try:
        exif.load(tiff)
    except _EXIF_ERRORS:
        return None
    return from_exif(exif)


def parse(stamp: object, offset: object = None, subsec: object = None) -> float | None:
    """Seconds since the epoch for EXIF's date/time strings; None if they say no valid time."""
    match = _STAMP.match(_text(stamp))
    if match is None:
        return None
    try:
        year, month, day, hour, minute, second = map(int, match.groups())
        if year < _FIRST_YEAR:
            return None
        when = datetime(year, month, day, hour, minute, second)
        zone = _OFFSET.fullmatch(_text(offset))
        if zone is not None:
            sign = -1 if zone[1] == "-" else 1
            shift = timedelta(hours=int(zone[2]), minutes=int(zone[3]))
            when = when.replace(tzinfo=timezone(sign * shift))
        seconds = when.timestamp()  # a naive datetime is local time
    except (ValueError, OverflowError, OSError):
        return None
    digits = _text(subsec)
    if digits.isdigit() and digits.isascii():
        seconds += int(digits) / 10 ** len(digits)
    return seconds


def _text(value: object) -> str:
    """An EXIF ASCII value as a clean str (Pillow gives str, or bytes for mis-typed tags)."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return value.strip("\x00 ") if isinstance(value, str) else ""
