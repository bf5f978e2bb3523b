"""What the words of a `clipq` command line mean: query terms, and times for --since/--until.

    clipq beach -people 2:sunset +dog photo.jpg

The query language itself lives in clipd_api.query, shared with the daemon's web search box;
here a word names an image when it names an existing image file.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from datetime import datetime, timedelta

from clipd_api.query import ImageProbe, QueryError, parse_words
from clipq._client import ImageFile, Text

# QueryError too: parse_when raises it, and clipq's callers catch it from here.
__all__ = ["WHEN_HELP", "QueryError", "Term", "is_image_file", "parse_when", "query_terms"]

# How image files begin, for the formats the daemon reads.
_IMAGE_SIGNATURES: tuple[tuple[int, bytes], ...] = (
    (0, b"\xff\xd8\xff"),  # JPEG
    (0, b"\x89PNG\r\n\x1a\n"),
    (0, b"GIF87a"),
    (0, b"GIF89a"),
    (8, b"WEBP"),  # after "RIFF" and a length
    (0, b"BM"),
    (0, b"II*\x00"),  # TIFF, little endian
    (0, b"MM\x00*"),  # TIFF, big endian
)

Term = Text | ImageFile


def is_image_file(path: str) -> bool:
    """Whether path is a readable regular file that starts like an image the daemon reads."""
    try:
        if not os.path.isfile(path):
            return False
        with open(path, "rb") as file:
            head = file.read(16)
    except OSError:
        return False
    return any(head[offset : offset + len(magic)] == magic for offset, magic in _IMAGE_SIGNATURES)


def query_terms(
    words: Sequence[str], images: Sequence[str] = (), probe: ImageProbe = is_image_file
) -> list[Term]:
    """The terms the query words and --image paths ask for; plain words join into one text.

    `probe` tells image files from words; an explicit --image must be one.
    """
    terms: list[Term] = [
        ImageFile(term.value, term.weight) if term.image else Text(term.value, term.weight)
        for term in parse_words(words, probe)
    ]
    for path in images:
        if not probe(path):
            raise QueryError(
                f"--image {path}: not an image file (JPEG, PNG, WebP, GIF, BMP or TIFF)"
            )
        terms.append(ImageFile(path))
    if not terms:
        raise QueryError("the query is empty")
    return terms


# --since / --until

_AGO = re.compile(r"(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w|mo|y)", re.IGNORECASE)
_UNIT_SECONDS = {
    "s": 1,
    "sec": 1,
    "m": 60,
    "min": 60,
    "h": 3600,
    "d": 86400,
    "w": 7 * 86400,
    "mo": 30 * 86400,
    "y": 365 * 86400,
}
WHEN_HELP = (
    "a date or time (2024-05-31, 2024-05, 2024, '2024-05-31 18:00', local time unless it "
    "names a zone), 'today', 'yesterday', or an age such as 90m, 36h, 3d, 2w, 6mo, 1y"
)


def parse_when(text: str, now: float | None = None) -> float:
    """Seconds since the Unix epoch for a --since/--until value (see WHEN_HELP)."""
    now = time.time() if now is None else now
    value = text.strip().lower()
    ago = _AGO.fullmatch(value)
    if ago:
        return now - float(ago[1]) * _UNIT_SECONDS[ago[2]]
    if value in ("today", "yesterday"):
        midnight = datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
        return (midnight - timedelta(days=value == "yesterday")).timestamp()
    # A bare year or year-month means its first day.
    if re.fullmatch(r"\d{4}", value):
        value += "-01-01"
    elif re.fullmatch(r"\d{4}-\d{2}", value):
        value += "-01"
    try:
        # Naive times are local, as a person types them.
        return datetime.fromisoformat(value.upper()).timestamp()
    except ValueError:
        raise QueryError(f"{text!r} is not a time: use {WHEN_HELP}") from None
