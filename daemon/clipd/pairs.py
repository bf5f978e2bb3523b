"""RAW + JPEG pairs: a camera in RAW+JPEG mode writes IMG_0042.CR3 and IMG_0042.JPG of one shot.

The rule, in one place: a camera RAW file and a JPEG or HEIC file in the same folder with the
same name before the extension (any case) are one photo when both record a capture time, the
two agree to the second, and their shapes agree (long side / short side within 1%). Otherwise
(an edited export, another crop, a name reused for another picture) both are indexed. With
`raw_pairs: prefer_jpeg` (the default) the JPEG/HEIC stands for the photo, since it is what the
camera showed and decodes fastest; `prefer_raw` keeps the RAW; `both` indexes both files.

A file left out is recorded (store table raw_pairs) with the file that stands for it and both
files' size and mtime, so that an unchanged pair is decided once, never re-read; hits of the
file that stands for a photo name the files it stands for (Hit.paired).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from clipd.records import PairRecord
from clipd.scanner import FileStat

RAW_EXTENSIONS = frozenset(
    {"dng", "cr2", "cr3", "nef", "nrw", "arw", "srf", "sr2", "raf", "orf", "rw2", "rwl", "pef"}
    | {"srw", "3fr", "erf", "dcr", "kdc"}
)
DEVELOPED_EXTENSIONS = frozenset({"jpg", "jpeg", "jpe", "heic", "heif", "hif"})
_SHAPE_TOLERANCE = 0.01


@dataclass(frozen=True, slots=True)
class Metadata:
    """What the same-photo test compares, read from a file's header."""

    width: int
    height: int
    taken: float | None


def kind(path: str) -> str | None:
    """ "raw", "developed" (JPEG or HEIC) or None, by the file's extension."""
    extension = os.path.splitext(path)[1][1:].lower()
    if extension in RAW_EXTENSIONS:
        return "raw"
    if extension in DEVELOPED_EXTENSIONS:
        return "developed"
    return None


def sibling_names(path: str, names: Iterable[str]) -> list[str]:
    """Of the names in path's folder, those that could pair with it (same stem, other kind)."""
    own = kind(path)
    if own is None:
        return []
    stem = os.path.splitext(os.path.basename(path))[0].lower()
    return [
        name
        for name in names
        if os.path.splitext(name)[0].lower() == stem and kind(name) not in (None, own)
    ]


def same_photo(a: Metadata, b: Metadata) -> bool:
    """The rule: capture times known and equal to the second, shapes within 1%."""
    if a.taken is None or b.taken is None or int(a.taken) != int(b.taken):
        return False
    if min(a.width, a.height, b.width, b.height) < 1:
        return False
    shape_a = max(a.width, a.height) / min(a.width, a.height)
    shape_b = max(b.width, b.height) / min(b.width, b.height)
    return abs(shape_a - shape_b) <= _SHAPE_TOLERANCE * shape_a


def decide(
    files: Mapping[str, FileStat],
    mode: str,
    remembered: Mapping[str, PairRecord],
    read: Callable[[list[str]], list[Metadata | None]],
) -> list[PairRecord]:
    """The files to leave out, each with the file that stands for it.

    A group with one RAW and one JPEG/HEIC is a pair; other groups (three files of one name)
    are left alone. A remembered decision holds while both files are unchanged.
    """
    if mode == "both":
        return []
    groups: dict[tuple[str, str], dict[str, list[FileStat]]] = {}
    for path, stat in files.items():
        what = kind(path)
        if what is not None:
            key = (os.path.dirname(path), os.path.splitext(os.path.basename(path))[0].lower())
            groups.setdefault(key, {}).setdefault(what, []).append(stat)
    decided: list[PairRecord] = []
    to_read: list[tuple[FileStat, FileStat]] = []
    for group in groups.values():
        raws, developed = group.get("raw", []), group.get("developed", [])
        if len(raws) != 1 or len(developed) != 1:
            continue
        keep, leave = (developed[0], raws[0]) if mode == "prefer_jpeg" else (raws[0], developed[0])
        record = _record(leave, keep)
        if remembered.get(leave.path) == record:
            decided.append(record)
        else:
            to_read.append((keep, leave))
    metadata = read([stat.path for pair in to_read for stat in pair])
    for index, (keep, leave) in enumerate(to_read):
        a, b = metadata[2 * index], metadata[2 * index + 1]
        if a is not None and b is not None and same_photo(a, b):
            decided.append(_record(leave, keep))
    return decided


def _record(leave: FileStat, keep: FileStat) -> PairRecord:
    return PairRecord(leave.path, leave.size, leave.mtime_ns, keep.path, keep.size, keep.mtime_ns)
