"""Indexing throughput and `clipq` wall time, end to end, on generated photo-like JPEGs.

    python -m bench.index_query [--images N] [--models tiny vit-b-32] [--queries N]

For each model: index N files with the real pipeline (decode, preprocess, embed, commit) and
report images/s; then start `clipd serve` on the same database and time `clipq QUERY` as a
user would (process start to exit), median and p90 over --queries runs. ViT-B-32 uses random
weights: speed does not depend on weights.
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

import numpy as np
import yaml
from PIL import Image, ImageDraw, ImageFilter

from clipd.config import load_config
from clipd.embedder import Embedder
from clipd.indexer import Indexer
from clipd.progress import Progress
from clipd.store import Store
from clipq import Client, ClipqError

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODELS = {
    "tiny": {
        "name": str(REPO / "tests/fixtures/tiny-clip.json"),
        "pretrained": str(REPO / "tests/fixtures/tiny-clip.pt"),
    },
    "vit-b-32": {"name": "ViT-B-32", "pretrained": "random"},
}
QUERY_WORDS = ["red brick wall", "a dog on a beach", "sunset over mountains", "a bowl of fruit"]


def photo(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    """A smooth, photo-like picture: a gradient sky, blurred shapes, mild noise."""
    width, height = size
    top = np.array([rng.randint(0, 255) for _ in range(3)], dtype=np.float32)
    bottom = np.array([rng.randint(0, 255) for _ in range(3)], dtype=np.float32)
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    pixels = np.broadcast_to(top + (bottom - top) * ramp, (height, width, 3)).copy()
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0, 6, (height, width, 3))
    image = Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))
    pen = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = rng.randrange(width), rng.randrange(height)
        r = rng.randint(width // 20, width // 5)
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        pen.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    return image.filter(ImageFilter.GaussianBlur(2))


def write_photos(root: Path, count: int, size: tuple[int, int]) -> None:
    rng = random.Random(1)
    template = [photo(rng, size) for _ in range(min(count, 16))]
    for number in range(count):
        folder = root / f"album{number % 8}"
        folder.mkdir(parents=True, exist_ok=True)
        # Re-encoding a few templates keeps generation fast; each file is still decoded fully.
        template[number % len(template)].save(folder / f"img{number:05d}.jpg", quality=90)


def write_config(work: Path, photos: Path, model: str, **extra: object) -> Path:
    config = {
        "roots": [str(photos)],
        "database": str(work / f"{model}.db"),
        "socket": str(work / f"{model}.sock"),
        "model": {**MODELS[model], "device": "cpu"},
        "log_level": "warning",
        **extra,
    }
    path = work / f"{model}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def measure_indexing(config_path: Path) -> tuple[float, float, int]:
    """(model load seconds, indexing images/s, files indexed)."""
    config = load_config(config_path)
    started = time.perf_counter()
    embedder = Embedder(config.model)
    loaded = time.perf_counter()
    store = Store(config.database)
    try:
        store.bind_model(embedder.identity)
        job = Indexer(config, store, embedder, Progress()).run_once(list(config.roots))
    finally:
        store.close()
    elapsed = time.perf_counter() - loaded
    return loaded - started, job.indexed / elapsed, job.indexed


def measure_queries(config_path: Path, runs: int) -> tuple[list[float], list[float]]:
    """Wall seconds of `clipq QUERY` runs, and the daemon's own took_ms, on a warm daemon."""
    config = load_config(config_path)
    env = {**os.environ, "CLIPD_SOCKET": str(config.socket)}
    daemon = subprocess.Popen([BIN / "clipd", "serve", "--config", str(config_path)], env=env)
    try:
        _wait_ready(config.socket)
        walls: list[float] = []
        server_ms: list[float] = []
        with Client(config.socket) as client:
            for number in range(runs):
                query = f"{QUERY_WORDS[number % len(QUERY_WORDS)]} {number}"  # defeat the cache
                started = time.perf_counter()
                subprocess.run([BIN / "clipq", "-n", "20", query], env=env, check=True,
                               stdout=subprocess.DEVNULL)  # fmt: skip
                walls.append(time.perf_counter() - started)
                server_ms.append(client.search(query + "!", limit=20).took_ms)
        return walls, server_ms
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)


def _wait_ready(socket: Path) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with Client(socket, timeout=5) as client:
                if client.status().state == "idle":
                    return
        except ClipqError:
            pass
        time.sleep(0.2)
    raise SystemExit("daemon did not become ready")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", default="1600x1200", help="WIDTHxHEIGHT of the generated JPEGs")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=sorted(MODELS))
    parser.add_argument("--queries", type=int, default=20)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    work = Path(tempfile.mkdtemp(prefix="clipd-bench-"))
    try:
        photos = work / "photos"
        write_photos(photos, args.images, (width, height))
        print(f"{args.images} JPEGs of {width}x{height} (q90), {os.cpu_count()} CPUs")
        print(f"{'model':10} {'load s':>7} {'index img/s':>12} {'clipq p50 ms':>13} "
              f"{'clipq p90 ms':>13} {'server p50 ms':>14}")  # fmt: skip
        for model in args.models:
            config_path = write_config(work, photos, model)
            load_s, rate, _ = measure_indexing(config_path)
            walls, server_ms = measure_queries(config_path, args.queries)
            p90 = statistics.quantiles(walls, n=10)[-1]
            print(f"{model:10} {load_s:7.2f} {rate:12.1f} {statistics.median(walls) * 1e3:13.0f} "
                  f"{p90 * 1e3:13.0f} {statistics.median(server_ms):14.1f}")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
