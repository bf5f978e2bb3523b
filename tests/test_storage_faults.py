"""Storage faults: a full disk, a file size limit, a read-only or damaged database.

Whatever the storage does, nothing partial is written, good files are never marked failed,
searches keep being answered, and a database clipd cannot trust is refused, never replaced.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import resource
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ConfigWriter
from harness import (
    MODEL,
    DaemonProcess,
    assert_one_to_one,
    in_process_daemon,
    picture,
    record,
    run_clipd,
    unit_vectors,
    wait_until,
    wait_until_indexed,
)

from clipd import indexer, sqlite
from clipd.errors import StoreError, StoreUnwritable
from clipd.store import Store
from clipq import Client


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A real size-limited file system at `where`; skips the test where mounting is not allowed."""
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def fill(directory: Path) -> Path:
    """Write a file into `directory` until the file system is full; returns it."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as sink:
        written = 1
        with contextlib.suppress(OSError):
            while written:
                written = sink.write(b"\0" * 4096) or 0
    assert os.statvfs(directory).f_bfree == 0
    return filler


def truncate_wal(database: Path) -> None:
    """Checkpoint the WAL to zero bytes, so that the next commit must grow a file."""
    conn = sqlite.connect(database)
    try:
        assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    finally:
        conn.close()


def test_disk_full_holds_the_batch_keeps_searching_and_resumes(
    tmp_path: Path,
    write_config: ConfigWriter,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(indexer, "_RETRY_FIRST_S", 0.2)
    caplog.set_level(logging.INFO, logger="clipd.indexer")
    root = tmp_path / "pics"
    old = [picture(root / f"old{n}.png", seed=n) for n in range(2)]
    with tmpfs(tmp_path / "small", "2m") as disk:
        config = write_config([root], database=str(disk / "index.db"), settle_seconds=0.1)
        with in_process_daemon(config, root, 2) as live:
            truncate_wal(live.config.database_file)
            filler = fill(disk)
            new = [picture(root / f"new{n}.png", "blue", "square", seed=n) for n in range(3)]
            wait_until(lambda: "disk full: cannot write" in caplog.text, "a refused write")
            with Client(timeout=10) as client:
                hits = client.search("a red circle", limit=10).hits
            assert {h.path for h in hits} == {str(p) for p in old}, "searches go on"
            assert live.store.counts().failed == 0, "good files must not be marked failed"

            filler.unlink()
            live.wait_for(lambda: len(live.indexed()) == 5, "the held batch written")
            assert live.indexed() == {str(p) for p in old + new}
            assert live.store.counts().failed == 0
            assert "the database accepts writes again" in caplog.text
            live.assert_consistent()


@pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="needs prlimit (Linux)")
def test_a_file_size_limit_is_survived_not_fatal(
    tmp_path: Path, write_config: ConfigWriter
) -> None:
    root = tmp_path / "pics"
    picture(root / "old.png")
    config = write_config([root], settle_seconds=0.1)
    database = tmp_path / "index.db"
    # The limit applies to every file the daemon writes: its log goes through a pipe.
    daemon = DaemonProcess(config)
    try:
        wait_until_indexed(1, 0)
        truncate_wal(database)
        # Below one WAL frame: the next commit cannot grow the WAL; reads are unaffected.
        unlimited = resource.RLIM_INFINITY
        resource.prlimit(daemon.pid, resource.RLIMIT_FSIZE, (4096, unlimited))
        picture(root / "new.png", "blue", "square")
        fault = "disk I/O error (a failing disk, or a file size limit): cannot write"
        wait_until(lambda: fault in daemon.output, "a refused write")
        assert daemon.popen.poll() is None, "SIGXFSZ must not kill the daemon"
        with Client(timeout=10) as client:
            assert len(client.search("a red circle").hits) == 1
            # The status says what is wrong, not only the log.
            assert fault in client.status().problem
        resource.prlimit(daemon.pid, resource.RLIMIT_FSIZE, (unlimited, unlimited))
        wait_until_indexed(2, 0)
        with Client(timeout=10) as client:
            assert client.status().problem == ""
    finally:
        code = daemon.stop()
    assert code == 0, daemon.output
    assert_one_to_one(database)


def make_read_only(database: Path) -> None:
    """Make the database's file system (as root) or file and folder (otherwise) read-only."""
    if os.geteuid() != 0:
        database.chmod(0o444)
        database.parent.chmod(0o555)
        return
    # Root writes whatever the modes say: only a read-only mount stops it.
    subprocess.run(["mount", "-o", "remount,ro", str(database.parent)], check=True)


def test_a_read_only_database_is_refused_with_what_to_do(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "4m") as disk:
        database = disk / "index.db"
        Store(database).close()
        before = database.read_bytes()
        make_read_only(database)
        try:
            with pytest.raises(StoreError, match="is read-only") as caught:
                Store(database)
            assert "set `database` (or $CLIPD_DATABASE) to a writable path" in str(caught.value)
            assert database.read_bytes() == before
        finally:
            with contextlib.suppress(OSError):
                database.parent.chmod(0o755)


def damaged_database(tmp_path: Path, damage: str) -> Path:
    """A valid index with some rows, then damaged: garbage in the middle, or cut short."""
    database = tmp_path / "index.db"
    root = tmp_path / "pics"
    store = Store(database)
    try:
        store.bind_model(MODEL)
        vectors = unit_vectors(400)
        store.write_batch([record(f"{root}/{n}.jpg", v) for n, v in enumerate(vectors)], [])
    finally:
        store.close()
    data = database.read_bytes()
    middle = len(data) // 2
    if damage == "garbage":
        data = data[:middle] + random.Random(damage).randbytes(8192) + data[middle + 8192 :]
    else:
        data = data[:middle]
    database.write_bytes(data)
    return database


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_database_is_refused_and_left_untouched(tmp_path: Path, damage: str) -> None:
    database = damaged_database(tmp_path, damage)
    before = database.read_bytes()
    with pytest.raises(StoreError) as caught:
        Store(database)
    message = str(caught.value)
    assert str(database) in message
    assert "move" in message
    assert "aside" in message
    assert database.read_bytes() == before, "never recreated or repaired over the user's data"


def test_clipd_serve_refuses_a_damaged_database_in_one_line(
    tmp_path: Path, write_config: ConfigWriter
) -> None:
    database = damaged_database(tmp_path, "garbage")
    before = database.read_bytes()
    (tmp_path / "pics").mkdir()
    config = write_config([tmp_path / "pics"])
    done = run_clipd("serve", "--config", str(config))
    assert done.returncode == 1
    assert done.stderr.startswith(f"clipd: {database} is damaged (")
    assert "Traceback" not in done.stderr
    assert database.read_bytes() == before


def test_a_refused_write_rolls_back_and_the_store_stays_usable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with tmpfs(tmp_path / "small", "1m") as disk:
        store = Store(disk / "index.db")
        try:
            store.bind_model(MODEL)
            first, second = unit_vectors(2)
            store.write_batch([record("/p/first.jpg", first)], [])
            truncate_wal(store.path)
            filler = fill(disk)
            with pytest.raises(StoreUnwritable, match=r"^disk full: cannot write"):
                store.write_batch([record(f"/p/{n}.jpg", second) for n in range(50)], [])
            assert set(store.known_files("/p")) == {"/p/first.jpg"}, "nothing partial"
            assert store.search(first.tobytes(), limit=5)[0].path == "/p/first.jpg"
            filler.unlink()
            store.write_batch([record("/p/second.jpg", second)], [])
            assert set(store.known_files("/p")) == {"/p/first.jpg", "/p/second.jpg"}
        finally:
            store.close()
