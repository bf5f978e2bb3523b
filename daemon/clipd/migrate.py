"""`clipd migrate-store FROM TO`: move an index between SQLite and PostgreSQL without re-embedding.

Everything the indexer would make again is carried: each file's row and its float32 vector
bit for bit, capture times, pixel signatures, RAW pairings, failures, offline state, the model's
identity, and the thumbnails this machine keeps for it. What moves is one machine's index: a
SQLite file holds one machine's files, and from a shared PostgreSQL database only the rows of
`host` are taken (the other machines move their own).

Both stores are opened through their own classes, so each is checked, migrated and locked as a
daemon would (a running daemon on either side refuses the move). The source is read as it is
stored; the target is written through the store interface, in batches, so it holds exactly
what its own indexer would have written.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipd import sqlite
from clipd.errors import ClipdError
from clipd.instance import file_lock
from clipd.pgurl import PostgresDatabase
from clipd.records import FailureRecord, FileRecord, ModelIdentity, PairRecord
from clipd.storage import IndexStore, open_store, thumbnails_for

log = logging.getLogger(__name__)

Database = Path | PostgresDatabase
_BATCH = 500


@dataclass(frozen=True, slots=True)
class Moved:
    """What a migration carried."""

    files: int
    offline: int
    failures: int
    pairs: int
    thumbnails: int
    model: ModelIdentity


@dataclass(frozen=True, slots=True)
class _Source:
    """One machine's index as read from a store: rows in id order."""

    model: ModelIdentity | None
    files: list[tuple[FileRecord, bool]]  # (record, offline)
    failures: list[FailureRecord]
    pairs: list[PairRecord]


def migrate_store(source: Database, target: Database, *, host: str, replace: bool) -> Moved:
    """Copy `host`'s index from `source` into `target`; raise ClipdError when it cannot.

    A target that already holds files of `host` is refused unless `replace`: then its rows of
    the same paths are overwritten (a SQLite target is emptied first, as another model's
    vectors would be).
    """
    if _same(source, target):
        raise ClipdError(f"FROM and TO are the same database ({source})")
    with ExitStack() as stack:
        for database, command in ((source, "migrate-store (from)"), (target, "migrate-store")):
            lock = file_lock(database, command)
            if lock is not None:
                lock.acquire()
                stack.callback(lock.release)
        if isinstance(source, Path) and not source.is_file():
            raise ClipdError(f"there is no index at {source}")
        reader = stack.enter_context(closing(open_store(source, host=host)))
        read = _read(source, host)
        if reader.model is None or read.model is None:
            raise ClipdError(f"{source} holds no index yet (no model bound): nothing to move")
        writer = stack.enter_context(closing(open_store(target, host=host)))
        _check_target(writer, target, read.model, replace=replace)
        writer.bind_model(read.model)
        offline = _write(writer, read)
        thumbnails = _copy_thumbnails(reader, writer, [rec for rec, _ in read.files])
    return Moved(len(read.files), offline, len(read.failures), len(read.pairs), thumbnails,
                 read.model)  # fmt: skip


def _same(a: Database, b: Database) -> bool:
    if isinstance(a, Path) and isinstance(b, Path):
        return a.resolve() == b.resolve()
    return a == b


def _check_target(
    store: IndexStore, target: Database, model: ModelIdentity, *, replace: bool
) -> None:
    # Only this host's rows count: a shared database holds other machines' too.
    held = store.known_files("/") or store.known_failures("/")
    if held and not replace:
        raise ClipdError(
            f"{target} already holds an index of host {store.host!r}; "
            "pass --replace to overwrite it with the one being moved"
        )
    if store.model is not None and store.model != model and isinstance(target, PostgresDatabase):
        raise ClipdError(
            f"{target} holds vectors of the model {store.model.name} / {store.model.pretrained}, "
            f"the index being moved those of {model.name} / {model.pretrained}: one shared "
            "database holds one model's vectors"
        )


def _write(store: IndexStore, read: _Source) -> int:
    """Write files, failures, pairings and offline states; the number of offline files."""
    records = [rec for rec, _ in read.files]
    for start in range(0, len(records), _BATCH):
        store.write_batch(records[start : start + _BATCH], [])
    for start in range(0, len(read.failures), _BATCH):
        store.write_batch([], read.failures[start : start + _BATCH])
    if read.pairs:
        store.set_pairs(read.pairs, [])
    offline = [rec.path for rec, hidden in read.files if hidden]
    for path in offline:
        store.set_offline(path, True)
    return len(offline)


# -- reading each backend as it is stored ----------------------------------------------------


def _read(source: Database, host: str) -> _Source:
    if isinstance(source, PostgresDatabase):
        return _read_postgres(source, host)
    return _read_sqlite(source)


def _file(row: Sequence[Any], vector: bytes) -> tuple[FileRecord, bool]:
    path, size, mtime, inode, device, digest, width, height, state, taken, taken_read, pixels = row
    record = FileRecord(
        path, int(size), int(mtime), int(inode), int(device), bytes(digest), int(width),
        int(height), vector, None if taken is None else int(taken), bool(taken_read),
        None if pixels is None else bytes(pixels),
    )  # fmt: skip
    return record, state != "ok"


_FILE_COLUMNS = (
    "path, size, mtime_ns, inode, device, content_hash, width, height, state, taken_ns, "
    "taken_read, pixels"
)
_FAILURE_COLUMNS = "path, size, mtime_ns, error, message"
_PAIR_COLUMNS = "path, size, mtime_ns, partner, partner_size, partner_mtime_ns"


def _read_sqlite(path: Path) -> _Source:
    conn = sqlite.connect(path, readonly=True)
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        files = [
            _file(row[:-1], bytes(row[-1]))
            for row in conn.execute(
                f"SELECT {', '.join('f.' + c.strip() for c in _FILE_COLUMNS.split(','))}, "
                "v.embedding FROM files f JOIN vectors v ON v.rowid = f.id ORDER BY f.id"
            )
        ]
        failures = [FailureRecord(*row) for row in conn.execute(
            f"SELECT {_FAILURE_COLUMNS} FROM failures ORDER BY path")]  # fmt: skip
        pairs = [PairRecord(*row) for row in conn.execute(
            f"SELECT {_PAIR_COLUMNS} FROM raw_pairs ORDER BY path")]  # fmt: skip
    finally:
        conn.close()
    return _Source(_model(meta), files, failures, pairs)


def _read_postgres(database: PostgresDatabase, host: str) -> _Source:
    import psycopg

    with psycopg.connect(database.url) as conn, conn.transaction():
        meta: dict[str, str] = dict(conn.execute("SELECT key, value FROM clipd_meta").fetchall())
        files = [
            # real[] holds each float4 exactly: the vector comes back bit for bit.
            _file(row[:-1], np.asarray(row[-1], dtype="<f4").tobytes())
            for row in conn.execute(
                f"SELECT {_FILE_COLUMNS}, embedding::real[] FROM clipd_files"
                " WHERE host = %s AND embedding IS NOT NULL ORDER BY id",
                (host,),
            )
        ]
        failures = [FailureRecord(*row) for row in conn.execute(
            f"SELECT {_FAILURE_COLUMNS} FROM clipd_failures WHERE host = %s ORDER BY path",
            (host,))]  # fmt: skip
        pairs = [PairRecord(*row) for row in conn.execute(
            f"SELECT {_PAIR_COLUMNS} FROM clipd_raw_pairs WHERE host = %s ORDER BY path",
            (host,))]  # fmt: skip
    return _Source(_model(meta), files, failures, pairs)


def _model(meta: dict[str, str]) -> ModelIdentity | None:
    if "model_name" not in meta:
        return None
    return ModelIdentity(meta["model_name"], meta["model_pretrained"], int(meta["model_dim"]))


# -- thumbnails ------------------------------------------------------------------------------


def _copy_thumbnails(source: IndexStore, target: IndexStore, records: Sequence[FileRecord]) -> int:
    """Copy the kept thumbnails of the moved files (a SQLite index's cache file beside it, a
    shared index's table) into the target's keeping; one missing is made again on its view."""
    origin, destination = thumbnails_for(source), thumbnails_for(target)
    copied = 0
    try:
        for rec in records:
            data = origin.get(rec.path, rec.size, rec.mtime_ns)
            if data is not None:
                destination.put(rec.path, rec.size, rec.mtime_ns, data)
                copied += 1
    finally:
        origin.close()
        destination.close()
    return copied
