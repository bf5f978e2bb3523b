"""RAW + JPEG pairs: a camera in RAW+JPEG mode writes IMG_0042.CR3 and IMG_0042.JPG of one shot.

The rule, in one place: a camera RAW file and a JPEG or HEIC file in the same folder with the
same name before the extension (any case) are one photo when both record a capture time, the
two agree to the second, and their shapes agree (long side / short side within 1%). Otherwise
(an edited export, another crop, a name reused for another picture) both are indexed. With
`raw_pairs: prefer_jpeg` (the default) the JPEG/HEIC stands for the photo, since it is what the
camera showed and decodes fastest; `prefer_raw` keeps the RAW; `both` indexes both files.

A file left out is recorded (store table raw_pairs) with the file that stands for it and both
files' size and mtime, so that an unchanged pair is decided once, never re-read; hits of the
file that stands for a photo name the files it stands for (Hit.paired). The Planner applies the
rule during a scan.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

from clipd import images
from clipd.errors import ImageError
from clipd.records import PairRecord
from clipd.scanner import FileStat, Matcher
from clipd.storage import IndexStore

log = logging.getLogger(__name__)

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


class Planner:
    """The rule applied to a scan: which files to look at too, which to leave out."""

    def __init__(self, store: IndexStore, pool: Executor) -> None:
        self._store = store
        self._pool = pool  # header reads run on the indexer's loader threads

    def siblings(
        self, paths: Sequence[Path], roots: Sequence[Path], matcher: Matcher
    ) -> list[Path]:
        """Files that may pair with the single files among paths (a watcher's event names one
        file; its RAW or JPEG sibling decides whether it is indexed). Each folder is listed
        once, however many of its files the paths name."""
        by_folder: dict[Path, list[Path]] = {}
        for path in paths:
            if kind(str(path)) is not None:
                by_folder.setdefault(path.parent, []).append(path)
        asked = set(paths)
        found: dict[Path, None] = {}  # in order, each once
        for folder, files in by_folder.items():
            try:
                names = os.listdir(folder)
            except OSError:
                continue
            by_stem: dict[str, list[str]] = {}
            for name in names:
                by_stem.setdefault(os.path.splitext(name)[0].lower(), []).append(name)
            for path in files:
                stem = os.path.splitext(path.name)[0].lower()
                for name in sibling_names(str(path), by_stem.get(stem, [])):
                    sibling = folder / name
                    if sibling not in asked and _wanted(sibling, roots, matcher):
                        found[sibling] = None
        return list(found)

    def leave_out(self, files: Mapping[str, FileStat], mode: str) -> set[str]:
        """Decide the pairs among files, remember new decisions and forget undone ones; the
        paths to leave out."""
        candidates = {path: stat for path, stat in files.items() if kind(path)}
        if not candidates:
            return set()
        remembered = self._store.pairs(list(candidates))
        decided = decide(candidates, mode, remembered, self._metadata)
        left_out = {pair.path for pair in decided}
        new = [pair for pair in decided if remembered.get(pair.path) != pair]
        undone = [path for path in remembered if path not in left_out]
        if new or undone:
            self._store.set_pairs(new, undone)
        for pair in new:
            log.info("%s is the same photo as %s: only the latter is indexed", pair.path,
                     pair.partner)  # fmt: skip
        return left_out

    def _metadata(self, paths: list[str]) -> list[Metadata | None]:
        """Header facts of files, read on the loader threads; None for one that cannot be read."""
        return list(self._pool.map(_read_metadata, paths))


def _wanted(path: Path, roots: Sequence[Path], matcher: Matcher) -> bool:
    """Whether the include/exclude rules take this file, below whichever root holds it."""
    for root in roots:
        if path.is_relative_to(root):
            return matcher.wants_path(str(path.relative_to(root)), is_directory=False)
    return False


def _read_metadata(path: str) -> Metadata | None:
    try:
        width, height, taken = images.read_metadata(Path(path))
    except ImageError:
        return None
    except Exception:  # one odd file must not stop a scan
        log.exception("unexpected error reading %s", path)
        return None
    return Metadata(width, height, taken)
