"""One clipd per database and per socket: a lock file beside the database, a probe of the socket.

The lock is an `flock` held for the life of the process, so the kernel releases it when the
process ends, however it ends: a crash never leaves a stale lock behind. The lock file names its
holder (pid and command) so that the refusal can say who and what to do. The file itself stays:
deleting it would let two processes lock two different files of the same name.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import stat
from pathlib import Path

from clipd.errors import AlreadyRunning, ClipdError
from clipd.pgurl import PostgresDatabase
from clipd_api.paths import runtime_dir

log = logging.getLogger(__name__)

_STOP_HINT = "stop it first (systemctl --user stop clipd)"


def lock_path(database: Path) -> Path:
    return database.with_name(database.name + ".lock")


def file_lock(database: Path | PostgresDatabase, command: str) -> DatabaseLock | None:
    """The lock file of a SQLite database; None for PostgreSQL, whose store takes its host's
    lock in the database itself (clipd.pgstore), since its other daemons run elsewhere."""
    return DatabaseLock(database, command) if isinstance(database, Path) else None


class DatabaseLock:
    """An exclusive lock on a database, taken by `clipd serve` and `clipd index`."""

    def __init__(self, database: Path, command: str) -> None:
        self.path = lock_path(database)
        self._database = database
        self._command = command
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise AlreadyRunning naming the holder."""
        try:
            # The database's folder, if this makes it: private, as store.Store makes it.
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ClipdError(f"cannot create the lock file {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise ClipdError(f"cannot lock {self.path}: {exc.strerror}") from exc
            raise AlreadyRunning(self._refusal(holder)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {self._command}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def _refusal(self, holder: tuple[int, str] | None) -> str:
        who = f"another clipd (pid {holder[0]}, `clipd {holder[1]}`)" if holder else "another clipd"
        if holder and holder[1] == "serve" and self._command == "index":
            return (
                f"{who} is serving the database {self._database}; ask it to index instead: "
                "clipq reindex PATH..."
            )
        return (
            f"{who} is using the database {self._database}; {_STOP_HINT}, "
            "or set `database` to another file"
        )


def _read_holder(fd: int) -> tuple[int, str] | None:
    """(pid, command) written by the lock's holder, or None if unreadable."""
    try:
        pid, command = os.pread(fd, 200, 0).decode().split()
        return int(pid), command
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def prepare_socket(path: Path) -> None:
    """A private directory for the socket; refuse a live daemon there, clear a stale socket."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ClipdError(f"cannot create the socket directory {path.parent}: {exc}") from exc
    _make_private(path.parent)
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ClipdError(f"{path} exists and is not a socket; remove it or set `socket` elsewhere")
    if _socket_is_live(path):
        raise AlreadyRunning(
            f"another clipd is already serving on {path}; {_STOP_HINT}, "
            "or set `socket` to another path"
        )
    log.info("removing stale socket %s left by an earlier run", path)
    path.unlink()


def _make_private(directory: Path) -> None:
    """Tighten clipd's own socket directory to 0700 if it was made looser (by hand, or by an
    old version); a directory the user chose for `socket`, such as /tmp, is left alone, since
    the socket itself is 0600 anyway."""
    if directory != runtime_dir():
        return
    info = directory.stat()
    if info.st_uid == os.getuid() and info.st_mode & 0o077:
        log.warning("making %s private (it was %o): only you may reach clipd's socket",
                    directory, stat.S_IMODE(info.st_mode))  # fmt: skip
        directory.chmod(0o700)


def _socket_is_live(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError as exc:
            if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                return False
            raise ClipdError(f"cannot check socket {path}: {exc.strerror}") from exc
        return True


def remove_socket(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove socket %s: %s", path, exc.strerror)
