"""The embedder with the real tiny model, and its errors for models and weights it cannot load."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import TINY_MODEL_JSON, TINY_MODEL_WEIGHTS, ConfigWriter
from fixtures.shapes import COLOURS, SHAPES, caption, draw
from harness import run_clipd

from clipd import embedder, probe_cache, text_tower
from clipd.config import ModelConfig
from clipd.embedder import Embedder
from clipd.errors import ConfigError, ModelError, UnknownModel, WeightsOffline

TINY = ModelConfig(name=str(TINY_MODEL_JSON), pretrained=str(TINY_MODEL_WEIGHTS), device="cpu")


def tiny_in(precision: str) -> ModelConfig:
    return ModelConfig(TINY.name, TINY.pretrained, device="cpu", precision=precision)


@pytest.fixture(scope="module")
def tiny() -> Embedder:
    return Embedder(TINY)


@pytest.fixture(scope="module")
def fp32() -> Embedder:
    return Embedder(tiny_in("fp32"))


def test_vectors_are_unit_float32_and_rank_the_right_caption_first(tiny: Embedder) -> None:
    rng = random.Random(3)
    classes = [(c, s) for c in COLOURS for s in SHAPES]
    texts = np.stack([tiny.embed_text(caption(c, s)) for c, s in classes])
    pictures = tiny.embed_images([draw(c, s, (96, 64), rng) for c, s in classes])
    for vectors in (texts, pictures):
        assert vectors.dtype == np.float32
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    best = (pictures @ texts.T).argmax(axis=1)
    assert (best == np.arange(len(classes))).mean() >= 0.9


def test_identity_names_files_by_content(tiny: Embedder, tmp_path: Path) -> None:
    assert tiny.identity.dim == 32
    assert tiny.identity.name.startswith("tiny-clip.json#sha256:")
    moved = tmp_path / "renamed.pt"
    moved.write_bytes(TINY_MODEL_WEIGHTS.read_bytes())
    again = Embedder(ModelConfig(name=str(TINY_MODEL_JSON), pretrained=str(moved), device="cpu"))
    assert again.identity.pretrained.split("#")[1] == tiny.identity.pretrained.split("#")[1]


def test_texts_are_encoded_without_their_padding_to_the_same_vectors(fp32: Embedder) -> None:
    import torch

    model, tokenizer = fp32._model, fp32._tokenize
    assert fp32._unpadded_text  # OpenCLIP's CLIP: causal text mask, read at the end token
    texts = ["a", "a red circle", "a small green triangle on a blue square " * 3]
    tokens = tokenizer(texts)
    with torch.inference_mode():
        full = model.encode_text(tokens).numpy()
        unpadded = text_tower.encode_unpadded(model, tokens).numpy()
        alone = text_tower.encode_unpadded(model, tokenizer(texts[:1])).numpy()
    assert np.allclose(unpadded, full, atol=1e-5)
    assert np.allclose(alone, full[:1], atol=1e-5)  # 2 tokens, not 77


def test_text_cache_returns_the_same_vector(tiny: Embedder) -> None:
    first = tiny.embed_text("a red circle")
    assert tiny.embed_text("a red circle") is first
    assert not first.flags.writeable


def test_indexing_in_chunks_gives_the_same_vectors(fp32: Embedder) -> None:
    rng = random.Random(4)
    pixels = [fp32.prepare(draw("red", "square", (64, 64), rng)) for _ in range(19)]
    together = fp32.embed_prepared(pixels)
    assert together.shape == (19, fp32.identity.dim)
    one_by_one = np.concatenate([fp32.embed_prepared([p]) for p in pixels])
    assert np.allclose(together, one_by_one, atol=1e-5)


def test_indexing_waits_while_a_query_uses_the_model(
    fp32: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoding, release = threading.Event(), threading.Event()
    encode_text = fp32._encode_text

    def held(tokens: Any) -> Any:
        encoding.set()
        release.wait(30)
        return encode_text(tokens)

    monkeypatch.setattr(fp32, "_encode_text", held)
    query = threading.Thread(target=fp32.embed_text, args=("a query that holds the model",))
    query.start()
    assert encoding.wait(30)
    pixels = [fp32.prepare(draw("blue", "circle", (64, 64), random.Random(5)))] * 3
    indexed = threading.Event()

    def index() -> None:
        fp32.embed_prepared(pixels)
        indexed.set()

    indexing = threading.Thread(target=index)
    indexing.start()
    assert not indexed.wait(0.5), "indexing ran while a query held the model"
    release.set()
    query.join()
    indexing.join()
    assert indexed.is_set()


def test_bf16_stays_close_to_fp32_and_keeps_the_identity(fp32: Embedder) -> None:
    half = Embedder(tiny_in("bf16"))
    assert half.precision == "bf16"
    for text in ("a red circle", "a blue square"):
        assert float(half.embed_text(text) @ fp32.embed_text(text)) > 0.999
    # A precision change must not make the store drop and re-embed every vector.
    assert half.identity == fp32.identity


def auto(monkeypatch: pytest.MonkeyPatch, has_bf16: bool) -> Embedder:
    monkeypatch.setattr(embedder, "cpu_has_bf16", lambda: has_bf16)
    return Embedder(tiny_in("auto"))


def test_auto_picks_bf16_where_the_cpu_has_it_and_the_drift_is_small(
    monkeypatch: pytest.MonkeyPatch, fp32: Embedder
) -> None:
    chosen = auto(monkeypatch, has_bf16=True)
    assert chosen.precision == "bf16"
    assert chosen.bf16_cosine is not None
    assert chosen.bf16_cosine >= embedder.MIN_COSINE
    assert float(chosen.embed_text("a red circle") @ fp32.embed_text("a red circle")) > 0.999


def test_auto_stays_fp32_without_bf16_or_when_it_drifts(
    monkeypatch: pytest.MonkeyPatch, fp32: Embedder
) -> None:
    assert auto(monkeypatch, has_bf16=False).precision == "fp32"
    monkeypatch.setattr(embedder, "MIN_COSINE", 1.01)  # no bf16 result can pass
    refused = auto(monkeypatch, has_bf16=True)
    assert refused.precision == "fp32"
    assert refused.bf16_cosine is not None
    # Reloaded in fp32, not bf16 weights cast back: the same vectors as a plain fp32 model.
    text = "a green triangle"
    assert np.array_equal(refused.embed_text(text), fp32.embed_text(text))


def counted_probes(monkeypatch: pytest.MonkeyPatch) -> list[None]:
    """A list that grows by one each time any Embedder runs its drift probe."""
    calls: list[None] = []
    probe = Embedder._probe

    def counting(self: Embedder) -> Any:
        calls.append(None)
        return probe(self)

    monkeypatch.setattr(Embedder, "_probe", counting)
    return calls


def test_auto_remembers_the_probe_and_later_starts_load_bf16_straight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    probes = counted_probes(monkeypatch)
    first = auto(monkeypatch, has_bf16=True)
    assert probes, "the first start must probe"
    assert probe_cache.cache_file().is_file()
    probes.clear()
    again = auto(monkeypatch, has_bf16=True)
    assert not probes, "a later start must take the remembered result"
    assert again.precision == "bf16"
    assert again.bf16_cosine == first.bf16_cosine
    # Loaded straight in bf16: the very weights the probed fp32 model was cast to.
    text, image = "a red circle", draw("red", "circle", (96, 64), random.Random(1))
    assert np.array_equal(again.embed_text(text), first.embed_text(text))
    assert np.array_equal(again.embed_images([image]), first.embed_images([image]))


def test_a_remembered_drift_over_the_limit_loads_fp32_without_probing(
    monkeypatch: pytest.MonkeyPatch, fp32: Embedder
) -> None:
    monkeypatch.setattr(embedder, "MIN_COSINE", 1.01)  # no bf16 result can pass
    auto(monkeypatch, has_bf16=True)
    probes = counted_probes(monkeypatch)
    refused = auto(monkeypatch, has_bf16=True)
    assert not probes
    assert refused.precision == "fp32"
    assert refused.bf16_cosine is not None
    text = "a green triangle"
    assert np.array_equal(refused.embed_text(text), fp32.embed_text(text))


def test_the_probe_runs_again_for_another_torch_or_a_damaged_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    probes = counted_probes(monkeypatch)
    auto(monkeypatch, has_bf16=True)
    monkeypatch.setattr(torch, "__version__", "0.0.1")
    probes.clear()
    auto(monkeypatch, has_bf16=True)
    assert probes, "another torch build must be probed again"
    probe_cache.cache_file().write_text("{not json", encoding="utf-8")
    probes.clear()
    auto(monkeypatch, has_bf16=True)
    assert probes, "a damaged cache must mean a new probe"
    assert len(json.loads(probe_cache.cache_file().read_text(encoding="utf-8"))) == 1


def image_weights(model: Embedder) -> int:
    return sum(p.numel() for p in model._model.parameters())


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_model_for_images_only_keeps_the_image_tower_and_its_vectors(
    precision: str, fp32: Embedder
) -> None:
    whole = fp32 if precision == "fp32" else Embedder(tiny_in(precision))
    lean = Embedder(tiny_in(precision), texts=False)
    assert lean.precision == precision
    assert lean.identity == whole.identity
    assert image_weights(lean) == sum(p.numel() for p in whole._model.visual.parameters())
    assert image_weights(lean) < image_weights(whole)
    pictures = [draw(c, "circle", (96, 64), random.Random(2)) for c in COLOURS]
    assert np.array_equal(lean.embed_images(pictures), whole.embed_images(pictures))
    with pytest.raises(RuntimeError, match="images only"):
        lean.embed_text("a red circle")


def test_a_model_for_images_only_still_probes_bf16_with_texts_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(embedder, "cpu_has_bf16", lambda: True)
    probes = counted_probes(monkeypatch)
    probed = Embedder(tiny_in("auto"), texts=False)
    assert probes, "no earlier probe here: this start must probe"
    assert probed.precision == "bf16"
    probes.clear()
    remembered = Embedder(tiny_in("auto"), texts=False)  # straight in bf16, no text tower
    assert not probes
    assert image_weights(remembered) == image_weights(probed)
    picture = [draw("red", "square", (96, 64), random.Random(4))]
    assert np.array_equal(remembered.embed_images(picture), probed.embed_images(picture))


def test_unknown_model_name() -> None:
    with pytest.raises(ModelError, match="is not an OpenCLIP model"):
        Embedder(ModelConfig(name="ViT-Q-99", pretrained="random", device="cpu"))


HUB_FILE = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K/resolve/main/open_clip_pytorch_model.bin"


def test_unknown_model_name_is_a_config_error_with_suggestions() -> None:
    with pytest.raises(UnknownModel, match="is not an OpenCLIP model") as caught:
        Embedder(ModelConfig(name="ViT-B-23", pretrained="random", device="cpu"))
    assert isinstance(caught.value, ConfigError)
    assert "did you mean ViT-B-32" in str(caught.value)


def test_unknown_pretrained_tag_lists_the_valid_ones() -> None:
    with pytest.raises(
        UnknownModel, match=r"not a tag of ViT-B-32; use one of: .*laion2b_s34b_b79k"
    ):
        Embedder(ModelConfig(name="ViT-B-32", pretrained="imaginary", device="cpu"))


def test_weights_that_cannot_be_downloaded_say_what_to_do() -> None:
    # conftest sets HF_HUB_OFFLINE=1, so this fails the way a machine without internet does.
    with pytest.raises(WeightsOffline) as caught:
        Embedder(ModelConfig(name="ViT-B-32", pretrained="laion2b_s34b_b79k", device="cpu"))
    message = str(caught.value)
    assert "ViT-B-32 / laion2b_s34b_b79k" in message
    assert "(HF_HUB_OFFLINE is set)" in message
    assert f"fetch https://huggingface.co/{HUB_FILE} and set model.pretrained" in message


def test_offline_weights_in_the_hub_cache_are_loaded_from_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsOffline):
        embedder._offline("ViT-B-32", "laion2b_s34b_b79k")
    # The layout the hub writes: a snapshot per revision, and refs/main naming it.
    repo = tmp_path / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_pytorch_model.bin").write_bytes(b"weights")
    assert embedder._offline("ViT-B-32", "laion2b_s34b_b79k") is True


def test_a_checkpoint_for_another_model_is_refused(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.pt"
    wrong.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot load checkpoint"):
        Embedder(ModelConfig(name=str(TINY_MODEL_JSON), pretrained=str(wrong), device="cpu"))


def test_serve_offline_without_weights_tries_once_and_names_the_file_to_fetch(
    tmp_path: Path, write_config: ConfigWriter
) -> None:
    """A first start with no network: the hub's name does not resolve (.invalid never does)."""
    (tmp_path / "pics").mkdir()
    config = write_config([tmp_path / "pics"], model={"name": "ViT-B-32", "device": "cpu"})
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env["HF_ENDPOINT"] = "https://hub.invalid"
    result = run_clipd("serve", "--config", str(config), env=env)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert "Retrying" not in result.stderr
    assert "Traceback" not in result.stderr
    messages = [line.split(": ", 1)[-1] for line in lines]  # without time stamp and logger
    assert len(messages) == len(set(messages)), "every message once"
    assert lines[-1] == (
        "clipd: the weights of ViT-B-32 / laion2b_s34b_b79k are not on this machine and it is "
        f"offline (cannot resolve hub.invalid): fetch https://hub.invalid/{HUB_FILE} and set "
        "model.pretrained to the file's path"
    )


def test_the_hubs_messages_print_once() -> None:
    """huggingface_hub prints through a handler of its own and passes messages on to the root
    logger too; clipd keeps one: each retry warning of a download came out twice."""
    code = (
        "import logging\n"
        "from huggingface_hub.utils import logging as hub_logging\n"
        "from clipd import cli, embedder\n"
        "cli._setup_logging('info')\n"
        "embedder._log_hub_messages_once()\n"
        "hub_logging.get_logger('huggingface_hub.utils._http').warning('Retrying in 1s')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("Retrying in 1s") == 1, done.stderr
