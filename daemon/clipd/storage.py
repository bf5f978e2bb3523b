"""The index store as the rest of the daemon sees it, and the choice of its backend.

Two backends implement IndexStore: clipd.store (one SQLite file with sqlite-vec, the default)
and clipd.pgstore (a PostgreSQL database with pgvector, shared by several machines). The
indexer, watcher, backfill, duplicate search, query core and web layer use only this interface,
and the same behaviour tests run against both (tests/test_store.py).

Every method is thread-safe. Writes are short transactions: all of a call, or none of it.
A store that lost its database for a while (a PostgreSQL restart, a cut connection) raises
StoreUnavailable, and tries again on the next call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from clipd.records import (
    Counts,
    DuplicateCandidate,
    Failure,
    FailureRecord,
    FileRecord,
    IndexedCopy,
    ModelIdentity,
    PairRecord,
    SearchFilter,
    StoredHit,
)

if TYPE_CHECKING:
    from pathlib import Path

    from clipd.config import Config
    from clipd.matrix import Floats, Ids
    from clipd.pgurl import PostgresDatabase
    from clipd.thumbcache import Thumbnails


class IndexStore(Protocol):
    """File rows, their vectors, failures, raw pairings and the model, for one machine (host).

    A shared store holds the rows of several hosts: searches, counts of hits and duplicate
    search see every host's rows; everything that reconciles the index with a file system
    (known_files, remove, move, set_offline, failures, backfills) sees and changes only this
    store's host's rows.
    """

    # The model whose vectors the store holds; None until bind_model().
    model: ModelIdentity | None

    @property
    def location(self) -> str:
        """Where the index lives, for people: a file path, or a URL without its password."""
        ...

    @property
    def host(self) -> str:
        """The machine whose rows this store changes (config `host`)."""
        ...

    def close(self) -> None: ...

    def bind_model(self, identity: ModelIdentity) -> bool:
        """Make `identity` the store's model; True if vectors of another model were dropped."""
        ...

    # -- writes ----------------------------------------------------------------------------

    def write_batch(
        self, records: Sequence[FileRecord], failures: Sequence[FailureRecord]
    ) -> None: ...

    def remove(self, paths: Sequence[str]) -> int: ...

    def move(self, source: str, destination: str) -> int: ...

    def set_offline(self, prefix: str, offline: bool) -> int: ...

    def set_pairs(self, decided: Sequence[PairRecord], undecided: Sequence[str]) -> None: ...

    def set_capture_times(self, times: Sequence[tuple[int, int, int, int | None]]) -> None: ...

    def set_pixels(self, signatures: Sequence[tuple[int, int, int, bytes]]) -> None: ...

    def forget_failures(self, error: str) -> int: ...

    # -- what this host indexed ------------------------------------------------------------

    def known_files(self, prefix: str) -> dict[str, tuple[int, int]]: ...

    def known_failures(self, prefix: str) -> dict[str, tuple[int, int]]: ...

    def indexed_outside(self, prefixes: Sequence[str]) -> list[str]: ...

    def paired_paths(self, prefix: str) -> list[str]: ...

    def pairs(self, paths: Sequence[str]) -> dict[str, PairRecord]: ...

    def unread_capture_times(self, limit: int) -> list[tuple[int, str, int, int]]: ...

    def unsigned_files(self, after_id: int, limit: int) -> list[tuple[int, str, int, int]]: ...

    def find_copy(self, content_hash: bytes, size: int) -> IndexedCopy | None: ...

    def is_indexed(self, path: str) -> bool:
        """Whether this host indexed `path` (cheaper than vector_for: no vector is read)."""
        ...

    def vector_for(self, path: str) -> bytes | None: ...

    def failures(self, *, limit: int, offset: int = 0) -> tuple[list[Failure], int]: ...

    def stored_thumbnail(self, host: str, path: str) -> bytes | None:
        """The JPEG thumbnail another machine (host) keeps of its file in a shared index."""
        ...

    def stored_vector(self, host: str, path: str) -> bytes | None:
        """The vector another machine (host) stored of its file in a shared index."""
        ...

    # -- searches and duplicate detection --------------------------------------------------

    def search(
        self,
        vector: bytes,
        *,
        limit: int,
        offset: int = 0,
        min_score: float | None = None,
        where: SearchFilter = ...,
        exact: bool = False,
    ) -> list[StoredHit]:
        """Best `limit` files after `offset` by cosine score among those `where` lets through;
        `exact`: every one of them compared, never an approximate index."""
        ...

    def vectors(self, where: SearchFilter = ...) -> tuple[Ids, Floats]: ...

    def same_content(self, where: SearchFilter = ...) -> list[list[int]]: ...

    def candidates(self, ids: Sequence[int]) -> dict[int, DuplicateCandidate]: ...

    def count_unsigned(self, where: SearchFilter = ...) -> int: ...

    def counts(self) -> Counts: ...

    @property
    def writes(self) -> int:
        """A number that changes whenever counts() and size_bytes() may have: while it is the
        same, the status need not count again. A shared store sees other machines' writes up
        to a second late (PostgresStore.writes)."""
        ...

    def size_bytes(self) -> int: ...


def store_for(config: Config) -> IndexStore:
    """Open the store `config.database` names: a PostgreSQL URL, else a SQLite file."""
    return open_store(config.database, host=config.host)


def open_store(database: Path | PostgresDatabase, *, host: str) -> IndexStore:
    """Open the store at `database` (a PostgreSQL database, else a SQLite file) for `host`."""
    from clipd.pgurl import PostgresDatabase

    if isinstance(database, PostgresDatabase):
        from clipd.pgstore import PostgresStore

        return PostgresStore(database, host=host)
    from clipd.store import Store

    return Store(database, host=host)


def thumbnails_for(store: IndexStore) -> Thumbnails:
    """Where the web app's thumbnails are kept: beside a SQLite index, in its own cache file;
    in a shared PostgreSQL index, in the database, so that other machines can show them."""
    from clipd.store import Store
    from clipd.thumbcache import ThumbnailCache, cache_path

    if isinstance(store, Store):
        return ThumbnailCache(cache_path(store.path))
    from clipd.pgstore import PostgresStore, SharedThumbnails  # needs the postgres extra

    assert isinstance(store, PostgresStore)
    return SharedThumbnails(store)
