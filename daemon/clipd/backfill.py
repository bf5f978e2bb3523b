"""What rows indexed by an older clipd lack, made without the model: pixel signatures (for
duplicate detection, clipd.pixels) and capture times.

Such files keep their vectors. A file without a pixel signature is decoded again, and that one
read gives its capture time too; a file that lacks only its capture time has just its header
read. The work runs on the indexer's loader threads, a chunk at a time, while no other job
waits, so new files never wait for it and a stop waits for one chunk at most.

Only old rows need it: the indexer stores new files complete. So a pass starts only after a
scan of every root (the start-up scan, a full rescan), walks the unsigned files once by id and
then the files without a capture time, and ends; a watcher's event never starts one, though a
pass that a job interrupted goes on after it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

from clipd import images
from clipd.errors import ImageError, StoreUnwritable, Unreadable
from clipd.pixels import signature
from clipd.storage import IndexStore

log = logging.getLogger(__name__)

# Files per step: small enough that a stop or a new scan job waits well under a second.
CHUNK = 32

_Row = tuple[int, str, int, int]  # id, path, size, mtime_ns


@dataclass(frozen=True, slots=True)
class _Read:
    """What one file gave: its signature (b"" if it cannot be decoded) and capture time."""

    file_id: int
    size: int
    mtime_ns: int
    pixels: bytes
    taken_ns: int | None


class Backfill:
    """Fills in missing pixel signatures and capture times, one chunk per step()."""

    def __init__(
        self, store: IndexStore, pool: Executor, decode: Callable[[str], images.DecodedImage]
    ) -> None:
        self._store = store
        self._pool = pool
        self._decode = decode
        self._signing = False  # the pass is on unsigned files (else on capture times)
        self._after = 0  # the last unsigned file id the pass has looked at
        self._signed = 0
        self._timed = 0
        self.pending = False

    def restart(self) -> None:
        """Start a pass over every row again (after a scan of every root)."""
        self._signing = True
        self._after = 0
        self.pending = True

    def step(self) -> None:
        """Do the next chunk; ends the pass when nothing is left."""
        try:
            if self._signing:
                self._sign_chunk()
            else:
                self._time_chunk()
        except StoreUnwritable as exc:  # the next pass tries again
            log.error("cannot store what the backfill read: %s", exc)
            self.pending = False
        if not self.pending and (self._signed or self._timed):
            log.info(
                "filled in %d pixel signatures and %d capture times of files indexed without "
                "them (no re-embedding)",
                self._signed,
                self._timed,
            )
            self._signed = self._timed = 0

    def _sign_chunk(self) -> None:
        rows: list[_Row] = self._store.unsigned_files(self._after, CHUNK)
        if len(rows) < CHUNK:
            self._signing = False  # on to the files that lack only a capture time
        if not rows:
            return
        self._after = rows[-1][0]
        read = [item for item in self._pool.map(self._read_pixels, rows) if item is not None]
        if not read:
            return
        self._store.set_pixels([(r.file_id, r.size, r.mtime_ns, r.pixels) for r in read])
        self._store.set_capture_times([(r.file_id, r.size, r.mtime_ns, r.taken_ns) for r in read])
        self._signed += len(read)

    def _time_chunk(self) -> None:
        # Every row returned is marked read, so each call gets the next ones.
        rows: list[_Row] = self._store.unread_capture_times(CHUNK)
        if len(rows) < CHUNK:
            self.pending = False
        if rows:
            self._store.set_capture_times(list(self._pool.map(_read_time, rows)))
            self._timed += len(rows)

    def _read_pixels(self, row: _Row) -> _Read | None:
        """Runs on a loader thread: the file's signature and capture time, or None if it
        changed since it was indexed (its rescan does it) or cannot be read now."""
        file_id, path, size, mtime_ns = row
        try:
            st = os.stat(path)
            if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
                return None
            decoded = self._decode(path)
            return _Read(file_id, size, mtime_ns, signature(decoded.image), _ns(decoded.taken))
        except Unreadable:  # vanished or not readable now: the next pass tries again
            return None
        except ImageError:  # marked, so that it is not decoded again on every pass
            return _Read(file_id, size, mtime_ns, b"", _read_time(row)[3])
        except OSError:
            return None
        except Exception:  # one odd file must never stop the others
            log.exception("unexpected error reading %s again", path)
            return None


def _read_time(row: _Row) -> tuple[int, int, int, int | None]:
    """Runs on a loader thread: (id, size, mtime_ns, capture time from the header)."""
    file_id, path, size, mtime_ns = row
    try:
        taken_ns = _ns(images.read_metadata(Path(path))[2])
    except ImageError:  # unreadable now: the scan deals with it; its time stays unknown
        taken_ns = None
    except Exception:  # one odd file must not stop the backfill
        log.exception("unexpected error reading the capture time of %s", path)
        taken_ns = None
    return file_id, size, mtime_ns, taken_ns


def _ns(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1e9)
