"""The test PostgreSQL itself: pgvector loads, data outlives a restart and a crash, databases
are fresh, and a cut connection is really cut."""

from __future__ import annotations

import psycopg
import pytest
from pgserver import PgServer


def test_pgvector_extension_works(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")
        row = conn.execute("SELECT '[1,0,0]'::vector <=> '[0,1,0]'::vector").fetchone()
    assert row == (1.0,)


def test_each_test_gets_an_empty_database(pg_url: str, pg_server: PgServer) -> None:
    with psycopg.connect(pg_url) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone()
        extensions = conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'vector'")
        assert tables == (0,)
        assert extensions.fetchone() == (0,)
    assert pg_url != pg_server.url(), "a test's database is not the server's own"


def _count(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM kept").fetchone()
    assert row is not None
    return int(row[0])


def test_committed_rows_outlive_restart_and_crash(private_pg_server: PgServer) -> None:
    server = private_pg_server
    url = server.url(server.create_database())
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (n int)")
        conn.execute("INSERT INTO kept VALUES (1)")
    port = server.port
    server.restart()
    assert server.port == port
    assert _count(url) == 1

    conn = psycopg.connect(url, autocommit=True)
    conn.execute("INSERT INTO kept VALUES (2)")
    server.kill()
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")
    conn.close()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2).close()
    server.start()
    assert _count(url) == 2, "a commit acknowledged before the crash was lost"


def test_terminate_backends_cuts_open_connections(pg_server: PgServer, pg_url: str) -> None:
    dbname = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert pg_server.terminate_backends(dbname) == 1
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
