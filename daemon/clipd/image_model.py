"""Which runtime runs the model: the image tower for `clipd index`, both towers for the daemon.

`clipd index` needs the image tower only, which runs in ONNX Runtime where that is as fast and
lighter (clipd.onnx_images: int8, else fp32), else in torch. The daemon also answers text
queries: where `clipd index` would run the int8 tower, it runs that tower and the text tower
in ONNX Runtime, without torch (clipd.onnx_model); elsewhere torch (for_the_daemon).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from clipd.config import ModelConfig
from clipd.errors import ModelError, UnknownModel, WeightsUnavailable
from clipd.onnx_model import OnnxClip
from clipd.served_model import ImageModel, ServedModel

if TYPE_CHECKING:
    from clipd.onnx_images import OnnxImages

log = logging.getLogger(__name__)

# Errors of the model itself, which torch would meet too: the daemon's, not a runtime's.
_THE_MODELS_OWN = (UnknownModel, WeightsUnavailable)
_Tower = TypeVar("_Tower")


def for_indexing(config: ModelConfig) -> ImageModel:
    """The image tower of config's model, in the runtime model.runtime picks."""
    from clipd import onnx_images

    if onnx_images.chosen_for(config):
        model = onnx_images.load(config)
        if model is not None:
            return model
    from clipd.embedder import Embedder

    return Embedder(config, texts=False)


def for_the_daemon(config: ModelConfig) -> ServedModel:
    """The daemon's model. Where `clipd index` would run the int8 image tower, the daemon runs
    it too, and texts in ONNX Runtime beside it (clipd.onnx_model): once both towers are made
    (exported, quantised, checked: a first start's work) the daemon never imports torch.
    Where the text tower cannot be made, torch runs texts; without the int8 tower, torch runs
    the whole model. Never fatal: the other runtime is a speed-up, and torch's works."""
    model = _served(config)
    _give_back_freed_memory()
    return model


def _served(config: ModelConfig) -> ServedModel:
    from clipd import onnx_images, onnx_texts
    from clipd.embedder import Embedder

    images = _int8(config, onnx_images.cached_int8, "load the cached int8 image tower") or _int8(
        config, functools.partial(onnx_images.load, int8_only=True), "make the int8 image tower"
    )
    if images is None:
        embedder = Embedder(config)
        log.info("the image tower stays in torch (%s)", embedder.precision)
        return embedder
    texts = _speed_up(
        lambda: onnx_texts.cached(config) or onnx_texts.make(config, images),
        "make the ONNX text tower: texts run in torch",
    )
    if texts is not None:
        log.info("images are embedded by the int8 tower and texts by the fp32 one (%s) in ONNX "
                 "Runtime: torch is not used", texts.path)  # fmt: skip
        return OnnxClip(images, texts)
    embedder = Embedder(config, image_tower=images)
    _texts_on_one_thread()
    log.info("images are embedded by the int8 tower in ONNX Runtime, texts by torch")
    return embedder


def _int8(
    config: ModelConfig, tower: Callable[[ModelConfig], OnnxImages | None], what: str
) -> OnnxImages | None:
    """tower(config) if it is int8 and `clipd index` would run one here (a CPU, precision
    auto, runtime not torch); None otherwise, or on any error (logged)."""
    from clipd import onnx_images

    def int8_tower() -> OnnxImages | None:
        if config.precision != "auto" or not onnx_images.chosen_for(config):
            return None
        images = tower(config)
        return images if images is not None and images.precision == "int8" else None

    return _speed_up(int8_tower, what)


def _speed_up(make: Callable[[], _Tower | None], what: str) -> _Tower | None:
    """make(), or None where it fails (logged: "cannot <what>"): an ONNX tower is a speed-up,
    and a bug in one must not keep the daemon from serving. Errors of the model itself, which
    torch would meet too, are the daemon's."""
    try:
        return make()
    except _THE_MODELS_OWN:
        raise
    except ModelError as exc:
        log.warning("%s", exc)
    except Exception:
        log.exception("cannot %s", what)
    return None


def _texts_on_one_thread() -> None:
    """Run torch, which now encodes only texts, on one thread. A query's text runs while an
    indexing chunk finishes in ONNX Runtime's threads and the loaders decode: on 2 cores, the
    second thread of each of torch's ~200 small parallel steps waits for a core, and the query
    waits for it (ViT-B-32 in bf16 while indexing: text p90 236 -> 78 ms, query p99 ~770 ->
    ~200 ms). Idle, the second thread saves 5.6 ms a new text (17.7 vs 12.1 ms). The process
    holds one model, and torch runs nothing else in it."""
    import torch

    torch.set_num_threads(1)


def _give_back_freed_memory() -> None:
    """Loading (the checkpoint's cast, and on a first start the export and the quantisation:
    about a GiB) frees blocks that glibc keeps for reuse (ViT-B-32 after a first start: RSS
    1805 MiB, 1319 after this); a daemon runs for months, so give them back. Only glibc has
    malloc_trim."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
