"""Pixel signatures for files indexed before clipd made them (store migration 0002).

Such files keep their vectors: only their pixels are needed, so each is decoded again, without
the model, on the indexer's loader threads. After each scan job the indexer runs this a chunk
at a time while no other job waits, so new files never wait for it, and a stop waits for one
chunk at most. A pass walks the unsigned files once by id; every finished scan job starts
another pass, which finds only what the last one could not do.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import Executor

from clipd.errors import ImageError, StoreUnwritable, Unreadable
from clipd.images import DecodedImage
from clipd.pixels import signature
from clipd.storage import IndexStore

log = logging.getLogger(__name__)

# Files decoded per step: small enough that a stop or a new scan job waits well under a second.
CHUNK = 32

_Signed = tuple[int, int, int, bytes]


class SignatureBackfill:
    """Makes the missing pixel signatures, one chunk per step()."""

    def __init__(
        self, store: IndexStore, pool: Executor, decode: Callable[[str], DecodedImage]
    ) -> None:
        self._store = store
        self._pool = pool
        self._decode = decode
        self._after = 0  # the last file id this pass has looked at
        self._made = 0
        self.pending = True

    def restart(self) -> None:
        """Look at every unsigned file again (after a scan, which may have left some)."""
        self._after = 0
        self.pending = True

    def step(self) -> None:
        """Sign the next chunk of unsigned files; ends the pass when none are left."""
        rows: list[tuple[int, str, int, int]] = self._store.unsigned_files(self._after, CHUNK)
        if len(rows) < CHUNK:
            self.pending = False
        if not rows:
            return
        if self._after == 0:
            log.info("making pixel signatures of files indexed without them (no re-embedding)")
        self._after = rows[-1][0]
        signed = [row for row in self._pool.map(self._sign, rows) if row is not None]
        try:
            self._store.set_pixels(signed)
        except StoreUnwritable as exc:  # the next pass tries again
            log.error("cannot store pixel signatures: %s", exc)
            self.pending = False
            return
        self._made += len(signed)
        if not self.pending:
            log.info("pixel signatures made for %d files", self._made)
            self._made = 0

    def _sign(self, row: tuple[int, str, int, int]) -> _Signed | None:
        """Runs on a loader thread: the file's signature, b"" if it cannot be decoded, or None
        if it changed since it was indexed (its rescan signs it) or cannot be read now."""
        file_id, path, size, mtime_ns = row
        try:
            st = os.stat(path)
            if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
                return None
            return file_id, size, mtime_ns, signature(self._decode(path).image)
        except Unreadable:  # vanished or not readable now: the next pass tries again
            return None
        except ImageError:  # marked, so that it is not decoded again on every pass
            return file_id, size, mtime_ns, b""
        except OSError:
            return None
        except Exception:  # one odd file must never stop the others
            log.exception("unexpected error making the pixel signature of %s", path)
            return None
