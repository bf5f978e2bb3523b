"""`clipd serve` as a real process, driven by signals: SIGTERM mid-indexing stops cleanly,
SIGHUP reloads the config, and the service manager hears READY, STATUS, RELOADING, STOPPING."""

from __future__ import annotations

import os
import random
import signal
import socket
from pathlib import Path

import pytest
import yaml
from conftest import ConfigWriter
from fixtures.shapes import COLOURS, SHAPES, draw
from harness import (
    DaemonProcess,
    assert_one_to_one,
    daemon_process,
    indexed_soon,
    picture,
    wait_until,
    wait_until_indexed,
)

from clipd import sqlite
from clipd_api.paths import default_socket_path
from clipq import Client, ClipqError

pytestmark = pytest.mark.slow


def many_pictures(root: Path, count: int) -> list[Path]:
    rng = random.Random(3)
    classes = [(colour, shape) for colour in COLOURS for shape in SHAPES]
    paths = []
    for number in range(count):
        colour, shape = classes[number % len(classes)]
        path = root / f"d{number % 7}" / f"{colour}-{shape}-{number}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        draw(colour, shape, (48, 40), rng).save(path)
        paths.append(path)
    return paths


def edit_config(path: Path, **changes: object) -> None:
    data = yaml.safe_load(path.read_text())
    data.update(changes)
    path.write_text(yaml.safe_dump(data))


def indexed_paths(client: Client) -> set[str]:
    return {hit.path for hit in client.search("a red circle", limit=1000).hits}


def test_sigterm_while_indexing_exits_0_with_a_consistent_database(
    tmp_path: Path, write_config: ConfigWriter
) -> None:
    root = tmp_path / "pics"
    total = len(many_pictures(root, 300))
    process = DaemonProcess(write_config([root], batch_size=4))
    try:
        seen = indexed_soon(8)
    finally:
        code = process.stop()
    text = process.output
    assert code == 0, text
    assert 0 < seen < total, "the signal must land in the middle of indexing"
    assert "received SIGTERM" in text
    assert "Traceback" not in text
    assert not default_socket_path().exists(), "the socket must be removed on exit"
    database = tmp_path / "index.db"
    assert_one_to_one(database)
    conn = sqlite.connect(database)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        (rows,) = conn.execute("SELECT count(*) FROM files").fetchone()
    finally:
        conn.close()
    assert seen <= rows < total, "every batch reported indexed is committed"


def test_sighup_adds_and_removes_roots_and_survives_a_bad_config(
    tmp_path: Path, write_config: ConfigWriter
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    kept = {str(picture(first / f"{n}.png", seed=n)) for n in range(3)}
    added = {str(picture(second / f"{n}.png", "blue", "square", seed=10 + n)) for n in range(2)}
    config = write_config([first])
    with daemon_process(config) as process, Client(timeout=10) as client:
        wait_until_indexed(3, 0)

        edit_config(config, roots=[str(first), str(second)])
        process.send_signal(signal.SIGHUP)
        wait_until(
            lambda: indexed_paths(client) == kept | added,
            "the added root searchable",
            ignoring=(ClipqError,),
        )
        assert client.status().roots == (str(first), str(second))
        process.wait_for_output("1 roots added, 0 removed")

        edit_config(config, roots=[str(second)])
        process.send_signal(signal.SIGHUP)
        wait_until(
            lambda: indexed_paths(client) == added,
            "the removed root's files gone",
            ignoring=(ClipqError,),
        )
        assert client.status().indexed == 2

        edit_config(config, database=str(tmp_path / "moved.db"), batch_size=2)
        process.send_signal(signal.SIGHUP)
        process.wait_for_output("reload: database changed; restart clipd to apply")
        assert client.status().database == str(tmp_path / "index.db")

        config.write_text("roots: 5\n")
        process.send_signal(signal.SIGHUP)
        process.wait_for_output("reload failed, keeping the current config: ")
        process.wait_for_output("key 'roots' must be a non-empty list")
        assert client.status().roots == (str(second),)
        assert indexed_paths(client) == added


def test_the_service_manager_hears_ready_status_reloading_and_stopping(
    tmp_path: Path, write_config: ConfigWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "pics"
    for n in range(3):
        picture(root / f"{n}.png", seed=n)
    address = Path(os.environ["XDG_RUNTIME_DIR"]) / "notify.sock"
    manager = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    manager.bind(str(address))
    manager.settimeout(60)
    monkeypatch.setenv("NOTIFY_SOCKET", str(address))

    def receive() -> str:
        return manager.recv(4096).decode()

    def receive_until(wanted: str) -> str:
        """The first message containing `wanted`; those before it must be status updates."""
        while wanted not in (message := receive()):
            assert message.startswith("STATUS="), message
        return message

    try:
        with daemon_process(write_config([root])) as process:
            assert receive() == "READY=1\nSTATUS=loading model"
            receive_until("STATUS=idle: 3 images")
            process.send_signal(signal.SIGHUP)
            reloading = receive_until("RELOADING=1")
            assert reloading.startswith("RELOADING=1\nMONOTONIC_USEC=")
            assert int(reloading.split("=")[-1]) > 0
            assert receive() == "READY=1\nSTATUS=idle: 3 images"
        assert receive_until("STOPPING=1") == "STOPPING=1\nSTATUS=stopping"
    finally:
        manager.close()


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_a_signal_while_the_weights_download_stops_at_once(
    tmp_path: Path, write_config: ConfigWriter, signum: signal.Signals, code: int
) -> None:
    """The weights come from a server that takes the connection and never answers, as a
    stalled download does: the signal must not wait for the download to give up."""
    (tmp_path / "pics").mkdir()
    config = write_config([tmp_path / "pics"], model={"name": "ViT-B-32", "device": "cpu"})
    with socket.create_server(("127.0.0.1", 0)) as stalled:
        env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
        env["HF_ENDPOINT"] = f"http://127.0.0.1:{stalled.getsockname()[1]}"
        process = DaemonProcess(config, env=env)
        try:
            stalled.settimeout(240)
            connection, _ = stalled.accept()  # the download has begun, and gets no answer
            with connection:
                process.send_signal(signum)
                # Far less than the hub's retries of a stalled download (10 s each, 5 times).
                assert process.wait(timeout=20) == code, process.output
        finally:
            process.stop(signal.SIGKILL)
    assert "Traceback" not in process.output
    assert "stopped while loading the model" in process.output
    assert not default_socket_path().exists(), "the socket must be removed on exit"
