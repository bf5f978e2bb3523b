"""Thumbnails for the web app, made once and kept: cheap on every view after the first.

The indexer puts one here while it holds the image decoded anyway (a resize and a JPEG encode
of a picture already at a few hundred pixels; for formats decoded whole, such as PNG and WebP, a
copy reduced from the same decode: clipd.images' thumbnail_side); the web app makes the ones it
lacks (files indexed before the cache, pictures drafted too small for the model) on first view. Each
entry is keyed by path and stamped with the file's size and mtime, so a changed file never gets
an old picture. The cache lives in its own SQLite file beside the index: deleting it loses
nothing but time.

A cache that cannot be written (disk full, read-only folder) is logged once and skipped: it
must never hold up indexing or a view.
"""

from __future__ import annotations

import io
import logging
import sqlite3
import threading
from collections.abc import Collection
from pathlib import Path
from typing import Protocol

from PIL import Image

log = logging.getLogger(__name__)

# The longer side of a cached thumbnail, in pixels: tiles of ~200 CSS pixels at 2x density.
THUMBNAIL_SIDE = 400
# JPEG quality: 75 is where artefacts stay invisible at tile size (measured: see bench/web_api.py).
_QUALITY = 75

_SCHEMA = """
CREATE TABLE IF NOT EXISTS thumbnails (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    data BLOB NOT NULL
)
"""


def cache_path(database: Path) -> Path:
    """Where the thumbnails of the index at `database` live: index.db -> index.thumbnails.db."""
    return database.with_name(f"{database.stem}.thumbnails.db")


def encode(image: Image.Image, side: int = THUMBNAIL_SIDE) -> bytes:
    """An RGB image fitted within side x side pixels (never enlarged), as a JPEG file."""
    fitted = image
    scale = side / max(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        fitted = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)
    buffer = io.BytesIO()
    fitted.save(buffer, format="JPEG", quality=_QUALITY)
    return buffer.getvalue()


def big_enough(image: Image.Image, width: int, height: int) -> bool:
    """Whether a decoded image (maybe reduced while decoding) makes a full-size thumbnail: its
    longer side reaches THUMBNAIL_SIDE, or it is the whole original."""
    return max(image.size) >= THUMBNAIL_SIDE or image.size == (width, height)


class Thumbnails(Protocol):
    """Where thumbnails are kept: this SQLite cache, or a shared index's database
    (clipd.pgstore.SharedThumbnails), where other machines find them too."""

    def get(self, path: str, size: int, mtime_ns: int) -> bytes | None: ...

    def put(self, path: str, size: int, mtime_ns: int, data: bytes) -> None: ...

    def keep_only(self, paths: Collection[str]) -> int: ...

    def close(self) -> None: ...


class ThumbnailCache:
    """One SQLite connection behind a lock: a lookup is one indexed read of a few tens of KB."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._broken = False
        self._conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            # A lost thumbnail is remade: no need to wait for the disk on every put.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(_SCHEMA)
            self._conn = conn
        except sqlite3.Error as exc:
            self._fail("open", exc)

    def get(self, path: str, size: int, mtime_ns: int) -> bytes | None:
        """The thumbnail of `path` as it is now (size, mtime_ns), or None."""
        with self._lock:
            if self._conn is None:
                return None
            try:
                row = self._conn.execute(
                    "SELECT data FROM thumbnails WHERE path = ? AND size = ? AND mtime_ns = ?",
                    (path, size, mtime_ns),
                ).fetchone()
            except sqlite3.Error as exc:
                self._fail("read", exc)
                return None
        return bytes(row[0]) if row else None

    def put(self, path: str, size: int, mtime_ns: int, data: bytes) -> None:
        with self._lock:
            if self._conn is None or self._broken:
                return
            try:
                self._conn.execute(
                    "INSERT OR REPLACE INTO thumbnails (path, size, mtime_ns, data) "
                    "VALUES (?, ?, ?, ?)",
                    (path, size, mtime_ns, data),
                )
            except sqlite3.Error as exc:
                self._fail("write", exc)

    def keep_only(self, paths: Collection[str]) -> int:
        """Forget the thumbnails of every path not in `paths` (files gone from the index while
        the daemon was not running, or since); the number forgotten."""
        with self._lock:
            if self._conn is None or self._broken:
                return 0
            try:
                stale = [
                    (path,)
                    for (path,) in self._conn.execute("SELECT path FROM thumbnails")
                    if path not in paths
                ]
                with self._conn:
                    self._conn.execute("BEGIN")
                    self._conn.executemany("DELETE FROM thumbnails WHERE path = ?", stale)
            except sqlite3.Error as exc:
                self._fail("write", exc)
                return 0
        return len(stale)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _fail(self, what: str, exc: sqlite3.Error) -> None:
        if not self._broken:
            log.warning(
                "the thumbnail cache %s cannot %s (%s); thumbnails are made on every view",
                self.path,
                what,
                exc,
            )
        self._broken = True
