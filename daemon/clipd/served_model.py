"""What indexing and the daemon ask of a model, whichever runtime runs it.

ImageModel is what indexing needs (`clipd index`: the image tower alone). ServedModel is the
daemon's: images and texts, queries first, texts cached. Two models implement it:
clipd.embedder.Embedder (torch) and clipd.onnx_model.OnnxClip (ONNX Runtime for both towers,
so that a daemon whose towers were exported never imports torch).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from PIL import Image

    from clipd.records import ModelIdentity

Vectors = npt.NDArray[np.float32]
_TEXT_CACHE_SIZE = 512
# Indexing batches run in chunks of this many images, and a query waits at most for one chunk
# (about 0.1 s for ViT-B-32 in bf16 on 2 cores); larger chunks index no faster on a CPU.
INDEX_CHUNK = 8


def unit_rows(features: npt.NDArray[Any]) -> Vectors:
    """float32 rows scaled to length 1 (a zero row stays zero)."""
    vectors = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    normalised: Vectors = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
    return normalised


class ImageModel(Protocol):
    """Images in, L2-normalised float32 vectors out, in two steps: prepare() on the loader
    threads (CPU work, thread-safe), embed_prepared() on a batch of what it made."""

    @property
    def identity(self) -> ModelIdentity: ...

    @property
    def image_size(self) -> int: ...

    def prepare(self, image: Image.Image) -> Any: ...

    def embed_prepared(self, batch: Sequence[Any]) -> Vectors: ...


class ServedModel(ABC):
    """Images and texts in, L2-normalised float32 vectors out, for indexing and queries alike.

    Queries go first: indexing runs in chunks and waits between them while any query uses the
    model, so a query never shares the CPU with more than one chunk. Recent texts are answered
    from a small LRU cache.
    """

    identity: ModelIdentity
    image_size: int
    device: str

    def __init__(self) -> None:
        self._text_cache: OrderedDict[str, Vectors] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._queries = 0
        self._queries_done = threading.Condition()

    @property
    @abstractmethod
    def precision(self) -> str:
        """What runs the towers, in words for the log and the bench."""

    @abstractmethod
    def prepare(self, image: Image.Image) -> Any:
        """The model's input for one RGB image; CPU work, safe to call from many threads."""

    @abstractmethod
    def _encode_images(self, batch: Sequence[Any]) -> Vectors:
        """Normalised vectors of inputs made by prepare()."""

    @abstractmethod
    def _encode_texts(self, texts: list[str]) -> Vectors:
        """Normalised vectors of texts."""

    def embed_prepared(self, batch: Sequence[Any]) -> Vectors:
        """Vectors, one row per input made by prepare(), for indexing: yields to queries."""
        chunks = []
        for start in range(0, len(batch), INDEX_CHUNK):
            with self._queries_done:
                self._queries_done.wait_for(lambda: self._queries == 0)
            chunks.append(self._encode_images(batch[start : start + INDEX_CHUNK]))
        vectors: Vectors = np.concatenate(chunks)
        return vectors

    def embed_images(self, images: Sequence[Image.Image]) -> Vectors:
        """Vectors of images for a query: ahead of any indexing waiting for the model."""
        with self._query():
            return self._encode_images([self.prepare(image) for image in images])

    def embed_text(self, text: str) -> Vectors:
        """The vector (1-d) of one text; recent texts are answered from a small LRU cache."""
        with self._cache_lock:
            cached = self._text_cache.get(text)
            if cached is not None:
                self._text_cache.move_to_end(text)
                return cached
        with self._query():
            vector: Vectors = self._encode_texts([text])[0]
        vector.flags.writeable = False
        with self._cache_lock:
            self._text_cache[text] = vector
            if len(self._text_cache) > _TEXT_CACHE_SIZE:
                self._text_cache.popitem(last=False)
        return vector

    def warm_up(self) -> None:
        """Encode one text now, so that the first query does not pay the kernels' one-time
        set-up (0.9 s for ViT-B-32 in torch bf16 here); `clipd index` asks no queries and
        skips it."""
        self._encode_texts(["a"])

    @contextmanager
    def _query(self) -> Iterator[None]:
        with self._queries_done:
            self._queries += 1
        try:
            yield
        finally:
            with self._queries_done:
                self._queries -= 1
                self._queries_done.notify_all()
