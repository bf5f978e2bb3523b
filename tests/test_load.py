"""Load: 50 concurrent clients with mixed queries while the daemon indexes; no errors, and the
RPC threads stay bounded (the full 50 x 200 run is bench/load.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from conftest import ConfigWriter
from fixtures.corpus import write_corpus
from harness import in_process_daemon, wait_until

from bench.load import run_clients

RPC_THREADS = 16


@pytest.mark.timeout(600)
def test_fifty_clients_while_indexing_get_no_errors(
    tmp_path: Path, write_config: ConfigWriter
) -> None:
    corpus = write_corpus(tmp_path / "pics", per_class=8)
    peak = [0]
    done = threading.Event()

    def count_rpc_threads() -> None:
        while not done.wait(0.05):
            rpc = sum(t.name.startswith("clipd-rpc") for t in threading.enumerate())
            peak[0] = max(peak[0], rpc)

    config = write_config([corpus.root], batch_size=4)
    with in_process_daemon(config, corpus.root) as live:
        counter = threading.Thread(target=count_rpc_threads, name="count-threads")
        counter.start()
        try:
            # Loaded and indexing (the first scan is submitted just after the model loads).
            wait_until(
                lambda: live.loaded and live.daemon.progress.busy,
                "the model loaded and indexing",
                timeout=120,
                interval=0.01,
            )
            paths = [str(path) for path in corpus.images]
            socket = f"unix:{live.config.socket}"
            tally = run_clients(socket, clients=50, queries=20, paths=paths)
        finally:
            done.set()
            counter.join()
    assert not tally.errors
    assert tally.served == 50 * 20
    assert 0 < peak[0] <= RPC_THREADS
