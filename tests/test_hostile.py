"""Hostile files: every one ends indexed or in failures with a reason, and the daemon neither
crashes, hangs, nor grows in memory run over run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from conftest import ConfigWriter
from fixtures.hostile import INDEXED, SKIPPED, Hostile, write_hostile
from harness import DaemonProcess, picture, wait_until_indexed

from clipd import scanner
from clipd.config import load_config
from clipd.embedder import Embedder
from clipd.indexer import Indexer
from clipd.progress import Progress
from clipd.store import Store
from clipd_api.paths import default_socket_path
from clipd_api.v1 import clipd_pb2 as pb
from clipd_api.v1 import clipd_pb2_grpc as pb_grpc

# Generous: this is a leak detector, not a benchmark (bench/hostile.py reports the numbers).
RSS_GROWTH_LIMIT = 64 << 20


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class Outcomes:
    """What the daemon says became of every file: indexed paths and failures' classes."""

    def __init__(self, stub: pb_grpc.ImageSearchStub, root: Path) -> None:
        hits = stub.Search(
            pb.SearchRequest(terms=[pb.Term(text="a photo")], limit=1000, under=[str(root)]),
            timeout=60,
        ).hits
        failures = stub.ListFailures(pb.ListFailuresRequest(limit=1000), timeout=60)
        self.indexed: set[str] = {hit.path for hit in hits}
        self.failed: dict[str, str] = {f.path: f.error for f in failures.failures}
        self.messages: dict[str, str] = {f.path: f.message for f in failures.failures}

    def of(self, path: str) -> str:
        if path in self.indexed:
            return INDEXED
        return self.failed.get(path, SKIPPED)


def assert_every_file_accounted_for(outcomes: Outcomes, hostile: Hostile) -> None:
    actual = {path: outcomes.of(path) for path in hostile.expected}
    assert actual == hostile.expected
    listed = outcomes.indexed | outcomes.failed.keys()
    assert listed <= hostile.expected.keys(), listed - hostile.expected.keys()
    assert all(outcomes.messages[path] for path in outcomes.failed), "every failure says why"


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[Hostile]:
    made = write_hostile(tmp_path / "messy")
    yield made
    (made.root / "no-permission.jpg").chmod(0o600)  # let pytest clean up


@pytest.mark.timeout(600)
def test_hostile_files_end_indexed_or_failed_and_memory_holds(
    tmp_path: Path, write_config: ConfigWriter, hostile: Hostile
) -> None:
    config = write_config([hostile.root], settle_seconds=0.2)
    daemon = DaemonProcess(config)
    try:
        images = sum(what == INDEXED for what in hostile.expected.values())
        failures = sum(what not in (INDEXED, SKIPPED) for what in hostile.expected.values())
        wait_until_indexed(images, failures, timeout=300)
        with grpc.insecure_channel(f"unix:{default_socket_path()}") as channel:
            stub = pb_grpc.ImageSearchStub(channel)  # type: ignore[no-untyped-call]
            assert_every_file_accounted_for(Outcomes(stub, hostile.root), hostile)
            first = rss_bytes(daemon.pid)
            for _ in range(2):  # every file changed, so every one is tried again
                for path in hostile.root.iterdir():
                    if not path.is_symlink() and not path.is_dir():
                        os.utime(path)
                stub.Reindex(pb.ReindexRequest(wait=True), timeout=300)
                assert_every_file_accounted_for(Outcomes(stub, hostile.root), hostile)
            last = rss_bytes(daemon.pid)
            print(f"RSS after the first index {first >> 20} MiB, after two more {last >> 20} MiB")
            assert last - first < RSS_GROWTH_LIMIT
            attempts = stub.ListFailures(pb.ListFailuresRequest(limit=1000)).failures
            assert {f.attempts for f in attempts if f.error != "UnusablePath"} == {3}
    finally:
        code = daemon.stop()
    assert code == 0, daemon.output[-3000:]
    assert "Traceback" not in daemon.output


def test_a_file_deleted_between_scan_and_decode_fails_then_is_forgotten(
    tmp_path: Path, write_config: ConfigWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "pics"
    picture(root / "stays.png")
    doomed = picture(root / "doomed.png", "blue", "square")
    config = load_config(write_config([root]))
    real_hash = scanner.content_hash

    def delete_first(path: str, size: int) -> bytes:
        if path == str(doomed):
            doomed.unlink()
        return real_hash(path, size)

    monkeypatch.setattr("clipd.indexer.content_hash", delete_first)
    store = Store(config.database_file)
    try:
        embedder = Embedder(config.model)
        store.bind_model(embedder.identity)
        job = Indexer(config, store, embedder, Progress()).run_once([root])
        assert (job.indexed, job.failed) == (1, 1)
        (failure,), _ = store.failures(limit=10)
        assert (failure.path, failure.error) == (str(doomed), "Unreadable")
        assert "No such file" in failure.message

        Indexer(config, store, embedder, Progress()).run_once([root])
        assert store.failures(limit=10) == ([], 0), "a file that is gone is not a failure"
        assert set(store.known_files(str(root))) == {str(root / "stays.png")}
    finally:
        store.close()
