"""Shared fixtures: an isolated environment for every test, the tiny model, config files."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import FakeDaemon, serve_fake
from pgserver import PgServer, fresh_database, missing_reason

# No test may reach the network for weights. Set before anything imports huggingface_hub, which
# reads it once at import (a module-scoped fixture can import it before per-test fixtures run).
os.environ["HF_HUB_OFFLINE"] = "1"

FIXTURES = Path(__file__).parent / "fixtures"
TINY_MODEL_JSON = FIXTURES / "tiny-clip.json"
TINY_MODEL_WEIGHTS = FIXTURES / "tiny-clip.pt"


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Module-scoped fixtures start before each test's isolated_env: keep what they cache (the
    precision probe's result) out of the real home too."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("session-cache")))
        yield


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every path clipd and clipq could touch at a fresh temp directory."""
    home = tmp_path_factory.mktemp("home")
    # Keep the socket path short: Unix socket paths are limited to ~104 bytes.
    runtime = Path(tmp_path_factory.getbasetemp()) / f"rt{len(list(home.parent.iterdir()))}"
    runtime.mkdir(mode=0o700)
    for name, value in {
        "HOME": home,
        "XDG_CONFIG_HOME": home / "config",
        "XDG_DATA_HOME": home / "data",
        "XDG_CACHE_HOME": home / "cache",
        "XDG_RUNTIME_DIR": runtime,
    }.items():
        monkeypatch.setenv(name, str(value))
    for name in (
        "CLIPD_CONFIG",
        "CLIPD_SOCKET",
        "CLIPD_DATABASE",
        "JOURNAL_STREAM",
        "NOTIFY_SOCKET",
    ):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture(autouse=True)
def torch_threads_restored() -> Iterator[None]:
    """A daemon started in-process sets torch's process-wide thread count (image_model):
    give the next test the count it had, without importing torch for tests that never do."""
    torch = sys.modules.get("torch")
    threads = None if torch is None else torch.get_num_threads()
    yield
    torch = sys.modules.get("torch")
    if torch is not None and threads is not None:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves threads running behind it."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while True:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not leaked, f"threads left running: {[t.name for t in leaked]}"


ConfigWriter = Callable[..., Path]


@pytest.fixture(scope="session")
def tiny_model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clipd cache folder holding the tiny model's towers as a daemon's first start makes
    them (the image tower exported and quantised, the text tower exported), made once a
    session. The first start itself is tested in test_onnx_images.py and test_onnx_texts.py."""
    from clipd.config import ModelConfig
    from clipd.image_model import for_the_daemon

    cache = tmp_path_factory.mktemp("tiny-model-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(cache))
        for_the_daemon(ModelConfig(str(TINY_MODEL_JSON), str(TINY_MODEL_WEIGHTS), device="cpu"))
    return cache / "clipd"


@pytest.fixture
def write_config(tmp_path: Path, tiny_model_cache: Path) -> ConfigWriter:
    """Write a config.yaml using the tiny model; keyword arguments override top-level keys.
    The test's cache starts with the tiny model's towers made (tiny_model_cache, linked, as
    clipd replaces its cache files and never writes into them): its daemons start as a user's
    later starts do, without torch (a test_end_to_end setup: 6.4-6.8 s before, 2.3-2.4 s)."""
    cache = Path(os.environ["XDG_CACHE_HOME"]) / "clipd"
    shutil.copytree(tiny_model_cache, cache, copy_function=os.link, dirs_exist_ok=True)

    def write(roots: list[Path | dict[str, Any]], **overrides: Any) -> Path:
        data: dict[str, Any] = {
            "roots": [str(root) if isinstance(root, Path) else root for root in roots],
            "database": str(tmp_path / "index.db"),
            "model": {
                "name": str(TINY_MODEL_JSON),
                "pretrained": str(TINY_MODEL_WEIGHTS),
                "device": "cpu",
            },
            "batch_size": 8,
        }
        data.update(overrides)
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        return path

    return write


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A fresh directory with a short path: Unix socket paths must fit in 108 bytes, and
    pytest's tmp_path can be longer than that."""
    path = Path(tempfile.mkdtemp(prefix="clipq-"))
    yield path
    shutil.rmtree(path)


@pytest.fixture
def fake_daemon(short_dir: Path) -> Iterator[tuple[FakeDaemon, str]]:
    """The stand-in daemon on a Unix socket; yields it and the socket's path."""
    with serve_fake(f"unix:{short_dir / 'clipd.sock'}") as (fake, _):
        yield fake, str(short_dir / "clipd.sock")


@pytest.fixture
def fake_tcp_daemon() -> Iterator[tuple[FakeDaemon, str]]:
    """The stand-in daemon on a loopback TCP port; yields it and its HOST:PORT."""
    with serve_fake("127.0.0.1:0") as (fake, port):
        yield fake, f"127.0.0.1:{port}"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One real PostgreSQL with pgvector for the whole session (skipped when its binaries are
    not installed). Tests that stop, restart or crash a server use `private_pg_server`."""
    reason = missing_reason()
    if reason is not None:
        pytest.skip(reason)
    with PgServer() as server:
        yield server


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """The URL of a fresh, empty database on the session's PostgreSQL, dropped after the test."""
    with fresh_database(pg_server) as url:
        yield url


@pytest.fixture
def private_pg_server() -> Iterator[PgServer]:
    """A PostgreSQL of this test's own, free to be stopped, restarted or crashed."""
    reason = missing_reason()
    if reason is not None:
        pytest.skip(reason)
    with PgServer() as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium for the browser tests (see tests/browser.py)."""
    from browser import launch_chromium

    with launch_chromium() as chromium:
        yield chromium
