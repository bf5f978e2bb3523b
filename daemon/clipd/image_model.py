"""What indexing asks of a model, and which model `clipd index` loads.

The daemon indexes with its one clipd.embedder.Embedder (torch, both towers: it answers queries
too); `clipd index` needs the image tower only, which runs in ONNX Runtime where that is as
fast and lighter (clipd.onnx_images), else in torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from PIL import Image

from clipd.config import ModelConfig
from clipd.records import ModelIdentity


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
