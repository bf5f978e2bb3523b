"""The shared store: PostgreSQL with pgvector, one index for several machines (`host`s).

Every row carries the host that indexed it, and the (host, path) pair is its key: a daemon
writes, reconciles, moves and hides only its own host's rows, while searches see every host's.
A host's daemon holds a session advisory lock for its host on its writer connection, so a
second live daemon with the same host is refused, and one restarted after a crash (whose
connection died with it) takes its name back.

Vectors are float32 (`vector(dim)`) so that a reused or moved vector stays bit-exact. The HNSW
index is over their half-precision cast (`halfvec`: half the index's size) with inner-product
ops, which is the cosine on these L2-normalised vectors. A search is exact (a scan, ordered by
the float32 score) while the table is small or the page deep; otherwise approximate by the
index with pgvector's iterative scan, so that filters that let few rows through still fill the
page, and exact again when the index runs out of candidates before the page is full.

A connection that fails raises StoreUnavailable (a StoreUnwritable: the indexer holds its batch
and retries) and is dropped; the next call connects again. A write batch is one transaction
of upserts on (host, path), so a retried batch never duplicates a row.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import psycopg

from clipd.errors import AlreadyRunning, ClipdError, StoreError, StoreUnavailable, StoreUnwritable
from clipd.matrix import Floats, Ids
from clipd.pgschema import (
    HIT_COLUMNS,
    SCHEMA_LOCK,
    TABLES,
    Vector,
    VectorDumper,
    VectorLoader,
    filter_condition,
    hit,
    host_key,
    migrate,
    prefix_condition,
)
from clipd.pgurl import PostgresDatabase, redact
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

log = logging.getLogger(__name__)

# Below this many rows a search scans them all (exact, and as fast as the index there).
EXACT_BELOW = 20_000
# pgvector caps hnsw.ef_search at 1000: deeper pages are exact scans.
_MAX_EF_SEARCH = 1000
# With the index's m 24 / ef_construction 128, 200 found 0.981 of the true top 20 at 1M
# clustered rows, p50 4.5 ms (make bench-pgvector, README "The shared store").
_MIN_EF_SEARCH = 200
# How long an estimate of the table's size stands before it is read again.
_SIZE_TTL_S = 10.0
_CONNECT_TIMEOUT_S = 10
# How long taking this host's lock waits for a daemon that has just stopped to let it go.
_HOST_LOCK_WAIT_S = 2.0
# How long other hosts' write count stands before it is read again: the status and the
# duplicate answers, cached while `writes` holds, show their changes at most this late.
OTHERS_FRESH_S = 1.0

_EVERYTHING = SearchFilter()


class _DeadConnection(StoreUnavailable):
    """A reader connection that had worked turned out dead: worth one more try on a new one."""


class PostgresStore:
    """The index in a PostgreSQL database, for one host. Thread-safe: writes are serialised on
    one connection (which holds the host's lock), reads use one connection per thread."""

    def __init__(
        self, database: PostgresDatabase, *, host: str, exact_below: int = EXACT_BELOW
    ) -> None:
        self._database = database
        self._host = host
        self.exact_below = exact_below
        self._write_lock = threading.Lock()
        self._writer: psycopg.Connection[Any] | None = None
        # What `writes` is made of: this store's own write transactions, counted at once,
        # and the other hosts' total, read from clipd_changes at most every OTHERS_FRESH_S.
        self._own_writes = 0
        self._others = (-math.inf, 0)  # (when read, their writes): not read yet
        self._others_lock = threading.Lock()
        self._unreadable = itertools.count(-1, -1)  # never a count: a server away caches nothing
        self._local = threading.local()
        self._readers: list[psycopg.Connection[Any]] = []
        self._readers_lock = threading.Lock()
        self._vector_oid: int | None = None
        self._size_estimate = (0.0, -1.0)  # (when read, rows)
        self.model: ModelIdentity | None = None
        # Set by the first connection that got through: the schema is migrated, the host's
        # lock held, the model read. Until then every call tries to connect again.
        self._ready = False
        with self._write_lock:
            try:
                self._writer_connection()
            except StoreUnavailable as exc:
                # A server down or unreachable at start (a NAS still booting) is waited for: the
                # daemon starts, says so, and connects when it is back.
                log.warning("%s; clipd goes on and connects when it is back", exc)

    # -- lifecycle and connections ---------------------------------------------------------

    @property
    def location(self) -> str:
        return str(self._database)

    @property
    def host(self) -> str:
        return self._host

    def close(self) -> None:
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        with self._write_lock:
            if self._writer is not None:
                self._writer.close()  # ends the session: the host's lock goes with it
                self._writer = None

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(
                self._database.url,
                autocommit=True,
                connect_timeout=_CONNECT_TIMEOUT_S,
                application_name=f"clipd {self._host}"[:63],
            )
        except psycopg.Error as exc:
            raise self._unavailable(exc) from exc
        conn.adapters.register_dumper(Vector, VectorDumper)
        if self._vector_oid is not None:
            conn.adapters.register_loader(self._vector_oid, VectorLoader)
        return conn

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        # psycopg's messages may quote the connection string: never show its password.
        problem = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))
        return StoreUnavailable(f"PostgreSQL at {self._database} is unavailable: {problem}")

    def _writer_connection(self) -> psycopg.Connection[Any]:
        """The writer connection, connecting (and taking the host's lock) when it has none;
        the first one to get through also migrates the schema and reads the model."""
        conn = self._writer
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        self._writer = None
        first = not self._ready
        conn = self._connect()
        try:
            if not self._take_host_lock(conn):
                raise self._host_taken(first)
            if first:
                migrate(conn, self._database)
                self.model = self._read_model(conn)
            self._load_vector_type(conn)
        except psycopg.OperationalError as exc:
            conn.close()
            raise self._unavailable(exc) from exc
        except BaseException:
            conn.close()
            raise
        self._writer = conn
        self._ready = True
        return conn

    def _take_host_lock(self, conn: psycopg.Connection[Any]) -> bool:
        """Take the host's session lock, waiting up to _HOST_LOCK_WAIT_S for a holder that is
        going away: the server ends a closed or killed daemon's session, and lets its lock
        go, a moment after the connection is gone (a restart at once found it still held)."""
        wait_ms = round(_HOST_LOCK_WAIT_S * 1000)
        try:
            with conn.transaction():  # the lock outlives it: it is the session's
                conn.execute(f"SET LOCAL lock_timeout = {wait_ms}")
                conn.execute("SELECT pg_advisory_lock(%s)", (host_key(self._host),))
        except psycopg.errors.LockNotAvailable:
            return False
        return True

    def _host_taken(self, first: bool) -> ClipdError:
        message = (
            f"another clipd with host {self._host!r} is using the database {self._database}; "
            "stop it first, or give this machine its own name with `host:` in the config"
        )
        return AlreadyRunning(message) if first else StoreUnavailable(message)

    def _load_vector_type(self, conn: psycopg.Connection[Any]) -> None:
        if self._vector_oid is None:
            ((oid,),) = conn.execute("SELECT 'vector'::regtype::oid").fetchall()
            self._vector_oid = int(oid)
        conn.adapters.register_loader(self._vector_oid, VectorLoader)

    def _reader(self) -> psycopg.Connection[Any]:
        if not self._ready:  # the schema may not be there yet: the writer makes it first
            with self._write_lock:
                self._writer_connection()
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is not None and (conn.closed or conn.broken):
            self._forget_reader(conn)
            conn = None
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def _forget_reader(self, conn: psycopg.Connection[Any]) -> None:
        conn.close()
        self._local.conn = None
        with self._readers_lock:
            if conn in self._readers:
                self._readers.remove(conn)

    def _read(
        self, sql: str, params: Sequence[object] = (), *, settings: Mapping[str, str] | None = None
    ) -> list[Any]:
        """All rows of a query on this thread's reader connection (autocommit: each read sees
        the latest commit), with these settings for it alone.

        A connection found dead (the server restarted, or cut it) is replaced and the read
        made again, once: a read is safe to repeat, and a search should not fail for a
        connection that a new one replaces at once. StoreUnavailable if that fails too.
        """
        try:
            return self._read_once(sql, params, settings)
        except _DeadConnection:
            return self._read_once(sql, params, settings)

    def _read_once(
        self, sql: str, params: Sequence[object], settings: Mapping[str, str] | None
    ) -> list[Any]:
        fresh = getattr(self._local, "conn", None) is None
        conn = self._reader()
        try:
            with conn.cursor(binary=True) as cursor:
                if not settings:
                    return cursor.execute(sql, params).fetchall()
                with conn.transaction():
                    for name, value in settings.items():
                        cursor.execute("SELECT set_config(%s, %s, true)", (name, value))
                    return cursor.execute(sql, params).fetchall()
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self._forget_reader(conn)
            unavailable = self._unavailable(exc)
            if fresh:
                raise unavailable from exc
            raise _DeadConnection(str(unavailable)) from exc

    @contextmanager
    def _transaction(self, *, counted: bool = True) -> Iterator[psycopg.Cursor[Any]]:
        """One write transaction: all of it is committed, or none. Counted in `writes` unless
        it only keeps thumbnails, which change no count (SQLite keeps them in a file apart)."""
        with self._write_lock:
            conn = self._writer_connection()
            try:
                with conn.transaction(), conn.cursor(binary=True) as cursor:
                    yield cursor
                    if counted:
                        cursor.execute(
                            "INSERT INTO clipd_changes (host, writes) VALUES (%s, 1) ON CONFLICT "
                            "(host) DO UPDATE SET writes = clipd_changes.writes + 1",
                            (self._host,),
                        )
                if counted:
                    self._own_writes += 1
            except psycopg.errors.InsufficientResources as exc:  # disk full, out of memory
                raise StoreUnwritable(f"PostgreSQL refused the write: {redact(str(exc))}") from exc
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                conn.close()
                self._writer = None
                raise self._unavailable(exc) from exc

    # -- schema and model ------------------------------------------------------------------

    @staticmethod
    def _read_model(conn: psycopg.Connection[Any]) -> ModelIdentity | None:
        rows = dict(conn.execute("SELECT key, value FROM clipd_meta").fetchall())
        if "model_name" not in rows:
            return None
        return ModelIdentity(rows["model_name"], rows["model_pretrained"], int(rows["model_dim"]))

    def bind_model(self, identity: ModelIdentity) -> bool:
        """Make `identity` the database's model. A database already holding another model's
        vectors is refused (StoreError): other machines may be using it. Never drops vectors."""
        if identity == self.model:
            return False
        with self._transaction() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            rows = dict(cursor.execute("SELECT key, value FROM clipd_meta").fetchall())
            if "model_name" in rows:
                held = ModelIdentity(
                    rows["model_name"], rows["model_pretrained"], int(rows["model_dim"])
                )
                if held != identity:
                    raise StoreError(self._model_refusal(held, identity))
            else:
                dim = int(identity.dim)
                cursor.execute(f"ALTER TABLE clipd_files ADD COLUMN embedding vector({dim})")
                # Kept in the row, not TOASTed out of it (a 512-d vector is just over the
                # threshold): exact scans read one page per row (make bench-pgvector uses PLAIN;
                # MAIN still lets a row too big for a page, a long path, move out).
                cursor.execute("ALTER TABLE clipd_files ALTER COLUMN embedding SET STORAGE MAIN")
                # m 24 / ef_construction 128: at 1M rows recall@20 0.981 at ef_search 200, where
                # pgvector's defaults (16 / 64) level off near 0.9 (README "The shared store").
                cursor.execute(
                    "CREATE INDEX clipd_files_hnsw ON clipd_files USING hnsw "
                    f"((embedding::halfvec({dim})) halfvec_ip_ops) "
                    "WITH (m = 24, ef_construction = 128)"
                )
                cursor.executemany(
                    "INSERT INTO clipd_meta (key, value) VALUES (%s, %s)",
                    [
                        ("model_name", identity.name),
                        ("model_pretrained", identity.pretrained),
                        ("model_dim", str(dim)),
                    ],
                )
        self.model = identity
        return False

    def _model_refusal(self, held: ModelIdentity, wanted: ModelIdentity) -> str:
        return (
            f"the database {self._database} holds vectors of the model {held.name} / "
            f"{held.pretrained} ({held.dim}-d), and this clipd's config names {wanted.name} / "
            f"{wanted.pretrained}: one shared database holds one model's vectors. Set `model` "
            "to the database's model, or point `database` at another database (README: "
            "Shared index on PostgreSQL, switching the model)"
        )

    # -- writes ----------------------------------------------------------------------------

    def write_batch(self, records: Sequence[FileRecord], failures: Sequence[FailureRecord]) -> None:
        """Store embedded files and failures in one transaction: all of the batch or none."""
        now = time.time()
        host = self._host
        with self._transaction() as cursor:
            if records:
                cursor.executemany(
                    """
                    INSERT INTO clipd_files (host, path, size, mtime_ns, inode, device,
                        content_hash, width, height, indexed_at, state, taken_ns, taken_read,
                        pixels, embedding)
                    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'ok', %s, %s, %s, %b::vector)
                    ON CONFLICT (host, path) DO UPDATE SET
                        size = excluded.size, mtime_ns = excluded.mtime_ns,
                        inode = excluded.inode, device = excluded.device,
                        content_hash = excluded.content_hash, width = excluded.width,
                        height = excluded.height, indexed_at = excluded.indexed_at,
                        state = 'ok', taken_ns = excluded.taken_ns,
                        taken_read = excluded.taken_read, pixels = excluded.pixels,
                        embedding = excluded.embedding
                    """,
                    [
                        (
                            host,
                            rec.path,
                            rec.size,
                            rec.mtime_ns,
                            rec.inode,
                            rec.device,
                            rec.content_hash,
                            rec.width,
                            rec.height,
                            now,
                            rec.taken_ns,
                            rec.taken_read,
                            rec.pixels,
                            Vector(rec.vector),
                        )
                        for rec in records
                    ],
                )
                cursor.execute(
                    "DELETE FROM clipd_failures WHERE host = %s AND path = ANY(%s)",
                    (host, [rec.path for rec in records]),
                )
            if failures:
                # A file that changed into something unreadable no longer matches its old vector.
                cursor.execute(
                    "DELETE FROM clipd_files WHERE host = %s AND path = ANY(%s)",
                    (host, [fail.path for fail in failures]),
                )
                cursor.executemany(
                    """
                    INSERT INTO clipd_failures
                        (host, path, size, mtime_ns, error, message, attempts, last_seen)
                    VALUES (%s, %s, %s, %s, %s, %s, 1, %s)
                    ON CONFLICT (host, path) DO UPDATE SET
                        size = excluded.size, mtime_ns = excluded.mtime_ns,
                        error = excluded.error, message = excluded.message,
                        attempts = clipd_failures.attempts + 1, last_seen = excluded.last_seen
                    """,
                    [(host, f.path, f.size, f.mtime_ns, f.error, f.message, now) for f in failures],
                )

    def remove(self, paths: Sequence[str]) -> int:
        """Forget this host's files (row, vector, failure, pairings they stand for)."""
        paths = list(paths)
        with self._transaction() as cursor:
            cursor.execute(
                "DELETE FROM clipd_failures WHERE host = %s AND path = ANY(%s)", (self._host, paths)
            )
            cursor.execute(
                "DELETE FROM clipd_raw_pairs WHERE host = %s AND partner = ANY(%s)",
                (self._host, paths),
            )
            cursor.execute(
                "DELETE FROM clipd_thumbnails WHERE host = %s AND path = ANY(%s)",
                (self._host, paths),
            )
            cursor.execute(
                "DELETE FROM clipd_files WHERE host = %s AND path = ANY(%s)", (self._host, paths)
            )
            return cursor.rowcount

    def move(self, source: str, destination: str) -> int:
        """Re-path a moved file, or every file below a moved directory; no vector changes.

        As clipd.store.Store.move: rows already at the destination are replaced, and a move of
        something not indexed changes nothing.
        """
        src_where, src_params = prefix_condition([source], "path")
        dst_where, dst_params = prefix_condition([destination], "path")
        mine = [self._host]
        with self._transaction() as cursor:
            ((count,),) = cursor.execute(
                f"SELECT (SELECT count(*) FROM clipd_files WHERE host = %s AND {src_where}) "
                f"+ (SELECT count(*) FROM clipd_failures WHERE host = %s AND {src_where})",
                [*mine, *src_params, *mine, *src_params],
            ).fetchall()
            if not count:
                return 0
            for table in ("clipd_files", "clipd_failures", "clipd_thumbnails"):
                cursor.execute(
                    f"DELETE FROM {table} WHERE host = %s AND {dst_where}", [*mine, *dst_params]
                )
            args = [destination, len(source.rstrip("/")) + 1, *mine, *src_params]
            cursor.execute(
                "UPDATE clipd_files SET path = %s || substr(path, %s) "
                f"WHERE host = %s AND {src_where}",
                args,
            )
            moved = cursor.rowcount
            for table in ("clipd_failures", "clipd_thumbnails"):
                cursor.execute(
                    f"UPDATE {table} SET path = %s || substr(path, %s) "
                    f"WHERE host = %s AND {src_where}",
                    args,
                )
            # A pairing of a moved file is decided again where it lands (the next scan).
            pair_where, pair_params = prefix_condition([source], "partner")
            cursor.execute(
                f"DELETE FROM clipd_raw_pairs WHERE host = %s AND ({src_where} OR {pair_where})",
                [*mine, *src_params, *pair_params],
            )
        return moved

    def set_offline(self, prefix: str, offline: bool) -> int:
        """Hide (or show again) this host's files at or below `prefix`; returns rows changed."""
        where, params = prefix_condition([prefix], "path")
        state = "offline" if offline else "ok"
        with self._transaction() as cursor:
            cursor.execute(
                f"UPDATE clipd_files SET state = %s WHERE host = %s AND state <> %s AND {where}",
                [state, self._host, state, *params],
            )
            return cursor.rowcount

    def set_pairs(self, decided: Sequence[PairRecord], undecided: Sequence[str]) -> None:
        """Record pairings (replacing any of the same files), and forget those of `undecided`."""
        with self._transaction() as cursor:
            cursor.execute(
                "DELETE FROM clipd_raw_pairs WHERE host = %s AND path = ANY(%s)",
                (self._host, list(undecided)),
            )
            if decided:
                cursor.executemany(
                    """
                    INSERT INTO clipd_raw_pairs (host, path, size, mtime_ns, partner,
                        partner_size, partner_mtime_ns) VALUES (%s, %s, %s, %s, %s, %s, %s)
                    ON CONFLICT (host, path) DO UPDATE SET size = excluded.size,
                        mtime_ns = excluded.mtime_ns, partner = excluded.partner,
                        partner_size = excluded.partner_size,
                        partner_mtime_ns = excluded.partner_mtime_ns
                    """,
                    [
                        (
                            self._host,
                            p.path,
                            p.size,
                            p.mtime_ns,
                            p.partner,
                            p.partner_size,
                            p.partner_mtime_ns,
                        )
                        for p in decided
                    ],
                )

    def set_capture_times(self, times: Sequence[tuple[int, int, int, int | None]]) -> None:
        """Store (id, size, mtime_ns, taken_ns) read by the backfill, unless the file changed."""
        if not times:
            return
        with self._transaction() as cursor:
            cursor.executemany(
                "UPDATE clipd_files SET taken_read = true, taken_ns = "
                "CASE WHEN size = %s AND mtime_ns = %s THEN %s ELSE taken_ns END "
                "WHERE id = %s AND host = %s",
                [
                    (size, mtime, taken, file_id, self._host)
                    for file_id, size, mtime, taken in times
                ],
            )

    def set_pixels(self, signatures: Sequence[tuple[int, int, int, bytes]]) -> None:
        """Store (id, size, mtime_ns, pixels) signatures of files that have not changed since."""
        if not signatures:
            return
        with self._transaction() as cursor:
            cursor.executemany(
                "UPDATE clipd_files SET pixels = %s "
                "WHERE id = %s AND size = %s AND mtime_ns = %s AND host = %s",
                [(pixels, i, size, mtime, self._host) for i, size, mtime, pixels in signatures],
            )

    def forget_failures(self, error: str) -> int:
        with self._transaction() as cursor:
            cursor.execute(
                "DELETE FROM clipd_failures WHERE host = %s AND error = %s", (self._host, error)
            )
            return cursor.rowcount

    # -- what this host indexed ------------------------------------------------------------

    def known_files(self, prefix: str) -> dict[str, tuple[int, int]]:
        where, params = prefix_condition([prefix], "path")
        rows = self._read(
            f"SELECT path, size, mtime_ns FROM clipd_files WHERE host = %s AND {where}",
            [self._host, *params],
        )
        return {path: (size, mtime_ns) for path, size, mtime_ns in rows}

    def known_failures(self, prefix: str) -> dict[str, tuple[int, int]]:
        where, params = prefix_condition([prefix], "path")
        rows = self._read(
            f"SELECT path, size, mtime_ns FROM clipd_failures WHERE host = %s AND {where}",
            [self._host, *params],
        )
        return {path: (size, mtime_ns) for path, size, mtime_ns in rows}

    def indexed_outside(self, prefixes: Sequence[str]) -> list[str]:
        where, params = prefix_condition(prefixes, "path") if prefixes else ("false", [])
        rows = self._read(
            f"SELECT path FROM clipd_files WHERE host = %s AND NOT {where} "
            f"UNION SELECT path FROM clipd_failures WHERE host = %s AND NOT {where}",
            [self._host, *params, self._host, *params],
        )
        return [path for (path,) in rows]

    def paired_paths(self, prefix: str) -> list[str]:
        where, params = prefix_condition([prefix], "path")
        rows = self._read(
            f"SELECT path FROM clipd_raw_pairs WHERE host = %s AND {where}", [self._host, *params]
        )
        return [path for (path,) in rows]

    def pairs(self, paths: Sequence[str]) -> dict[str, PairRecord]:
        rows = self._read(
            "SELECT path, size, mtime_ns, partner, partner_size, partner_mtime_ns "
            "FROM clipd_raw_pairs WHERE host = %s AND path = ANY(%s)",
            (self._host, list(paths)),
        )
        return {row[0]: PairRecord(*row) for row in rows}

    def unread_capture_times(self, limit: int) -> list[tuple[int, str, int, int]]:
        rows = self._read(
            "SELECT id, path, size, mtime_ns FROM clipd_files "
            "WHERE host = %s AND NOT taken_read AND state = 'ok' LIMIT %s",
            (self._host, limit),
        )
        return [tuple(row) for row in rows]

    def unsigned_files(self, after_id: int, limit: int) -> list[tuple[int, str, int, int]]:
        rows = self._read(
            "SELECT id, path, size, mtime_ns FROM clipd_files WHERE host = %s "
            "AND pixels IS NULL AND id > %s AND state = 'ok' ORDER BY id LIMIT %s",
            (self._host, after_id, limit),
        )
        return [tuple(row) for row in rows]

    def find_copy(self, content_hash: bytes, size: int) -> IndexedCopy | None:
        """What an indexed file with this content knows, from any host: a photo copied to
        another machine is not embedded again."""
        if self.model is None:
            return None
        rows = self._read(
            "SELECT embedding, width, height, taken_ns, taken_read, pixels FROM clipd_files "
            "WHERE content_hash = %s AND size = %s ORDER BY pixels IS NULL LIMIT 1",
            (content_hash, size),
        )
        if not rows:
            return None
        vector, width, height, taken_ns, taken_read, pixels = rows[0]
        return IndexedCopy(vector, width, height, taken_ns, taken_read, pixels)

    @property
    def writes(self) -> int:
        """A number that changes with every write transaction but a thumbnail's: this host's
        at once, other hosts' within OTHERS_FRESH_S (their total is read no more often).
        While the server is away, a new negative number on every call, so that nothing is
        taken as unchanged."""
        with self._others_lock:
            read_at, others = self._others
            if time.monotonic() - read_at >= OTHERS_FRESH_S:
                try:
                    ((others,),) = self._read(
                        "SELECT coalesce(sum(writes), 0)::bigint FROM clipd_changes "
                        "WHERE host <> %s",
                        (self._host,),
                    )
                except StoreUnavailable:
                    return next(self._unreadable)
                self._others = (time.monotonic(), int(others))
        # Both parts only grow, so their sum is new after any write, this host's or another's.
        return self._own_writes + int(others)

    def is_indexed(self, path: str) -> bool:
        if self.model is None:
            return False
        rows = self._read(
            "SELECT 1 FROM clipd_files WHERE host = %s AND path = %s", (self._host, path)
        )
        return bool(rows)

    def vector_for(self, path: str) -> bytes | None:
        if self.model is None:
            return None
        rows = self._read(
            "SELECT embedding FROM clipd_files WHERE host = %s AND path = %s", (self._host, path)
        )
        return bytes(rows[0][0]) if rows else None

    def failures(self, *, limit: int, offset: int = 0) -> tuple[list[Failure], int]:
        rows = self._read(
            "SELECT path, error, message, attempts, last_seen FROM clipd_failures "
            "WHERE host = %s ORDER BY last_seen DESC, path LIMIT %s OFFSET %s",
            (self._host, limit, offset),
        )
        ((total,),) = self._read(
            "SELECT count(*) FROM clipd_failures WHERE host = %s", (self._host,)
        )
        return [Failure(*row) for row in rows], total

    # -- searches --------------------------------------------------------------------------

    def search(
        self,
        vector: bytes,
        *,
        limit: int,
        offset: int = 0,
        min_score: float | None = None,
        where: SearchFilter = _EVERYTHING,
        exact: bool = False,
    ) -> list[StoredHit]:
        """Best `limit` files of any host after `offset` by cosine score, among those `where`
        lets through; `exact`: every one of them compared, never the HNSW index."""
        if self.model is None or limit <= 0:
            return []
        wanted = limit + offset
        condition, params = filter_condition(where)
        hits: list[StoredHit] | None = None
        if (
            not exact
            and wanted <= _MAX_EF_SEARCH
            and self._worth_the_index(where, condition, params)
        ):
            hits = self._search_index(vector, wanted, condition, params)
        if hits is None:
            hits = self._search_exact(vector, wanted, condition, params)
        if min_score is not None:
            hits = [hit for hit in hits if hit.score >= min_score]
        return hits[offset : offset + limit]

    def _search_exact(
        self, vector: bytes, wanted: int, condition: str, params: list[object]
    ) -> list[StoredHit]:
        query = Vector(vector)
        rows = self._read(
            f"SELECT -(f.embedding <#> %b::vector), {HIT_COLUMNS} FROM clipd_files f "
            f"WHERE {condition} ORDER BY f.embedding <#> %b::vector, f.id LIMIT %s",
            [query, *params, query, wanted],
        )
        return [hit(score, row) for score, *row in rows]

    def _search_index(
        self, vector: bytes, wanted: int, condition: str, params: list[object]
    ) -> list[StoredHit] | None:
        """Approximate, by the HNSW index; None when it found fewer than `wanted` candidates
        (a filter that lets few rows through ran the iterative scan out): search exactly."""
        assert self.model is not None
        dim = int(self.model.dim)
        query = Vector(vector)
        ef_search = max(_MIN_EF_SEARCH, min(_MAX_EF_SEARCH, 2 * wanted))
        # The index, not a scan of every row, once the table is this big: a filter the planner
        # misjudges must not turn a search into a full scan, and one that leaves too few rows
        # for the index ends in the exact search anyway. The index's order is the half-precision
        # one, and relaxed: the rows are ranked again by float32.
        rows = self._read(
            f"""
            WITH c AS MATERIALIZED (
                SELECT f.id FROM clipd_files f WHERE {condition}
                ORDER BY f.embedding::halfvec({dim}) <#> %b::vector::halfvec({dim})
                LIMIT %s
            )
            SELECT -(f.embedding <#> %b::vector), {HIT_COLUMNS}
            FROM c JOIN clipd_files f ON f.id = c.id
            ORDER BY f.embedding <#> %b::vector, f.id
            """,
            [*params, query, wanted, query, query],
            settings={
                "hnsw.ef_search": str(ef_search),
                "hnsw.iterative_scan": "relaxed_order",
                "enable_seqscan": "off",
            },
        )
        if len(rows) < wanted:
            return None
        return [hit(score, row) for score, *row in rows]

    def _worth_the_index(self, where: SearchFilter, condition: str, params: list[object]) -> bool:
        """Whether the HNSW index beats scanning the rows a search may return: only when they
        are many. A selective filter is much faster exact (its btree, then a sort of the few
        rows that pass: 8 ms against 517 ms for the iterative scan at 0.1% of 1M rows, README
        "The shared store"), so the planner's estimate of the rows that pass decides."""
        if self._rows_estimate() < self.exact_below:
            return False
        if where == _EVERYTHING:
            return True
        ((plan,),) = self._read(
            f"EXPLAIN (FORMAT JSON) SELECT 1 FROM clipd_files f WHERE {condition}", params
        )
        return float(plan[0]["Plan"]["Plan Rows"]) >= self.exact_below

    def _rows_estimate(self) -> float:
        """About how many rows the table holds (the planner's estimate, re-read now and then)."""
        read_at, rows = self._size_estimate
        if time.monotonic() - read_at > _SIZE_TTL_S:
            ((rows,),) = self._read(
                "SELECT reltuples::float8 FROM pg_class WHERE oid = 'clipd_files'::regclass"
            )
            rows = max(rows, 0.0)  # -1: never analysed, so small
            self._size_estimate = (time.monotonic(), rows)
        return rows

    # -- duplicate detection: this host's files --------------------------------------------

    def vectors(self, where: SearchFilter = _EVERYTHING) -> tuple[Ids, Floats]:
        if self.model is None:
            return np.empty(0, dtype=np.int64), np.empty((0, 0), dtype=np.float32)
        condition, params = filter_condition(where)
        rows = self._read(
            f"SELECT f.id, f.embedding FROM clipd_files f WHERE f.host = %s AND {condition} "
            "ORDER BY f.id",
            [self._host, *params],
        )
        ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        blob = b"".join(row[1] for row in rows)
        return ids, np.frombuffer(blob, dtype=np.float32).reshape(len(rows), self.model.dim)

    def same_content(self, where: SearchFilter = _EVERYTHING) -> list[list[int]]:
        condition, params = filter_condition(where)
        rows = self._read(
            f"SELECT array_agg(f.id ORDER BY f.id) FROM clipd_files f "
            f"WHERE f.host = %s AND {condition} "
            "GROUP BY f.content_hash, f.size HAVING count(*) > 1",
            [self._host, *params],
        )
        return [list(ids) for (ids,) in rows]

    def candidates(self, ids: Sequence[int]) -> dict[int, DuplicateCandidate]:
        rows = self._read(
            f"SELECT f.id, {HIT_COLUMNS}, f.pixels FROM clipd_files f "
            "WHERE f.id = ANY(%s) AND f.host = %s AND f.state = 'ok'",
            (list(ids), self._host),
        )
        return {
            file_id: DuplicateCandidate(
                file_id,
                path,
                width,
                height,
                size,
                mtime_ns / 1e9,
                None if taken_ns is None else taken_ns / 1e9,
                tuple(paired),
                pixels,
            )
            for file_id, path, width, height, size, mtime_ns, taken_ns, paired, _, pixels in rows
        }

    def count_unsigned(self, where: SearchFilter = _EVERYTHING) -> int:
        condition, params = filter_condition(where)
        ((count,),) = self._read(
            f"SELECT count(*) FROM clipd_files f WHERE f.host = %s AND f.pixels IS NULL "
            f"AND {condition}",
            [self._host, *params],
        )
        return int(count)

    # -- thumbnails ------------------------------------------------------------------------

    def thumbnail(self, host: str, path: str) -> tuple[int, int, bytes] | None:
        """(size, mtime_ns, JPEG) of the kept thumbnail of any host's file."""
        rows = self._read(
            "SELECT size, mtime_ns, data FROM clipd_thumbnails WHERE host = %s AND path = %s",
            (host, path),
        )
        return (rows[0][0], rows[0][1], rows[0][2]) if rows else None

    def put_thumbnail(self, path: str, size: int, mtime_ns: int, data: bytes) -> None:
        """Keep the thumbnail of this host's file as it is now (size, mtime_ns)."""
        with self._transaction(counted=False) as cursor:
            cursor.execute(
                """
                INSERT INTO clipd_thumbnails (host, path, size, mtime_ns, data)
                VALUES (%s, %s, %s, %s, %s)
                ON CONFLICT (host, path) DO UPDATE SET size = excluded.size,
                    mtime_ns = excluded.mtime_ns, data = excluded.data
                """,
                (self._host, path, size, mtime_ns, data),
            )

    def stored_thumbnail(self, host: str, path: str) -> bytes | None:
        kept = self.thumbnail(host, path)
        return kept[2] if kept is not None else None

    def stored_vector(self, host: str, path: str) -> bytes | None:
        if self.model is None:
            return None
        rows = self._read(
            "SELECT embedding FROM clipd_files WHERE host = %s AND path = %s", (host, path)
        )
        return bytes(rows[0][0]) if rows else None

    def forget_stray_thumbnails(self) -> int:
        """Drop this host's thumbnails of files it no longer indexes; how many."""
        with self._transaction(counted=False) as cursor:
            cursor.execute(
                "DELETE FROM clipd_thumbnails t WHERE t.host = %s AND NOT EXISTS "
                "(SELECT 1 FROM clipd_files f WHERE f.host = t.host AND f.path = t.path)",
                (self._host,),
            )
            return cursor.rowcount

    # -- status ----------------------------------------------------------------------------

    def counts(self) -> Counts:
        """Files of every host (what searches see); failures of this host's (what it can fix)."""
        ((indexed, offline, failed),) = self._read(
            "SELECT count(*) FILTER (WHERE state = 'ok'), count(*) FILTER (WHERE state <> 'ok'), "
            "(SELECT count(*) FROM clipd_failures WHERE host = %s) FROM clipd_files",
            (self._host,),
        )
        return Counts(indexed=indexed, offline=offline, failed=failed)

    def size_bytes(self) -> int:
        """Bytes the index's tables and their indexes take in the database."""
        ((total,),) = self._read(
            "SELECT coalesce(sum(pg_total_relation_size(to_regclass(name))), 0)::bigint "
            "FROM unnest(%s::text[]) AS name",
            (list(TABLES),),
        )
        return int(total)


class SharedThumbnails:
    """clipd.thumbcache.Thumbnails in the shared database: this host's thumbnails, which
    other machines show for its hits. Like the local cache, a thumbnail that cannot be read or
    kept is logged and skipped: it never holds up indexing or a view."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self._warned = False

    def get(self, path: str, size: int, mtime_ns: int) -> bytes | None:
        try:
            kept = self._store.thumbnail(self._store.host, path)
        except StoreError as exc:
            self._fail("read", exc)
            return None
        return kept[2] if kept is not None and kept[:2] == (size, mtime_ns) else None

    def put(self, path: str, size: int, mtime_ns: int, data: bytes) -> None:
        try:
            self._store.put_thumbnail(path, size, mtime_ns, data)
        except StoreError as exc:
            self._fail("keep", exc)

    def keep_only(self, paths: Collection[str]) -> int:
        """Forget this host's thumbnails of files no longer indexed (the database knows which:
        `paths` is for the local cache, which does not)."""
        try:
            return self._store.forget_stray_thumbnails()
        except StoreError as exc:
            self._fail("clean up", exc)
            return 0

    def close(self) -> None:
        """Nothing to close: the store's connections are the store's."""

    def _fail(self, what: str, exc: StoreError) -> None:
        if not self._warned:
            log.warning(
                "cannot %s thumbnails in the shared index (%s); going on without", what, exc
            )
        self._warned = True
