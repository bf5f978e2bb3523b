"""The SQLite store: file rows, their vectors (sqlite-vec vec0), model identity, failures.

One writer (serialised by a lock, short explicit transactions) and one reader connection per
thread; WAL lets searches run while a batch commits. Vectors are float32 bytes, L2-normalised,
so cosine distance is 1 - score.

Searches score an in-RAM copy of vec0 (clipd.matrix) once it is loaded, which happens on a
background thread at open so that serving never waits for it; until then, and when the copy is
turned off, they run vec0's KNN. Both paths take the files a search may return from the same
SQL (clipd.sqlfilter), so every filter behaves the same on both.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np

from clipd import sqlfilter, sqlite
from clipd.errors import StoreError, StoreUnwritable
from clipd.matrix import Floats, Ids, VectorMatrix
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

# sqlite-vec refuses a KNN `k` above this; deeper pages fall back to an exact scan.
KNN_MAX_K = 4096
# Rows per fetch while loading vectors into RAM.
_LOAD_CHUNK = 8192

# Ordered, named migrations; the schema version is how many have run (PRAGMA user_version).
# Append only: never edit one that has shipped. The vec0 table is not here because its width
# depends on the model; bind_model() creates it.
MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "0001_initial",
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE files (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            inode INTEGER NOT NULL,
            device INTEGER NOT NULL,
            content_hash BLOB NOT NULL,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            indexed_at REAL NOT NULL,
            state TEXT NOT NULL DEFAULT 'ok' CHECK (state IN ('ok', 'offline'))
        );
        CREATE INDEX files_content_hash ON files (content_hash);
        CREATE INDEX files_not_ok ON files (state) WHERE state != 'ok';
        CREATE TABLE failures (
            path TEXT PRIMARY KEY,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            error TEXT NOT NULL,
            message TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 1,
            last_seen REAL NOT NULL
        );
        """,
    ),
    (
        # Capture times, and RAW files left out for the JPEG of the same photo (clipd.pairs).
        # Rows indexed before this migration are marked unread; the indexer's
        # backfill reads their times from the files, without the model (clipd.backfill).
        "0002_capture_time",
        """
        ALTER TABLE files ADD COLUMN taken_ns INTEGER;
        ALTER TABLE files ADD COLUMN taken_read INTEGER NOT NULL DEFAULT 0;
        CREATE INDEX files_taken_unread ON files (id) WHERE taken_read = 0;
        CREATE TABLE raw_pairs (
            path TEXT PRIMARY KEY,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            partner TEXT NOT NULL,
            partner_size INTEGER NOT NULL,
            partner_mtime_ns INTEGER NOT NULL
        );
        CREATE INDEX raw_pairs_partner ON raw_pairs (partner);
        """,
    ),
    (
        # Pixel signatures (clipd.pixels) for duplicate detection. Rows indexed before this
        # have none (NULL); the indexer makes them later without running the model. An empty
        # blob marks a file it could not decode then.
        "0003_pixel_signature",
        """
        ALTER TABLE files ADD COLUMN pixels BLOB;
        CREATE INDEX files_unsigned ON files (id) WHERE pixels IS NULL;
        """,
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

# SQLite result codes (extended names start with these) that mean the storage, not the data,
# refused a write; the words a person reads first for each.
_STORAGE_FAULTS = (
    ("SQLITE_FULL", "disk full"),
    ("SQLITE_READONLY", "database is read-only"),
    ("SQLITE_IOERR", "disk I/O error (a failing disk, or a file size limit)"),
    ("SQLITE_CANTOPEN", "cannot open the database's files"),
)


def _create_private(path: Path) -> None:
    """Create the database file, if missing, readable by its owner alone (0600), in a folder
    only they can enter (0700) if clipd makes it: the index lists the user's file names.

    SQLite gives the -wal and -shm files the database file's permissions.
    """
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the database directory {path.parent}: {exc}") from exc
    _check_writable(path)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreError(f"cannot create the database {path}: {exc.strerror}") from exc


def _check_writable(path: Path) -> None:
    """Refuse a database clipd could open but never write (it must keep its index current)."""
    blocked = [p for p in (path, path.parent) if p.exists() and not os.access(p, os.W_OK)]
    if blocked:
        raise StoreError(
            f"database {path} is read-only ({blocked[0]} is not writable); clipd must write its "
            "index: make it writable, or set `database` (or $CLIPD_DATABASE) to a writable path"
        )


def _storage_fault(exc: BaseException) -> str | None:
    """What a SQLite error says about the storage, or None if it is not a storage fault."""
    name = getattr(exc, "sqlite_errorname", "")
    if not isinstance(exc, sqlite.Error) or not isinstance(name, str):
        return None
    return next((words for code, words in _STORAGE_FAULTS if name.startswith(code)), None)


def prefix_condition(prefixes: Sequence[str], column: str = "path") -> tuple[str, list[object]]:
    return sqlfilter.prefix_condition(prefixes, column, sqlfilter.SQLITE)


# What a hit is made of (_hit), in this order.
_HIT_COLUMNS = (
    "f.path, f.width, f.height, f.size, f.mtime_ns, f.taken_ns, "
    "(SELECT json_group_array(p.path) FROM raw_pairs p WHERE p.partner = f.path)"
)


_EVERYTHING = SearchFilter()


class Store:
    """The index database. Thread-safe: writes are serialised, reads use per-thread connections."""

    def __init__(self, path: Path, *, in_memory: bool = True, host: str = "") -> None:
        """Open (creating) the database; in_memory=False keeps searches on vec0 (benchmarks).
        Its files are `host`'s (config `host`): the machine this file is on."""
        self.path = path
        self._host = host
        _create_private(path)
        self._writer = sqlite.connect(path)
        self._writer.isolation_level = None  # explicit transactions only
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite.Connection] = []
        self._readers_lock = threading.Lock()
        self._in_memory = in_memory
        # The RAM copy of vec0, None until loaded. Changed only under _write_lock: a transaction
        # logs its vector changes in order (a vector, or None for a removal; `_reset` for a new
        # model), and they are applied once it commits.
        self._matrix: VectorMatrix | None = None
        self._changes: list[tuple[int, bytes | None]] = []
        self._reset: int | None = None
        self._closing = threading.Event()
        self._loader: threading.Thread | None = None
        # Write transactions committed so far: while it is unchanged, so are counts() and the
        # rest of what the status reports from the store.
        self.writes = 0
        try:
            self._check_integrity()
            self._migrate()
            self.model = self._read_model()
        except BaseException:
            self._writer.close()
            raise
        if self.model is not None and in_memory:
            self._loader = threading.Thread(target=self._load_matrix, name="clipd-store-load")
            self._loader.start()

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def location(self) -> str:
        return str(self.path)

    @property
    def host(self) -> str:
        """A SQLite file is one machine's index: every row is this host's."""
        return self._host

    @property
    def in_memory_ready(self) -> bool:
        """True once searches use the RAM copy of the vectors."""
        return self._matrix is not None

    @property
    def in_memory_bytes(self) -> int:
        """RAM held by the in-memory copy of the vectors."""
        matrix = self._matrix
        return matrix.nbytes if matrix is not None else 0

    def wait_in_memory(self) -> None:
        """Block until the RAM copy has loaded (or will not be: off, closing)."""
        if self._loader is not None:
            self._loader.join()

    def close(self) -> None:
        """Checkpoint the WAL into the main file and close every connection."""
        self._closing.set()
        self.wait_in_memory()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        with self._write_lock:
            try:
                self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite.Error as exc:
                log.warning("WAL checkpoint on close failed: %s", exc)
            self._writer.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite.Connection]:
        """One write transaction: all of it is committed, or none (StoreUnwritable if the
        storage refused it)."""
        with self._write_lock:
            conn = self._writer
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
                self.writes += 1
            except BaseException as exc:
                # A failed COMMIT may already have rolled back (SQLite does on a full disk).
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                self._changes.clear()
                self._reset = None
                fault = _storage_fault(exc)
                if fault is not None:
                    raise StoreUnwritable(f"{fault}: cannot write {self.path} ({exc})") from exc
                raise
            self._apply_to_matrix()

    def _apply_to_matrix(self) -> None:
        """Mirror the committed transaction's vector changes in RAM, in commit order."""
        changes, self._changes = self._changes, []
        if self._reset is not None:
            self._matrix = VectorMatrix(self._reset) if self._in_memory else None
            self._reset = None
        matrix = self._matrix
        if matrix is None:
            return
        # Runs of puts and of removals, applied as blocks, in their order.
        for is_put, run in itertools.groupby(changes, key=lambda change: change[1] is not None):
            items = list(run)
            ids = np.array([file_id for file_id, _ in items], dtype=np.int64)
            if is_put:
                matrix.put(ids, _as_matrix([v for _, v in items if v is not None], matrix.dim))
            else:
                matrix.discard(ids)

    def _load_matrix(self) -> None:
        """Runs on the loader thread: copy vec0 into RAM while holding writes back.

        Holding the write lock makes the copy exactly the committed state: no write can land
        between the read and the switch to the RAM path. Searches meanwhile use vec0.
        """
        started = time.perf_counter()
        with self._write_lock:
            model = self.model
            if model is None:
                return
            matrix = VectorMatrix(model.dim)
            cursor = self._reader().execute("SELECT rowid, embedding FROM vectors")
            try:
                while rows := cursor.fetchmany(_LOAD_CHUNK):
                    ids = np.array([file_id for file_id, _ in rows], dtype=np.int64)
                    matrix.put(ids, _as_matrix([blob for _, blob in rows], model.dim))
                    if self._closing.is_set():
                        return
            finally:
                cursor.close()  # ends the read transaction even when stopped half-way
            self._matrix = matrix
        log.info(
            "%d vectors loaded into RAM (%.0f MB) in %.1f s",
            len(matrix),
            matrix.nbytes / 1e6,
            time.perf_counter() - started,
        )

    def _read(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        """All rows of a query on this thread's reader connection.

        Always fetched to the end: a half-read statement would keep its read transaction, and
        so an old snapshot of the database, open on that connection.
        """
        return self._reader().execute(sql, params).fetchall()

    def _reader(self) -> sqlite.Connection:
        conn: sqlite.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite.connect(self.path)
            conn.isolation_level = None  # autocommit: each read sees the latest commit
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    # -- schema and model ------------------------------------------------------------------

    def _check_integrity(self) -> None:
        """Refuse a damaged file before anything reads or writes it (never recreate over it)."""
        try:
            rows = self._writer.execute("PRAGMA quick_check(1)").fetchall()
        except sqlite.Error as exc:
            problem = str(exc)
        else:
            lines = [ln for ln in str(rows[0][0]).splitlines() if not ln.startswith("***")]
            problem = "" if rows == [("ok",)] else (lines or ["integrity check failed"])[0]
        if problem:
            raise StoreError(
                f"{self.path} is damaged ({problem}); clipd leaves it untouched. Stop clipd and "
                "move the file aside (clipd then builds a new index, embedding every image "
                "again), or restore a backup of it"
            )

    def _migrate(self) -> None:
        try:
            current = self._writer.execute("PRAGMA user_version").fetchone()[0]
        except sqlite.Error as exc:
            raise StoreError(f"{self.path} is not a usable clipd database: {exc}") from exc
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was written by a newer clipd (schema {current}, this clipd knows "
                f"{SCHEMA_VERSION}); upgrade clipd, or set `database` to another file"
            )
        for version, (name, sql) in enumerate(MIGRATIONS[current:], start=current + 1):
            log.info("database migration %s", name)
            with self._transaction() as conn:
                for statement in sql.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version}")

    def _read_model(self) -> ModelIdentity | None:
        rows = dict(self._writer.execute("SELECT key, value FROM meta").fetchall())
        if "model_name" not in rows:
            return None
        return ModelIdentity(rows["model_name"], rows["model_pretrained"], int(rows["model_dim"]))

    def bind_model(self, identity: ModelIdentity) -> bool:
        """Make `identity` the database's model; returns True if existing vectors were dropped."""
        if identity == self.model:
            return False
        previous = self.model
        if previous is not None:
            log.warning(
                "database %s holds vectors of %s/%s; the config names %s/%s: re-embedding all",
                self.path,
                previous.name,
                previous.pretrained,
                identity.name,
                identity.pretrained,
            )
        with self._transaction() as conn:
            conn.execute("DROP TABLE IF EXISTS vectors")
            conn.execute("DELETE FROM files")
            conn.execute("DELETE FROM failures")
            conn.execute(
                f"CREATE VIRTUAL TABLE vectors USING vec0("
                f"embedding float[{int(identity.dim)}] distance_metric=cosine)"
            )
            self._reset = identity.dim
            conn.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [
                    ("model_name", identity.name),
                    ("model_pretrained", identity.pretrained),
                    ("model_dim", str(identity.dim)),
                ],
            )
        self.model = identity
        return previous is not None

    # -- writes ----------------------------------------------------------------------------

    def write_batch(self, records: Sequence[FileRecord], failures: Sequence[FailureRecord]) -> None:
        """Store embedded files and failures in one transaction: all of the batch or none."""
        now = time.time()
        with self._transaction() as conn:
            for rec in records:
                ((file_id,),) = conn.execute(
                    """
                    INSERT INTO files (path, size, mtime_ns, inode, device, content_hash,
                                       width, height, indexed_at, state, taken_ns, taken_read,
                                       pixels)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'ok', ?, ?, ?)
                    ON CONFLICT (path) DO UPDATE SET
                        size = excluded.size, mtime_ns = excluded.mtime_ns,
                        inode = excluded.inode, device = excluded.device,
                        content_hash = excluded.content_hash, width = excluded.width,
                        height = excluded.height, indexed_at = excluded.indexed_at,
                        state = 'ok', taken_ns = excluded.taken_ns,
                        taken_read = excluded.taken_read, pixels = excluded.pixels
                    RETURNING id
                    """,
                    (
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
                    ),
                ).fetchall()
                # vec0 has no upsert: replace the row's vector by delete + insert.
                conn.execute("DELETE FROM vectors WHERE rowid = ?", (file_id,))
                conn.execute(
                    "INSERT INTO vectors (rowid, embedding) VALUES (?, ?)", (file_id, rec.vector)
                )
                self._changes.append((file_id, rec.vector))
                conn.execute("DELETE FROM failures WHERE path = ?", (rec.path,))
            for fail in failures:
                # A file that changed into something unreadable no longer matches its old vector.
                self._delete_files(conn, [fail.path])
                conn.execute(
                    """
                    INSERT INTO failures (path, size, mtime_ns, error, message, attempts, last_seen)
                    VALUES (?, ?, ?, ?, ?, 1, ?)
                    ON CONFLICT (path) DO UPDATE SET
                        size = excluded.size, mtime_ns = excluded.mtime_ns,
                        error = excluded.error, message = excluded.message,
                        attempts = attempts + 1, last_seen = excluded.last_seen
                    """,
                    (fail.path, fail.size, fail.mtime_ns, fail.error, fail.message, now),
                )

    def remove(self, paths: Sequence[str]) -> int:
        """Forget files (row, vector, failure, pairings they stand for) in one transaction;
        returns rows removed."""
        with self._transaction() as conn:
            conn.executemany("DELETE FROM failures WHERE path = ?", [(p,) for p in paths])
            conn.executemany("DELETE FROM raw_pairs WHERE partner = ?", [(p,) for p in paths])
            return self._delete_files(conn, paths)

    def paired_paths(self, prefix: str) -> list[str]:
        """Files at or below `prefix` left out for the other file of their photo."""
        where, params = prefix_condition([prefix])
        return [path for (path,) in self._read(f"SELECT path FROM raw_pairs WHERE {where}", params)]

    def pairs(self, paths: Sequence[str]) -> dict[str, PairRecord]:
        """The recorded pairings that leave out any of these paths, by the path left out."""
        rows = self._read(
            "SELECT path, size, mtime_ns, partner, partner_size, partner_mtime_ns FROM raw_pairs "
            "WHERE path IN (SELECT value FROM json_each(?))",
            (json.dumps(list(paths)),),
        )
        return {row[0]: PairRecord(*row) for row in rows}

    def set_pairs(self, decided: Sequence[PairRecord], undecided: Sequence[str]) -> None:
        """Record pairings (replacing any of the same files), and forget those of `undecided`."""
        with self._transaction() as conn:
            conn.executemany("DELETE FROM raw_pairs WHERE path = ?", [(p,) for p in undecided])
            conn.executemany(
                "INSERT OR REPLACE INTO raw_pairs (path, size, mtime_ns, partner, partner_size, "
                "partner_mtime_ns) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (p.path, p.size, p.mtime_ns, p.partner, p.partner_size, p.partner_mtime_ns)
                    for p in decided
                ],
            )

    def _delete_files(self, conn: sqlite.Connection, paths: Sequence[str]) -> int:
        """Delete file rows and their vectors; returns how many existed."""
        removed = 0
        for path in paths:
            rows = conn.execute("DELETE FROM files WHERE path = ? RETURNING id", (path,)).fetchall()
            if rows:
                conn.execute("DELETE FROM vectors WHERE rowid = ?", (rows[0][0],))
                self._changes.append((rows[0][0], None))
                removed += 1
        return removed

    def move(self, source: str, destination: str) -> int:
        """Re-path a moved file, or every file below a moved directory; no vector changes.

        Rows already at the destination are replaced, as the move replaced those files. A move
        of something not indexed changes nothing (watchers report a directory's children moved
        after the directory itself: those must not delete what the first move put in place).
        """
        src_where, src_params = prefix_condition([source])
        dst_where, dst_params = prefix_condition([destination])
        with self._transaction() as conn:
            ((count,),) = conn.execute(
                f"SELECT (SELECT count(*) FROM files WHERE {src_where}) "
                f"+ (SELECT count(*) FROM failures WHERE {src_where})",
                src_params * 2,
            ).fetchall()
            if not count:
                return 0
            doomed = [
                p for (p,) in conn.execute(f"SELECT path FROM files WHERE {dst_where}", dst_params)
            ]
            self._delete_files(conn, doomed)
            conn.execute(f"DELETE FROM failures WHERE {dst_where}", dst_params)
            # The source itself, or the part of each path below it, becomes the destination.
            args = [destination, len(source.rstrip("/")) + 1, *src_params]
            moved: int = conn.execute(
                f"UPDATE files SET path = ? || substr(path, ?) WHERE {src_where}", args
            ).rowcount
            conn.execute(f"UPDATE failures SET path = ? || substr(path, ?) WHERE {src_where}", args)
            # A pairing of a moved file is decided again where it lands (the next scan).
            src_pairs, pair_params = prefix_condition([source], "partner")
            conn.execute(
                f"DELETE FROM raw_pairs WHERE {src_where} OR {src_pairs}", src_params + pair_params
            )
        return moved

    def set_offline(self, prefix: str, offline: bool) -> int:
        """Hide (or show again) every file at or below `prefix`; returns rows changed."""
        where, params = prefix_condition([prefix])
        state = "offline" if offline else "ok"
        # `state != 'ok'` lets bringing a root back online (done on every scan) use the
        # partial index of hidden rows instead of walking every row below the root.
        with self._transaction() as conn:
            cursor = conn.execute(
                f"UPDATE files SET state = ? WHERE state != ? AND {where}", [state, state, *params]
            )
            return cursor.rowcount

    # -- reads -----------------------------------------------------------------------------

    def known_files(self, prefix: str) -> dict[str, tuple[int, int]]:
        """(size, mtime_ns) of every indexed file at or below `prefix`."""
        where, params = prefix_condition([prefix])
        rows = self._read(f"SELECT path, size, mtime_ns FROM files WHERE {where}", params)
        return {path: (size, mtime_ns) for path, size, mtime_ns in rows}

    def indexed_outside(self, prefixes: Sequence[str]) -> list[str]:
        """Paths of indexed or failed files at or below none of `prefixes`."""
        if not prefixes:
            return self._paths("SELECT path FROM files UNION SELECT path FROM failures")
        where, params = prefix_condition(prefixes)
        return self._paths(
            f"SELECT path FROM files WHERE NOT {where} "
            f"UNION SELECT path FROM failures WHERE NOT {where}",
            [*params, *params],
        )

    def _paths(self, sql: str, params: Sequence[object] = ()) -> list[str]:
        return [path for (path,) in self._read(sql, params)]

    def known_failures(self, prefix: str) -> dict[str, tuple[int, int]]:
        """(size, mtime_ns) of every failed file at or below `prefix`, as last attempted."""
        where, params = prefix_condition([prefix])
        rows = self._read(f"SELECT path, size, mtime_ns FROM failures WHERE {where}", params)
        return {path: (size, mtime_ns) for path, size, mtime_ns in rows}

    def find_copy(self, content_hash: bytes, size: int) -> IndexedCopy | None:
        """What an indexed file with this content knows, to reuse for a copy of it."""
        if self.model is None:
            return None
        rows = self._read(
            "SELECT v.embedding, f.width, f.height, f.taken_ns, f.taken_read, f.pixels, f.path, "
            "f.mtime_ns FROM files f JOIN vectors v ON v.rowid = f.id "
            "WHERE f.content_hash = ? AND f.size = ? ORDER BY f.pixels IS NULL LIMIT 1",
            (content_hash, size),
        )
        if not rows:
            return None
        vector, width, height, taken_ns, taken_read, pixels, path, mtime_ns = rows[0]
        return IndexedCopy(
            bytes(vector),
            width,
            height,
            taken_ns,
            bool(taken_read),
            None if pixels is None else bytes(pixels),
            path,
            mtime_ns,
        )

    def unread_capture_times(self, limit: int) -> list[tuple[int, str, int, int]]:
        """(id, path, size, mtime_ns) of up to `limit` online files whose capture time was
        never read (offline ones wait until their disk is back)."""
        return [
            (file_id, path, size, mtime_ns)
            for file_id, path, size, mtime_ns in self._read(
                "SELECT id, path, size, mtime_ns FROM files "
                "WHERE taken_read = 0 AND state = 'ok' LIMIT ?",
                (limit,),
            )
        ]

    def set_capture_times(self, times: Sequence[tuple[int, int, int, int | None]]) -> None:
        """Store (id, size, mtime_ns, taken_ns) read by the backfill. A time read from a file
        that has changed since its row was written (another size or mtime) is not kept: the
        scan re-indexes that file, with its time."""
        with self._transaction() as conn:
            conn.executemany(
                "UPDATE files SET taken_read = 1, taken_ns = "
                "CASE WHEN size = ? AND mtime_ns = ? THEN ? ELSE taken_ns END WHERE id = ?",
                [(size, mtime, taken_ns, file_id) for file_id, size, mtime, taken_ns in times],
            )

    def forget_failures(self, error: str) -> int:
        """Drop failure records of one class, so that the next scan tries those files again."""
        with self._transaction() as conn:
            return conn.execute("DELETE FROM failures WHERE error = ?", (error,)).rowcount

    def is_indexed(self, path: str) -> bool:
        """Whether `path` is an indexed file (every file row has its vector)."""
        if self.model is None:
            return False
        return bool(self._read("SELECT 1 FROM files WHERE path = ?", (path,)))

    def vector_for(self, path: str) -> bytes | None:
        """The stored vector of an indexed file, or None."""
        if self.model is None:
            return None
        rows = self._read(
            "SELECT v.embedding FROM files f JOIN vectors v ON v.rowid = f.id WHERE f.path = ?",
            (path,),
        )
        return bytes(rows[0][0]) if rows else None

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
        """Best `limit` files after `offset` by cosine score among those `where` lets through.
        Always exact (the in-RAM matrix and vec0's KNN both compare every row), so `exact`
        changes nothing here."""
        if self.model is None or limit <= 0:
            return []
        matrix = self._matrix
        if matrix is not None:
            return self._search_matrix(
                matrix, vector, limit=limit, offset=offset, min_score=min_score, where=where
            )
        return self._search_vec0(
            vector, limit=limit, offset=offset, min_score=min_score, where=where
        )

    def _search_matrix(
        self,
        matrix: VectorMatrix,
        vector: bytes,
        *,
        limit: int,
        offset: int,
        min_score: float | None,
        where: SearchFilter,
    ) -> list[StoredHit]:
        condition, params = sqlfilter.filter_condition(where, sqlfilter.SQLITE, self._host)
        allowed = excluded = None
        if where.narrows:
            allowed = self._ids(f"SELECT f.id FROM files f WHERE {condition}", params)
        else:  # hidden rows are few, and found through their partial index
            excluded = self._ids("SELECT id FROM files WHERE state != 'ok'")
        query: Floats = np.frombuffer(vector, dtype=np.float32)
        ids, scores = matrix.top(query, limit + offset, allowed=allowed, excluded=excluded)
        if min_score is not None:
            ids, scores = ids[scores >= min_score], scores[scores >= min_score]
        # The filter again, on rows read now: a row changed since `allowed` was read drops out.
        rows = self._read(
            f"SELECT f.id, {_HIT_COLUMNS} FROM files f "
            f"WHERE f.id IN (SELECT value FROM json_each(?)) AND {condition}",
            [json.dumps(ids.tolist()), *params],
        )
        by_id = {row[0]: row[1:] for row in rows}
        hits = [
            _hit(float(score), by_id[file_id], self._host)
            for file_id, score in zip(ids.tolist(), scores.tolist(), strict=True)
            if file_id in by_id
        ]
        return hits[offset : offset + limit]

    def _ids(self, sql: str, params: Sequence[object] = ()) -> Ids:
        rows = self._read(sql, params)
        return np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))

    def _search_vec0(
        self,
        vector: bytes,
        *,
        limit: int,
        offset: int,
        min_score: float | None,
        where: SearchFilter,
    ) -> list[StoredHit]:
        max_distance = 2.0 if min_score is None else 1.0 - min_score
        hidden = self._read("SELECT count(*) FROM files WHERE state != 'ok'")[0][0]
        condition, params = sqlfilter.filter_condition(where, sqlfilter.SQLITE, self._host)
        columns = f"m.distance, {_HIT_COLUMNS}"
        if limit + offset <= KNN_MAX_K:
            # Filters go inside the KNN (rowid IN) so that k candidates all qualify.
            prefilter = ""
            if where.narrows or hidden:
                prefilter = f"AND rowid IN (SELECT f.id FROM files f WHERE {condition})"
            sql = f"""
                WITH m AS (
                    SELECT rowid, distance FROM vectors
                    WHERE embedding MATCH ? AND k = ? {prefilter}
                )
                SELECT {columns} FROM m JOIN files f ON f.id = m.rowid
                WHERE m.distance <= ? ORDER BY m.distance LIMIT ? OFFSET ?
            """
            args: list[object] = [vector, limit + offset, *params, max_distance, limit, offset]
        else:
            sql = f"""
                WITH m AS (
                    SELECT rowid, vec_distance_cosine(embedding, ?) AS distance FROM vectors
                )
                SELECT {columns} FROM m JOIN files f ON f.id = m.rowid
                WHERE {condition} AND m.distance <= ? ORDER BY m.distance LIMIT ? OFFSET ?
            """
            args = [vector, *params, max_distance, limit, offset]
        rows = self._read(sql, args)
        return [_hit(1.0 - distance, row, self._host) for distance, *row in rows]

    # -- duplicate detection ---------------------------------------------------------------

    def vectors(self, where: SearchFilter = _EVERYTHING) -> tuple[Ids, Floats]:
        """(file ids, their vectors as rows) of the files `where` lets through: a copy."""
        if self.model is None:
            return np.empty(0, dtype=np.int64), np.empty((0, 0), dtype=np.float32)
        condition, params = sqlfilter.filter_condition(where, sqlfilter.SQLITE, self._host)
        matrix = self._matrix
        if matrix is not None:
            return matrix.rows(self._ids(f"SELECT f.id FROM files f WHERE {condition}", params))
        rows = self._read(
            f"SELECT f.id, v.embedding FROM files f JOIN vectors v ON v.rowid = f.id "
            f"WHERE {condition}",
            params,
        )
        ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        return ids, _as_matrix([row[1] for row in rows], self.model.dim)

    def same_content(self, where: SearchFilter = _EVERYTHING) -> list[list[int]]:
        """Ids of the files `where` lets through, grouped by content hash and size (2 or more)."""
        condition, params = sqlfilter.filter_condition(where, sqlfilter.SQLITE, self._host)
        rows = self._read(
            f"SELECT json_group_array(f.id) FROM files f WHERE {condition} "
            f"GROUP BY f.content_hash, f.size HAVING count(*) > 1",
            params,
        )
        return [json.loads(ids) for (ids,) in rows]

    def candidates(self, ids: Sequence[int]) -> dict[int, DuplicateCandidate]:
        """These files (those still indexed and online), by id."""
        rows = self._read(
            f"SELECT f.id, {_HIT_COLUMNS}, f.pixels FROM files f "
            "WHERE f.id IN (SELECT value FROM json_each(?)) AND f.state = 'ok'",
            [json.dumps(list(ids))],
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
                tuple(json.loads(paired)),
                None if pixels is None else bytes(pixels),
            )
            for file_id, path, width, height, size, mtime_ns, taken_ns, paired, pixels in rows
        }

    def count_unsigned(self, where: SearchFilter = _EVERYTHING) -> int:
        """How many files `where` lets through have no pixel signature yet."""
        condition, params = sqlfilter.filter_condition(where, sqlfilter.SQLITE, self._host)
        ((count,),) = self._read(
            f"SELECT count(*) FROM files f WHERE f.pixels IS NULL AND {condition}", params
        )
        return int(count)

    def unsigned_files(self, after_id: int, limit: int) -> list[tuple[int, str, int, int]]:
        """(id, path, size, mtime_ns) of up to `limit` files past `after_id` without pixels."""
        return self._read(
            "SELECT id, path, size, mtime_ns FROM files "
            "WHERE pixels IS NULL AND id > ? AND state = 'ok' ORDER BY id LIMIT ?",
            (after_id, limit),
        )

    def set_pixels(self, signatures: Sequence[tuple[int, int, int, bytes]]) -> None:
        """Store (id, size, mtime_ns, pixels) signatures of files that have not changed since."""
        with self._transaction() as conn:
            conn.executemany(
                "UPDATE files SET pixels = ?4 WHERE id = ?1 AND size = ?2 AND mtime_ns = ?3",
                signatures,
            )

    def counts(self) -> Counts:
        ((indexed, offline, failed),) = self._read(
            "SELECT count(*) FILTER (WHERE state = 'ok'), count(*) FILTER (WHERE state != 'ok'), "
            "(SELECT count(*) FROM failures) FROM files"
        )
        return Counts(indexed=indexed, offline=offline, failed=failed)

    def failures(self, *, limit: int, offset: int = 0) -> tuple[list[Failure], int]:
        """A page of failures, most recent first, and their total count."""
        rows = self._read(
            "SELECT path, error, message, attempts, last_seen FROM failures "
            "ORDER BY last_seen DESC, path LIMIT ? OFFSET ?",
            (limit, offset),
        )
        ((total,),) = self._read("SELECT count(*) FROM failures")
        return [Failure(*row) for row in rows], total

    def stored_thumbnail(self, host: str, path: str) -> bytes | None:
        """None: a SQLite index holds one machine's files, and no other machine's thumbnails."""
        return None

    def stored_vector(self, host: str, path: str) -> bytes | None:
        """None: a SQLite index holds one machine's files, and no other machine's vectors."""
        return None

    def size_bytes(self) -> int:
        """Bytes on disk: the database plus its WAL."""
        total = 0
        for suffix in ("", "-wal"):
            with suppress(FileNotFoundError):
                total += Path(f"{self.path}{suffix}").stat().st_size
        return total


def _hit(score: float, row: Sequence[Any], host: str) -> StoredHit:
    """A hit from a row of _HIT_COLUMNS, on `host`."""
    path, width, height, size, mtime_ns, taken_ns, paired = row
    taken = None if taken_ns is None else taken_ns / 1e9
    return StoredHit(
        path, score, width, height, size, mtime_ns / 1e9, taken, tuple(json.loads(paired)), host
    )


def _as_matrix(blobs: Sequence[bytes], dim: int) -> Floats:
    """float32 vector blobs as one (len, dim) matrix."""
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dim)
