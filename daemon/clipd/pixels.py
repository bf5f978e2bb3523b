"""Pixel signatures: a tiny picture of each image, to tell copies of one photo from look-alikes.

CLIP puts two different photos of the same subject close together; a resized or recompressed
copy of one photo keeps its pixels as well. The signature is the image box-filtered down to
SIDE x SIDE RGB (768 bytes), made from the image the indexer has already decoded (so it costs
one small resize). Two signatures are compared by the correlation of their pixel values
(Pearson, over all three channels): an overall brightness or contrast change barely moves it,
re-encoding and resizing leave it near 1, and moving the subject (another photo of it) drops it.

Measured on the test shapes (tests/fixtures/shapes.py), 16x16: resized or JPEG quality 40,
>= 0.997; 3-5 % cropped off each side, 0.92-0.985; brightened 30 %, >= 0.96 (most near 0.99;
less where bright pixels clip); the same kind of shape drawn at another place and size, mostly
< 0.85.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from PIL import Image

SIDE = 16
SIZE = SIDE * SIDE * 3

Signatures = npt.NDArray[np.uint8]
Floats = npt.NDArray[np.float32]


def signature(image: Image.Image) -> bytes:
    """The signature of an upright RGB image: its SIDE x SIDE box-filtered RGB bytes."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return rgb.resize((SIDE, SIDE), Image.Resampling.BOX).tobytes()


def as_rows(blobs: list[bytes]) -> Signatures:
    """Signature blobs (each SIZE bytes) as one (len, SIZE) matrix."""
    return np.frombuffer(b"".join(blobs), dtype=np.uint8).reshape(len(blobs), SIZE)


def similarity(left: Signatures, right: Signatures) -> Floats:
    """Row-by-row correlation of two equally long signature matrices, in [-1, 1].

    A flat picture (no variance) correlates with nothing but itself: 1 with an identical
    signature, 0 otherwise.
    """
    a = _centred(left)
    b = _centred(right)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.einsum("ij,ij->i", a, b)
    identical = np.all(left == right, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = np.where(norms > 0, dots / norms, 0.0).astype(np.float32)
    scores[identical] = 1.0
    return scores


def _centred(rows: Signatures) -> Floats:
    values = rows.astype(np.float32)
    centred: Floats = values - values.mean(axis=1, keepdims=True)
    return centred
