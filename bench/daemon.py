"""Measurements against a real `clipd serve` process: RSS, `clipq` wall time, freshness.

One daemon (ViT-B-32, random weights, the default precision) starts on an empty database
over the photo corpus: its RSS is sampled while it indexes and once idle; then `clipq QUERY`
runs are timed from process start to exit; then new photos are written into the watched root
and Search is polled until each is returned.
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import BIN, write_config
from bench.corpus import photo
from clipq import Client, ClipqError

QUERY_WORDS = ["red brick wall", "a dog on a beach", "sunset over mountains", "a bowl of fruit"]


@dataclass(frozen=True, slots=True)
class DaemonResult:
    rss_indexing_mb: float  # the largest sample while indexing
    rss_idle_mb: float
    clipq_ms: list[float]
    server_ms: list[float]
    freshness_s: list[float]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run(work: Path, photos: Path, queries: int, fresh_files: int) -> DaemonResult:
    fresh = work / "fresh"
    fresh.mkdir(exist_ok=True)
    config = write_config(work, photos, "vit-b-32", roots=[str(photos), str(fresh)])
    socket = work / "vit-b-32.sock"  # where write_config puts it
    env = {**os.environ, "CLIPD_SOCKET": str(socket)}
    daemon = subprocess.Popen([BIN / "clipd", "serve", "--config", str(config)], env=env)
    try:
        with Client(socket, timeout=30) as client:
            indexing = _rss_until_idle(client, daemon.pid)
            time.sleep(2)  # let the allocator hand back what the last batches freed
            idle = rss_mb(daemon.pid)
            walls, server = _clipq_times(client, env, queries)
            freshness = _freshness(client, fresh, fresh_files)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    return DaemonResult(max(indexing), idle, walls, server, freshness)


def _rss_until_idle(client: Client, pid: int) -> list[float]:
    samples: list[float] = []
    seen_busy = False
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        try:
            status = client.status()
        except ClipqError:  # still starting
            time.sleep(0.2)
            continue
        busy = status.state == "indexing" or status.queued > 0
        seen_busy = seen_busy or busy
        if busy:
            samples.append(rss_mb(pid))
        elif seen_busy or status.indexed:
            return samples or [rss_mb(pid)]
        time.sleep(0.2)
    raise SystemExit("the daemon did not finish indexing")


def _clipq_times(client: Client, env: dict[str, str], runs: int) -> tuple[list[float], list[float]]:
    walls: list[float] = []
    server_ms: list[float] = []
    for number in range(runs):
        query = f"{QUERY_WORDS[number % len(QUERY_WORDS)]} {number}"  # a new text: no cache hit
        started = time.perf_counter()
        subprocess.run([BIN / "clipq", "-n", "20", query], env=env, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        walls.append(time.perf_counter() - started)
        server_ms.append(client.search(query + "!", limit=20).took_ms)
    return walls, server_ms


def _freshness(client: Client, root: Path, count: int) -> list[float]:
    """Seconds from a photo written into a watched root until Search returns it."""
    image = photo(random.Random(3), (1600, 1200))
    delays = []
    for number in range(count):
        target = root / f"new{number:03d}.jpg"
        landed = time.monotonic()
        image.save(target, quality=90)
        while not client.search("a photo", limit=1, under=[str(target)]).hits:
            time.sleep(0.01)
        delays.append(time.monotonic() - landed)
        time.sleep(0.3)
    return delays


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3
