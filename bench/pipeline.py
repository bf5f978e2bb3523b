"""Indexing throughput: decode-only, model-only and end to end, measured in the same run.

The pipeline bound is cores / (decode CPU-seconds per image + model CPU-seconds per image):
what the machine could do if both stages kept every core busy with no overhead. End-to-end
indexing (file on disk -> committed row, the daemon's own Indexer) is reported against it.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench import corpus
from clipd import images
from clipd.config import Config, ModelConfig, parse_config
from clipd.embedder import Embedder
from clipd.indexer import Indexer
from clipd.onnx_images import OnnxImages
from clipd.onnx_model import OnnxClip
from clipd.progress import Progress
from clipd.scanner import content_hash
from clipd.served_model import ImageModel, ServedModel
from clipd.store import Store

VIT_B_32 = ModelConfig(name="ViT-B-32", pretrained="random", device="cpu")


@dataclass(frozen=True, slots=True)
class Rates:
    decode_cpu_s: float  # per image, draft decoding + preprocessing, one thread
    decode_full_cpu_s: float  # the same without JPEG draft / reduce()
    model_cpu_s: float  # per image, at the batch size and precision used
    model_rate: float  # images/s, model only
    end_to_end: float  # images/s, file -> committed row

    @property
    def bound(self) -> float:
        return (os.cpu_count() or 1) / (self.decode_cpu_s + self.model_cpu_s)


def described(model: ImageModel) -> str:
    """What runs model's images: runtime and precision (and int8's probe)."""
    if isinstance(model, Embedder | OnnxClip) and model.image_tower is not None:
        model = model.image_tower
    if isinstance(model, OnnxImages):
        drift = "" if model.cosine is None else f", probe cosine to fp32 {model.cosine:.5f}"
        return f"ONNX Runtime {model.precision}{drift}"
    assert isinstance(model, Embedder)
    return f"torch {model.precision}"


def described_texts(model: ServedModel) -> str:
    """What runs model's texts: runtime and precision."""
    return "ONNX Runtime fp32" if isinstance(model, OnnxClip) else f"torch {model.precision}"


def decode_cpu_seconds(paths: list[Path], embedder: ImageModel, *, draft: bool) -> float:
    """CPU-seconds per image of what a loader thread does: hash, decode, orient, resize."""
    side = embedder.image_size if draft else None
    started = time.thread_time()
    for path in paths:
        content_hash(str(path), path.stat().st_size)
        embedder.prepare(images.decode_file(path, min_side=side).image)
    return (time.thread_time() - started) / len(paths)


def model_seconds(embedder: ImageModel, batch: int, batches: int) -> tuple[float, float]:
    """(CPU-seconds per image, images/s) of the model alone on prepared inputs."""
    side = embedder.image_size
    noise = np.random.default_rng(0).integers(0, 256, (batch, side, side, 3), dtype=np.uint8)
    pixels = [embedder.prepare(Image.fromarray(picture, "RGB")) for picture in noise]
    embedder.embed_prepared(pixels)  # warm-up: oneDNN picks its kernels on the first call
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(batches):
        embedder.embed_prepared(pixels)
    images_done = batch * batches
    return (time.process_time() - cpu) / images_done, images_done / (time.perf_counter() - wall)


def index_rate(root: Path, config: Config, embedder: ImageModel) -> float:
    """Images/s of a cold index of root into a new database, by the daemon's Indexer."""
    work = Path(tempfile.mkdtemp(prefix="clipd-bench-index-"))
    store = Store(work / "index.db")
    try:
        store.bind_model(embedder.identity)
        config = replace(config, database=work / "index.db")
        started = time.perf_counter()
        job = Indexer(config, store, embedder, Progress()).run_once([root])
        elapsed = time.perf_counter() - started
        if job.failed:
            raise SystemExit(f"{job.failed} files failed to index")
        return job.indexed / elapsed
    finally:
        store.close()
        shutil.rmtree(work, ignore_errors=True)


def config_for(root: Path, **keys: object) -> Config:
    return parse_config({"roots": [str(root)], **keys}, root.parent / "bench.yaml")


def measure(root: Path, paths: list[Path], embedder: ImageModel, batch: int, repeats: int) -> Rates:
    """The three rates, each the median of `repeats` runs, interleaved to share the noise."""
    decode, full, model, model_rate, e2e = [], [], [], [], []
    config = config_for(root, batch_size=batch)
    sample = corpus.mixed(paths, max(20, len(paths) // 4))
    for _ in range(repeats):
        decode.append(decode_cpu_seconds(sample, embedder, draft=True))
        full.append(decode_cpu_seconds(sample[:20], embedder, draft=False))
        cpu_s, rate = model_seconds(embedder, batch, max(4, len(paths) // batch // 2))
        model.append(cpu_s)
        model_rate.append(rate)
        e2e.append(index_rate(root, config, embedder))
    med = statistics.median
    return Rates(med(decode), med(full), med(model), med(model_rate), med(e2e))


def compare(
    label: str, variants: dict[str, Callable[[], float]], repeats: int
) -> list[tuple[str, str, float]]:
    """Median of each variant, the variants interleaved run by run."""
    runs: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            runs[name].append(run())
    return [(label, name, statistics.median(values)) for name, values in runs.items()]


def techniques(root: Path, repeats: int) -> list[tuple[str, str, float]]:
    """End-to-end images/s, and model-only rates, with one setting changed at a time."""
    bf16 = Embedder(replace(VIT_B_32, precision="bf16"))
    fp32 = Embedder(replace(VIT_B_32, precision="fp32"))
    rows = compare(
        "model only, batch 16, img/s",
        {
            "fp32": lambda: model_seconds(fp32, 16, 3)[1],
            "bf16": lambda: model_seconds(bf16, 16, 6)[1],
        },
        repeats,
    )
    rows += compare(
        "model only bf16, img/s",
        {f"batch {b}": partial(_model_rate, bf16, b) for b in (8, 16, 32, 64)},
        repeats,
    )
    rows += compare(
        "end to end bf16 batch 16, img/s",
        {
            f"loader_threads {n}": partial(
                index_rate, root, config_for(root, loader_threads=n), bf16
            )
            for n in (1, 2, 4)
        },
        repeats,
    )
    rows += compare(
        "end to end bf16, img/s",
        {
            f"batch_size {b}": partial(index_rate, root, config_for(root, batch_size=b), bf16)
            for b in (8, 16, 32)
        },
        repeats,
    )
    threads = torch.get_num_threads()
    rows += compare(
        "end to end bf16 batch 16, img/s",
        {
            f"torch threads {n}": partial(
                _with_threads, n, partial(index_rate, root, config_for(root), bf16)
            )
            for n in sorted({1, threads})
        },
        repeats,
    )
    return rows


def _model_rate(embedder: Embedder, batch: int) -> float:
    return model_seconds(embedder, batch, max(2, 96 // batch))[1]


def _with_threads(count: int, run: Callable[[], float]) -> float:
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        return run()
    finally:
        torch.set_num_threads(previous)
