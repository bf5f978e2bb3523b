"""What the words of a `clipq` command line mean: query terms, and times for --since/--until.

    clipq beach -people 2:sunset +dog photo.jpg

The query language itself (signs, weights, which words name images) lives in clipd_api.query,
shared with the daemon's web search box; here a word that names an image must name a readable
image file, and is an error otherwise.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone, tzinfo

from clipd_api.query import (
    IMAGE_EXTENSIONS,
    QueryError,
    host_and_path,
    looks_like_path,
    parse_words,
)
from clipq._client import ImageFile, Text

# Also from here: parse_when raises QueryError, and clipq's callers catch it from this module.
__all__ = [
    "WHEN_HELP",
    "QueryError",
    "Term",
    "image_problem",
    "looks_like_path",
    "parse_when",
    "query_terms",
]

# How image files begin, for the formats the daemon reads (RAW files from most cameras are TIFF
# inside); the daemon has the last word, this only keeps a text file from being sent as one.
_IMAGE_SIGNATURES: tuple[tuple[int, bytes], ...] = (
    (0, b"\xff\xd8\xff"),  # JPEG
    (0, b"\x89PNG\r\n\x1a\n"),
    (0, b"GIF87a"),
    (0, b"GIF89a"),
    (8, b"WEBP"),  # after "RIFF" and a length
    (0, b"BM"),
    (0, b"II*\x00"),  # TIFF, little endian
    (0, b"MM\x00*"),  # TIFF, big endian
    (4, b"ftyp"),  # ISO media: HEIC, HEIF, AVIF, Canon CR3
    (0, b"\xff\x0a"),  # JPEG XL codestream
    (0, b"\x00\x00\x00\x0cJXL "),  # JPEG XL container
    (0, b"IIRO"),  # Olympus ORF
    (0, b"IIU\x00"),  # Panasonic RW2
    (0, b"FUJIFILMCCD-RAW"),
)

_FORMATS = "JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC, AVIF, JPEG XL or camera RAW"

Term = Text | ImageFile
ImageCheck = Callable[[str], str | None]


def image_problem(path: str) -> str | None:
    """None when path is a readable file that starts like an image; else what is wrong with it."""
    # As the client reads it: ImageFile expands a '~' that the shell left alone ('~/a.jpg').
    path = os.path.expanduser(path)
    try:
        # stat first: opening a FIFO or a device could block.
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            return "is a folder, not an image file (--under DIR searches within a folder)"
        if not stat.S_ISREG(mode):
            return "not a regular file"
        with open(path, "rb") as file:
            head = file.read(16)
    except FileNotFoundError:
        return "no such file"
    except OSError as error:
        return f"cannot read it: {error.strerror}"
    if any(head[offset : offset + len(magic)] == magic for offset, magic in _IMAGE_SIGNATURES):
        return None
    return f"not an image file ({_FORMATS})"


def query_terms(
    words: Sequence[str],
    images: Sequence[str] = (),
    texts: Sequence[str] = (),
    check: ImageCheck = image_problem,
) -> list[Term]:
    """The terms the query words, --image paths and --text texts ask for.

    Plain words and texts join into one text. A word that looks like a path must name an image
    (`check` says what is wrong with it otherwise): it is never searched as text by mistake.
    `HOST:/PATH` names another machine's file, which only the daemon can look up.
    """
    terms: list[Term] = []
    for term in parse_words(words, texts):
        if term.image:
            terms.append(_image_term(term.value, term.weight, check, label=term.value))
        else:
            terms.append(Text(term.value, term.weight))
    for path in images:
        terms.append(_image_term(path, 1.0, check, label=f"--image {path}"))
    if not terms:
        raise QueryError("the query is empty")
    return terms


def _image_term(word: str, weight: float, check: ImageCheck, *, label: str) -> ImageFile:
    host, path = host_and_path(word)
    if host:
        return ImageFile(path, weight, host=host)
    _check_image(word, check, label=label)
    return ImageFile(word, weight)


def _check_image(path: str, check: ImageCheck, *, label: str) -> None:
    problem = check(path)
    if problem is None:
        return
    has_extension = path.rpartition(".")[2].lower() in IMAGE_EXTENSIONS
    # A word like 'AC/DC' is more likely text than a mistyped path: say how to search it.
    hint = "" if has_extension or label.startswith("--") else "; to search it as text, use --text"
    raise QueryError(f"{label}: {problem}{hint}")


# --since / --until

_AGO = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)(?:\s+ago)?", re.IGNORECASE)
_UNITS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (1, ("s", "sec", "secs", "second", "seconds")),
    (60, ("m", "min", "mins", "minute", "minutes")),
    (3600, ("h", "hr", "hrs", "hour", "hours")),
    (86400, ("d", "day", "days")),
    (7 * 86400, ("w", "wk", "wks", "week", "weeks")),
    (30 * 86400, ("mo", "mon", "mos", "month", "months")),
    (365 * 86400, ("y", "yr", "yrs", "year", "years")),
)
_UNIT_SECONDS = {name: seconds for seconds, names in _UNITS for name in names}
# A time zone at the end of a date: "UTC", "Europe/Berlin", "+02:00", "-0530".
_ZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9_+-]+)*")
_ZONE_OFFSET = re.compile(r"[+-]\d{2}:?\d{2}")
WHEN_HELP = (
    "a date or time (2024-05-31, 2024-05, 2024, '2024-05-31 18:00', local time unless a zone "
    "follows: '2024-05-31 18:00 UTC', '... Europe/Berlin', '...+02:00'), 'today', "
    "'yesterday', or an age such as 90s, 15min, 36h, 3d, 2w, 6mo, 1y (m is minutes, "
    "mo months; M is refused as ambiguous)"
)


def parse_when(text: str, now: float | None = None) -> float:
    """Seconds since the Unix epoch for a --since/--until value (see WHEN_HELP)."""
    now = time.time() if now is None else now
    value = " ".join(text.split())
    ago = _AGO.fullmatch(value)
    if ago:
        return now - float(ago[1]) * _age_unit(ago[2], text)
    if value.lower() in ("today", "yesterday"):
        midnight = datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
        return (midnight - timedelta(days=value.lower() == "yesterday")).timestamp()
    date, zone = _split_zone(value)
    # A bare year or year-month means its first day.
    if re.fullmatch(r"\d{4}", date):
        date += "-01-01"
    elif re.fullmatch(r"\d{4}-\d{2}", date):
        date += "-01"
    try:
        moment = datetime.fromisoformat(date.upper())
    except ValueError:
        raise QueryError(f"{text!r} is not a time: use {WHEN_HELP}") from None
    if zone is not None:
        if moment.tzinfo is not None:
            raise QueryError(f"{text!r} names two time zones; keep one")
        moment = moment.replace(tzinfo=_time_zone(zone))
    # Naive times are local, as a person types them.
    return moment.timestamp()


def _age_unit(unit: str, text: str) -> int:
    # 'M' is minutes to some tools and months to others (systemd): refuse to guess.
    if unit == "M":
        raise QueryError(f"{text!r} is ambiguous: write min for minutes or mo for months")
    seconds = _UNIT_SECONDS.get(unit.lower())
    if seconds is None:
        raise QueryError(f"{text!r} is not a time: use {WHEN_HELP}")
    return seconds


def _split_zone(value: str) -> tuple[str, str | None]:
    """('2024-05-31 18:00', 'UTC') from '2024-05-31 18:00 UTC'; no zone: (value, None)."""
    date, _, last = value.rpartition(" ")
    if date and (_ZONE_NAME.fullmatch(last) or _ZONE_OFFSET.fullmatch(last)):
        return date, last
    return value, None


def _time_zone(name: str) -> tzinfo:
    if _ZONE_OFFSET.fullmatch(name):
        sign = 1 if name[0] == "+" else -1
        digits = name[1:].replace(":", "")
        return timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    if name.upper() in ("UTC", "Z", "GMT"):
        return timezone.utc
    # Imported here: only a named zone pays for it.
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise QueryError(
            f"unknown time zone {name!r}: use UTC, a name like Europe/Berlin, or an offset "
            "like +02:00"
        ) from None
