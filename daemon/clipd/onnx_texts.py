"""The text tower in ONNX Runtime, so that a daemon whose image tower runs there (int8,
clipd.onnx_images) answers text queries without torch.

Why: torch is most of an idle daemon's memory and of its start-up (its import maps the CUDA
build's libraries even on a CPU); the text tower is all the daemon still ran in it. The tower
is exported once through torch in float32 (clipd.text_tower), kept beside the image tower in
$XDG_CACHE_HOME/clipd/onnx/, and used only once its features for the probe texts equal torch's
(to float rounding) and clipd.clip_tokenizer gives the model's own tokenizer's tokens for them;
otherwise torch keeps the texts, and the cache remembers why.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clipd import onnx_files
from clipd.clip_tokenizer import ClipTokenizer, vocabulary_file
from clipd.config import ModelConfig
from clipd.disk_cache import JsonCache
from clipd.served_model import Vectors, unit_rows

if TYPE_CHECKING:
    import onnxruntime

    from clipd.embedder import Embedder
    from clipd.onnx_images import OnnxImages

log = logging.getLogger(__name__)

_TOWERS = JsonCache("onnx-texts.json")
# Texts of 1 to 77+ tokens, cased, punctuated, accented, HTML-escaped and not Latin: each
# of the tokenizer's rules and the tower's lengths gets exercised.
_PROBE_TEXTS = (
    "a",
    "red brick wall",
    "A Photo of a DOG on the beach, at 5 pm!",
    "café &amp; crème brûlée",
    "夕焼けの東京タワー",
    "the quick brown fox jumps over the lazy dog " * 12,
)
# The same computation in another runtime: only float rounding may move a vector.
_SAME = 0.99999


class OnnxTexts:
    """Texts in, L2-normalised float32 vectors out, in ONNX Runtime."""

    def __init__(
        self, path: Path, session: onnxruntime.InferenceSession, tokenizer: ClipTokenizer
    ) -> None:
        self.path = path
        self._session = session
        self._tokenizer = tokenizer

    def embed(self, texts: list[str]) -> Vectors:
        """One row per text."""
        return unit_rows(self._session.run(None, {"tokens": self._tokenizer(texts)})[0])


def cached(config: ModelConfig) -> OnnxTexts | None:
    """The text tower an earlier run exported and accepted, if it loads: no torch needed."""
    entry = onnx_files.current(_TOWERS.lookup(onnx_files.key_of(config)))
    if entry is None or "cosine" not in entry:
        return None
    name, context_length = str(entry.get("file")), entry.get("context_length")
    if Path(name).name != name or not isinstance(context_length, int):  # damaged, or foreign
        return None
    vocabulary = vocabulary_file()
    if vocabulary is None:
        return None
    return _opened(onnx_files.folder() / name, ClipTokenizer(vocabulary, context_length))


def make(config: ModelConfig, images: OnnxImages) -> OnnxTexts | None:
    """The text tower, exported now through torch and checked against it; None where it
    cannot be (said why; a model it does not suit is remembered, not tried again)."""
    from clipd.embedder import Embedder

    key = onnx_files.key_of(config)
    entry = onnx_files.current(_TOWERS.lookup(key))
    if entry is not None and "unsupported" in entry:
        log.info("texts run in torch: %s", entry["unsupported"])
        return None
    started = time.monotonic()
    torch_texts = Embedder(
        ModelConfig(config.name, config.pretrained, "cpu", precision="fp32", runtime="torch"),
        image_tower=images,
    )
    vocabulary = vocabulary_file()
    tokenizer = (
        None if vocabulary is None else ClipTokenizer(vocabulary, torch_texts.context_length)
    )
    problem = torch_texts.text_export_problem() or _tokenizer_problem(torch_texts, tokenizer)
    if problem is not None:
        _remember(key, {"unsupported": f"clipd's ONNX text tower does not suit it ({problem})"})
        log.info("texts run in torch: clipd's ONNX text tower does not suit %s (%s)",
                 config.name, problem)  # fmt: skip
        return None
    assert tokenizer is not None  # else _tokenizer_problem said the vocabulary is missing
    short = onnx_files.memory_short_of(torch_texts.text_tower_bytes())
    if short is not None:
        log.warning("exporting the text tower of %s %s: texts run in torch this run",
                    config.name, short)  # fmt: skip
        return None
    texts = _exported(torch_texts, key, tokenizer)
    if texts is None:
        return None
    cosine = _cosine(torch_texts, texts)
    if cosine < _SAME:
        _remember(key, {"unsupported": f"its ONNX export drifts from torch (cosine {cosine:.6f})"})
        log.warning("the text tower's ONNX export drifts from torch (cosine %.6f < %g): texts "
                    "run in torch", cosine, _SAME)  # fmt: skip
        with contextlib.suppress(OSError):
            texts.path.unlink()
        return None
    _remember(key, {"file": texts.path.name, "context_length": torch_texts.context_length,
                    "cosine": cosine})  # fmt: skip
    log.info("exported the text tower to ONNX in %.1f s (cosine to torch %.6f)",
             time.monotonic() - started, cosine)  # fmt: skip
    return texts


def _tokenizer_problem(torch_texts: Embedder, tokenizer: ClipTokenizer | None) -> str | None:
    """Why clipd's tokenizer cannot stand in for the model's, or None."""
    if tokenizer is None:
        return "open_clip's vocabulary file is missing"
    for text in _PROBE_TEXTS:
        mine = tokenizer([text])[0]
        theirs = torch_texts.text_tokens([text])[0]
        if not np.array_equal(theirs[: len(mine)], mine) or theirs[len(mine) :].any():
            return f"its tokenizer reads {text[:20]!r} otherwise"
    return None


def _exported(torch_texts: Embedder, key: str, tokenizer: ClipTokenizer) -> OnnxTexts | None:
    """Export through torch_texts into the cache's folder and open it."""
    try:
        path = onnx_files.written(key, "text", torch_texts.export_text_tower)
    except Exception as exc:  # a full disk, or one of the many types torch's exporter raises
        log.warning("cannot export the text tower to %s (%s): texts run in torch this run",
                    onnx_files.folder(), exc)  # fmt: skip
        return None
    texts = _opened(path, tokenizer)
    if texts is None:
        log.warning("ONNX Runtime cannot load the text tower it exported to %s: texts run in "
                    "torch this run", path)  # fmt: skip
    return texts


def _opened(path: Path, tokenizer: ClipTokenizer) -> OnnxTexts | None:
    if not path.is_file():
        return None
    # One thread per core, as for images: on 2 cores, while indexing, two threads answered a
    # query sooner than one (README, Performance), unlike torch's (clipd.image_model).
    session = onnx_files.open_session(path)
    if session is None:
        return None
    return OnnxTexts(path, session, tokenizer)


def _cosine(torch_texts: Embedder, texts: OnnxTexts) -> float:
    """The smallest cosine between the two runtimes' vectors of the probe texts, one by one
    and as one batch (rows of different lengths)."""
    probes = list(_PROBE_TEXTS)
    reference = np.stack([torch_texts.embed_text(text) for text in probes])
    alone = np.concatenate([texts.embed([text]) for text in probes])
    together = texts.embed(probes)
    return float(min((reference * alone).sum(axis=1).min(),
                     (reference * together).sum(axis=1).min()))  # fmt: skip


def _remember(key: str, entry: dict[str, Any]) -> None:
    _TOWERS.store(key, entry | {"open_clip": onnx_files.open_clip_version()})
