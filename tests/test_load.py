"""Load: 50 concurrent clients with mixed queries while the daemon indexes; no errors, and the
RPC threads stay bounded (the full 50 x 200 run is bench/load.py)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from conftest import ConfigWriter
from fixtures.corpus import write_corpus

from bench.load import run_clients
from clipd.app import Daemon
from clipd.config import load_config

RPC_THREADS = 16


@pytest.mark.timeout(600)
def test_fifty_clients_while_indexing_get_no_errors(
    tmp_path: Path, write_config: ConfigWriter
) -> None:
    corpus = write_corpus(tmp_path / "pics", per_class=8)
    config = load_config(write_config([corpus.root], batch_size=4))
    daemon = Daemon(config)
    thread = threading.Thread(target=daemon.run, name="test-daemon")
    thread.start()
    peak = [0]
    done = threading.Event()

    def count_rpc_threads() -> None:
        while not done.wait(0.05):
            rpc = sum(t.name.startswith("clipd-rpc") for t in threading.enumerate())
            peak[0] = max(peak[0], rpc)

    counter = threading.Thread(target=count_rpc_threads, name="count-threads")
    counter.start()
    try:
        deadline = time.monotonic() + 120
        # Loaded and indexing (the first scan is submitted just after the model loads).
        while daemon.state is None or not daemon.progress.busy:
            assert time.monotonic() < deadline, "the model did not load"
            time.sleep(0.01)
        paths = [str(path) for path in corpus.images]
        tally = run_clients(f"unix:{config.socket}", clients=50, queries=20, paths=paths)
    finally:
        done.set()
        counter.join()
        daemon.stop()
        thread.join(timeout=60)
    assert not tally.errors
    assert tally.served == 50 * 20
    assert 0 < peak[0] <= RPC_THREADS
