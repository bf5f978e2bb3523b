"""Load: many concurrent clients sending mixed queries to a daemon that is busy indexing.

    python -m bench.load [--clients 50] [--queries 200] [--images 600]

Starts `clipd serve` (tiny model) on a folder of generated images and, as soon as the model is
loaded, lets every client fire its queries (text and path searches with filters, status, failure
lists, embeddings) over its own channel while the folder is indexed. Prints queries served,
errors, latency, and the daemon's RSS and thread count before and after.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from bench.common import BIN, write_config
from bench.corpus import photo
from clipd_api.v1 import clipd_pb2 as pb
from clipd_api.v1 import clipd_pb2_grpc as pb_grpc

WORDS = ["red brick wall", "a dog on a beach", "sunset", "a bowl of fruit", "a red circle"]


@dataclass
class Tally:
    """What the clients saw, shared between their threads."""

    served: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, started: float, error: grpc.RpcError | None) -> None:
        with self.lock:
            self.latencies.append(time.perf_counter() - started)
            if error is None:
                self.served += 1
            else:
                self.errors[f"{error.code().name}: {error.details()}"] += 1


def one_query(stub: pb_grpc.ImageSearchStub, rng: random.Random, paths: list[str]) -> None:
    """One request of the mix; raises grpc.RpcError on failure."""
    kind = rng.randrange(6)
    text = pb.Term(text=rng.choice(WORDS))
    if kind <= 1:
        limit = rng.choice([1, 20, 100])
        stub.Search(pb.SearchRequest(terms=[text], limit=limit), timeout=60)
    elif kind == 2:  # an indexed path, maybe not yet indexed: the file is read then
        term = pb.Term(path=rng.choice(paths), weight=rng.uniform(0.5, 2))
        stub.Search(pb.SearchRequest(terms=[term, text], extensions=["jpg"]), timeout=60)
    elif kind == 3:
        stub.GetStatus(pb.StatusRequest(), timeout=60)
    elif kind == 4:
        stub.ListFailures(pb.ListFailuresRequest(limit=50), timeout=60)
    else:
        stub.Embed(pb.EmbedRequest(text=rng.choice(WORDS)), timeout=60)


def run_clients(target: str, clients: int, queries: int, paths: list[str]) -> Tally:
    """`clients` threads, each with its own channel, each sending `queries` requests."""
    tally = Tally()
    start = threading.Barrier(clients)

    def client(number: int) -> None:
        rng = random.Random(number)
        with grpc.insecure_channel(target) as channel:
            stub = pb_grpc.ImageSearchStub(channel)  # type: ignore[no-untyped-call]
            start.wait()
            for _ in range(queries):
                started = time.perf_counter()
                try:
                    one_query(stub, rng, paths)
                except grpc.RpcError as exc:
                    tally.record(started, exc)
                else:
                    tally.record(started, None)

    threads = [threading.Thread(target=client, args=(n,), name=f"load-{n}") for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tally


def proc_status(pid: int) -> tuple[int, int]:
    """(RSS in bytes, thread count) of a process, from /proc."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["Threads"])


def wait_loaded(stub: pb_grpc.ImageSearchStub) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            stub.Embed(pb.EmbedRequest(text="ready"), timeout=5)
            return
        except grpc.RpcError:
            time.sleep(0.1)
    raise SystemExit("the daemon did not load its model")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--images", type=int, default=600)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="clipd-load-"))
    root = work / "photos"
    root.mkdir()
    rng = random.Random(5)
    paths = []
    for number in range(args.images):
        path = root / f"{number:05d}.jpg"
        photo(rng, (640, 480)).save(path, quality=85)
        paths.append(str(path))
    config = write_config(work, root, "tiny")
    socket = work / "tiny.sock"  # where write_config puts it
    daemon = subprocess.Popen([BIN / "clipd", "serve", "--config", str(config)])
    try:
        with grpc.insecure_channel(f"unix:{socket}") as channel:
            stub = pb_grpc.ImageSearchStub(channel)  # type: ignore[no-untyped-call]
            wait_loaded(stub)
            rss_before, threads_before = proc_status(daemon.pid)
            started = time.perf_counter()
            tally = run_clients(f"unix:{socket}", args.clients, args.queries, paths)
            elapsed = time.perf_counter() - started
            rss_after, threads_after = proc_status(daemon.pid)
            indexed = stub.GetStatus(pb.StatusRequest(), timeout=10).indexed
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)
    latencies = sorted(tally.latencies)
    print(f"{args.clients} clients x {args.queries} mixed queries while indexing {args.images}")
    print(f"  served {tally.served}, errors {sum(tally.errors.values())} in {elapsed:.1f} s")
    for error, count in tally.errors.most_common(5):
        print(f"    {count} x {error}")
    print(
        f"  latency p50 {statistics.median(latencies) * 1000:.0f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.0f} ms"
    )
    print(f"  indexed by the end: {indexed}/{args.images}")
    print(
        f"  daemon RSS {rss_before >> 20} -> {rss_after >> 20} MiB, "
        f"threads {threads_before} -> {threads_after}"
    )
    return 1 if tally.errors else 0


if __name__ == "__main__":
    sys.exit(main())
