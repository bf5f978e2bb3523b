"""The plain records that pass between the store and the rest of the daemon."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ModelIdentity:
    """Which model made the vectors: never mix two in one table."""

    name: str
    pretrained: str
    dim: int


@dataclass(frozen=True, slots=True)
class FileRecord:
    """An embedded file, ready to be written."""

    path: str
    size: int
    mtime_ns: int
    inode: int
    device: int
    content_hash: bytes
    width: int
    height: int
    vector: bytes
    taken_ns: int | None = None  # capture time (clipd.taken); None: the file does not say
    # False when taken_ns was not looked for yet (a vector reused from a row made before capture
    # times were stored): the backfill reads it from the file.
    taken_read: bool = True
    # clipd.pixels signature; None when not made (clipd then makes it later, without the model).
    pixels: bytes | None = None


@dataclass(frozen=True, slots=True)
class FailureRecord:
    """A file that could not be indexed; size and mtime let the scanner skip it until it changes."""

    path: str
    size: int
    mtime_ns: int
    error: str
    message: str


@dataclass(frozen=True, slots=True)
class Failure:
    path: str
    error: str
    message: str
    attempts: int
    last_seen: float


@dataclass(frozen=True, slots=True)
class StoredHit:
    path: str
    score: float
    width: int
    height: int
    size_bytes: int
    mtime: float
    taken: float | None  # capture time, seconds since the epoch; None when unknown
    # Files of the same photo left out for this one (a RAW beside this JPEG: clipd.pairs).
    paired: tuple[str, ...] = ()
    # The machine whose file this is (config `host`); in a shared store, maybe not this one.
    host: str = ""


@dataclass(frozen=True, slots=True)
class PairRecord:
    """A file left out of the index because another file of the same photo stands for it."""

    path: str
    size: int
    mtime_ns: int
    partner: str  # the indexed file
    partner_size: int
    partner_mtime_ns: int


@dataclass(frozen=True, slots=True)
class IndexedCopy:
    """What an indexed file with the same content gives a copy of it: no need to decode it."""

    vector: bytes
    width: int
    height: int
    taken_ns: int | None
    taken_read: bool
    pixels: bytes | None  # clipd.pixels signature, None when not made yet
    # The indexed file itself, as indexed: its kept thumbnail is the copy's too.
    path: str = ""
    mtime_ns: int = 0


@dataclass(frozen=True, slots=True)
class DuplicateCandidate:
    """An indexed file as duplicate detection sees it."""

    file_id: int
    path: str
    width: int
    height: int
    size_bytes: int
    mtime: float
    taken: float | None  # capture time, seconds since the epoch; None when unknown
    paired: tuple[str, ...]  # other files of the same photo (a RAW beside its JPEG)
    # clipd.pixels signature; None when not made yet, b"" when the file could not be decoded.
    pixels: bytes | None


@dataclass(frozen=True, slots=True)
class Counts:
    indexed: int
    offline: int
    failed: int


@dataclass(frozen=True, slots=True)
class SearchFilter:
    """Which files a search may return, besides being indexed and online."""

    under: tuple[str, ...] = ()
    # Lower case, without the dot.
    extensions: tuple[str, ...] = ()
    modified_after_ns: int | None = None
    modified_before_ns: int | None = None
    # The capture time where known, else the modification time.
    taken_after_ns: int | None = None
    taken_before_ns: int | None = None
    # Only files of these machines (config `host`); empty: every machine's.
    hosts: tuple[str, ...] = ()

    @property
    def narrows(self) -> bool:
        times = (
            self.modified_after_ns,
            self.modified_before_ns,
            self.taken_after_ns,
            self.taken_before_ns,
        )
        return bool(
            self.under or self.extensions or self.hosts or any(t is not None for t in times)
        )
