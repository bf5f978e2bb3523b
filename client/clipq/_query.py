"""What the words of a `clipq` command line mean: query terms, and times for --since/--until.

    clipq beach -people 2:sunset +dog photo.jpg

Plain words form one text ("beach"); `+TEXT` and `-TEXT` add and subtract a term of their own;
`W:TERM` gives a term the weight W; a word that names an existing image file queries by example.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from clipq._client import ImageFile, Text

# "2:sunset", "-0.5:people", ".5:dog"
_WEIGHTED = re.compile(r"([+-]?(?:\d+(?:\.\d*)?|\.\d+)):(.*)", re.DOTALL)

# How image files begin, for the formats the daemon reads.
_IMAGE_SIGNATURES: tuple[tuple[int, bytes], ...] = (
    (0, b"\xff\xd8\xff"),  # JPEG
    (0, b"\x89PNG\r\n\x1a\n"),
    (0, b"GIF87a"),
    (0, b"GIF89a"),
    (8, b"WEBP"),  # after "RIFF" and a length
    (0, b"BM"),
    (0, b"II*\x00"),  # TIFF (and the TIFF-based camera RAW formats), little endian
    (0, b"MM\x00*"),  # TIFF, big endian
    # HEIC/HEIF and AVIF (ISO media: an ftyp box with the brand), Canon CR3
    *((4, b"ftyp" + brand) for brand in (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis")),
    *((4, b"ftyp" + brand) for brand in (b"hevm", b"hevs", b"mif1", b"msf1", b"avif", b"avis")),
    (4, b"ftypcrx "),
    (0, b"\xff\x0a"),  # JPEG XL codestream
    (0, b"\x00\x00\x00\x0cJXL \r\n\x87\n"),  # JPEG XL container
    (0, b"FUJIFILMCCD-RAW"),
    (0, b"IIRO"),  # Olympus ORF
    (0, b"IIRS"),
    (0, b"MMOR"),
    (0, b"IIU\x00"),  # Panasonic RW2
)

Term = Text | ImageFile
ImageProbe = Callable[[str], bool]


class QueryError(ValueError):
    """A query word that cannot be understood; str() says which and why."""


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
    plain: list[str] = []
    terms: list[Term] = []
    for word in words:
        signed = _signed_term(word)
        if signed is not None:
            body, weight = signed
            terms.append(ImageFile(body, weight) if probe(body) else Text(body, weight))
        elif probe(word):
            terms.append(ImageFile(word))
        else:
            plain.append(word)
    text = " ".join(plain).strip()
    if text:
        terms.insert(0, Text(text))
    for path in images:
        if not probe(path):
            raise QueryError(
                f"--image {path}: not an image file (JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC, "
                "AVIF, JPEG XL or camera RAW)"
            )
        terms.append(ImageFile(path))
    if not terms:
        raise QueryError("the query is empty")
    return terms


def _signed_term(word: str) -> tuple[str, float] | None:
    """(term, weight) for `+TERM`, `-TERM` and `W:TERM`; None for a plain word."""
    match = _WEIGHTED.fullmatch(word)
    if match:
        body, weight = match[2], float(match[1])
    elif len(word) > 1 and word[0] in "+-":
        body, weight = word[1:], (1.0 if word[0] == "+" else -1.0)
    else:
        return None
    if not body.strip():
        raise QueryError(f"{word!r}: nothing follows the {'weight' if match else 'sign'}")
    if weight == 0:
        raise QueryError(f"{word!r}: a weight of 0 would ignore the term; leave it out instead")
    return body, weight


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
