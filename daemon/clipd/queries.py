"""The query core: every rule of a request to the daemon, whichever transport carried it.

Limits, the sum of weighted terms into one query vector, filters, which paths a caller may name,
"only indexed files are served", and the assembly of the status all live here, once. The gRPC
servicer and the HTTP API only translate their requests into these calls, and a QueryError's
kind into their own status codes.

A core for remote callers (TCP, HTTP) never opens a file a query names: a path term must be
indexed, and only paths below a root may be reindexed. The daemon may read files its caller
could not.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from clipd import duplicates, formats, images, thumbcache, thumbnails
from clipd.config import Config
from clipd.errors import ImageError, ImageTooLarge, StoreUnavailable
from clipd.progress import Progress
from clipd.records import Counts, Failure, SearchFilter, StoredHit
from clipd.scanner import outside_roots
from clipd.served_model import ServedModel, Vectors
from clipd.storage import IndexStore
from clipd.thumbcache import Thumbnails
from clipd_api.kinds import ErrorKind
from clipd_api.query import host_and_path

if TYPE_CHECKING:
    from clipd.indexer import Indexer

DEFAULT_LIMIT = 20
MAX_LIMIT = 1000
DEFAULT_FAILURES_LIMIT = 100
MAX_TEXT_CHARS = 2000
DEFAULT_THUMBNAIL_SIDE = 256
MAX_THUMBNAIL_SIDE = 1024
# Each term costs a model pass or a file read: a query needs a few, never hundreds.
MAX_TERMS = 64
# Times in requests are clamped to this many seconds either side of the epoch (int64 ns).
_MAX_SECONDS = 9e9
_EXTENSION = re.compile(r"[a-z0-9]{1,16}")
# How often a status watch may yield, at most, and how long it waits before yielding anyway.
WATCH_MIN_INTERVAL_S = 0.25
WATCH_HEARTBEAT_S = 5.0

NOT_READY_MESSAGE = "clipd is still loading its model; try again in a few seconds"

TermKind = Literal["text", "image", "path"]


class QueryError(Exception):
    """A request the daemon refuses; str() says why, for a person, and `kind` for a program."""

    def __init__(self, message: str, kind: ErrorKind = ErrorKind.BAD_REQUEST) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class DaemonState:
    """What a running daemon answers from; embedder and indexer are None until the model loads."""

    config: Config
    store: IndexStore
    progress: Progress
    version: str
    started_at: float
    embedder: ServedModel | None = None
    indexer: Indexer | None = None
    thumbnails: Thumbnails | None = None
    # The web app's address, "" while it is off.
    web_url: str = ""
    # One for every transport: it runs one search at a time and keeps whole-file hashes.
    duplicate_finder: duplicates.DuplicateFinder = field(init=False)
    # The last status report and what it was made from (see Queries.status).
    last_status: tuple[tuple[object, ...], StatusReport] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.duplicate_finder = duplicates.DuplicateFinder(self.store)


@dataclass(frozen=True, slots=True)
class Term:
    """One part of a query: a text, the bytes of an image file, or an image's absolute path.

    kind None is a term that names nothing (refused). weight None means 1.
    """

    kind: TermKind | None
    value: str | bytes
    weight: float | None = None


@dataclass(frozen=True, slots=True)
class SearchQuery:
    terms: Sequence[Term]
    # 0: the default.
    limit: int = 0
    offset: int = 0
    min_score: float | None = None
    under: Sequence[str] = ()
    extensions: Sequence[str] = ()
    # Seconds since the Unix epoch.
    modified_after: float | None = None
    modified_before: float | None = None
    # The same, compared with the capture time where a file records one, else its mtime.
    taken_after: float | None = None
    taken_before: float | None = None
    # Only files of these machines (config `host`); empty: every machine's.
    hosts: Sequence[str] = ()
    # Every file that passes the filters compared, not an approximate index searched.
    exact: bool = False


@dataclass(frozen=True, slots=True)
class DuplicatesQuery:
    # CLIP cosine at which two images are compared; None: the default.
    threshold: float | None = None
    under: Sequence[str] = ()
    # The loosest tier to group by (duplicates.TIERS); None: the loosest of all.
    tier: str | None = None
    # Groups; 0: the default.
    limit: int = 0
    offset: int = 0


@dataclass(frozen=True, slots=True)
class SearchResult:
    hits: list[StoredHit]
    # The index is still being (re)built, so the hits may miss files.
    partial: bool
    took_ms: float
    # No file at all is searchable, which is why the hits are empty.
    nothing_indexed: bool
    # The answering daemon's machine: hits of other hosts are files on other machines.
    host: str = ""


@dataclass(frozen=True, slots=True)
class StatusReport:
    """The daemon's state and counters, field for field the wire Status message."""

    state: str  # "starting", "indexing", "idle", "stopping"
    version: str
    indexed: int
    queued: int
    failed: int
    offline: int
    images_per_second: float
    eta_seconds: float
    model: str
    pretrained: str
    dim: int
    device: str
    roots: list[str]
    database: str
    database_bytes: int
    started_at: float
    problem: str
    web_url: str


@dataclass(frozen=True, slots=True)
class ReindexResult:
    queued: int
    removed: int
    indexed: int
    failed: int


@dataclass(frozen=True, slots=True)
class Embedding:
    vector: Vectors
    model: str
    pretrained: str


@dataclass(frozen=True, slots=True)
class FileVersion:
    """An indexed file as it is on disk now: what a cached picture of it must match."""

    path: str
    size: int
    mtime_ns: int

    @property
    def etag(self) -> str:
        return f'"{self.size:x}-{self.mtime_ns:x}"'


@dataclass(frozen=True, slots=True)
class Original:
    """An indexed image for a browser: its own file when browsers show that format, else
    `data`, the image converted to JPEG."""

    version: FileVersion
    content_type: str
    data: bytes | None


class Queries:
    """Answers requests from a running daemon's state; one per transport (remote or local)."""

    def __init__(self, state: DaemonState, *, remote: bool) -> None:
        self._state = state
        self._remote = remote

    def _ready(self) -> tuple[ServedModel, Indexer]:
        state = self._state
        if state.embedder is None or state.indexer is None:
            # A shared store's server away at start: say that, not "loading its model".
            if problem := state.progress.snapshot().problem:
                raise QueryError(problem, ErrorKind.UNAVAILABLE)
            raise QueryError(NOT_READY_MESSAGE, ErrorKind.NOT_READY)
        return state.embedder, state.indexer

    def search(self, query: SearchQuery) -> SearchResult:
        embedder, _ = self._ready()
        started = time.perf_counter()
        limit = _limit(query.limit, DEFAULT_LIMIT)
        offset = _offset(query.offset)
        min_score = query.min_score
        if min_score is not None and not (math.isfinite(min_score) and -1 <= min_score <= 1):
            raise QueryError(f"min_score must be between -1 and 1, not {min_score}")
        where = _search_filter(query)
        vector = self._query_vector(embedder, query.terms)
        store = self._state.store
        hits = store.search(
            vector.tobytes(),
            limit=limit,
            offset=offset,
            min_score=min_score,
            where=where,
            exact=query.exact,
        )
        return SearchResult(
            hits=hits,
            partial=self._state.progress.busy,
            took_ms=(time.perf_counter() - started) * 1000,
            nothing_indexed=not hits and store.counts().indexed == 0,
            host=store.host,
        )

    def _query_vector(self, embedder: ServedModel, terms: Sequence[Term]) -> Vectors:
        if not terms:
            raise QueryError("the query is empty; give at least one text, image or path term")
        if len(terms) > MAX_TERMS:
            raise QueryError(f"the query has {len(terms)} terms; at most {MAX_TERMS} are allowed")
        # float64: weights up to float32's maximum cannot overflow the sum.
        total = np.zeros(embedder.identity.dim, dtype=np.float64)
        for number, term in enumerate(terms, start=1):
            weight = 1.0 if term.weight is None else term.weight
            if not math.isfinite(weight) or weight == 0:
                raise QueryError(f"term {number}: weight must be a non-zero number")
            total += weight * self._term_vector(embedder, term, f"term {number}")
        norm = float(np.linalg.norm(total))
        if norm < 1e-6:
            raise QueryError("the query terms cancel each other out; change their weights")
        normalised: Vectors = (total / norm).astype(np.float32)
        return normalised

    def _term_vector(self, embedder: ServedModel, term: Term, label: str) -> Vectors:
        if term.kind == "text" and isinstance(term.value, str):
            return _text_vector(embedder, term.value, label)
        if term.kind == "image" and isinstance(term.value, bytes):
            return self._image_vector(embedder, term.value, label)
        if term.kind == "path" and isinstance(term.value, str):
            return self._path_vector(embedder, term.value, label)
        raise QueryError(f"{label} is empty; set one of text, image or path")

    def _path_vector(self, embedder: ServedModel, raw: str, label: str) -> Vectors:
        host, raw = host_and_path(raw)
        if host and host != self._state.store.host:
            return self._remote_vector(host, _absolute(raw, label), label)
        path = _absolute(raw, label)
        stored = self._state.store.vector_for(path)
        if stored is not None:
            vector: Vectors = np.frombuffer(stored, dtype=np.float32)
            return vector
        if self._remote:
            raise QueryError(
                f"{label}: over TCP and HTTP only indexed paths can be used as query terms, "
                f"and {path} is not indexed; send the image's bytes instead"
            )
        return self._image_vector(embedder, Path(path), label)

    def _remote_vector(self, host: str, path: str, label: str) -> Vectors:
        """The vector another machine stored of its file: the file itself is not here."""
        stored = self._state.store.stored_vector(host, path)
        if stored is None:
            raise QueryError(
                f"{label}: {host}:{path} is not in the shared index", ErrorKind.NOT_FOUND
            )
        vector: Vectors = np.frombuffer(stored, dtype=np.float32)
        return vector

    def _image_vector(self, embedder: ServedModel, source: bytes | Path, label: str) -> Vectors:
        """The vector of image bytes or an image file; one that cannot be decoded is refused."""
        decoded = self._decode(source, embedder.image_size, label)
        vector: Vectors = embedder.embed_images([decoded.image])[0]
        return vector

    def _decode(
        self, source: bytes | Path, min_side: int | None, label: str
    ) -> images.DecodedImage:
        """Image bytes or file, decoded down to min_side (None: whole); bad input becomes a
        QueryError."""
        max_pixels = self._state.config.max_image_pixels
        try:
            if isinstance(source, bytes):
                return images.decode_bytes(source, max_pixels=max_pixels, min_side=min_side)
            return images.decode_file(source, max_pixels=max_pixels, min_side=min_side)
        except ImageTooLarge as exc:
            raise QueryError(f"{label}: {exc}", ErrorKind.TOO_LARGE) from exc
        except ImageError as exc:
            raise QueryError(f"{label}: {exc}") from exc

    def status(self) -> StatusReport:
        """The daemon's status, made once for every caller (transports, status streams) while
        nothing it is made from has changed: counting a large store is not free."""
        state = self._state
        snap = state.progress.snapshot()
        # Read before the counts, so that a write in between makes the next call count again.
        key = (snap.version, state.store.writes, state.config, state.embedder, state.web_url)
        last = state.last_status
        if last is not None and last[0] == key:  # tuples compare items by identity first
            return last[1]
        problem = snap.problem
        try:
            counts = state.store.counts()
            size = state.store.size_bytes()
        except StoreUnavailable as exc:  # a shared store's server away: say so, count nothing
            counts, size = Counts(indexed=0, offline=0, failed=0), 0
            problem = problem or str(exc)
        model = state.config.model
        report = StatusReport(
            state=snap.state,
            version=state.version,
            indexed=counts.indexed,
            queued=snap.queued,
            failed=counts.failed,
            offline=counts.offline,
            images_per_second=snap.images_per_second,
            eta_seconds=snap.eta_seconds,
            model=model.name,
            pretrained=model.pretrained,
            dim=state.store.model.dim if state.store.model else 0,
            device=state.embedder.device if state.embedder else "",
            roots=[str(root) for root in state.config.roots],
            database=state.store.location,
            database_bytes=size,
            started_at=state.started_at,
            problem=problem,
            web_url=state.web_url,
        )
        state.last_status = (key, report)
        return report

    def watch_status(self, active: Callable[[], bool]) -> Iterator[StatusReport]:
        """The status now, then again whenever it changes (at most every WATCH_MIN_INTERVAL_S,
        at least every WATCH_HEARTBEAT_S), while active() says the caller still listens; ends
        after the daemon says it is stopping."""
        progress = self._state.progress
        version = -1
        while active():
            snap = progress.wait_for_change(version, timeout=WATCH_HEARTBEAT_S)
            version = snap.version
            yield self.status()
            if snap.state == "stopping":
                return
            time.sleep(WATCH_MIN_INTERVAL_S)

    def reindex(
        self, raw_paths: Sequence[str], *, wait: bool, active: Callable[[], bool]
    ) -> ReindexResult:
        """Rescan paths (every root if none); with wait, return once done or once not active()."""
        _, indexer = self._ready()
        paths = [Path(_absolute(p, "paths")) for p in raw_paths]
        roots = self._state.config.roots
        outside = outside_roots(paths, roots)
        if outside:
            raise QueryError(
                f"paths: only paths below a root can be reindexed, and {outside[0]} is below "
                f"none of {', '.join(map(str, roots))}; to index it, add its folder to `roots` "
                "in the config"
            )
        job = indexer.submit(paths or list(self._state.config.roots))
        if wait:
            while not job.done.wait(timeout=0.5):
                if not active():
                    break
        return ReindexResult(
            queued=job.queued, removed=job.removed, indexed=job.indexed, failed=job.failed
        )

    def embed(self, term: Term) -> Embedding:
        embedder, _ = self._ready()
        if term.kind is None:
            raise QueryError("nothing to embed; set one of text, image or path")
        vector = self._term_vector(embedder, term, "term 1")
        model = self._state.config.model
        return Embedding(vector=vector, model=model.name, pretrained=model.pretrained)

    def failures(self, *, limit: int = 0, offset: int = 0) -> tuple[list[Failure], int]:
        """One page of the files that could not be indexed, and how many there are in all."""
        return self._state.store.failures(
            limit=_limit(limit, DEFAULT_FAILURES_LIMIT), offset=_offset(offset)
        )

    def duplicates(self, query: DuplicatesQuery) -> duplicates.DuplicatesReport:
        """Groups of near-identical indexed images (see clipd.duplicates); it never changes a
        file. Needs no model: it compares stored vectors and pixel signatures."""
        threshold = duplicates.DEFAULT_THRESHOLD if query.threshold is None else query.threshold
        if not (math.isfinite(threshold) and duplicates.MIN_THRESHOLD <= threshold <= 1):
            raise QueryError(
                f"threshold must be between {duplicates.MIN_THRESHOLD} and 1, not {threshold}"
            )
        tier = query.tier or duplicates.TIERS[-1]
        if tier not in duplicates.TIERS:
            raise QueryError(f"tier {tier!r} is unknown; use {', '.join(duplicates.TIERS)}")
        criteria = duplicates.Criteria(
            threshold=threshold,
            under=tuple(_absolute(p, "under") for p in query.under),
            tier=tier,
            limit=_limit(query.limit, duplicates.DEFAULT_LIMIT),
            offset=_offset(query.offset),
        )
        return self._state.duplicate_finder.find(criteria)

    def indexed_path(self, raw: str, label: str = "path") -> str:
        """raw, normalised, if it is an indexed image; else NOT_FOUND.

        Only indexed files are ever read for a caller (thumbnails, originals): the daemon must
        not become a way to read any file its user can read for whoever reaches it.
        """
        path = _absolute(raw, label)
        if not self._state.store.is_indexed(path):
            raise QueryError(f"{path!r} is not an indexed image", ErrorKind.NOT_FOUND)
        return path

    def thumbnail(
        self, raw_path: str, max_side: int, fmt: thumbnails.Format, host: str = ""
    ) -> thumbnails.Thumbnail:
        """A small picture of an indexed image, at most max_side pixels (0: the default); of
        another machine's image (host) in a shared index, made from the one it keeps there."""
        side = _thumbnail_side(max_side)
        if host and host != self._state.store.host:
            return self._remote_thumbnail(host, _absolute(raw_path, "path"), side, fmt)
        path = self.indexed_path(raw_path)
        # min_side lets a JPEG decode at a reduced scale that still covers max_side.
        decoded = self._decode(Path(path), side, path)
        return thumbnails.render(decoded.image, side, fmt)

    def _remote_thumbnail(
        self, host: str, path: str, side: int, fmt: thumbnails.Format
    ) -> thumbnails.Thumbnail:
        kept = self._state.store.stored_thumbnail(host, path)
        if kept is None:
            raise QueryError(
                f"{host}:{path} has no picture in the shared index (that machine makes one "
                "when it indexes the file or shows it)",
                ErrorKind.NOT_FOUND,
            )
        try:
            decoded = images.decode_bytes(kept)
        except ImageError as exc:
            raise QueryError(f"{host}:{path}: its kept picture is damaged ({exc})") from exc
        return thumbnails.render(decoded.image, side, fmt)

    def remote_picture(self, host: str, raw_path: str, side: int = 0) -> tuple[str, bytes]:
        """(ETag, JPEG) of another machine's image from the thumbnail it keeps in the shared
        index, within `side` pixels (0: as kept, the largest picture there is of it).

        The file lives on that machine, so this is also what its "original" is here."""
        _check_web_side(side)
        path = _absolute(raw_path, "path")
        kept = self._state.store.stored_thumbnail(host, path)
        if kept is None:
            raise QueryError(
                f"{host}:{path} has no picture in the shared index; the file lives on {host} "
                "(that machine keeps one when it indexes the file)",
                ErrorKind.NOT_FOUND,
            )
        etag = f'"{host}-{hashlib.blake2b(kept, digest_size=8).hexdigest()}-{side:x}"'
        if side == 0 or side >= thumbcache.THUMBNAIL_SIDE:
            return etag, kept
        try:
            decoded = images.decode_bytes(kept)
        except ImageError as exc:
            raise QueryError(f"{host}:{path}: its kept picture is damaged ({exc})") from exc
        return etag, thumbcache.encode(decoded.image, side)

    def current_version(self, raw_path: str) -> FileVersion:
        """An indexed image's path, size and mtime now; NOT_FOUND if it is not indexed, gone,
        or has become a symbolic link where the config does not follow them."""
        path = self.indexed_path(raw_path)
        try:
            found = os.stat(path, follow_symlinks=self._state.config.follow_symlinks)
        except (OSError, ValueError) as exc:
            raise QueryError(
                f"{path!r} is indexed but cannot be read now", ErrorKind.NOT_FOUND
            ) from exc
        if not stat.S_ISREG(found.st_mode):
            raise QueryError(f"{path!r} is no longer a regular file", ErrorKind.NOT_FOUND)
        return FileVersion(path, found.st_size, found.st_mtime_ns)

    def cached_thumbnail(self, version: FileVersion, side: int = 0) -> bytes | None:
        """The kept JPEG of the image for `side` (see make_thumbnail), or None if it must be
        made. One indexed read: cheap enough to call without a worker thread."""
        _check_web_side(side)
        cache = self._state.thumbnails
        if cache is None or side > thumbcache.THUMBNAIL_SIDE:
            return None
        return cache.get(version.path, version.size, version.mtime_ns)

    def make_thumbnail(self, version: FileVersion, side: int = 0) -> bytes:
        """A JPEG of the image within `side` pixels (0: the cached size, THUMBNAIL_SIDE), for
        a caller that found no kept one (cached_thumbnail).

        Sides up to THUMBNAIL_SIDE get the picture that is then kept; larger ones are made on
        every call.
        """
        _check_web_side(side)
        if side > thumbcache.THUMBNAIL_SIDE:
            decoded = self._decode(Path(version.path), side, version.path)
            return thumbcache.encode(decoded.image, side)
        decoded = self._decode(Path(version.path), thumbcache.THUMBNAIL_SIDE, version.path)
        data = thumbcache.encode(decoded.image)
        if self._state.thumbnails is not None:
            self._state.thumbnails.put(version.path, version.size, version.mtime_ns, data)
        return data

    def original(self, version: FileVersion) -> Original:
        """An indexed image (see current_version) as a browser can show it: the file itself,
        or a converted JPEG."""
        try:
            with open(version.path, "rb") as file:
                head = file.read(_HEAD_BYTES)
        except OSError as exc:
            raise QueryError(f"{version.path!r} cannot be read now", ErrorKind.NOT_FOUND) from exc
        content_type = _browser_type(head)
        if content_type is not None:
            return Original(version, content_type, None)
        decoded = self._decode(Path(version.path), None, version.path)
        buffer = io.BytesIO()
        decoded.image.save(buffer, format="JPEG", quality=90)
        return Original(version, "image/jpeg", buffer.getvalue())


# The formats (as clipd.formats names them) that browsers show; any other image is converted
# to JPEG for them.
_BROWSER_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "AVIF": "image/avif",
}
# Enough of a file to tell its format: an ISO media file lists its brands in its first bytes.
_HEAD_BYTES = 256


def _browser_type(head: bytes) -> str | None:
    try:
        return _BROWSER_TYPES.get(formats.identify(head))
    except ImageError:  # a camera RAW, or a format this install cannot decode: converted
        return None


def _check_web_side(side: int) -> None:
    if side < 0 or side > MAX_THUMBNAIL_SIDE:
        raise QueryError(f"size must be from 1 to {MAX_THUMBNAIL_SIDE} pixels, not {side}")


def _thumbnail_side(requested: int) -> int:
    if requested < 0:
        raise QueryError(f"max_side {requested} is negative; give 0 for the default, or more")
    if requested > MAX_THUMBNAIL_SIDE:
        raise QueryError(f"max_side {requested} is over the maximum of {MAX_THUMBNAIL_SIDE} pixels")
    return requested or DEFAULT_THUMBNAIL_SIDE


def _limit(requested: int, default: int) -> int:
    if requested < 0:
        raise QueryError(f"limit {requested} is negative; give 0 for the default, or more")
    if requested > MAX_LIMIT:
        raise QueryError(f"limit {requested} is over the maximum of {MAX_LIMIT}; page with offset")
    return requested or default


def _offset(requested: int) -> int:
    if requested < 0:
        raise QueryError(f"offset {requested} is negative")
    return requested


def _search_filter(query: SearchQuery) -> SearchFilter:
    extensions = []
    for raw in query.extensions:
        ext = raw.strip().lstrip(".").lower()
        if not _EXTENSION.fullmatch(ext):
            raise QueryError(f"extensions: {raw!r} is not a file extension like 'jpg'")
        extensions.append(ext)
    after, before = _time_range(query.modified_after, query.modified_before, "modified")
    taken_after, taken_before = _time_range(query.taken_after, query.taken_before, "taken")
    hosts = tuple(host.strip() for host in query.hosts)
    if not all(hosts):
        raise QueryError("hosts: a host is empty; name machines like 'laptop'")
    return SearchFilter(
        hosts=hosts,
        under=tuple(_absolute(p, "under") for p in query.under),
        extensions=tuple(extensions),
        modified_after_ns=after,
        modified_before_ns=before,
        taken_after_ns=taken_after,
        taken_before_ns=taken_before,
    )


def _time_range(
    after: float | None, before: float | None, prefix: str
) -> tuple[int | None, int | None]:
    after_ns = _time_ns(after, f"{prefix}_after")
    before_ns = _time_ns(before, f"{prefix}_before")
    if after_ns is not None and before_ns is not None and after_ns >= before_ns:
        raise QueryError(f"{prefix}_after must be earlier than {prefix}_before")
    return after_ns, before_ns


def _time_ns(seconds: float | None, field: str) -> int | None:
    if seconds is None:
        return None
    if not math.isfinite(seconds):
        raise QueryError(f"{field} must be a time in seconds since the Unix epoch")
    # Beyond what SQLite's 64-bit nanoseconds hold (years 1678-2262) no file can be: clamp.
    return round(max(-_MAX_SECONDS, min(seconds, _MAX_SECONDS)) * 1e9)


def _absolute(raw: str, label: str) -> str:
    if not raw or not os.path.isabs(raw):
        raise QueryError(f"{label}: {raw!r} is not an absolute path")
    return os.path.normpath(raw)


def _text_vector(embedder: ServedModel, text: str, label: str) -> Vectors:
    text = text.strip()
    if not text:
        raise QueryError(f"{label}: the text is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise QueryError(f"{label}: the text is over {MAX_TEXT_CHARS} characters")
    return embedder.embed_text(text)
