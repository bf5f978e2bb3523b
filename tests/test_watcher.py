"""Staying fresh with the real watchdog observer: every change reaches the index, renames and
copies cost no model pass, and files and vectors stay one-to-one."""

from __future__ import annotations

import errno
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import TINY_MODEL_JSON, TINY_MODEL_WEIGHTS, ConfigWriter
from fixtures.corpus import write_corpus
from harness import (
    DaemonProcess,
    InProcessDaemon,
    assert_one_to_one,
    in_process_daemon,
    indexed_soon,
    picture,
    wait_until,
    wait_until_indexed,
)

from clipd.config import load_config
from clipd.store import Store
from clipd.watcher import Watcher


@pytest.fixture
def live(tmp_path: Path, write_config: ConfigWriter) -> Iterator[InProcessDaemon]:
    root = tmp_path / "pics"
    picture(root / "a" / "first.png", seed=1)
    picture(root / "a" / "second.png", "blue", "square", seed=2)
    config = write_config([root], settle_seconds=0.3, poll_interval=0.5)
    with in_process_daemon(config, root, 2) as running:
        yield running


def test_create_modify_delete(live: InProcessDaemon) -> None:
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


def test_renames_and_copies_cost_no_model_pass(live: InProcessDaemon) -> None:
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


def test_a_slow_write_is_embedded_once_after_it_settles(live: InProcessDaemon) -> None:
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


def test_a_root_that_disappears_is_kept_offline_and_comes_back(live: InProcessDaemon) -> None:
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
    with in_process_daemon(path, root, 1) as live:
        picture(root / "two.png", "green", "square", seed=8)
        live.wait_for(lambda: len(live.indexed()) == 2, "polled change indexed")
    assert f"polling {root} every 0.3s: asked for by `poll: true` in the config" in caplog.text


def test_sigkill_mid_batch_then_restart_loses_and_duplicates_nothing(
    tmp_path: Path, write_config: ConfigWriter
) -> None:
    corpus = write_corpus(tmp_path / "pics", per_class=16)
    config = write_config([corpus.root], batch_size=4)
    first = DaemonProcess(config)
    try:
        indexed = indexed_soon(8)
    finally:
        first.stop(signal.SIGKILL)
    total = len(corpus.images)
    assert 0 < indexed < total, "the kill must land in the middle of indexing"
    database = tmp_path / "index.db"
    assert_one_to_one(database)

    second = DaemonProcess(config)
    try:
        wait_until_indexed(total, len(corpus.bad))
    finally:
        assert second.stop() == 0, second.output
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
        with in_process_daemon(write_config([root], model=model), root, 2) as live:
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
        wait_until(
            lambda: any(new in paths for paths, _ in submitted),
            "the new file submitted",
            timeout=10,
        )
    finally:
        watcher.stop()
    assert "the inotify watch limit is reached; raise it with" in caplog.text
    assert "fs.inotify.max_user_watches" in caplog.text
