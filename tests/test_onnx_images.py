"""The image tower in ONNX Runtime (`clipd index` on CPUs, fp32 or int8; the daemon's images in
int8), against torch's, with the real tiny model: the same input pixels, vectors that agree, the
export (and its int8 quantisation) made once and reused by a process that never imports torch,
the drift probe that decides int8, and the rules that choose it."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from conftest import TINY_MODEL_JSON, TINY_MODEL_WEIGHTS, ConfigWriter
from fixtures.corpus import write_corpus
from fixtures.shapes import COLOURS, SHAPES, caption, draw
from harness import run_clipd
from PIL import Image

from clipd import embedder, onnx_files, onnx_images, onnx_int8, served_model, text_tower
from clipd.config import ModelConfig, load_config
from clipd.disk_cache import cache_dir
from clipd.embedder import Embedder
from clipd.errors import ConfigError, ModelError
from clipd.image_model import for_indexing, for_the_daemon
from clipd.onnx_images import OnnxImages
from clipd.records import ModelIdentity
from clipd.store import Store

# fp32 unless a test is about int8 (what `precision: auto` adds).
TINY = ModelConfig(str(TINY_MODEL_JSON), str(TINY_MODEL_WEIGHTS), device="cpu", precision="fp32")
AUTO = ModelConfig(TINY.name, TINY.pretrained, device="cpu")


@pytest.fixture(scope="module")
def torch_fp32() -> Embedder:
    return Embedder(ModelConfig(TINY.name, TINY.pretrained, device="cpu", precision="fp32"))


@pytest.fixture
def texts_in_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon keeps texts in torch, as for a model its ONNX text tower does not suit
    (tests/test_onnx_texts.py tests that tower)."""
    monkeypatch.setattr(text_tower, "problem", lambda model: "kept in torch by the test")


def _torch_model(model: object) -> Embedder:
    assert isinstance(model, Embedder)
    return model


def _load(config: ModelConfig = TINY) -> OnnxImages:
    model = onnx_images.load(config)
    assert model is not None
    return model


@pytest.fixture(scope="module")
def onnx() -> OnnxImages:
    return _load()


def _noise(size: tuple[int, int], seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


# Portrait, landscape, square; at, under and over the 32 px input; odd sides whose resize
# truncates and whose centre crop rounds (half to even, as torchvision rounds).
SIZES = [(32, 32), (33, 32), (32, 33), (31, 47), (47, 31), (64, 40), (41, 64), (16, 9),
         (9, 16), (100, 99), (3, 200), (513, 384), (35, 32), (37, 32)]  # fmt: skip


@pytest.mark.parametrize("size", SIZES)
def test_the_input_pixels_are_open_clips_exactly(
    size: tuple[int, int], onnx: OnnxImages, torch_fp32: Embedder
) -> None:
    image = _noise(size, seed=size[0] * 1000 + size[1])
    ours = onnx.prepare(image)
    theirs = torch_fp32.prepare(image).numpy()
    assert ours.dtype == np.float32
    assert ours.shape == theirs.shape == (3, 32, 32)
    assert np.array_equal(ours, theirs)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_other_modes_are_converted_as_open_clip_converts_them(
    mode: str, onnx: OnnxImages, torch_fp32: Embedder
) -> None:
    image = _noise((45, 38), seed=9).convert(mode)
    assert np.array_equal(onnx.prepare(image), torch_fp32.prepare(image).numpy())


def test_the_vectors_agree_with_torchs(onnx: OnnxImages, torch_fp32: Embedder) -> None:
    rng = random.Random(5)
    pictures = [draw(c, s, (96, 64), rng) for c in COLOURS for s in SHAPES]
    ours = onnx.embed_prepared([onnx.prepare(p) for p in pictures])
    theirs = torch_fp32.embed_images(pictures)
    assert ours.dtype == np.float32
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert float((ours * theirs).sum(axis=1).min()) >= 0.99999
    assert onnx.identity == torch_fp32.identity
    assert onnx.image_size == torch_fp32.image_size


# (model.runtime, model.precision) -> what `clipd index` logs it loaded.
INDEXING = {("torch", "fp32"): "loaded on cpu (fp32", ("onnx", "fp32"): "in ONNX Runtime (fp32",
            ("auto", "auto"): "in ONNX Runtime (int8, cosine to fp32 0.9"}  # fmt: skip


def test_clipd_index_in_onnx_runtime_stores_what_torch_would(
    tmp_path: Path, write_config: ConfigWriter
) -> None:
    corpus = write_corpus(tmp_path / "pics", per_class=1)
    stored = {}
    for (runtime, precision), loaded in INDEXING.items():
        database = tmp_path / f"{runtime}.db"
        model = {"name": TINY.name, "pretrained": TINY.pretrained, "runtime": runtime,
                 "device": "cpu", "precision": precision}  # fmt: skip
        config = write_config([corpus.root], database=str(database), model=model)
        run = run_clipd("index", "--config", str(config), str(corpus.root))
        assert run.returncode == 0, run.stderr
        assert loaded in run.stderr, run.stderr
        assert run.stdout.startswith(f"indexed {len(corpus.images)}, failed {len(corpus.bad)},")
        store = Store(database)
        try:
            vectors = [store.vector_for(str(path)) or b"" for path in corpus.images]
            stored[precision, runtime] = np.stack([np.frombuffer(v, np.float32) for v in vectors])
        finally:
            store.close()
    reference = stored["fp32", "torch"]
    assert float((reference * stored["fp32", "onnx"]).sum(axis=1).min()) >= 0.99999
    assert 0.999 <= float((reference * stored["auto", "auto"]).sum(axis=1).min()) < 0.99999


def _uses_the_cache(cache: Path, precision: str = "fp32") -> str:
    """A fresh process that loads the tower from the cache and embeds one picture, then
    prints its precision and what it imported; the test fails if it exported or quantised
    (or imported torch) instead."""
    script = f"""
import sys
from PIL import Image
from clipd.config import ModelConfig
from clipd.onnx_images import load
model = load(ModelConfig({TINY.name!r}, {TINY.pretrained!r}, "cpu", {precision!r}))
vectors = model.embed_prepared([model.prepare(Image.new("RGB", (40, 30), (200, 30, 30)))])
assert vectors.shape == (1, 32), vectors.shape
heavy = ("torch", "open_clip", "torchvision", "onnxruntime.quantization")
print(" ".join([model.precision, *(name for name in heavy if name in sys.modules)]))
"""
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120, check=True)  # fmt: skip
    return done.stdout.strip()


def test_a_later_process_loads_the_export_without_torch(tmp_path: Path) -> None:
    os.environ["XDG_CACHE_HOME"] = str(tmp_path)  # isolated_env restores it
    _load()  # exports
    exported = list((tmp_path / "clipd" / "onnx").iterdir())
    assert [path.suffix for path in exported] == [".onnx"]
    assert _uses_the_cache(tmp_path) == "fp32"  # neither torch nor open_clip was imported
    assert list((tmp_path / "clipd" / "onnx").iterdir()) == exported


def test_a_damaged_export_is_made_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    os.environ["XDG_CACHE_HOME"] = str(tmp_path)
    first = _load()
    (exported,) = (tmp_path / "clipd" / "onnx").iterdir()
    exported.write_bytes(b"not an onnx model")
    picture = _noise((50, 40), seed=1)
    again = _load()
    assert "exporting it again" in caplog.text
    assert np.array_equal(
        again.embed_prepared([again.prepare(picture)]),
        first.embed_prepared([first.prepare(picture)]),
    )


def test_a_damaged_description_is_exported_again(tmp_path: Path) -> None:
    os.environ["XDG_CACHE_HOME"] = str(tmp_path)
    _load()
    description = tmp_path / "clipd" / "onnx.json"
    entries = json.loads(description.read_text())
    for entry in entries.values():
        entry["side"] = "wide"
    description.write_text(json.dumps(entries))
    assert _load().image_size == 32
    assert all(e["side"] == 32 for e in json.loads(description.read_text()).values())


def test_an_export_that_cannot_be_written_leaves_indexing_to_torch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    os.environ["XDG_CACHE_HOME"] = str(tmp_path)
    (tmp_path / "clipd").mkdir()
    (tmp_path / "clipd" / "onnx").write_text("a file where the folder should be")
    assert onnx_images.load(TINY) is None
    assert "cannot export the image tower" in caplog.text
    assert "the image tower runs in torch" in caplog.text
    assert isinstance(
        for_indexing(ModelConfig(TINY.name, TINY.pretrained, "cpu", "fp32")), Embedder
    )
    forced = ModelConfig(TINY.name, TINY.pretrained, "cpu", runtime="onnx")
    with pytest.raises(
        ModelError, match=r"cannot export the image tower .*runtime to auto or torch"
    ):
        onnx_images.load(forced)


def test_too_little_free_memory_to_export_leaves_indexing_to_torch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A machine short of memory cannot be made here: its reading is what is replaced."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path)
    tower = Embedder(TINY, texts=False).image_tower_bytes()
    assert tower > 0
    monkeypatch.setattr(onnx_files, "_memory_available", lambda: tower)
    assert onnx_images.load(TINY) is None
    assert "of free memory" in caplog.text
    assert "the image tower runs in torch" in caplog.text
    assert not (tmp_path / "clipd" / "onnx").exists()  # nothing started, nothing to clean
    monkeypatch.setattr(onnx_files, "_memory_available", lambda: None)  # unknown: go ahead
    assert onnx_images.load(TINY) is not None


def test_free_memory_is_read_from_the_kernel() -> None:
    available = onnx_files._memory_available()
    assert available is None or available > 0
    if sys.platform == "linux":
        assert available is not None


def test_a_new_open_clip_exports_again_over_the_same_file(tmp_path: Path) -> None:
    os.environ["XDG_CACHE_HOME"] = str(tmp_path)
    _load()
    (exported,) = (tmp_path / "clipd" / "onnx").iterdir()
    before = exported.stat().st_mtime_ns
    description = tmp_path / "clipd" / "onnx.json"
    entries = json.loads(description.read_text())
    for entry in entries.values():
        entry["open_clip"] = "2.0.0"  # as if exported by an older open_clip
    description.write_text(json.dumps(entries))
    _load()
    assert list((tmp_path / "clipd" / "onnx").iterdir()) == [exported]
    assert exported.stat().st_mtime_ns != before


def test_an_export_killed_midway_leaves_nothing_behind_for_long(tmp_path: Path) -> None:
    os.environ["XDG_CACHE_HOME"] = str(tmp_path)
    folder = tmp_path / "clipd" / "onnx"
    folder.mkdir(parents=True)
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    abandoned = folder / f"0123456789abcdef-visual.{int(ended.stdout)}.part"
    abandoned.write_bytes(b"half an export")
    in_progress = folder / f"fedcba9876543210-visual.{os.getpid()}.part"  # a live process's
    in_progress.write_bytes(b"being written")
    _load()
    assert not abandoned.exists()
    assert in_progress.exists()


def test_other_models_keep_their_own_export(tmp_path: Path) -> None:
    os.environ["XDG_CACHE_HOME"] = str(tmp_path)
    _load()
    renamed = tmp_path / "other.pt"  # the same bytes: the same identity, the same export
    renamed.write_bytes(TINY_MODEL_WEIGHTS.read_bytes())
    _load(ModelConfig(TINY.name, str(renamed), "cpu", "fp32"))
    assert len(list((cache_dir() / "onnx").iterdir())) == 1
    _load(ModelConfig(TINY.name, "random", "cpu", "fp32"))
    assert len(list((cache_dir() / "onnx").iterdir())) == 2


# runtime, device, precision; whether the CPU has bf16, whether a GPU may be there; chosen.
@pytest.mark.parametrize(
    "case",
    [
        ("auto", "auto", "auto", False, False, True),  # int8 if it passes its probe, else fp32
        ("auto", "cpu", "auto", False, True, True),  # told to use the CPU
        ("auto", "auto", "auto", False, True, False),  # a GPU may be there: torch decides
        ("auto", "auto", "auto", True, False, True),  # int8 first: faster than bf16
        ("auto", "cpu", "fp32", True, False, True),  # fp32 asked for: same cost
        ("auto", "cpu", "bf16", False, False, False),
        ("auto", "cuda", "auto", False, True, False),
        ("torch", "cpu", "fp32", False, False, False),
        ("onnx", "auto", "auto", True, True, True),
    ],
)
def test_which_runtime_indexes(
    monkeypatch: pytest.MonkeyPatch, case: tuple[str, str, str, bool, bool, bool]
) -> None:
    runtime, device, precision, bf16_cpu, gpu, chosen = case
    monkeypatch.setattr(embedder, "cpu_has_bf16", lambda: bf16_cpu)
    monkeypatch.setattr(onnx_images, "_gpu_present", lambda: gpu)
    config = ModelConfig(TINY.name, TINY.pretrained, device, precision, runtime)
    assert onnx_images.chosen_for(config) is chosen


def test_without_onnxruntime_auto_is_torch_and_onnx_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    assert not onnx_images.chosen_for(ModelConfig(TINY.name, TINY.pretrained, "cpu"))
    forced = ModelConfig(TINY.name, TINY.pretrained, "cpu", runtime="onnx")
    with pytest.raises(ModelError, match="pip install onnxruntime onnx"):
        onnx_images.chosen_for(forced)


@pytest.mark.parametrize("size", SIZES)
def test_squashed_input_pixels_are_open_clips_exactly(
    size: tuple[int, int], onnx: OnnxImages
) -> None:
    """The "squash" models (SigLIP's tags): both sides resized to the input, no crop."""
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    tower = onnx_images.TowerFile(Path("tiny.onnx"), 32, 32, mean, std, "bicubic", "squash")
    squashing = OnnxImages(onnx.identity, tower, onnx._session, "fp32")
    transform = open_clip.image_transform(
        32, is_train=False, mean=mean, std=std, resize_mode="squash", interpolation="bicubic"
    )
    image = _noise(size, seed=size[0] * 7 + size[1])
    assert np.array_equal(squashing.prepare(image), transform(image).numpy())


def test_what_prepare_cannot_make_is_named() -> None:
    published = dict(open_clip.get_pretrained_cfg("ViT-B-32", "laion2b_s34b_b79k"))
    defaults = {"size": 224, "resize_mode": "shortest", "interpolation": "bicubic", "mode": "RGB"}
    assert onnx_images._unsupported_in(defaults | published) is None
    assert onnx_images._unsupported_in(defaults | {"resize_mode": "squash"}) is None
    assert onnx_images._unsupported_in(defaults | {"resize_mode": "longest"}) == (
        "resize_mode 'longest'"
    )
    assert onnx_images._unsupported_in(defaults | {"size": (224, 256)}) == (
        "a (224, 256) input, not a square"
    )
    assert onnx_images._unsupported_in(defaults | {"interpolation": "lanczos"}) is not None


def test_a_model_whose_input_numpy_cannot_make_runs_in_torch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No published tag asks for it today ("longest": resize the longer side, then pad), so
    the model's own description is altered here to reach the fallback."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path)
    described = Embedder.preprocess_config
    monkeypatch.setattr(Embedder, "preprocess_config",
                        lambda self: described(self) | {"resize_mode": "longest"})  # fmt: skip
    caplog.set_level("INFO")
    assert onnx_images.load(TINY) is None
    assert "(resize_mode 'longest'): the image tower runs in torch" in caplog.text
    assert not (tmp_path / "clipd" / "onnx").exists()  # nothing exported
    built = Embedder.__init__
    monkeypatch.setattr(Embedder, "__init__", None)  # remembered: no second model load
    assert onnx_images.load(TINY) is None
    forced = ModelConfig(TINY.name, TINY.pretrained, "cpu", runtime="onnx")
    with pytest.raises(ModelError, match=r"resize_mode 'longest'.*model.runtime to auto or torch"):
        onnx_images.load(forced)
    # The model as it is again; the cache still says "longest", so torch indexes.
    monkeypatch.setattr(Embedder, "__init__", built)
    monkeypatch.setattr(Embedder, "preprocess_config", described)
    assert isinstance(
        for_indexing(ModelConfig(TINY.name, TINY.pretrained, "cpu", "fp32")), Embedder
    )


def test_the_config_takes_a_runtime_and_refuses_what_onnx_cannot_run(
    tmp_path: Path, write_config: ConfigWriter
) -> None:
    def model(**keys: str) -> dict[str, str]:
        return {"name": TINY.name, "pretrained": TINY.pretrained, **keys}

    assert (
        load_config(write_config([tmp_path], model=model(runtime="onnx"))).model.runtime == "onnx"
    )
    assert load_config(write_config([tmp_path], model=model())).model.runtime == "auto"
    with pytest.raises(ConfigError, match=r"model.runtime' is onnx, which runs on the CPU in fp32"):
        load_config(write_config([tmp_path], model=model(runtime="onnx", precision="bf16")))
    with pytest.raises(ConfigError, match=r"model.runtime' is onnx, which runs on the CPU in fp32"):
        load_config(write_config([tmp_path], model=model(runtime="onnx", device="cuda")))
    with pytest.raises(ConfigError, match=r"model\.runtime"):
        load_config(write_config([tmp_path], model=model(runtime="tensorflow")))


def _shape_pictures() -> tuple[list[Image.Image], list[str]]:
    """Four drawings of each colour and shape, and the captions of the classes."""
    rng = random.Random(5)
    classes = [(c, s) for c in COLOURS for s in SHAPES]
    pictures = [draw(c, s, (96, 64), rng) for c, s in classes for _ in range(4)]
    return pictures, [caption(c, s) for c, s in classes]


def _onnx_files(cache: Path) -> list[str]:
    return sorted(path.name.split("-", 1)[1] for path in (cache / "clipd" / "onnx").iterdir())


def test_auto_runs_the_image_tower_in_int8_within_the_drift_rule(
    tmp_path: Path, torch_fp32: Embedder
) -> None:
    os.environ["XDG_CACHE_HOME"] = str(tmp_path)
    int8 = _load(AUTO)
    assert int8.precision == "int8"
    assert int8.cosine is not None
    assert embedder.MIN_COSINE <= int8.cosine < 1.0
    pictures, captions = _shape_pictures()
    ours = int8.embed_prepared([int8.prepare(p) for p in pictures])
    theirs = torch_fp32.embed_images(pictures)
    # Within the rule, and not fp32 under another name.
    assert 0.999 <= float((ours * theirs).sum(axis=1).min()) < 0.99999
    texts = np.stack([torch_fp32.embed_text(text) for text in captions])
    # Retrieval agrees: each picture's best caption, and each caption's five best pictures, as
    # fp32 ranks them (100% of both on this CPU with VNNI; the margin is for int8 kernels that
    # round otherwise, which swap near-equal pictures of one class).
    top1 = (ours @ texts.T).argmax(1) == (theirs @ texts.T).argmax(1)
    assert top1.mean() >= 0.95, top1
    top5 = [len(set(np.argsort(-(ours @ t))[:5]) & set(np.argsort(-(theirs @ t))[:5])) / 5
            for t in texts]  # fmt: skip
    assert np.mean(top5) >= 0.95, top5
    folder = tmp_path / "clipd" / "onnx"
    assert _onnx_files(tmp_path) == ["visual-int8.onnx", "visual.onnx"]
    sizes = {path.name.split("-", 1)[1]: path.stat().st_size for path in folder.iterdir()}
    assert sizes["visual-int8.onnx"] < sizes["visual.onnx"]
    written = {path: path.stat().st_mtime_ns for path in folder.iterdir()}
    assert _uses_the_cache(tmp_path, "auto") == "int8"  # no torch, no quantiser
    assert {path: path.stat().st_mtime_ns for path in folder.iterdir()} == written


def test_a_cached_int8_tower_is_loaded_without_the_fp32_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    os.environ["XDG_CACHE_HOME"] = str(tmp_path)
    first = _load(AUTO)
    opened: list[str] = []
    session = onnx_files.open_session

    def recorded(path: Path) -> object:
        opened.append(path.name.split("-", 1)[1])
        return session(path)

    monkeypatch.setattr(onnx_files, "open_session", recorded)
    again = _load(AUTO)
    assert opened == ["visual-int8.onnx"]
    assert (again.precision, again.cosine, again.identity) == ("int8", first.cosine, first.identity)


@pytest.mark.parametrize("bf16_cpu", [False, True])
def test_int8_that_drifts_too_far_is_not_used_and_that_is_remembered(
    bf16_cpu: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """Where the CPU computes bf16, torch bf16 runs the tower instead (faster than fp32),
    unless the config asks for ONNX Runtime."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path)
    monkeypatch.setattr(embedder, "MIN_COSINE", 1.01)  # no int8 result can pass
    monkeypatch.setattr(embedder, "cpu_has_bf16", lambda: bf16_cpu)
    caplog.set_level("INFO")
    for _ in range(2):  # measured, then remembered: the second start quantises nothing
        model = onnx_images.load(AUTO)
        if bf16_cpu:
            assert model is None
            assert "drifts from fp32 (cosine 0.9" in caplog.text
            assert "torch runs it in bf16" in caplog.text
        else:
            assert model is not None
            assert model.precision == "fp32"
        assert _onnx_files(tmp_path) == ["visual.onnx"]  # the rejected int8 file is deleted
        monkeypatch.setattr(onnx_int8, "quantise", None)
    assert caplog.text.count("int8 moves this model's image vectors too far (cosine 0.9") == 1
    forced = ModelConfig(AUTO.name, AUTO.pretrained, "cpu", runtime="onnx")
    assert _load(forced).precision == "fp32"


def test_an_int8_tower_onnx_runtime_cannot_run_is_not_used_and_that_is_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A kernel this CPU lacks shows only when the quantised tower first runs: in the probe."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path)

    def no_kernel(*_: object) -> float:
        raise RuntimeError("Could not find an implementation for MatMulInteger(10) node")

    monkeypatch.setattr(onnx_int8, "drift", no_kernel)
    monkeypatch.setattr(embedder, "cpu_has_bf16", lambda: False)
    caplog.set_level("INFO")
    assert _load(AUTO).precision == "fp32"
    assert "ONNX Runtime cannot run the int8 image tower (Could not find an implementation" in (
        caplog.text
    )
    assert "onnx.json to try again" in caplog.text
    assert _onnx_files(tmp_path) == ["visual.onnx"]
    monkeypatch.setattr(onnx_int8, "quantise", None)  # remembered: not quantised again
    assert _load(AUTO).precision == "fp32"
    monkeypatch.setattr(embedder, "cpu_has_bf16", lambda: True)
    caplog.clear()
    assert onnx_images.load(AUTO) is None
    assert "the int8 image tower cannot run here (Could not find" in caplog.text
    assert "torch runs it in bf16" in caplog.text


def test_a_damaged_int8_tower_is_quantised_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    os.environ["XDG_CACHE_HOME"] = str(tmp_path)
    picture = _noise((50, 40), seed=3)
    first = _load(AUTO)
    first.path.write_bytes(b"not an onnx model")
    again = _load(AUTO)
    assert "cannot load the cached int8 image tower" in caplog.text
    assert again.precision == "int8"
    assert np.array_equal(
        again.embed_prepared([again.prepare(picture)]),
        first.embed_prepared([first.prepare(picture)]),
    )


def test_an_int8_tower_that_cannot_be_written_leaves_fp32_for_this_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    os.environ["XDG_CACHE_HOME"] = str(tmp_path)
    fp32 = _load()
    in_the_way = fp32.path.with_name(fp32.path.stem + "-int8.onnx")
    in_the_way.mkdir()  # the quantised file cannot take its name
    assert _load(AUTO).precision == "fp32"
    assert "cannot quantise the image tower to int8" in caplog.text
    assert not list(in_the_way.parent.glob("*.part"))
    in_the_way.rmdir()
    assert _load(AUTO).precision == "int8"  # not remembered as a drift: tried again


def test_too_little_free_memory_to_quantise_leaves_fp32(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    os.environ["XDG_CACHE_HOME"] = str(tmp_path)
    fp32 = _load()
    monkeypatch.setattr(onnx_files, "_memory_available", lambda: fp32.path.stat().st_size)
    assert _load(AUTO).precision == "fp32"
    assert "quantising the image tower to int8 needs about" in caplog.text
    assert _onnx_files(tmp_path) == ["visual.onnx"]


def test_the_probe_pictures_are_fixed_distinct_and_photo_sized() -> None:
    pictures = onnx_int8.probe_pictures(32)
    again = onnx_int8.probe_pictures(32)
    assert [p.tobytes() for p in pictures] == [p.tobytes() for p in again]
    assert len({p.tobytes() for p in pictures}) == len(pictures) >= 4
    assert {(p.size, p.mode) for p in pictures} == {((48, 32), "RGB")}


def test_the_drift_is_the_smallest_cosine_over_the_probes(onnx: OnnxImages) -> None:
    def one_turned_around(batch: Sequence[np.ndarray]) -> np.ndarray:
        vectors = onnx.embed_prepared(batch)
        vectors[3] = -vectors[3]
        return vectors

    same = onnx_int8.drift(onnx.prepare, onnx.embed_prepared, onnx.embed_prepared, 32)
    assert same == pytest.approx(1.0, abs=1e-6)
    assert onnx_int8.drift(onnx.prepare, onnx.embed_prepared, one_turned_around, 32) == (
        pytest.approx(-1.0, abs=1e-6)
    )


@pytest.mark.usefixtures("texts_in_torch")
def test_the_daemon_hands_images_to_the_int8_tower_and_keeps_torch_for_texts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    os.environ["XDG_CACHE_HOME"] = str(tmp_path)
    caplog.set_level("INFO")
    torch.set_num_threads(2)  # conftest gives the next test its own count back
    daemon = _torch_model(for_the_daemon(AUTO))  # a first start: export, quantise, torch texts
    assert torch.get_num_threads() == 1  # torch runs texts only: one thread (image_model)
    assert "exporting the image tower" in caplog.text
    assert "images are embedded by the int8 tower in ONNX Runtime, texts by torch" in caplog.text
    int8 = _load(AUTO)  # what the daemon exported and quantised, from the cache
    pictures = _shape_pictures()[0][: served_model.INDEX_CHUNK]
    ours = daemon.embed_prepared([daemon.prepare(p) for p in pictures])
    assert isinstance(daemon.prepare(pictures[0]), np.ndarray)
    assert np.array_equal(ours, int8.embed_prepared([int8.prepare(p) for p in pictures]))
    assert np.array_equal(daemon.embed_images(pictures), ours)
    assert daemon.image_size == int8.image_size
    assert daemon._model.visual is None  # torch's image tower is freed
    text = "a blue triangle"  # texts: torch, as a daemon that kept torch's image tower
    assert np.array_equal(daemon.embed_text(text), Embedder(AUTO).embed_text(text))

    caplog.clear()
    again = _torch_model(for_the_daemon(AUTO))  # a later start: torch's image tower is never built
    assert "exporting" not in caplog.text
    assert "int8 tower in ONNX Runtime, texts by torch" in caplog.text
    assert again._model.visual is None
    assert np.array_equal(again.embed_prepared([again.prepare(p) for p in pictures]), ours)
    assert np.array_equal(again.embed_text(text), daemon.embed_text(text))

    caplog.clear()
    int8.path.write_bytes(b"not an onnx model")  # damaged: said once, quantised again
    mended = for_the_daemon(AUTO)
    assert caplog.text.count("cannot load the cached int8 image tower") == 1
    assert np.array_equal(mended.embed_prepared([mended.prepare(p) for p in pictures]), ours)


@pytest.mark.usefixtures("texts_in_torch")
def test_a_later_start_that_must_probe_bf16_builds_torchs_image_tower_for_it_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    os.environ["XDG_CACHE_HOME"] = str(tmp_path)
    monkeypatch.setattr(embedder, "cpu_has_bf16", lambda: True)
    for_the_daemon(AUTO)
    (cache_dir() / "precision.json").unlink()  # the bf16 probe, which embeds a picture, again
    daemon = _torch_model(for_the_daemon(AUTO))
    assert daemon.bf16_cosine is not None
    assert daemon._model.visual is None
    assert isinstance(daemon.prepare(_noise((40, 30), seed=1)), np.ndarray)


@pytest.mark.parametrize(
    "config", [replace(AUTO, runtime="torch"), replace(AUTO, precision="fp32")], ids=str
)
def test_the_daemon_keeps_torchs_image_tower_where_it_is_asked_for(
    config: ModelConfig, tmp_path: Path
) -> None:
    os.environ["XDG_CACHE_HOME"] = str(tmp_path)
    torch.set_num_threads(2)  # conftest gives the next test its own count back
    daemon = for_the_daemon(config)
    assert torch.get_num_threads() == 2  # images in torch too: both threads
    assert isinstance(daemon.prepare(_noise((40, 30), seed=1)), torch.Tensor)
    assert not (tmp_path / "clipd" / "onnx").exists()  # nothing exported


def test_the_daemon_keeps_torchs_image_tower_where_int8_drifts_or_onnx_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    os.environ["XDG_CACHE_HOME"] = str(tmp_path)
    caplog.set_level("INFO")
    monkeypatch.setattr(embedder, "MIN_COSINE", 1.01)  # no int8 result can pass
    monkeypatch.setattr(embedder, "cpu_has_bf16", lambda: False)
    daemon = for_the_daemon(AUTO)  # ONNX Runtime fp32: no faster than torch's
    assert f"the image tower stays in torch ({daemon.precision})" in caplog.text
    assert isinstance(daemon.prepare(_noise((40, 30), seed=1)), torch.Tensor)
    opened: list[Path] = []
    session = onnx_files.open_session
    monkeypatch.setattr(onnx_files, "open_session", opened.append)
    for_the_daemon(AUTO)  # int8 ruled out, remembered: no ONNX session is even opened
    assert opened == []
    monkeypatch.setattr(onnx_files, "open_session", session)

    def broken(config: ModelConfig, **_: bool) -> OnnxImages:
        raise ModelError("ONNX Runtime cannot load the image tower it exported to /x")

    def buggy(config: ModelConfig, **_: bool) -> OnnxImages:
        raise KeyError("dim")

    monkeypatch.setattr(onnx_images, "load", broken)
    for_the_daemon(AUTO)  # a warning, never a daemon that does not start
    assert "cannot load the image tower it exported to /x" in caplog.text
    monkeypatch.setattr(onnx_images, "load", buggy)
    for_the_daemon(AUTO)
    assert "cannot make the int8 image tower" in caplog.text
    monkeypatch.setattr(onnx_images, "cached_int8", buggy)
    assert isinstance(for_the_daemon(AUTO).prepare(_noise((40, 30), seed=1)), torch.Tensor)
    assert "cannot load the cached int8 image tower" in caplog.text


class _AnotherModel:
    identity = ModelIdentity(name="another", pretrained="model", dim=32)
    image_size = 32

    def prepare(self, image: Image.Image) -> object:
        return image

    def embed_prepared(self, batch: Sequence[object]) -> np.ndarray:
        return np.zeros((len(batch), 32), np.float32)


def test_an_image_tower_of_another_model_is_refused(torch_fp32: Embedder) -> None:
    with pytest.raises(ValueError, match="is not this model"):
        torch_fp32.use_image_tower(_AnotherModel())
    assert torch_fp32._model.visual is not None


def test_onnx_runtime_sends_no_telemetry_and_writes_no_device_id(
    tmp_path: Path, write_config: ConfigWriter
) -> None:
    """ONNX Runtime 1.29+ on Linux and macOS reports usage to Microsoft and writes a device
    identifier under the cache folder, unless ORT_DISABLE_TELEMETRY is set before it loads:
    clipd sets it (clipd/__init__.py). A user's `clipd index`, without the variable set."""
    corpus = write_corpus(tmp_path / "pictures", per_class=1)
    config = write_config([corpus.root])
    env = {name: value for name, value in os.environ.items() if name != "ORT_DISABLE_TELEMETRY"}
    result = run_clipd("index", "--config", str(config), str(corpus.root), env=env)
    assert result.stdout.startswith("indexed 12, "), result.stderr
    home, cache = Path(env["HOME"]), Path(env["XDG_CACHE_HOME"])
    assert not (cache / "Microsoft").exists()
    assert not (home / ".cache" / "Microsoft").exists()
