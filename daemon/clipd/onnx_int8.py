"""The int8 image tower: ONNX Runtime's dynamic quantisation of clipd's fp32 export, and the
probe that decides whether its vectors stay close enough to fp32's to be used.

Why: on a CPU the image tower is most of indexing's cost, and int8 matrix products are the
cheapest it runs. `python -m bench.int8`, ViT-B-32-256 on 2 cores with AVX512-VNNI, two runs
(README, Performance): 40.5 / 42.3 CPU-ms per image against 69.9 / 81.4 for torch bf16 and
124.9 / 129.4 for ONNX Runtime fp32. The weights of every MatMul/Gemm become int8 with one
scale per output channel, so one large column does not coarsen the rest (per tensor: 46.8 /
52.0 CPU-ms, a little more drift). Activations are quantised on the fly; the patch embedding
(a convolution) and the norms stay fp32.

The drift depends on the weights and on the CPU's int8 instructions (without VNNI, products
are computed in 16 bits that can saturate: min cosine 0.992 on the AVX2-only machine of the
README), so it is measured where it runs: fixed probe pictures through both towers, and the
int8 tower is kept only if every vector stays within clipd.embedder.MIN_COSINE of fp32's
(bf16's rule). Exporting and probing happen once per model; the cache remembers the answer.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

Vectors = npt.NDArray[np.float32]
_PROBE_SEED = 20261203
_PROBE_PICTURES = 8


def quantise(fp32: Path, int8: Path) -> None:
    """Write fp32's export with int8 weights to int8 (via a .PID.part file beside it).
    Raises OSError for a disk that cannot take it, onnxruntime's errors for a bad model."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    partial = int8.with_suffix(f".{os.getpid()}.part")
    try:
        # The quantiser logs each tensor it skips, and suggests its pre-processing pass (shape
        # inference for models whose shapes it cannot see), through the logging module's
        # functions (the root logger): the export's shapes are known, and none of it is the
        # user's to act on. Its errors still show.
        root = logging.getLogger()
        root.addFilter(_errors_only)
        try:
            quantize_dynamic(
                fp32,
                partial,
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["MatMul", "Gemm"],
            )
        finally:
            root.removeFilter(_errors_only)
        os.replace(partial, int8)
    finally:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)


def _errors_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


def probe_pictures(side: int) -> list[Image.Image]:
    """Fixed pictures for comparing precisions: smooth colour fields with detail and sensor-like
    noise at several scales, as photos have, in a landscape frame so the crop is exercised too."""
    rng = np.random.default_rng(_PROBE_SEED)
    size = (side * 3 // 2, side)
    pictures = []
    for index in range(_PROBE_PICTURES):
        coarse = _field(rng, 3 + index, size)
        fine = _field(rng, 24 + 8 * index, size)
        noise = rng.normal(0.0, 4.0 * (index % 3), (size[1], size[0], 3))
        pixels = np.clip(0.75 * coarse + 0.25 * fine + noise, 0, 255).astype(np.uint8)
        pictures.append(Image.fromarray(pixels, "RGB"))
    return pictures


def _field(rng: np.random.Generator, cells: int, size: tuple[int, int]) -> npt.NDArray[np.float64]:
    """Random colours on a cells x cells grid, resized smoothly to size."""
    grid = rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
    smooth = Image.fromarray(grid, "RGB").resize(size, Image.Resampling.BICUBIC)
    return np.asarray(smooth, dtype=np.float64)


def drift(
    prepare: Callable[[Image.Image], npt.NDArray[np.float32]],
    reference: Callable[[Sequence[npt.NDArray[np.float32]]], Vectors],
    candidate: Callable[[Sequence[npt.NDArray[np.float32]]], Vectors],
    side: int,
) -> float:
    """The smallest cosine between the two towers' normalised vectors of the probe pictures."""
    inputs = [prepare(picture) for picture in probe_pictures(side)]
    return float((reference(inputs) * candidate(inputs)).sum(axis=1).min())
