"""What indexing asks of a model, and which image tower `clipd index` and the daemon run.

`clipd index` needs the image tower only, which runs in ONNX Runtime where that is as fast and
lighter (clipd.onnx_images: int8, else fp32), else in torch. The daemon runs texts in torch (it
answers text queries) and images in the same int8 tower where `clipd index` would run it; torch
then builds its image tower only when that int8 tower has still to be made (for_the_daemon).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt
from PIL import Image

from clipd.config import ModelConfig
from clipd.errors import ModelError
from clipd.records import ModelIdentity

if TYPE_CHECKING:
    from clipd.embedder import Embedder
    from clipd.onnx_images import OnnxImages

log = logging.getLogger(__name__)


class ImageModel(Protocol):
    """Images in, L2-normalised float32 vectors out, in two steps: prepare() on the loader
    threads (CPU work, thread-safe), embed_prepared() on a batch of what it made."""

    @property
    def identity(self) -> ModelIdentity: ...

    @property
    def image_size(self) -> int: ...

    def prepare(self, image: Image.Image) -> Any: ...

    def embed_prepared(self, batch: Sequence[Any]) -> npt.NDArray[np.float32]: ...


def for_indexing(config: ModelConfig) -> ImageModel:
    """The image tower of config's model, in the runtime model.runtime picks."""
    from clipd import onnx_images

    if onnx_images.chosen_for(config):
        model = onnx_images.load(config)
        if model is not None:
            return model
    from clipd.embedder import Embedder

    return Embedder(config, texts=False)


def for_the_daemon(config: ModelConfig) -> Embedder:
    """The daemon's model: torch for texts, and for images the int8 tower where `clipd index`
    would run it. Where an earlier run made and accepted that tower, torch's image tower is
    never built; else the whole model loads, then the int8 tower is made (exported and
    quantised) and takes over. Never fatal: the int8 tower is a speed-up, and torch's works."""
    from clipd import onnx_images
    from clipd.embedder import Embedder

    int8 = _int8(config, onnx_images.cached_int8, "load the cached")
    embedder = Embedder(config, image_tower=int8)
    if int8 is None:
        int8 = _int8(config, functools.partial(onnx_images.load, int8_only=True), "make the")
        if int8 is not None:
            embedder.use_image_tower(int8)
    if int8 is not None:
        _texts_on_one_thread()
        log.info("images are embedded by the int8 tower in ONNX Runtime, texts by torch")
    else:
        log.info("the image tower stays in torch (%s)", embedder.precision)
    _give_back_freed_memory()
    return embedder


def _int8(
    config: ModelConfig, tower: Callable[[ModelConfig], OnnxImages | None], what: str
) -> OnnxImages | None:
    """tower(config) if it is int8 and `clipd index` would run one here (a CPU, precision
    auto, runtime not torch); None otherwise, or on any error (logged)."""
    from clipd import onnx_images

    try:
        if config.precision != "auto" or not onnx_images.chosen_for(config):
            return None
        images = tower(config)
    except ModelError as exc:
        log.warning("%s", exc)
        return None
    except Exception:  # a bug in this speed-up must not keep the daemon from serving
        log.exception("cannot %s int8 image tower", what)
        return None
    return images if images is not None and images.precision == "int8" else None


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
