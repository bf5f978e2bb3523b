"""The image tower in ONNX Runtime on a CPU, for `clipd index` and the daemon's images: int8
where that passes its drift probe (clipd.onnx_int8), else fp32 (`clipd index` only).

Why: int8 costs a third of fp32's CPU (bench/int8.py); in fp32, torch and ONNX Runtime run the
tower at the same cost, but a process that never imports torch starts seconds sooner and
holds hundreds of MiB less: PyPI's torch is the CUDA build, which maps its GPU libraries even on
a CPU, and torchvision pulls in torch._dynamo and triton (README, Performance). So `clipd index`
exports the tower once through torch (clipd.embedder's loading, torch.onnx), keeps the file in
$XDG_CACHE_HOME/clipd/onnx/, and later runs import only onnxruntime, numpy and Pillow. The
daemon uses this module only for the int8 tower (clipd.image_model.for_the_daemon), beside
its text tower in ONNX Runtime (clipd.onnx_texts).

The input is made as open_clip's evaluation transform makes it (shortest side resized and a
centre crop, or both sides "squashed"; normalised), in numpy on the same Pillow resize, so
both runtimes see the same pixels; a model asking for another transform stays on torch.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from clipd import onnx_files
from clipd.config import ModelConfig
from clipd.disk_cache import JsonCache
from clipd.errors import ModelError
from clipd.records import ModelIdentity
from clipd.served_model import Vectors, unit_rows

if TYPE_CHECKING:
    import onnxruntime

log = logging.getLogger(__name__)

# Exported towers' descriptions, by model and weights (onnx_files.key).
_TOWERS = JsonCache("onnx.json")
_RESIZE_MODES = ("shortest", "squash")
_RESAMPLING = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
# Device nodes of a GPU driver (NVIDIA's; AMD's ROCm, which torch also calls cuda): where one
# exists, `device: auto` may mean a GPU, and only torch can tell, so torch runs the model.
_GPU_NODES = ("/dev/nvidiactl", "/dev/kfd")


@dataclass(frozen=True)
class TowerFile:
    """An exported image tower and what running it needs besides the file."""

    path: Path
    dim: int
    side: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    resize_mode: str  # open_clip's: "shortest" (then a centre crop) or "squash"


def chosen_for(config: ModelConfig) -> bool:
    """Whether `clipd index` runs the image tower in ONNX Runtime (model.runtime)."""
    if config.runtime == "torch":
        return False
    if config.runtime == "onnx":
        if not _installed():
            raise ModelError(
                "model.runtime is 'onnx' but onnxruntime or onnx is not installed: "
                "`pip install onnxruntime onnx`, or set model.runtime to auto"
            )
        return True
    # auto: on a CPU, in fp32 (the two runtimes cost the same and this one starts lighter) or
    # int8 where it passes its probe (load); bf16 and fp16 are torch's.
    on_cpu = config.device == "cpu" or (config.device == "auto" and not _gpu_present())
    return on_cpu and config.precision in ("auto", "fp32") and _installed()


def _installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def _gpu_present() -> bool:
    if os.uname().sysname == "Darwin":  # Apple's GPU (mps): torch decides
        return True
    return any(os.path.exists(node) for node in _GPU_NODES)


def load(config: ModelConfig, *, int8_only: bool = False) -> OnnxImages | None:
    """The model's image tower in ONNX Runtime, from the cache or exported now; or None, so
    that `clipd index` runs torch instead: for a model whose input prepare() cannot make (told
    once, then remembered in the cache), or when the export cannot be made or loaded (a full
    or read-only cache; told each time). Under `runtime: onnx` those are errors instead.
    Under `precision: auto` the tower runs in int8 where that passes its drift probe; where it
    does not, torch bf16 runs it on a CPU that has bf16 (faster than fp32), else fp32 here.
    int8_only (the daemon, which has torch's tower): None at once where int8 was ruled out,
    rather than an fp32 session loaded only to be dropped."""
    names, key, entry = _cache_entry(config)
    if entry is not None and "unsupported" in entry:
        _torch_instead(config, _cannot_prepare(config, str(entry["unsupported"])))
        return None
    int8_wanted = config.precision == "auto"
    rejected = _int8_rejected(entry)
    if int8_wanted and rejected is not None and (int8_only or _bf16_instead(config, rejected)):
        return None
    # A cached int8 tower that passed its probe is all a run needs: the fp32 one is not
    # loaded beside it (its session holds the fp32 weights: ~0.4 GiB and a second for ViT-B-32).
    images = _cached_int8(names, entry) if int8_wanted else None
    if images is None:
        images = _fp32_or_new_int8(config, key, entry, names)
    if images is None:
        return None
    _log_loaded(config, images)
    return images


def cached_int8(config: ModelConfig) -> OnnxImages | None:
    """The int8 tower, if an earlier run made it, its probe passed and ONNX Runtime loads it:
    no torch needed. Silent otherwise: load() says why as it makes one."""
    names, _, entry = _cache_entry(config)
    return _cached_int8(names, entry)


def _cache_entry(config: ModelConfig) -> tuple[tuple[str, str], str, dict[str, Any] | None]:
    """(model and weights as the index names them, the cache's key, its entry if current)."""
    from clipd.embedder import identity_of

    names = (identity_of(config.name), identity_of(config.pretrained))
    key = onnx_files.key(*names)
    return names, key, onnx_files.current(_TOWERS.lookup(key))


def _fp32_or_new_int8(
    config: ModelConfig, key: str, entry: dict[str, Any] | None, names: tuple[str, str]
) -> OnnxImages | None:
    """The fp32 tower (exported now if need be), or, under precision auto, the int8 one
    quantised from it now; None where torch runs the tower instead."""
    fp32 = _fp32_tower(config, key, entry)
    if fp32 is None:
        return None
    tower, session = fp32
    images = OnnxImages(_identity(names, tower), tower, session, "fp32")
    if config.precision != "auto":
        return images
    int8 = _int8_tower(key, images, tower)
    if int8 is not None:
        return int8
    if _bf16_instead(config, _int8_rejected(onnx_files.current(_TOWERS.lookup(key)))):
        return None
    return images


def _identity(names: tuple[str, str], tower: TowerFile) -> ModelIdentity:
    """The index's name for the model: (name, weights) as clipd.embedder identifies them."""
    return ModelIdentity(name=names[0], pretrained=names[1], dim=tower.dim)


def _log_loaded(config: ModelConfig, images: OnnxImages) -> None:
    log.info(
        "model %s / %s image tower loaded in ONNX Runtime (%s, %d-d, %d px input) from %s",
        config.name,
        config.pretrained,
        images.precision
        if images.cosine is None
        else f"{images.precision}, cosine to fp32 {images.cosine:.5f}",
        images.identity.dim,
        images.image_size,
        images.path,
    )


def _fp32_tower(
    config: ModelConfig, key: str, entry: dict[str, Any] | None
) -> tuple[TowerFile, onnxruntime.InferenceSession] | None:
    """The fp32 export and a session on it: cached, or exported now; None if torch must run
    the tower instead (said why)."""
    tower = _described(entry)
    session = onnx_files.open_session(tower.path) if tower is not None else None
    if tower is not None and session is None:
        log.warning("cannot load the cached image tower %s: exporting it again", tower.path)
    if tower is not None and session is not None:
        return tower, session
    try:
        exported = _export(config, key)
    except _CannotExport as exc:
        _torch_instead(config, str(exc), failed=True)
        return None
    if isinstance(exported, str):
        _torch_instead(config, _cannot_prepare(config, exported))
        return None
    session = onnx_files.open_session(exported.path)
    if session is None:
        why = f"ONNX Runtime cannot load the image tower it exported to {exported.path}"
        _torch_instead(config, why, failed=True)
        return None
    return exported, session


def _int8_file(tower: TowerFile) -> Path:
    return tower.path.with_name(f"{tower.path.stem}-int8.onnx")


def _int8_rejected(entry: dict[str, Any] | None) -> str | None:
    """Why the probe found the int8 tower unusable (remembered), or None if it did not."""
    from clipd import embedder

    probe = entry.get("int8") if entry is not None else None
    if isinstance(probe, dict) and "error" in probe:
        return f"cannot run here ({probe['error']})"
    cosine = _int8_cosine(entry)
    if cosine is not None and cosine < embedder.MIN_COSINE:
        return f"drifts from fp32 (cosine {cosine:.5f})"
    return None


def _int8_cosine(entry: dict[str, Any] | None) -> float | None:
    probe = entry.get("int8") if entry is not None else None
    value = probe.get("cosine") if isinstance(probe, dict) else None
    return float(value) if isinstance(value, int | float) else None


def _bf16_instead(config: ModelConfig, int8_rejected: str | None) -> bool:
    """Whether torch bf16 runs the tower because int8 cannot: faster than fp32 where the CPU
    computes bf16 (bench/int8.py), and torch is allowed (runtime auto)."""
    from clipd.embedder import cpu_has_bf16

    if int8_rejected is None or config.runtime != "auto" or not cpu_has_bf16():
        return False
    log.info("the int8 image tower %s: torch runs it in bf16", int8_rejected)
    return True


def _cached_int8(names: tuple[str, str], entry: dict[str, Any] | None) -> OnnxImages | None:
    """The cached int8 tower, if its probe passed and ONNX Runtime loads it."""
    from clipd import embedder

    tower, cosine = _described(entry), _int8_cosine(entry)
    if tower is None or cosine is None or cosine < embedder.MIN_COSINE:
        return None
    path = _int8_file(tower)
    session = onnx_files.open_session(path) if path.is_file() else None
    if session is None:
        return None
    return OnnxImages(_identity(names, tower), tower, session, "int8", cosine)


def _int8_tower(key: str, fp32: OnnxImages, tower: TowerFile) -> OnnxImages | None:
    """The int8 tower quantised from the fp32 export and probed now (once per export, or
    again for a damaged file); None where it drifts too far (remembered) or cannot be made
    (told; fp32 runs)."""
    from clipd import embedder, onnx_int8

    path = _int8_file(tower)
    entry = onnx_files.current(_TOWERS.lookup(key)) or {}
    if _int8_rejected(entry) is not None:
        return None
    if _int8_cosine(entry) is not None:  # accepted once, but _cached_int8 could not load it
        log.warning("cannot load the cached int8 image tower %s: quantising it again", path)
    short = onnx_files.memory_short_of(tower.path.stat().st_size)
    if short is not None:
        log.warning("quantising the image tower to int8 %s: fp32 this run", short)
        return None
    started = time.monotonic()
    try:
        onnx_int8.quantise(tower.path, path)
    except Exception as exc:  # a full disk, or one of onnxruntime's own error types
        log.warning("cannot quantise the image tower to int8 in %s (%s): fp32 this run",
                    path.parent, exc)  # fmt: skip
        return None
    session = onnx_files.open_session(path)
    if session is None:
        log.warning("ONNX Runtime cannot load the int8 tower it wrote to %s: fp32 this run", path)
        return None
    int8 = OnnxImages(fp32.identity, tower, session, "int8")
    try:
        int8.cosine = onnx_int8.drift(fp32.prepare, fp32.embed_prepared, int8.embed_prepared,
                                      tower.side)  # fmt: skip
    except Exception as exc:  # onnxruntime's own error types: a kernel this CPU lacks
        _reject_int8(key, entry, path, {"error": str(exc)})
        log.warning("ONNX Runtime cannot run the int8 image tower (%s): not used; delete %s to "
                    "try again", exc, _TOWERS.path)  # fmt: skip
        return None
    if int8.cosine < embedder.MIN_COSINE:
        _reject_int8(key, entry, path, {"cosine": int8.cosine})
        log.warning("int8 moves this model's image vectors too far (cosine %.5f < %g): not used",
                    int8.cosine, embedder.MIN_COSINE)  # fmt: skip
        return None
    _TOWERS.store(key, entry | {"int8": {"file": path.name, "cosine": int8.cosine}})
    log.info("quantised the image tower to int8 in %.1f s (cosine to fp32 %.5f)",
             time.monotonic() - started, int8.cosine)  # fmt: skip
    return int8


def _reject_int8(key: str, entry: dict[str, Any], path: Path, probe: dict[str, Any]) -> None:
    """Remember that the int8 tower is not to be used, and why; its file goes."""
    _TOWERS.store(key, entry | {"int8": {"file": path.name, **probe}})
    with contextlib.suppress(OSError):
        path.unlink()


def _cannot_prepare(config: ModelConfig, problem: str) -> str:
    return f"clipd's ONNX path cannot make the input of model {config.name} ({problem})"


def _torch_instead(config: ModelConfig, why: str, *, failed: bool = False) -> None:
    """Say that torch runs the image tower, and why; or refuse, if the config asked for ONNX."""
    if config.runtime == "onnx":
        raise ModelError(f"{why}; set model.runtime to auto or torch")
    log.log(logging.WARNING if failed else logging.INFO, "%s: the image tower runs in torch", why)


class OnnxImages:
    """The image half of clipd.embedder.Embedder (what the indexer uses), in ONNX Runtime on
    the CPU, fp32 or int8 (then with the probe's smallest cosine to fp32)."""

    def __init__(
        self,
        identity: ModelIdentity,
        tower: TowerFile,
        session: onnxruntime.InferenceSession,
        precision: str,
        cosine: float | None = None,
    ) -> None:
        self.identity = identity
        self.precision = precision
        self.cosine = cosine
        self.path = tower.path if precision == "fp32" else _int8_file(tower)
        self.image_size = tower.side
        self._session = session
        self._input = session.get_inputs()[0].name
        self._squash = tower.resize_mode == "squash"
        self._resample = _RESAMPLING[tower.interpolation]
        self._mean = np.array(tower.mean, dtype=np.float32).reshape(3, 1, 1)
        self._std = np.array(tower.std, dtype=np.float32).reshape(3, 1, 1)

    def prepare(self, image: Image.Image) -> npt.NDArray[np.float32]:
        """The model's input for one RGB image, as open_clip's evaluation transform makes it
        (torchvision's Resize and CenterCrop on the same Pillow resize): the shorter side
        resized to the input side, the longer one truncated, and a centre crop; or, for
        "squash" models, both sides resized to it. Then (x / 255 - mean) / std per channel.
        CPU work, safe to call from many threads."""
        side = self.image_size
        width, height = image.size
        if self._squash:
            size = (side, side)
        elif width <= height:
            size = (side, int(side * height / width))
        else:
            size = (int(side * width / height), side)
        if size != image.size:
            image = image.resize(size, self._resample)
        if size != (side, side):
            left = round((size[0] - side) / 2.0)
            top = round((size[1] - side) / 2.0)
            image = image.crop((left, top, left + side, top + side))
        if image.mode != "RGB":  # as open_clip converts: only when it must
            image = image.convert("RGB")
        pixels = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)
        prepared: npt.NDArray[np.float32] = (
            pixels.astype(np.float32) / np.float32(255) - self._mean
        ) / self._std
        return prepared

    def embed_prepared(self, batch: Sequence[npt.NDArray[np.float32]]) -> Vectors:
        """Vectors, one row per array made by prepare()."""
        return unit_rows(self._session.run(None, {self._input: np.stack(batch)})[0])


def _described(entry: dict[str, Any] | None) -> TowerFile | None:
    """The cache's description of an export, if whole and its file is there."""
    if entry is None:
        return None
    try:
        tower = TowerFile(
            path=onnx_files.folder() / str(entry["file"]),
            dim=int(entry["dim"]),
            side=int(entry["side"]),
            mean=_triple(entry["mean"]),
            std=_triple(entry["std"]),
            interpolation=str(entry["interpolation"]),
            resize_mode=str(entry["resize_mode"]),
        )
    except (KeyError, TypeError, ValueError):
        return None
    settings = {"size": tower.side, "resize_mode": tower.resize_mode, "mode": "RGB",
                "interpolation": tower.interpolation}  # fmt: skip
    in_folder = tower.path.name == str(entry["file"])  # a bare name, never a path elsewhere
    if _unsupported_in(settings) is not None or not in_folder or not tower.path.is_file():
        return None
    return tower


def _triple(value: Any) -> tuple[float, float, float]:
    first, second, third = (float(v) for v in value)
    return first, second, third


class _CannotExport(Exception):
    """The export could not be written (the model itself loaded)."""


def _export(config: ModelConfig, key: str) -> TowerFile | str:
    """Export the image tower through torch (once per model) and describe it in the cache;
    or, for a model whose input prepare() cannot make, say why (and remember that)."""
    from clipd.embedder import Embedder

    started = time.monotonic()
    embedder = Embedder(
        ModelConfig(config.name, config.pretrained, "cpu", precision="fp32", runtime="torch"),
        texts=False,
    )
    preprocessing = embedder.preprocess_config()
    problem = _unsupported_in(preprocessing)
    if problem is not None:
        _TOWERS.store(key, {"unsupported": problem, "open_clip": onnx_files.open_clip_version()})
        return problem
    short = onnx_files.memory_short_of(embedder.image_tower_bytes())
    if short is not None:
        raise _CannotExport(f"exporting the image tower of {config.name} {short}")
    log.info("exporting the image tower of %s / %s to ONNX (once)", config.name, config.pretrained)
    try:
        path = onnx_files.written(key, "visual", embedder.export_image_tower)
    except Exception as exc:  # a full disk, or one of the many types torch's exporter raises
        raise _CannotExport(
            f"cannot export the image tower of {config.name} to {onnx_files.folder()} ({exc})"
        ) from exc
    tower = TowerFile(
        path=path,
        dim=embedder.identity.dim,
        side=embedder.image_size,
        mean=_triple(preprocessing["mean"]),
        std=_triple(preprocessing["std"]),
        interpolation=str(preprocessing["interpolation"]),
        resize_mode=str(preprocessing.get("resize_mode", "shortest")),
    )
    _TOWERS.store(key, {"file": path.name, "dim": tower.dim, "side": tower.side,
                        "mean": list(tower.mean), "std": list(tower.std),
                        "interpolation": tower.interpolation,
                        "resize_mode": tower.resize_mode,
                        "open_clip": onnx_files.open_clip_version()})  # fmt: skip
    log.info("exported in %.1f s to %s", time.monotonic() - started, path)
    return tower


def _unsupported_in(preprocessing: dict[str, Any]) -> str | None:
    """What of open_clip's preprocessing of a model prepare() cannot make exactly, or None.
    Every published tag asks for a square input, resized "shortest" or "squash", bicubic."""
    size = preprocessing.get("size")
    if not (isinstance(size, int) or (isinstance(size, tuple | list) and len(set(size)) == 1)):
        return f"a {size} input, not a square"
    for key, allowed in (("resize_mode", _RESIZE_MODES), ("interpolation", tuple(_RESAMPLING)),
                         ("mode", ("RGB",))):  # fmt: skip
        if preprocessing.get(key) not in allowed:
            return f"{key} {preprocessing.get(key)!r}"
    return None
