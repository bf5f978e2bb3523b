"""The shared store's schema and SQL: migrations, pgvector's wire format, filters as SQL.

clipd.pgstore uses these; they hold no connection and no state of their own.
"""

from __future__ import annotations

import hashlib
import logging
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import psycopg
from psycopg.adapt import Buffer, Dumper, Loader
from psycopg.pq import Format

from clipd import sqlfilter
from clipd.errors import StoreError
from clipd.pgurl import PostgresDatabase
from clipd.records import SearchFilter, StoredHit

log = logging.getLogger(__name__)

# Ordered, named migrations, each recorded in clipd_migrations when it has run. Append only.
# The vector column and its index are not here: their width depends on the model (bind_model).
MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "0001_initial",
        """
        CREATE TABLE clipd_meta (key text PRIMARY KEY, value text NOT NULL);
        CREATE TABLE clipd_files (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            host text NOT NULL,
            path text COLLATE "C" NOT NULL,
            size bigint NOT NULL,
            mtime_ns bigint NOT NULL,
            inode numeric(20) NOT NULL,
            device numeric(20) NOT NULL,
            content_hash bytea NOT NULL,
            width integer NOT NULL,
            height integer NOT NULL,
            indexed_at double precision NOT NULL,
            state text NOT NULL DEFAULT 'ok' CHECK (state IN ('ok', 'offline')),
            taken_ns bigint,
            taken_read boolean NOT NULL DEFAULT false,
            pixels bytea,
            UNIQUE (host, path)
        );
        CREATE INDEX clipd_files_content ON clipd_files (content_hash, size);
        CREATE INDEX clipd_files_hidden ON clipd_files (host) WHERE state <> 'ok';
        CREATE INDEX clipd_files_taken_unread ON clipd_files (host, id) WHERE NOT taken_read;
        CREATE INDEX clipd_files_unsigned ON clipd_files (host, id) WHERE pixels IS NULL;
        CREATE TABLE clipd_failures (
            host text NOT NULL,
            path text COLLATE "C" NOT NULL,
            size bigint NOT NULL,
            mtime_ns bigint NOT NULL,
            error text NOT NULL,
            message text NOT NULL,
            attempts integer NOT NULL DEFAULT 1,
            last_seen double precision NOT NULL,
            PRIMARY KEY (host, path)
        );
        CREATE TABLE clipd_raw_pairs (
            host text NOT NULL,
            path text COLLATE "C" NOT NULL,
            size bigint NOT NULL,
            mtime_ns bigint NOT NULL,
            partner text COLLATE "C" NOT NULL,
            partner_size bigint NOT NULL,
            partner_mtime_ns bigint NOT NULL,
            PRIMARY KEY (host, path)
        );
        CREATE INDEX clipd_raw_pairs_partner ON clipd_raw_pairs (host, partner);
        """,
    ),
    (
        # Thumbnails live in the shared database, so that every machine can show every
        # machine's hits; stamped with the file's size and mtime, as clipd.thumbcache's.
        "0002_thumbnails",
        """
        CREATE TABLE clipd_thumbnails (
            host text NOT NULL,
            path text COLLATE "C" NOT NULL,
            size bigint NOT NULL,
            mtime_ns bigint NOT NULL,
            data bytea NOT NULL,
            PRIMARY KEY (host, path)
        );
        """,
    ),
    (
        # A filter that lets few rows through is searched exactly (PostgresStore.search): these
        # find those rows without reading every row of every host. The expression is the one
        # clipd.sqlfilter writes for --since/--until.
        "0003_filter_indexes",
        """
        CREATE INDEX clipd_files_path ON clipd_files (path);
        CREATE INDEX clipd_files_mtime ON clipd_files (mtime_ns);
        CREATE INDEX clipd_files_when ON clipd_files ((coalesce(taken_ns, mtime_ns)));
        """,
    ),
    (
        # Each host counts its write transactions here, so that a daemon can tell whether any
        # machine changed the index since it last counted it (PostgresStore.writes).
        "0004_changes",
        """
        CREATE TABLE clipd_changes (
            host text PRIMARY KEY,
            writes bigint NOT NULL
        );
        """,
    ),
)
TABLES = (
    "clipd_meta",
    "clipd_files",
    "clipd_failures",
    "clipd_raw_pairs",
    "clipd_thumbnails",
    "clipd_changes",
    "clipd_migrations",
)
# pgvector's iterative index scans (hnsw.iterative_scan) came with 0.8.0.
MIN_PGVECTOR = (0, 8)
# Serialises migrations and model binding between daemons starting at once.
SCHEMA_LOCK = 0x636C697064  # "clipd"


def migrate(conn: psycopg.Connection[Any], database: PostgresDatabase) -> None:
    """Bring the database's clipd tables up to date, one transaction per migration; refuse
    a database a newer clipd has migrated. Daemons starting at once take turns."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.errors.InsufficientPrivilege as exc:
            raise StoreError(
                f"the database {database} lacks the pgvector extension and this user "
                "may not create it; as a superuser, run in that database: "
                "CREATE EXTENSION vector"
            ) from exc
        ((version,),) = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        ).fetchall()
        if _version(version) < MIN_PGVECTOR:
            raise StoreError(
                f"the database {database} has pgvector {version}; clipd needs "
                f"{'.'.join(map(str, MIN_PGVECTOR))} or newer (its iterative index scans): "
                "install a newer pgvector on the server, then run ALTER EXTENSION vector UPDATE"
            )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS clipd_migrations "
            "(name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {name for (name,) in conn.execute("SELECT name FROM clipd_migrations")}
    known = [name for name, _ in MIGRATIONS]
    newer = sorted(done - set(known))
    if newer:
        raise StoreError(
            f"the database {database} was written by a newer clipd (migration "
            f"{newer[-1]} is unknown here); upgrade clipd, or set `database` to another one"
        )
    for name, sql in MIGRATIONS:
        if name in done:
            continue
        log.info("database migration %s", name)
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            if conn.execute("SELECT 1 FROM clipd_migrations WHERE name = %s", (name,)).fetchall():
                continue  # another daemon ran it meanwhile
            conn.execute(sql)
            conn.execute("INSERT INTO clipd_migrations (name) VALUES (%s)", (name,))


def _version(text: str) -> tuple[int, ...]:
    """(0, 8, 6) from "0.8.6"; parts that are not numbers end it."""
    parts = []
    for part in text.split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)


class Vector:
    """A float32 vector blob on its way into a `vector` parameter (written `%b::vector`)."""

    __slots__ = ("blob",)

    def __init__(self, blob: bytes) -> None:
        self.blob = blob


class VectorDumper(Dumper):
    """pgvector's binary format: dim and a spare field (uint16 each), big-endian float32s."""

    format = Format.BINARY

    def dump(self, obj: Any) -> Buffer:
        floats = np.frombuffer(obj.blob, dtype="<f4")
        return struct.pack(">HH", len(floats), 0) + floats.astype(">f4").tobytes()


class VectorLoader(Loader):
    """A binary `vector` as the float32 little-endian blob the rest of clipd uses."""

    format = Format.BINARY

    def load(self, data: Buffer) -> bytes:
        (dim,) = struct.unpack_from(">H", data)
        return np.frombuffer(data, dtype=">f4", count=dim, offset=4).astype("<f4").tobytes()


def prefix_condition(prefixes: Sequence[str], column: str) -> tuple[str, list[object]]:
    return sqlfilter.prefix_condition(prefixes, column, sqlfilter.POSTGRES)


def filter_condition(where: SearchFilter) -> tuple[str, list[object]]:
    return sqlfilter.filter_condition(where, sqlfilter.POSTGRES)


# What a hit is made of (_hit), in this order.
HIT_COLUMNS = (
    "f.path, f.width, f.height, f.size, f.mtime_ns, f.taken_ns, "
    "ARRAY(SELECT p.path FROM clipd_raw_pairs p "
    "WHERE p.host = f.host AND p.partner = f.path ORDER BY p.path), f.host"
)


def hit(score: float, row: Sequence[Any]) -> StoredHit:
    """A hit from a row of HIT_COLUMNS."""
    path, width, height, size, mtime_ns, taken_ns, paired, host = row
    taken = None if taken_ns is None else taken_ns / 1e9
    return StoredHit(
        path, score, width, height, size, mtime_ns / 1e9, taken, tuple(paired), host=host
    )


def host_key(host: str) -> int:
    """The advisory lock key of a host: 64 bits of a hash of its name."""
    digest = hashlib.sha256(f"clipd host {host}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)
