"""The daemon's text tower in ONNX Runtime, with the real tiny model: exported once, equal to
torch's texts at every length, loaded by later starts that never import torch; and torch kept
for texts, with the reason remembered or told, wherever the export does not suit or fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_MODEL_JSON, TINY_MODEL_WEIGHTS
from PIL import Image

from clipd import onnx_files, onnx_texts, text_tower
from clipd.config import ModelConfig
from clipd.embedder import Embedder
from clipd.image_model import for_the_daemon
from clipd.onnx_model import OnnxClip
from clipd.served_model import ServedModel

AUTO = ModelConfig(str(TINY_MODEL_JSON), str(TINY_MODEL_WEIGHTS), device="cpu")
FP32 = ModelConfig(AUTO.name, AUTO.pretrained, device="cpu", precision="fp32", runtime="torch")
# 1 to 16 tokens (the tiny model's context), and past it: truncated.
TEXTS = ["a", "red brick wall", "A Photo of a DOG, on the beach at 5 pm!", "夕焼けの東京タワー",
         "a blue triangle above a green circle beside a red square", "word " * 30]  # fmt: skip
COLOURS = [(200, 30, 30), (30, 30, 200)]


@pytest.fixture(scope="module")
def torch_texts() -> Embedder:
    return Embedder(FP32)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    os.environ["XDG_CACHE_HOME"] = str(tmp_path)  # isolated_env restores it
    return tmp_path / "clipd"


def _onnx(model: ServedModel) -> OnnxClip:
    assert isinstance(model, OnnxClip), type(model)
    return model


def _texts_in_torch(model: ServedModel) -> Embedder:
    assert isinstance(model, Embedder), type(model)
    assert model.image_tower is not None  # images stay in the int8 tower
    return model


def _text_files(cache: Path) -> list[Path]:
    return sorted((cache / "onnx").glob("*-text.onnx*"))


@pytest.mark.usefixtures("cache")
def test_the_daemon_runs_texts_and_images_in_onnx_runtime(
    torch_texts: Embedder, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level("INFO")
    daemon = _onnx(for_the_daemon(AUTO))  # a first start: exports both towers through torch
    assert "exported the text tower to ONNX" in caplog.text
    assert "torch is not used" in caplog.text
    assert daemon.precision == "ONNX Runtime: images int8, texts fp32"
    for text in TEXTS:  # the same computation as torch fp32's, to float rounding
        assert np.allclose(daemon.embed_text(text), torch_texts.embed_text(text), atol=2e-6)
    picture = [daemon.prepare(Image.new("RGB", (40, 30), colour)) for colour in COLOURS]
    vectors = daemon.embed_prepared(picture)
    assert vectors.shape == (2, 32)

    def no_torch(*args: object, **kwargs: object) -> None:
        raise AssertionError("a later start built a torch model")

    monkeypatch.setattr(Embedder, "__init__", no_torch)
    caplog.clear()
    again = _onnx(for_the_daemon(AUTO))  # a later start: both towers from the cache
    assert "export" not in caplog.text
    assert all(np.array_equal(again.embed_text(t), daemon.embed_text(t)) for t in TEXTS)
    assert np.array_equal(again.embed_prepared(picture), vectors)


def test_texts_of_every_length_match_torch_one_by_one_and_batched(
    cache: Path, torch_texts: Embedder
) -> None:
    daemon = _onnx(for_the_daemon(AUTO))
    texts = [" ".join(["word"] * count) for count in range(20)] + TEXTS
    reference = np.stack([torch_texts.embed_text(text) for text in texts])
    batched = daemon.text_tower.embed(texts)  # rows of different lengths, padded after their end
    assert np.allclose(batched, reference, atol=2e-6)
    assert _text_files(cache) == [next((cache / "onnx").glob("*-text.onnx"))]


def test_a_daemon_whose_towers_are_exported_never_imports_torch(cache: Path) -> None:
    for_the_daemon(AUTO)  # exports
    script = f"""
import sys
from PIL import Image
from clipd.config import ModelConfig
from clipd.image_model import for_the_daemon
model = for_the_daemon(ModelConfig({AUTO.name!r}, {AUTO.pretrained!r}, "cpu"))
model.warm_up()
assert model.embed_text("a red brick wall").shape == (32,)
assert model.embed_images([Image.new("RGB", (40, 30), (200, 30, 30))]).shape == (1, 32)
heavy = ("torch", "open_clip", "torchvision", "onnxruntime.quantization")
print(type(model).__name__, *(name for name in heavy if name in sys.modules))
"""
    env = {**os.environ, "XDG_CACHE_HOME": str(cache.parent)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120, check=True)  # fmt: skip
    assert done.stdout.strip() == "OnnxClip"  # and none of torch, open_clip, ...


def test_a_model_the_export_does_not_suit_keeps_torch_for_texts_and_is_remembered(
    cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    asked: list[object] = []

    def unsuited(model: object) -> str:
        asked.append(model)
        return "a text block of type Unusual"

    monkeypatch.setattr(text_tower, "problem", unsuited)
    daemon = _texts_in_torch(for_the_daemon(AUTO))
    assert "does not suit" in caplog.text
    assert "a text block of type Unusual" in caplog.text
    assert daemon.embed_text("red brick wall").shape == (32,)
    assert _text_files(cache) == []
    _texts_in_torch(for_the_daemon(AUTO))  # remembered: not built for the export again
    assert len(asked) == 1


@pytest.mark.usefixtures("cache")
def test_tokens_that_differ_from_the_models_tokenizer_keep_torch_for_texts(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    tokens = Embedder.text_tokens

    def another_tokenizer(self: Embedder, texts: list[str]) -> np.ndarray:
        return tokens(self, [text[::-1] for text in texts])

    monkeypatch.setattr(Embedder, "text_tokens", another_tokenizer)
    _texts_in_torch(for_the_daemon(AUTO))
    assert "its tokenizer reads" in caplog.text


def test_an_export_that_drifts_from_torch_is_refused_and_deleted(
    cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    same = onnx_texts._SAME
    monkeypatch.setattr(onnx_texts, "_SAME", 1.01)  # no export can pass
    _texts_in_torch(for_the_daemon(AUTO))
    assert "the text tower's ONNX export drifts from torch" in caplog.text
    assert _text_files(cache) == []
    monkeypatch.setattr(onnx_texts, "_SAME", same)
    _texts_in_torch(for_the_daemon(AUTO))  # remembered: delete the cache file to try again
    (cache / "onnx-texts.json").unlink()
    _onnx(for_the_daemon(AUTO))


def test_a_failed_export_keeps_torch_this_run_only_and_leaves_no_partial_file(
    cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def disk_full(self: Embedder, path: Path) -> None:
        path.write_bytes(b"half a model")
        raise OSError(28, "No space left on device")

    export = Embedder.export_text_tower
    monkeypatch.setattr(Embedder, "export_text_tower", disk_full)
    daemon = _texts_in_torch(for_the_daemon(AUTO))
    assert "cannot export the text tower" in caplog.text
    assert "No space left" in caplog.text
    assert daemon.embed_text("a").shape == (32,)
    assert _text_files(cache) == []
    monkeypatch.setattr(Embedder, "export_text_tower", export)
    _onnx(for_the_daemon(AUTO))  # not remembered: the next start exports it


def test_a_damaged_text_tower_is_exported_again(
    cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    first = _onnx(for_the_daemon(AUTO))
    [text_file] = _text_files(cache)
    text_file.write_bytes(b"not an onnx model")
    caplog.clear()
    mended = _onnx(for_the_daemon(AUTO))
    assert "exported the text tower to ONNX" in caplog.text
    assert np.array_equal(mended.embed_text("a"), first.embed_text("a"))


def test_too_little_memory_for_the_export_keeps_torch_this_run_only(
    cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for_the_daemon(AUTO)  # the image tower exported and quantised: only the text export is left
    (cache / "onnx-texts.json").unlink()
    for text_file in _text_files(cache):
        text_file.unlink()
    text_bytes = Embedder(FP32).text_tower_bytes()
    monkeypatch.setattr(onnx_files, "_memory_available", lambda: text_bytes)
    _texts_in_torch(for_the_daemon(AUTO))
    assert "exporting the text tower of" in caplog.text
    assert "GiB of free memory" in caplog.text
    assert _text_files(cache) == []
    monkeypatch.setattr(onnx_files, "_memory_available", lambda: None)  # unknown: go ahead
    _onnx(for_the_daemon(AUTO))


def test_a_cache_entry_naming_a_file_elsewhere_is_not_followed(cache: Path) -> None:
    for_the_daemon(AUTO)
    entries = json.loads((cache / "onnx-texts.json").read_text())
    [key] = entries
    [text_file] = _text_files(cache)
    elsewhere = cache / "elsewhere.onnx"
    text_file.rename(elsewhere)
    entries[key]["file"] = "../elsewhere.onnx"
    (cache / "onnx-texts.json").write_text(json.dumps(entries))
    assert onnx_texts.cached(AUTO) is None
    _onnx(for_the_daemon(AUTO))  # exported again, into the cache's folder
    assert json.loads((cache / "onnx-texts.json").read_text())[key]["file"] == text_file.name
