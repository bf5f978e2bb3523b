"""Building a model and loading its checkpoint without wasted work (clipd.weights), and the
checkpoint digests remembered between starts: the same weights as open_clip's own load."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from conftest import TINY_MODEL_JSON, TINY_MODEL_WEIGHTS

from clipd import embedder, weights

open_clip.add_model_config(str(TINY_MODEL_JSON))
TINY = TINY_MODEL_JSON.stem


@pytest.mark.parametrize("precision", ["fp32", "pure_bf16"])
def test_the_weights_are_open_clips_own_bit_for_bit(precision: str) -> None:
    reference = open_clip.create_model(TINY, pretrained=str(TINY_MODEL_WEIGHTS),
                                       precision=precision).state_dict()  # fmt: skip
    dtype = torch.float32 if precision == "fp32" else torch.bfloat16
    model, _ = weights.build(TINY, str(TINY_MODEL_WEIGHTS))
    weights.load(model, str(TINY_MODEL_WEIGHTS), dtype)
    loaded = model.state_dict()
    assert loaded.keys() == reference.keys()
    for name, tensor in reference.items():
        assert loaded[name].dtype == tensor.dtype, name
        assert torch.equal(loaded[name], tensor), name


def test_a_model_without_a_checkpoint_still_gets_random_weights_and_init_is_restored() -> None:
    untouched = torch.nn.init.normal_
    first, _ = weights.build(TINY, None)
    second, _ = weights.build(TINY, None)
    assert torch.nn.init.normal_ is untouched
    a, b = first.token_embedding.weight.detach(), second.token_embedding.weight.detach()
    assert not torch.equal(a, b)
    assert 0.005 < float(a.std()) < 0.1  # open_clip draws it with std 0.02


def test_no_warning_that_the_model_has_no_weights(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        weights.build(TINY, str(TINY_MODEL_WEIGHTS))
    assert not [r for r in caplog.records if "No pretrained weights" in r.getMessage()]


def test_pages_are_handed_back_only_inside_the_mapped_checkpoint() -> None:
    live = np.full(1 << 20, 7, dtype=np.uint8)  # heap memory: must never be dropped
    weights._release(live.ctypes.data, live.nbytes, mapped=[])
    weights._release(live.ctypes.data, live.nbytes, mapped=[(0, live.ctypes.data)])
    assert (live == 7).all()


def test_the_checkpoint_digest_is_remembered_for_the_same_file_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = tmp_path / "weights.pt"
    checkpoint.write_bytes(b"a" * 4096)
    first = embedder._file_digest(checkpoint)
    real_sha256 = hashlib.sha256
    reads: list[None] = []

    def counting(data: bytes = b"") -> hashlib._Hash:
        reads.append(None)
        return real_sha256(data)

    monkeypatch.setattr(hashlib, "sha256", counting)
    assert embedder._file_digest(checkpoint) == first
    assert not reads, "an unchanged file must not be read again"
    # Same size, and its old mtime put back: only the ctime tells the change.
    stat = checkpoint.stat()
    checkpoint.write_bytes(b"b" * 4096)
    os.utime(checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = embedder._file_digest(checkpoint)
    assert reads
    assert second != first
    assert second == real_sha256(b"b" * 4096).hexdigest()[:16]
