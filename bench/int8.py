"""The image tower in ONNX Runtime (fp32, dynamic int8) against torch (fp32, bf16): speed, drift.

    python -m bench.int8 [--rounds R]

Dynamic int8 quantises the MatMul/Gemm weights to int8 and the activations on the fly (fast
with AVX512-VNNI). "ORT int8" is clipd's own quantisation (clipd.onnx_int8: one scale per output
channel), which `clipd index` runs under `precision: auto` where its probe allows; beside it
the choices it was measured against: one scale per tensor (onnxruntime's default), and per
channel on the MLP blocks only (attention kept fp32). Speed: model only, batch 8 (clipd's
indexing chunk), 2 threads each, variants alternating round by round; CPU-ms per image and
images/s, medians. Drift: the smallest cosine of each variant's image embeddings to torch
fp32's, on ViT-B-32-256 (the rclip bench's random weights) and on the trained tiny test model,
whose shape pictures also give caption top-1 agreement with fp32 and caption -> picture top-5
overlap; and clipd's own probe (clipd.onnx_int8.drift) on ViT-B-32-256.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime
import open_clip
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic

from bench import corpus, rclip
from bench.common import REPO
from clipd import onnx_int8

Array = npt.NDArray[np.float32]
Variant = Callable[[Array], Array]
_THREADS = 2


# Other int8 settings than clipd's, measured beside it: name -> (per channel, only the nodes
# whose name holds this).
_OTHER_INT8 = {"int8 per tensor": (False, ""), "int8 MLP only": (True, "mlp")}


def _quantised(onnx_fp32: Path, name: str) -> Path:
    path = onnx_fp32.with_name(f"{onnx_fp32.stem}-{name.replace(' ', '-')}.onnx")
    if path.exists():
        return path
    if name == "int8":
        onnx_int8.quantise(onnx_fp32, path)
        return path
    per_channel, only = _OTHER_INT8[name]
    graph = onnx.load(str(onnx_fp32), load_external_data=False).graph
    nodes = [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm") and only in n.name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(
            onnx_fp32,
            path,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            nodes_to_quantize=nodes,
            op_types_to_quantize=["MatMul", "Gemm"],
        )
    return path


def variants(model: Any, bf16: Any, onnx_fp32: Path) -> dict[str, Variant]:
    """The ways to run one image tower, each taking and giving float32 arrays."""
    paths = {"fp32": onnx_fp32} | {
        name: _quantised(onnx_fp32, name) for name in ("int8", *_OTHER_INT8)
    }
    sessions = {name: _session(path) for name, path in paths.items()}

    def torch_run(tower: Any, dtype: torch.dtype) -> Variant:
        def run(pixels: Array) -> Array:
            with torch.inference_mode():
                out: Array = tower(torch.from_numpy(pixels).to(dtype)).float().numpy()
            return out

        return run

    def ort_run(session: onnxruntime.InferenceSession) -> Variant:
        def run(pixels: Array) -> Array:
            out: Array = session.run(None, {"input": pixels})[0]
            return out

        return run

    return {
        "torch fp32": torch_run(model.visual, torch.float32),
        "torch bf16": torch_run(bf16.visual, torch.bfloat16),
    } | {f"ORT {name}": ort_run(session) for name, session in sessions.items()}


def _session(path: Path) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = _THREADS
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _unit(vectors: Array) -> Array:
    out: Array = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return out


def min_cosines(runs: dict[str, Variant], pixels: Array) -> dict[str, float]:
    reference = _unit(runs["torch fp32"](pixels))
    return {name: float((_unit(run(pixels)) * reference).sum(axis=1).min())
            for name, run in runs.items()}  # fmt: skip


def speeds(runs: dict[str, Variant], side: int, rounds: int) -> dict[str, tuple[float, float]]:
    """Name -> (CPU-ms per image, images/s), medians of rounds, variants alternating."""
    pixels = np.random.default_rng(0).standard_normal((8, 3, side, side)).astype(np.float32)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            run(pixels)  # warm-up: kernels picked, buffers allocated
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(2):
                run(pixels)
            images = 2 * len(pixels)
            samples[name].append(((time.process_time() - cpu) / images * 1e3,
                                  images / (time.perf_counter() - wall)))  # fmt: skip
    return {name: (statistics.median(s[0] for s in got), statistics.median(s[1] for s in got))
            for name, got in samples.items()}  # fmt: skip


def _tower(model_name: str, weights: str, onnx: Path) -> tuple[Any, dict[str, Variant], int]:
    model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=weights)
    model.eval()
    bf16 = open_clip.create_model(model_name, pretrained=weights, precision="pure_bf16").eval()
    side = int(open_clip.get_model_config(model_name)["vision_cfg"]["image_size"])
    if not onnx.exists():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rclip.export_visual(model, side, onnx)
    return preprocess, variants(model, bf16, onnx), side


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    model_dir = rclip.ensure_model()
    preprocess, runs, side = _tower(rclip.MODEL_NAME, str(model_dir / "weights.pt"),
                                    model_dir / "visual-tower.onnx")  # fmt: skip
    pixels = np.random.default_rng(1).standard_normal((8, 3, side, side)).astype(np.float32)
    drift = min_cosines(runs, pixels)
    print(f"{rclip.MODEL_NAME}, random weights, batch 8, {_THREADS} threads, medians of "
          f"{args.rounds} alternating rounds:")  # fmt: skip
    for name, (cpu_ms, rate) in speeds(runs, side, args.rounds).items():
        print(f"  {name:15}  {cpu_ms:6.1f} CPU-ms/img  {rate:6.1f} img/s  "
              f"min cosine to torch fp32 {drift[name]:.5f}")  # fmt: skip
    fp32, int8 = runs["ORT fp32"], runs["ORT int8"]
    probe = onnx_int8.drift(lambda picture: preprocess(picture).numpy(),
                            lambda batch: _unit(fp32(np.stack(batch))),
                            lambda batch: _unit(int8(np.stack(batch))), side)  # fmt: skip
    print(f"  clipd's probe pictures (clipd.onnx_int8), ORT int8 against ORT fp32: "
          f"min cosine {probe:.5f}")  # fmt: skip
    _tiny_drift()
    return 0


def _tiny_drift() -> None:
    sys.path.insert(0, str(REPO / "tests"))
    from fixtures.shapes import COLOURS, SHAPES, caption, draw

    config = REPO / "tests/fixtures/tiny-clip.json"
    open_clip.add_model_config(str(config))
    name = config.stem
    preprocess, runs, _ = _tower(name, str(config.with_suffix(".pt")),
                                 corpus.OUT / "tiny-visual.onnx")  # fmt: skip
    tiny = open_clip.create_model(name, pretrained=str(config.with_suffix(".pt"))).eval()
    classes = [(c, s) for c in COLOURS for s in SHAPES]
    rng = random.Random(5)
    pictures = [draw(c, s, (96, 64), rng) for c, s in classes for _ in range(4)]
    pixels = torch.stack([preprocess(p) for p in pictures]).numpy()
    with torch.inference_mode():
        texts = _unit(tiny.encode_text(open_clip.get_tokenizer(name)(
            [caption(c, s) for c, s in classes])).numpy())  # fmt: skip
    reference = _unit(runs["torch fp32"](pixels))
    print(f"tiny trained model, {len(pictures)} shape pictures, {len(classes)} captions:")
    for variant, run in runs.items():
        vectors = _unit(run(pixels))
        top1 = np.mean((vectors @ texts.T).argmax(1) == (reference @ texts.T).argmax(1))
        overlap = np.mean([
            len(set(np.argsort(-(texts[i] @ vectors.T))[:5])
                & set(np.argsort(-(texts[i] @ reference.T))[:5])) / 5
            for i in range(len(texts))
        ])  # fmt: skip
        cosine = float((vectors * reference).sum(axis=1).min())
        print(f"  {variant:15}  min cosine {cosine:.5f}  caption top-1 agrees {top1:.3f}  "
              f"caption -> picture top-5 overlap {overlap:.3f}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
