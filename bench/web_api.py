"""The web app's server side: thumbnails made at index time, what they cost and what they give.

    python -m bench.web_api [--images N] [--repeats R]

Indexing A/B: the daemon's Indexer over the same phone photos, with and without making the
thumbnails, interleaved A B A B, each into a new database (throughput, images/s; the ratio of
medians must stay within 5%). Disk: the thumbnail cache's bytes per image, scaled to 10k images.
Serving: a real HTTP server (clipd's web app, in process, no model needed) answering
GET /api/v1/thumbnail for every indexed photo over one keep-alive connection: the CPU time of
its HTTP thread per request (what the server spends, whatever else loads the machine), and the
client-side round trip, an upper bound. The core's own time (stat, index lookup, cache read)
is measured apart.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from bench import corpus, pipeline
from clipd import images, thumbcache
from clipd.config import Config, TcpAddress
from clipd.embedder import Embedder
from clipd.indexer import Indexer
from clipd.progress import Progress
from clipd.queries import DaemonState, Queries
from clipd.store import Store
from clipd.thumbcache import ThumbnailCache, cache_path
from clipd.web.server import WebServer


@dataclass(frozen=True, slots=True)
class WebApiResult:
    images: int
    with_thumbnails: list[float]  # images/s per run
    without: list[float]
    cache_bytes_per_image: float
    serve_ms: list[float]  # per request, HTTP round trip on loopback, cache warm
    serve_cpu_ms: float  # per request, CPU time of the server's HTTP thread (load-proof)
    core_ms: list[float]  # per thumbnail, the query core alone
    encode_cpu_ms: float  # per image, what the indexer adds: fit to 400 px, encode JPEG
    index_cpu_ms: float  # per image, what it does anyway: decode (draft) + the model

    @property
    def ratio(self) -> float:
        return statistics.median(self.with_thumbnails) / statistics.median(self.without)


def index_once(root: Path, config: Config, embedder: Embedder, thumbnails: bool) -> float:
    """Images/s of a cold index of root into config.database (made new)."""
    store = Store(config.database_file)
    cache = ThumbnailCache(cache_path(config.database_file)) if thumbnails else None
    try:
        store.bind_model(embedder.identity)
        started = time.perf_counter()
        job = Indexer(config, store, embedder, Progress(), cache).run_once([root])
        elapsed = time.perf_counter() - started
        if job.failed:
            raise SystemExit(f"{job.failed} files failed to index")
        return job.indexed / elapsed
    finally:
        if cache is not None:
            cache.close()
        store.close()


def encode_cpu_ms(paths: list[Path], embedder: Embedder) -> float:
    """CPU-ms per image of making a thumbnail from the image the indexer decoded anyway."""
    decoded = [images.decode_file(path, min_side=embedder.image_size).image for path in paths]
    started = time.thread_time()
    for image in decoded:
        thumbcache.encode(image)
    return (time.thread_time() - started) / len(decoded) * 1e3


def run(work: Path, images: int, repeats: int) -> WebApiResult:
    photos = corpus.corpus(images)
    embedder = Embedder(pipeline.VIT_B_32)
    sample = corpus.files(photos)[:40]
    encode_ms = encode_cpu_ms(sample, embedder)
    index_ms = 1e3 * (
        pipeline.decode_cpu_seconds(sample, embedder, draft=True)
        + pipeline.model_seconds(embedder, 16, 3)[0]
    )
    base = pipeline.config_for(photos, batch_size=16)
    rates: dict[bool, list[float]] = {True: [], False: []}
    kept = work / "kept" / "index.db"
    for run_number in range(repeats):
        for thumbnails in (False, True):  # interleaved: both see the same machine noise
            folder = work / f"run{run_number}-{thumbnails}"
            folder.mkdir(parents=True)
            config = replace(base, database=folder / "index.db", token_file=work / "token")
            rates[thumbnails].append(index_once(photos, config, embedder, thumbnails))
            if thumbnails and run_number == repeats - 1:
                shutil.copytree(folder, kept.parent)
            shutil.rmtree(folder)
    del embedder
    indexed = len(corpus.files(photos))
    cache_bytes = sum(p.stat().st_size for p in kept.parent.glob("index.thumbnails.db*"))
    config = replace(base, database=kept, token_file=work / "token")
    serve_ms, serve_cpu_ms, core_ms = _serve(config)
    return WebApiResult(
        images=indexed,
        with_thumbnails=rates[True],
        without=rates[False],
        cache_bytes_per_image=cache_bytes / indexed,
        serve_ms=serve_ms,
        serve_cpu_ms=serve_cpu_ms,
        core_ms=core_ms,
        encode_cpu_ms=encode_ms,
        index_cpu_ms=index_ms,
    )


def _serve(config: Config) -> tuple[list[float], float, list[float]]:
    """(HTTP round trip ms per thumbnail, the HTTP thread's CPU ms per thumbnail, core ms per
    thumbnail), three passes over every indexed photo."""
    store = Store(config.database_file)
    thumbnails = ThumbnailCache(cache_path(config.database_file))
    state = DaemonState(config, store, Progress(), "bench", time.time(), thumbnails=thumbnails)
    server = WebServer(state, TcpAddress("127.0.0.1", 0))
    server.start()
    try:
        paths = sorted(store.known_files(str(config.roots[0])))
        queries = Queries(state, remote=True)
        core_ms = []
        for _ in range(3):
            for path in paths:
                started = time.perf_counter()
                version = queries.current_version(path)
                queries.cached_thumbnail(version) or queries.make_thumbnail(version)
                core_ms.append((time.perf_counter() - started) * 1e3)
        token = (config.token_file).read_text(encoding="utf-8").strip()
        headers = {"Authorization": f"Bearer {token}"}
        serve_ms = []
        # A cached thumbnail is answered on the server's HTTP thread alone (no pool hop).
        (http,) = (t for t in threading.enumerate() if t.name == "clipd-http")
        assert http.ident is not None
        clock = time.pthread_getcpuclockid(http.ident)
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
            cpu = time.clock_gettime(clock)
            for _ in range(3):
                for path in paths:
                    started = time.perf_counter()
                    answer = client.get("/api/v1/thumbnail", params={"path": path})
                    serve_ms.append((time.perf_counter() - started) * 1e3)
                    answer.raise_for_status()
            cpu_ms = (time.clock_gettime(clock) - cpu) * 1e3 / len(serve_ms)
        return serve_ms, cpu_ms, core_ms
    finally:
        server.stop()
        thumbnails.close()
        store.close()


def report(result: WebApiResult) -> list[tuple[str, str, str]]:
    """Rows for the performance table."""
    med = statistics.median
    return [
        ("(i) thumbnail served once made, server CPU",
         f"{result.serve_cpu_ms:.2f} ms/request",
         f"HTTP round trip p50 / p90 {med(result.serve_ms):.2f} / "
         f"{statistics.quantiles(result.serve_ms, n=10)[-1]:.2f} ms (loopback, keep-alive); "
         f"query core alone {med(result.core_ms):.2f} ms"),
        ("    thumbnail cache on disk",
         f"{result.cache_bytes_per_image * 10_000 / 2**20:.0f} MB/10k",
         f"{result.cache_bytes_per_image / 1024:.1f} KiB per image (JPEG q75, 400 px)"),
        ("    thumbnail made at index time, CPU",
         f"{result.encode_cpu_ms:.1f} ms/img",
         f"{result.encode_cpu_ms / result.index_cpu_ms:.1%} of decode + model "
         f"({result.index_cpu_ms:.0f} CPU-ms/img)"),
        ("    indexing with / without thumbnails",
         f"{med(result.with_thumbnails):.1f} / {med(result.without):.1f} img/s",
         f"ratio {result.ratio:.3f} (medians of {len(result.without)} interleaved runs, "
         f"{result.images} photos)"),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="clipd-bench-web-api-"))
    try:
        result = run(work, args.images, args.repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for label, value, note in report(result):
        print(f"{label:48}  {value:>22}  {note}")
    print("runs, img/s: with", [f"{r:.1f}" for r in result.with_thumbnails],
          "without", [f"{r:.1f}" for r in result.without])  # fmt: skip


if __name__ == "__main__":
    main()
