"""Freshness: seconds from an image landing in a watched root to being searchable.

    python -m bench.freshness [--runs 20] [--model tiny|vit-b-32] [--settle 1.0]

Starts `clipd serve` on an empty root, waits until idle, then `--runs` times writes a new JPEG
into the root and polls Search (restricted to that file) until it is returned. Prints the
median and p90 with the settle window used.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.index_query import BIN, photo, write_config
from clipq import Client, ClipqError


def wait_idle(client: Client) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            status = client.status()
            if status.state == "idle" and status.queued == 0:
                return
        except ClipqError:
            pass
        time.sleep(0.1)
    raise SystemExit("daemon did not become idle")


def searchable(client: Client, path: Path) -> bool:
    return bool(client.search("a photo", limit=1, under=[str(path)]).hits)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--model", choices=("tiny", "vit-b-32"), default="tiny")
    parser.add_argument("--settle", type=float, default=1.0, help="settle_seconds")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="clipd-fresh-"))
    root = work / "photos"
    root.mkdir()
    config = write_config(work, root, args.model, settle_seconds=args.settle)
    socket = work / f"{args.model}.sock"
    env = {**os.environ, "CLIPD_SOCKET": str(socket)}
    daemon = subprocess.Popen([BIN / "clipd", "serve", "--config", str(config)], env=env)
    rng = random.Random(3)
    image = photo(rng, (1600, 1200))
    delays: list[float] = []
    try:
        with Client(socket) as client:
            wait_idle(client)
            for run in range(args.runs):
                target = root / f"new{run:03d}.jpg"
                landed = time.monotonic()
                image.save(target, quality=90)
                while not searchable(client, target):
                    time.sleep(0.01)
                delays.append(time.monotonic() - landed)
                time.sleep(0.3)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)
    median, p90 = statistics.median(delays), statistics.quantiles(delays, n=10)[-1]
    print(
        f"freshness, {args.model}, settle_seconds={args.settle:g}, {args.runs} files, "
        f"{os.cpu_count()} CPUs: median {median:.2f} s, p90 {p90:.2f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
