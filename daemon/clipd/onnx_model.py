"""The daemon's model with both towers in ONNX Runtime: int8 images (clipd.onnx_images) and
float32 texts (clipd.onnx_texts). A daemon that loads it never imports torch: it starts in a
fraction of the time and holds a fraction of the memory (README, Performance)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from clipd.served_model import ServedModel, Vectors

if TYPE_CHECKING:
    from PIL import Image

    from clipd.onnx_images import OnnxImages
    from clipd.onnx_texts import OnnxTexts


class OnnxClip(ServedModel):
    """Images and texts in ONNX Runtime on the CPU."""

    def __init__(self, images: OnnxImages, texts: OnnxTexts) -> None:
        super().__init__()
        self.identity = images.identity
        self.image_size = images.image_size
        self.device = "cpu"
        self.image_tower = images
        self.text_tower = texts

    @property
    def precision(self) -> str:
        return f"ONNX Runtime: images {self.image_tower.precision}, texts fp32"

    def prepare(self, image: Image.Image) -> Any:
        return self.image_tower.prepare(image)

    def _encode_images(self, batch: Sequence[Any]) -> Vectors:
        return self.image_tower.embed_prepared(batch)

    def _encode_texts(self, texts: list[str]) -> Vectors:
        return self.text_tower.embed(texts)
