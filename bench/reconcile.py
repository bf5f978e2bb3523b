"""Restart reconcile: time to rescan a root of N unchanged, already indexed files.

    python -m bench.reconcile [--files 100000]

Creates N small files in nested folders, records them in a store as indexed (random vectors;
the files are never read when unchanged), then times the rescan that a restart runs: walk,
stat, compare with the store. Prints the median of 3 runs and whether anything was embedded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from clipd.config import ModelConfig, parse_config
from clipd.embedder import Embedder
from clipd.indexer import Indexer
from clipd.progress import Progress
from clipd.records import FileRecord
from clipd.scanner import FileStat
from clipd.store import Store

REPO = Path(__file__).resolve().parents[1]
TINY = ModelConfig(
    name=str(REPO / "tests/fixtures/tiny-clip.json"),
    pretrained=str(REPO / "tests/fixtures/tiny-clip.pt"),
    device="cpu",
)
_BATCH = 5000


def make_files(root: Path, count: int) -> list[FileStat]:
    stats = []
    for number in range(count):
        folder = root / f"{number // 10000:02d}" / f"{number // 100 % 100:02d}"
        if number % 100 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"img{number:06d}.jpg"
        path.write_bytes(b"\xff\xd8" + number.to_bytes(4, "little"))
        stats.append(FileStat.of(str(path), path.stat()))
    return stats


def record_as_indexed(store: Store, stats: list[FileStat], dim: int) -> None:
    rng = np.random.default_rng(0)
    for start in range(0, len(stats), _BATCH):
        chunk = stats[start : start + _BATCH]
        vectors = rng.standard_normal((len(chunk), dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store.write_batch(
            [
                FileRecord(
                    st.path,
                    st.size,
                    st.mtime_ns,
                    st.inode,
                    st.device,
                    st.path.encode()[-16:],
                    64,
                    64,
                    vector.tobytes(),
                )
                for st, vector in zip(chunk, vectors, strict=True)
            ],
            [],
        )


def measure(files: int, runs: int = 3) -> list[float]:
    """Seconds of each of `runs` rescans of `files` unchanged, indexed files."""
    work = Path(tempfile.mkdtemp(prefix="clipd-reconcile-"))
    try:
        root = work / "photos"
        stats = make_files(root, files)
        config = parse_config(
            {"roots": [str(root)], "database": str(work / "index.db")}, work / "config.yaml"
        )
        embedder = Embedder(TINY)
        store = Store(config.database_file, in_memory=False)
        store.bind_model(embedder.identity)
        record_as_indexed(store, stats, embedder.identity.dim)
        timings = []
        for _ in range(runs):
            indexer = Indexer(config, store, embedder, Progress())
            began = time.perf_counter()
            job = indexer.run_once([root])
            timings.append(time.perf_counter() - began)
            if (job.queued, job.removed) != (0, 0):
                raise SystemExit("a reconcile of unchanged files changed something")
        store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    args = parser.parse_args()
    timings = measure(args.files)
    print(
        f"reconcile of {args.files} unchanged files, {os.cpu_count()} CPUs: "
        f"median {statistics.median(timings):.2f} s (runs: "
        f"{', '.join(f'{t:.2f}' for t in timings)}), nothing re-embedded"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
