"""The shared PostgreSQL store under faults, with real daemons and a real PostgreSQL.

PostgreSQL down when a daemon starts; restarted, crashed (SIGKILL) or its connections cut while
a daemon indexes; two daemons (two hosts, two roots) on one database, where one's restart and
offline root leave the other's rows alone; a daemon of another model refused. After every fault
each file has exactly one row and one vector: nothing lost, nothing doubled.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import psycopg
import pytest
import yaml
from conftest import TINY_MODEL_JSON, ConfigWriter
from harness import (
    DaemonProcess,
    InProcessDaemon,
    in_process_daemon,
    picture,
    wait_until,
)
from pgserver import PgServer

from clipd.config import load_config
from clipd_api.v1 import clipd_pb2 as pb
from clipd_api.v1 import clipd_pb2_grpc as pb_grpc
from clipq import Client, ClipqError, Status

pytestmark = pytest.mark.slow

COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle")


def pictures(root: Path, count: int) -> set[str]:
    """`count` distinct small pictures under `root` (two folders); their paths."""
    made = set()
    for n in range(count):
        colour, shape = COLOURS[n % len(COLOURS)], SHAPES[n % len(SHAPES)]
        made.add(str(picture(root / f"d{n % 2}" / f"{n:03d}.png", colour, shape, seed=n)))
    return made


def rows(url: str, host: str) -> dict[str, tuple[object, ...]]:
    """The host's rows as PostgreSQL holds them, by path: (id, indexed_at, state, has a vector)."""
    with psycopg.connect(url) as conn:
        found = conn.execute(
            "SELECT path, id, indexed_at, state, embedding IS NOT NULL FROM clipd_files"
            " WHERE host = %s",
            (host,),
        ).fetchall()
    return {path: tuple(rest) for path, *rest in found}


def assert_one_row_each(url: str, host: str, paths: set[str]) -> None:
    """Exactly one row with a vector per file, no row for anything else, nothing failed."""
    with psycopg.connect(url) as conn:
        listed = conn.execute(
            "SELECT path, count(*), bool_and(embedding IS NOT NULL) FROM clipd_files"
            " WHERE host = %s GROUP BY path",
            (host,),
        ).fetchall()
        failed = conn.execute(
            "SELECT path, error, message FROM clipd_failures WHERE host = %s", (host,)
        ).fetchall()
    assert failed == []
    assert {path for path, _, _ in listed} == paths
    assert all(count == 1 and has_vector for _, count, has_vector in listed), listed


def indexed_count(url: str, host: str) -> int:
    """How many rows the host has, read straight from PostgreSQL (0 while it is down)."""
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            row = conn.execute(
                "SELECT count(*) FROM clipd_files WHERE host = %s", (host,)
            ).fetchone()
    except psycopg.Error:
        return 0
    return int(row[0]) if row else 0


def shared_config(
    write_config: ConfigWriter, short_dir: Path, root: Path, *, url: str, host: str
) -> Path:
    """A config for `host` over `root` on the database `url`, in a file of its own."""
    written = write_config(
        [root], database=url, host=host, socket=str(short_dir / f"{host}.sock"), batch_size=4
    )
    path = written.with_name(f"{host}.yaml")
    written.rename(path)
    return path


@contextlib.contextmanager
def daemon_on(config: Path, root: Path) -> Iterator[InProcessDaemon]:
    with in_process_daemon(load_config(config, require_roots=False), root) as running:
        yield running


def _at_least(url: str, count: int) -> bool:
    return indexed_count(url, "alpha") >= count


def settled(running: InProcessDaemon, url: str, paths: set[str]) -> Callable[[], bool]:
    """True once every file has its row and the daemon is idle."""
    host = running.config.host

    def done() -> bool:
        return indexed_count(url, host) == len(paths) and not running.daemon.progress.busy

    return done


# -- PostgreSQL down at start ----------------------------------------------------------------


def test_daemon_starts_without_postgresql_says_so_and_connects_when_it_is_back(
    private_pg_server: PgServer, tmp_path: Path, short_dir: Path, write_config: ConfigWriter
) -> None:
    server = private_pg_server
    url = server.url(server.create_database())
    root = tmp_path / "photos"
    paths = pictures(root, 3)
    config = shared_config(write_config, short_dir, root, url=url, host="alpha")
    server.stop()
    daemon = DaemonProcess(config)
    try:
        daemon.wait_for_output("unavailable", timeout=60)
        socket = load_config(config, require_roots=False).socket
        status = wait_until(
            lambda: _status(socket), "a status from the daemon", ignoring=(ClipqError,)
        )
        assert "PostgreSQL" in status.problem, status
        # Once the model is loaded (before, searches are told that), the reason is the database.
        refusal = wait_until(
            lambda: _search_refusal(socket), "a search refused for PostgreSQL's absence"
        )
        assert refusal is not None
        assert refusal[0] == grpc.StatusCode.UNAVAILABLE
        server.start()
        wait_until(lambda: indexed_count(url, "alpha") == 3, "3 files indexed", timeout=120)
        wait_until(lambda: _status(socket).problem == "", "the problem cleared", timeout=60)
        with Client(socket, timeout=30) as client:
            hits = client.search("a red circle", limit=5)
        assert {hit.path for hit in hits} == paths
    finally:
        code = daemon.stop()
    assert code == 0, daemon.output
    assert_one_row_each(url, "alpha", paths)


def _search_refusal(socket: Path) -> tuple[grpc.StatusCode, str] | None:
    """How a search is refused, once the refusal names PostgreSQL; None before."""
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        stub = pb_grpc.ImageSearchStub(channel)  # type: ignore[no-untyped-call]
        request = pb.SearchRequest(terms=[pb.Term(text="a red circle")])
        try:
            stub.Search(request, timeout=30)
        except grpc.RpcError as exc:
            details = exc.details() or ""
            return (exc.code(), details) if "PostgreSQL" in details else None
    raise AssertionError("a search was answered without its database")


def _status(socket: Path) -> Status:
    with Client(socket, timeout=5) as client:
        return client.status()


# -- PostgreSQL restarted, crashed, connections cut mid-indexing -----------------------------


@pytest.mark.parametrize("fault", ["restart", "crash", "cut"])
def test_a_fault_mid_indexing_loses_and_doubles_nothing(
    fault: str,
    private_pg_server: PgServer,
    tmp_path: Path,
    short_dir: Path,
    write_config: ConfigWriter,
) -> None:
    server = private_pg_server
    dbname = server.create_database()
    url = server.url(dbname)
    root = tmp_path / "photos"
    paths = pictures(root, 48)
    config = shared_config(write_config, short_dir, root, url=url, host="alpha")

    def hit() -> None:
        if fault == "restart":
            server.restart()
        elif fault == "crash":
            server.kill()
            server.start()
        else:
            # Between a cut and the daemon's next call it may hold no connection at all, and
            # once every picture is in (an earlier cut came at the very end) it makes no call.
            wait_until(
                lambda: server.terminate_backends(dbname) > 0 or _at_least(url, len(paths)),
                "a connection to cut",
            )

    with daemon_on(config, root) as running:
        for at_least in (4, 20, 36):
            wait_until(
                functools.partial(_at_least, url, at_least), f"{at_least} indexed", timeout=120
            )
            hit()
        wait_until(settled(running, url, paths), "every file indexed", timeout=180)
        assert running.store.counts().indexed == len(paths)
    assert_one_row_each(url, "alpha", paths)


# -- two machines on one database ------------------------------------------------------------


def test_one_machines_restart_and_offline_root_leave_the_others_rows_alone(
    pg_url: str, tmp_path: Path, short_dir: Path, write_config: ConfigWriter
) -> None:
    alpha_root, beta_root = tmp_path / "alpha", tmp_path / "beta"
    alpha_paths, beta_paths = pictures(alpha_root, 6), pictures(beta_root, 5)
    alpha_config = shared_config(write_config, short_dir, alpha_root, url=pg_url, host="alpha")
    beta_config = shared_config(write_config, short_dir, beta_root, url=pg_url, host="beta")
    with daemon_on(alpha_config, alpha_root) as alpha:
        with daemon_on(beta_config, beta_root) as beta:
            wait_until(settled(beta, pg_url, beta_paths), "beta indexed", timeout=180)
            wait_until(settled(alpha, pg_url, alpha_paths), "alpha indexed", timeout=180)
            alpha_rows = rows(pg_url, "alpha")
        # beta stopped: nothing of alpha's changed, and alpha still finds beta's pictures.
        assert rows(pg_url, "alpha") == alpha_rows
        with alpha.client() as client:
            hosts = {hit.host for hit in client.search("a blue square", limit=20)}
        assert hosts == {"alpha", "beta"}
        beta_rows = rows(pg_url, "beta")
        # beta again, its root gone (an unmounted disk): its rows go offline, alpha's stay.
        beta_root.rename(tmp_path / "beta-unmounted")
        with daemon_on(beta_config, beta_root) as beta:
            wait_until(
                lambda: {state for _, _, state, _ in rows(pg_url, "beta").values()} == {"offline"},
                "beta's rows offline",
                timeout=60,
            )
            assert rows(pg_url, "alpha") == alpha_rows
            with alpha.client() as client:
                hosts = {hit.host for hit in client.search("a blue square", limit=20)}
            assert hosts == {"alpha"}
            (tmp_path / "beta-unmounted").rename(beta_root)
            wait_until(
                lambda: {state for _, _, state, _ in rows(pg_url, "beta").values()} == {"ok"},
                "beta's rows back online",
                timeout=60,
            )
        # Back online without re-embedding: the same rows, the same ids, the same times.
        assert rows(pg_url, "beta") == beta_rows
        assert rows(pg_url, "alpha") == alpha_rows
    assert_one_row_each(pg_url, "alpha", alpha_paths)
    assert_one_row_each(pg_url, "beta", beta_paths)


# -- a daemon of another model ---------------------------------------------------------------


def test_a_daemon_of_another_model_is_refused_and_changes_nothing(
    pg_url: str, tmp_path: Path, short_dir: Path, write_config: ConfigWriter
) -> None:
    root = tmp_path / "photos"
    paths = pictures(root, 2)
    config = shared_config(write_config, short_dir, root, url=pg_url, host="alpha")
    with daemon_on(config, root) as running:
        wait_until(settled(running, pg_url, paths), "alpha indexed", timeout=180)
    before = rows(pg_url, "alpha")
    # The same network under another config name: a model of another identity.
    other_model = tmp_path / "other-clip.json"
    shutil.copy(TINY_MODEL_JSON, other_model)
    other = shared_config(write_config, short_dir, root, url=pg_url, host="beta")
    data = yaml.safe_load(other.read_text(encoding="utf-8"))
    data["model"]["name"] = str(other_model)
    other.write_text(yaml.safe_dump(data), encoding="utf-8")
    daemon = DaemonProcess(other)
    code = daemon.wait(timeout=120)
    assert code != 0, daemon.output
    assert "model" in daemon.output.lower()
    assert rows(pg_url, "alpha") == before
    assert rows(pg_url, "beta") == {}
