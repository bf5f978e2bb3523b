"""Staying fresh with the real watchdog observer: every change reaches the index, renames and
copies cost no model pass, and files and vectors stay one-to-one."""

from __future__ import annotations

import contextlib
import errno
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import TINY_MODEL_JSON, TINY_MODEL_WEIGHTS, ConfigWriter
from fixtures.corpus import write_corpus
from fixtures.shapes import draw
from test_end_to_end import indexed_soon, wait_until_indexed

from clipd import sqlite
from clipd.app import Daemon
from clipd.config import load_config
from clipd.indexer import Indexer
from clipd.store import Store
from clipd.watcher import Watcher


class Live:
    """An in-process daemon watching `root`."""

    def __init__(self, daemon: Daemon, root: Path) -> None:
        self.daemon = daemon
        self.root = root

    @property
    def store(self) -> Store:
        assert self.daemon.state is not None
        return self.daemon.state.store

    @property
    def indexer(self) -> Indexer:
        assert self.daemon.state is not None
        assert self.daemon.state.indexer is not None
        return self.daemon.state.indexer

    def indexed(self) -> set[str]:
        return set(self.store.known_files(str(self.root)))

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition() and not self.daemon.progress.busy:
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for: {what}; indexed: {sorted(self.indexed())}")

    def assert_consistent(self) -> None:
        assert_one_to_one(self.store.path)


def assert_one_to_one(database: Path) -> None:
    """Every file row has exactly one vector and every vector one row."""
    conn = sqlite.connect(database)
    try:
        orphan_rows = conn.execute(
            "SELECT count(*) FROM files WHERE id NOT IN (SELECT rowid FROM vectors)"
        ).fetchone()[0]
        orphan_vectors = conn.execute(
            "SELECT count(*) FROM vectors WHERE rowid NOT IN (SELECT id FROM files)"
        ).fetchone()[0]
    finally:
        conn.close()
    assert (orphan_rows, orphan_vectors) == (0, 0)


def picture(path: Path, colour: str = "red", shape: str = "circle", seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    draw(colour, shape, (96, 80), random.Random(seed)).save(path)
    return path


@contextlib.contextmanager
def serving(config: Path, root: Path, files: int) -> Iterator[Live]:
    """An in-process daemon on `config`, once it has indexed `files` files under `root`."""
    daemon = Daemon(load_config(config, require_roots=False))
    thread = threading.Thread(target=daemon.run, name="test-daemon")
    thread.start()
    try:
        live = Live(daemon, root)
        live.wait_for(
            lambda: (
                daemon.state is not None
                and daemon.state.indexer is not None
                and len(live.indexed()) == files
            ),
            "initial index",
        )
        yield live
    finally:
        daemon.stop()
        thread.join(timeout=60)


@pytest.fixture
def live(tmp_path: Path, write_config: ConfigWriter) -> Iterator[Live]:
    root = tmp_path / "pics"
    picture(root / "a" / "first.png", seed=1)
    picture(root / "a" / "second.png", "blue", "square", seed=2)
    with serving(write_config([root], settle_seconds=0.3, poll_interval=0.5), root, 2) as running:
        yield running


def test_create_modify_delete(live: Live) -> None:
    passes = live.indexer.model_passes
    new = picture(live.root / "new.png", "green", "triangle", seed=3)
    live.wait_for(lambda: str(new) in live.indexed(), "created file indexed")
    assert live.indexer.model_passes == passes + 1
    before = live.store.vector_for(str(new))

    picture(new, "yellow", "square", seed=4)  # rewritten in place with other content
    live.wait_for(lambda: live.store.vector_for(str(new)) != before, "modified file re-embedded")
    assert live.indexer.model_passes == passes + 2

    new.unlink()
    live.wait_for(lambda: str(new) not in live.indexed(), "deleted file dropped")
    live.assert_consistent()


def test_renames_and_copies_cost_no_model_pass(live: Live) -> None:
    passes = live.indexer.model_passes
    first = live.root / "a" / "first.png"
    vector = live.store.vector_for(str(first))

    renamed = live.root / "a" / "renamed.png"
    first.rename(renamed)
    live.wait_for(lambda: str(renamed) in live.indexed(), "renamed file re-pathed")
    assert str(first) not in live.indexed()
    assert live.store.vector_for(str(renamed)) == vector

    moved_dir = live.root / "b"
    (live.root / "a").rename(moved_dir)
    expected = {str(moved_dir / "renamed.png"), str(moved_dir / "second.png")}
    live.wait_for(lambda: live.indexed() == expected, "renamed directory re-pathed")

    copy = live.root / "copy.png"
    shutil.copy2(moved_dir / "renamed.png", copy)
    live.wait_for(lambda: str(copy) in live.indexed(), "copy indexed")
    assert live.store.vector_for(str(copy)) == vector
    assert live.indexer.model_passes == passes, "renames and copies must not run the model"
    live.assert_consistent()


def test_a_slow_write_is_embedded_once_after_it_settles(live: Live) -> None:
    source = picture(live.root.parent / "staging.png", "blue", "circle", seed=5)
    data = source.read_bytes()
    passes = live.indexer.model_passes
    target = live.root / "slow.png"
    with target.open("wb") as handle:
        for start in range(0, len(data), len(data) // 5 + 1):
            handle.write(data[start : start + len(data) // 5 + 1])
            handle.flush()
            time.sleep(0.1)  # well inside the 0.3 s settle window
    live.wait_for(lambda: str(target) in live.indexed(), "slow write indexed")
    time.sleep(0.5)
    assert live.indexer.model_passes == passes + 1
    assert live.store.failures(limit=10)[1] == 0
    live.assert_consistent()


def test_a_root_that_disappears_is_kept_offline_and_comes_back(live: Live) -> None:
    away = live.root.parent / "unmounted"
    live.root.rename(away)
    live.wait_for(lambda: live.store.counts().offline == 2, "entries marked offline")
    assert live.store.counts().indexed == 0
    assert len(live.indexed()) == 2, "entries of a missing root must not be deleted"

    away.rename(live.root)
    live.wait_for(lambda: live.store.counts().indexed == 2, "entries back online")
    assert live.store.counts().offline == 0
    picture(live.root / "after.png", seed=6)
    live.wait_for(lambda: len(live.indexed()) == 3, "watching resumed")
    live.assert_consistent()


def test_a_polled_root_sees_changes_without_native_events(
    tmp_path: Path, write_config: ConfigWriter, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "share"
    picture(root / "one.png", seed=7)
    path = write_config([{"path": str(root), "poll": True}], poll_interval=0.3, settle_seconds=0.1)
    with serving(path, root, 1) as live:
        picture(root / "two.png", "green", "square", seed=8)
        live.wait_for(lambda: len(live.indexed()) == 2, "polled change indexed")
    assert f"polling {root} every 0.3s: asked for by `poll: true` in the config" in caplog.text


def test_sigkill_mid_batch_then_restart_loses_and_duplicates_nothing(
    tmp_path: Path, write_config: ConfigWriter
) -> None:
    corpus = write_corpus(tmp_path / "pics", per_class=16)
    config = write_config([corpus.root], batch_size=4)
    command = [str(Path(sys.executable).parent / "clipd"), "serve", "--config", str(config)]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        indexed = indexed_soon(8)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    total = len(corpus.images)
    assert 0 < indexed < total, "the kill must land in the middle of indexing"
    database = tmp_path / "index.db"
    assert_one_to_one(database)

    second = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_indexed(total, len(corpus.bad))
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0
    assert_one_to_one(database)
    store = Store(database)
    try:
        assert set(store.known_files(str(corpus.root))) == {str(p) for p in corpus.images}
    finally:
        store.close()


def test_another_model_re_embeds_everything_and_never_mixes(
    tmp_path: Path, write_config: ConfigWriter
) -> None:
    import torch

    root = tmp_path / "pics"
    for seed, (colour, shape) in enumerate([("red", "circle"), ("blue", "square")]):
        picture(root / f"{colour}.png", colour, shape, seed=seed)
    weights = torch.load(TINY_MODEL_WEIGHTS, weights_only=True)
    other = tmp_path / "other.pt"
    torch.save({k: v * 1.01 if v.is_floating_point() else v for k, v in weights.items()}, other)
    identities = []
    for pretrained in (TINY_MODEL_WEIGHTS, other):
        model = {"name": str(TINY_MODEL_JSON), "pretrained": str(pretrained), "device": "cpu"}
        with serving(write_config([root], model=model), root, 2) as live:
            assert live.indexer.model_passes == 2, "every file is embedded by each model"
            identities.append(live.store.model)
            live.assert_consistent()
    assert identities[0] != identities[1]


def test_when_the_os_refuses_more_watches_the_root_is_polled(
    tmp_path: Path, write_config: ConfigWriter, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "pics"
    root.mkdir()
    submitted: list[tuple[list[Path], list[tuple[Path, Path]]]] = []
    config = load_config(write_config([root], poll_interval=0.2, settle_seconds=0.1))
    watcher = Watcher(config, lambda paths, moves: submitted.append((list(paths), list(moves))))

    def refuse(*args: object, **kwargs: object) -> None:
        # What inotify answers once fs.inotify.max_user_watches is used up.
        raise OSError(errno.ENOSPC, "inotify watch limit reached")

    watcher._native.schedule = refuse  # type: ignore[method-assign,assignment]
    watcher.start()
    try:
        new = picture(root / "new.png")
        deadline = time.monotonic() + 10
        while not any(new in paths for paths, _ in submitted) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        watcher.stop()
    assert any(new in paths for paths, _ in submitted), submitted
    assert "the inotify watch limit is reached; raise it with" in caplog.text
    assert "fs.inotify.max_user_watches" in caplog.text
