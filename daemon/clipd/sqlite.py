"""Open SQLite connections that have sqlite-vec loaded.

Some Pythons (pyenv builds, macOS's system Python) ship a `sqlite3` that cannot load
extensions. We pick one SQLite binding once, at import: the stdlib when it can load extensions
and is new enough, else `sqlean.py` (a drop-in sqlite3 build with extension loading). One
process never loads sqlite-vec through two different SQLite libraries.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import ModuleType
from typing import cast

import sqlite_vec

from clipd.errors import StoreError

# `k = ?` KNN works on any version; 3.41 is where vec0's planner hooks are reliable.
_MIN_VERSION = (3, 41, 0)


def _stdlib_usable() -> bool:
    version = tuple(int(part) for part in sqlite3.sqlite_version.split("."))
    return hasattr(sqlite3.Connection, "enable_load_extension") and version >= _MIN_VERSION


def _choose_driver() -> ModuleType:
    if _stdlib_usable():
        return sqlite3
    try:
        import sqlean
    except ImportError:
        return sqlite3  # connect() raises a StoreError that says what to install
    return cast(ModuleType, sqlean)


driver: ModuleType = _choose_driver()
# Exceptions of whichever binding was chosen; callers catch these, not sqlite3's.
Error: type[Exception] = driver.Error
IntegrityError: type[Exception] = driver.IntegrityError
OperationalError: type[Exception] = driver.OperationalError
Connection = sqlite3.Connection  # sqlean's class has the same interface; used for typing only


def connect(path: Path | str, *, readonly: bool = False) -> Connection:
    """A connection with sqlite-vec loaded, WAL and foreign keys on, autocommit off."""
    target = f"file:{path}?mode=ro" if readonly else str(path)
    try:
        conn = cast(
            Connection,
            driver.connect(target, uri=readonly, timeout=30.0, check_same_thread=False),
        )
    except driver.Error as exc:
        raise StoreError(f"cannot open database {path}: {exc}") from exc
    try:
        _load_vec(conn)
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA busy_timeout = 30000")
        if not readonly:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
    except driver.DatabaseError as exc:
        conn.close()
        raise StoreError(
            f"{path} is not a usable clipd database ({exc}); move it aside or set "
            "`database` in the config to another file (clipd never overwrites it)"
        ) from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _load_vec(conn: Connection) -> None:
    if not hasattr(conn, "enable_load_extension"):
        raise StoreError(
            "this Python's sqlite3 cannot load extensions and sqlean.py is not installed; "
            "run: pip install sqlean.py"
        )
    conn.enable_load_extension(True)
    try:
        sqlite_vec.load(conn)
    finally:
        conn.enable_load_extension(False)
