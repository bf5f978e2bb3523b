"""The committed tiny OpenCLIP model loads the way the daemon loads models and knows its domain."""

from __future__ import annotations

import random
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F
from fixtures.shapes import COLOURS, SHAPES, caption, draw, random_size, reencode

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CONFIG_PATH = FIXTURES / "tiny-clip.json"
CHECKPOINT_PATH = FIXTURES / "tiny-clip.pt"


@pytest.mark.slow
def test_tiny_model_zero_shot_accuracy() -> None:
    open_clip.add_model_config(str(CONFIG_PATH))  # registers the name "tiny-clip"
    model, _, preprocess = open_clip.create_model_and_transforms(
        "tiny-clip", pretrained=str(CHECKPOINT_PATH)
    )
    tokenizer = open_clip.get_tokenizer("tiny-clip")
    model.eval()

    classes = [(colour, shape) for colour in COLOURS for shape in SHAPES]
    rng = random.Random(20240607)
    formats = ("JPEG", "PNG", "WEBP", "GIF")
    labels = [k for _ in range(4) for k in range(len(classes))]
    images = [
        reencode(draw(*classes[k], random_size(rng, 40, 800), rng), formats[i % len(formats)])
        for i, k in enumerate(labels)
    ]

    tokens = tokenizer([caption(*c) for c in classes])
    batch = torch.stack([preprocess(im) for im in images])
    with torch.no_grad():
        text = F.normalize(model.encode_text(tokens), dim=-1)
        image = F.normalize(model.encode_image(batch), dim=-1)
    predicted = (image @ text.T).argmax(dim=1)
    accuracy = (predicted == torch.tensor(labels)).float().mean().item()
    assert accuracy >= 0.9, f"zero-shot accuracy {accuracy:.3f} on {len(images)} images"
