"""The OpenCLIP model: images and texts in, L2-normalised float32 vectors out.

It loads models through torch and open_clip (clipd.weights and clipd.text_tower, the torch
side of loading and of the text tower, are its helpers), and imports them only when a model is
loaded, so that `clipd check-config` and the rest stay light. One model serves indexing and
queries: torch inference is thread-safe in eval mode, so a query runs beside an indexing batch
instead of waiting for it (clipd.served_model: queries first, texts cached).
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
import socket
import urllib.parse
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from clipd import probe_cache, text_tower
from clipd import weights as weights_module
from clipd.config import RANDOM_WEIGHTS, ModelConfig
from clipd.disk_cache import JsonCache
from clipd.errors import ModelError, UnknownModel, WeightsOffline, WeightsUnavailable
from clipd.records import ModelIdentity
from clipd.served_model import ServedModel, Vectors, unit_rows

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from clipd.served_model import ImageModel

log = logging.getLogger(__name__)

# CPU flags of native bfloat16 arithmetic (AVX512-BF16 dot products, AMX tiles). Without them
# torch emulates bf16 and runs slower than fp32; with them ViT-B-32 images embed ~3.5x faster
# here (bench/model.py), so `precision: auto` picks bf16 on such CPUs.
_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
# `auto` keeps a reduced precision (bf16 here, int8 in clipd.onnx_int8) only if its embeddings
# of the probes stay this close (cosine) to fp32's. Measured: bf16 >= 0.99992, int8 >= 0.99988
# for ViT-B-32 (random weights) and the trained tiny test model.
MIN_COSINE = 0.999
_PROBE_TEXTS = ("a photo of a dog on a beach", "red brick wall", "a bowl of fruit")


class Embedder(ServedModel):
    """A loaded model with its preprocessing and tokenizer.

    With texts=False only the image tower is kept (`clipd index` asks no queries): for
    ViT-B-32 that leaves out 63M of 151M weights, their memory and their cast. With an
    image_tower (the daemon's int8 one, clipd.image_model), images go to it, and torch's image
    tower is left out the same way (loaded only if the bf16 probe needs it, then dropped).
    """

    def __init__(
        self, config: ModelConfig, *, texts: bool = True, image_tower: ImageModel | None = None
    ) -> None:
        import torch

        super().__init__()
        self.config = config
        self._torch = torch
        self.device = _pick_device(config.device)
        self.dtype = _pick_dtype(config.precision, self.device)
        model_name = check_model(config)
        name, pretrained = identity_of(config.name), identity_of(config.pretrained)
        # The smallest probe cosine of bf16 against fp32, when `auto` weighed bf16: from an
        # earlier start if one probed these weights here, else measured below.
        self.bf16_cosine: float | None = None
        probe_key = None
        if config.precision == "auto" and self.dtype == torch.bfloat16:
            probe_key = probe_cache.probe_key(name, pretrained, torch.__version__)
            self.bf16_cosine = probe_cache.lookup(probe_key)
            if self.bf16_cosine is not None and self.bf16_cosine < MIN_COSINE:
                self.dtype = torch.float32
        probing = probe_key is not None and self.bf16_cosine is None
        # The probe compares text embeddings too: the text tower goes only after it.
        self._model, self._preprocess, tokenizer = _load(
            model_name,
            config.pretrained,
            "fp32" if probing else self.precision,
            texts=texts or probing,
            images=image_tower is None or probing,
        )
        self._tokenizer = tokenizer
        self._model.eval()
        self._unpadded_text = text_tower.reads_the_end_token_causally(self._model)
        self.image_size = (
            _image_side(self._model) if image_tower is None else image_tower.image_size
        )
        if probing:
            self._check_bf16(model_name)
            assert probe_key is not None
            assert self.bf16_cosine is not None  # set by the probe
            probe_cache.store(probe_key, self.bf16_cosine)
            if not texts:
                weights_module.keep_only_the_image_tower(self._model)
                self._tokenizer = None
        self._model.to(device=self.device)  # built in self.dtype already, or cast by the probe
        dim = _embedding_dim(model_name)
        self.identity = ModelIdentity(name=name, pretrained=pretrained, dim=dim)
        # Another runtime's image tower, given here or by use_image_tower().
        self._images: ImageModel | None = None
        if image_tower is not None:
            self.use_image_tower(image_tower)
        log.info(
            "model %s / %s loaded on %s (%s%s, %d-d, %d px input)",
            config.name,
            config.pretrained,
            self.device,
            self.precision,
            "" if self.bf16_cosine is None else f", cosine to fp32 {self.bf16_cosine:.5f}",
            dim,
            self.image_size,
        )

    @property
    def precision(self) -> str:
        """The precision in use: fp32, bf16 or fp16."""
        torch = self._torch
        return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    @property
    def image_tower(self) -> ImageModel | None:
        """The other runtime's image tower that embeds images (use_image_tower), or None when
        torch's does."""
        return self._images

    def _check_bf16(self, model_name: str) -> None:
        """Cast to bf16, keeping it only if the probes' embeddings barely move; else fp32."""
        torch = self._torch
        reference = self._probe()
        self._model.to(dtype=torch.bfloat16)
        self.bf16_cosine = float((self._probe() * reference).sum(axis=1).min())
        if self.bf16_cosine < MIN_COSINE:
            log.warning(
                "bf16 moves this model's embeddings too far (cosine %.5f < %g): using fp32",
                self.bf16_cosine,
                MIN_COSINE,
            )
            # Reloaded, not cast back: bf16-rounded weights would stay rounded. Rare, so the
            # second load is cheaper than keeping an fp32 copy in RAM meanwhile.
            self._model = _load(model_name, self.config.pretrained, "fp32", texts=True)[0].eval()
            self.dtype = torch.float32

    def _probe(self) -> Vectors:
        """Embeddings of fixed texts and a fixed pattern image, for comparing precisions."""
        torch = self._torch
        side = self.image_size
        ramp = torch.linspace(-1.5, 1.5, side)
        pattern = torch.stack([ramp[None, :] * ramp[:, None], ramp[None, :].expand(side, side),
                               torch.sin(4 * ramp)[:, None].expand(side, side)])  # fmt: skip
        dtype = next(self._model.parameters()).dtype
        with torch.inference_mode():
            texts = self._model.encode_text(self._tokenize(list(_PROBE_TEXTS)))
            image = self._model.encode_image(pattern[None].to(dtype))
        return _normalised(torch.cat([texts, image]))

    def preprocess_config(self) -> dict[str, Any]:
        """open_clip's description of the model's input: size, mean, std, interpolation..."""
        import open_clip

        config: dict[str, Any] = dict(open_clip.get_model_preprocess_cfg(self._model))
        return config

    def image_tower_bytes(self) -> int:
        """The size of the image tower's weights in memory."""
        return _bytes_of(self._model.visual)

    def text_tower_bytes(self) -> int:
        """The size of the weights in memory besides the image tower's."""
        visual = self._model.visual
        return _bytes_of(self._model) - (_bytes_of(visual) if visual is not None else 0)

    def export_image_tower(self, path: Path) -> None:
        """Write the image tower (encode_image without its normalisation) as an ONNX model:
        input "pixels" (batch, 3, side, side) float32, output "features", any batch size."""
        torch = self._torch
        side = self.image_size
        # The TorchScript exporter (dynamo=False: the newer one needs onnxscript too) warns
        # that it is deprecated and about traced branches; neither is the user's to act on.
        # Export runs once, at start, on one thread.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                self._model.visual,
                (torch.zeros(1, 3, side, side, dtype=self.dtype, device=self.device),),
                str(path),
                input_names=["pixels"],
                output_names=["features"],
                dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}},
                opset_version=18,
                dynamo=False,
            )

    def text_export_problem(self) -> str | None:
        """What keeps the text tower from being exported to ONNX (clipd.text_tower), or
        None."""
        if self._tokenizer is None:
            return "the model was loaded for images only"
        return text_tower.problem(self._model)

    def export_text_tower(self, path: Path) -> None:
        """Write the text tower as ONNX (clipd.text_tower): loaded in fp32 on the CPU."""
        if self.dtype != self._torch.float32 or self.device != "cpu":
            raise ValueError(f"the text tower is exported from fp32 on the CPU, not {self.dtype}")
        text_tower.export(self._model, path)

    @property
    def context_length(self) -> int:
        """The most tokens a text is read as (start and end tokens included)."""
        return int(self._model.context_length)

    def text_tokens(self, texts: list[str]) -> npt.NDArray[np.int64]:
        """The model's own tokenizer's tokens of texts, padded to its context length."""
        tokens: npt.NDArray[np.int64] = self._tokenize(texts).numpy()
        return tokens

    def use_image_tower(self, images: ImageModel) -> None:
        """Embed images with `images` from now on, and free torch's image tower: the daemon
        hands them to the int8 tower in ONNX Runtime (clipd.onnx_images), a third of fp32's CPU
        and ~60% of bf16's. Queries still go first (embed_prepared's chunks)."""
        if images.identity != self.identity:
            raise ValueError(f"{images.identity} is not this model ({self.identity})")
        self._images = images
        self.image_size = images.image_size
        weights_module.drop_towers(self._model, texts=True, images=False)

    def prepare(self, image: Image.Image) -> Any:
        """The model's input for one RGB image; CPU work, safe to call from many threads."""
        if self._images is not None:
            return self._images.prepare(image)
        tensor: torch.Tensor = self._preprocess(image)
        return tensor

    def _encode_images(self, batch: Sequence[Any]) -> Vectors:
        if self._images is not None:
            return self._images.embed_prepared(batch)
        torch = self._torch
        with torch.inference_mode():
            pixels = torch.stack(list(batch)).to(device=self.device, dtype=self.dtype)
            return _normalised(self._model.encode_image(pixels))

    def _encode_texts(self, texts: list[str]) -> Vectors:
        with self._torch.inference_mode():
            return _normalised(self._encode_text(self._tokenize(texts)))

    def _tokenize(self, texts: list[str]) -> torch.Tensor:
        if self._tokenizer is None:
            raise RuntimeError("this model was loaded for images only (texts=False)")
        tokens: torch.Tensor = self._tokenizer(texts)
        return tokens

    def _encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens.to(self.device)
        if self._unpadded_text:
            return text_tower.encode_unpadded(self._model, tokens)
        encoded: torch.Tensor = self._model.encode_text(tokens)
        return encoded


def _bytes_of(module: Any) -> int:
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def _normalised(features: torch.Tensor) -> Vectors:
    return unit_rows(features.float().cpu().numpy())


def _pick_device(wanted: str) -> str:
    import torch

    if wanted == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if wanted == "cuda" and not torch.cuda.is_available():
        raise ModelError("model.device is 'cuda' but torch sees no CUDA GPU; use 'auto' or 'cpu'")
    if wanted == "mps" and not torch.backends.mps.is_available():
        raise ModelError("model.device is 'mps' but this torch has no MPS; use 'auto' or 'cpu'")
    return wanted


def _pick_dtype(precision: str, device: str) -> torch.dtype:
    import torch

    if precision == "auto":
        # Half precision is the norm on GPUs; on CPUs bf16 where the CPU computes it natively
        # (Embedder then checks the drift), else fp32.
        if device in ("cuda", "mps"):
            return torch.float16
        return torch.bfloat16 if device == "cpu" and cpu_has_bf16() else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def cpu_has_bf16() -> bool:
    """True if /proc/cpuinfo lists native bf16 arithmetic (Linux x86; elsewhere: False)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return bool(_BF16_FLAGS & set(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return False


def _register_model_config(name: str) -> str:
    """A model-config JSON path is registered with open_clip under its file stem."""
    if not name.endswith(".json"):
        return name
    import open_clip

    open_clip.add_model_config(name)
    return Path(name).stem


def check_model(config: ModelConfig) -> str:
    """open_clip's name for model.name, once it is known to name a model, and model.pretrained
    a tag of it, a checkpoint file or 'random'; UnknownModel otherwise.

    Lists what open_clip knows without loading any weights, but imports open_clip and torch.
    """
    import open_clip

    model_name = _register_model_config(config.name)
    if model_name not in open_clip.list_models():
        close = difflib.get_close_matches(model_name, open_clip.list_models(), n=3)
        raise UnknownModel(
            f"model.name {model_name!r} is not an OpenCLIP model"
            + (f" (did you mean {', '.join(close)}?)" if close else "")
            + "; see open_clip.list_models(), or give the path of a model-config JSON"
        )
    pretrained = config.pretrained
    if pretrained != RANDOM_WEIGHTS and not Path(pretrained).is_file():
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        if pretrained not in tags:
            raise UnknownModel(
                f"model.pretrained {pretrained!r} is not a tag of {model_name}; "
                f"use one of: {', '.join(tags) or '(none: give a checkpoint file path)'}"
            )
    return model_name


def _load(
    model_name: str, pretrained: str, precision: str, *, texts: bool, images: bool = True
) -> tuple[Any, Callable[..., Any], Callable[..., Any] | None]:
    """Model, preprocessing, tokenizer, the weights in `precision` (fp32, bf16, fp16), cast as
    open_clip's pure_bf16 / pure_fp16 cast them: every weight (see clipd.weights). Without
    texts, the model is its image tower alone and there is no tokenizer; without images, it
    has no image tower."""
    import open_clip
    import torch

    _log_hub_messages_once()
    weights = None if pretrained == RANDOM_WEIGHTS else pretrained
    if weights is None:
        log.warning("model.pretrained is 'random': random weights, search results are noise")
    offline = weights is not None and not Path(weights).is_file() and _offline(model_name, weights)
    dtype = _DTYPES[precision](torch)
    try:
        with _hub_offline(offline):
            model, preprocess = weights_module.build(model_name, weights)
            if weights is not None:
                checkpoint = weights_module.checkpoint_of(model_name, weights)
                weights_module.load(model, checkpoint, dtype, texts=texts, images=images)
            else:
                weights_module.drop_towers(model, texts=texts, images=images)
        model.to(dtype=dtype)  # random weights; a no-op after load()
        tokenizer = open_clip.get_tokenizer(model_name) if texts else None
    except Exception as exc:  # open_clip and the hub raise many types; all mean "no weights"
        raise WeightsUnavailable(_weights_help(model_name, pretrained, exc)) from exc
    return model, preprocess, tokenizer


_DTYPES: dict[str, Callable[[Any], Any]] = {
    "fp32": lambda torch: torch.float32,
    "bf16": lambda torch: torch.bfloat16,
    "fp16": lambda torch: torch.float16,
}


def _embedding_dim(model_name: str) -> int:
    """The length of the model's vectors, from its config: no need to run the model."""
    import open_clip

    config = open_clip.get_model_config(model_name)
    return int(config["embed_dim"])


@dataclass(frozen=True)
class _Download:
    """Where open_clip fetches a pretrained tag's checkpoint from."""

    url: str
    # The Hugging Face repository and file, when it comes from there (as most tags do).
    repo: str | None = None
    filename: str | None = None


def _download_of(model_name: str, tag: str) -> _Download | None:
    """What open_clip would download for this tag, or None if it has no source."""
    import open_clip
    from huggingface_hub import constants

    source = open_clip.get_pretrained_cfg(model_name, tag)
    if source.get("hf_hub"):
        # "org/name/" means open_clip's default file name in repository org/name.
        repo, filename = os.path.split(source["hf_hub"])
        filename = filename or _HUB_WEIGHTS_NAME
        return _Download(f"{constants.ENDPOINT}/{repo}/resolve/main/{filename}", repo, filename)
    if source.get("url"):
        return _Download(source["url"])
    return None


def _offline(model_name: str, tag: str) -> bool:
    """True if the tag's weights are not cached and their host cannot be reached.

    Offline is "evident" when the user says so (HF_HUB_OFFLINE) or the host's name does not
    resolve: then the load must neither retry (the hub retries each file five times, about a
    minute in all) nor try the network at all. WeightsOffline if nothing can be loaded.
    """
    from huggingface_hub import constants, try_to_load_from_cache

    download = _download_of(model_name, tag)
    if download is None:
        return False
    host = urllib.parse.urlsplit(download.url).hostname or ""
    if constants.HF_HUB_OFFLINE:
        reason = "HF_HUB_OFFLINE is set"
    else:
        try:
            socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM)
            return False
        except (socket.gaierror, UnicodeError):
            reason = f"cannot resolve {host}"
    if download.repo is not None and download.filename is not None:
        names = (_HUB_SAFE_WEIGHTS_NAME, download.filename)
        if any(isinstance(try_to_load_from_cache(download.repo, n), str) for n in names):
            log.info("offline (%s): loading %s / %s from the local cache", reason, model_name, tag)
            return True
    raise WeightsOffline(
        f"the weights of {model_name} / {tag} are not on this machine and it is offline "
        f"({reason}): fetch {download.url} and set model.pretrained to the file's path"
    )


# The file names open_clip looks for in a Hugging Face repository ("org/name/" entries).
_HUB_WEIGHTS_NAME = "open_clip_pytorch_model.bin"
_HUB_SAFE_WEIGHTS_NAME = "open_clip_model.safetensors"


@contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """Within: the Hugging Face hub answers from its cache only (as HF_HUB_OFFLINE=1 does)."""
    if not offline:
        yield
        return
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def _log_hub_messages_once() -> None:
    """huggingface_hub prints its messages through a handler of its own and also passes them on
    to the root logger's: every line came out twice. Keep the root's, which clipd formats."""
    hub = logging.getLogger("huggingface_hub")
    for handler in list(hub.handlers):
        hub.removeHandler(handler)


def _weights_help(model_name: str, pretrained: str, exc: Exception) -> str:
    if Path(pretrained).is_file():
        return (
            f"cannot load checkpoint {pretrained} into model {model_name} ({exc}); "
            "check that the file is an OpenCLIP checkpoint for that model"
        )
    download = _download_of(model_name, pretrained)
    where = download.url if download is not None else "its published location"
    return (
        f"cannot fetch weights for model {model_name} / {pretrained} ({type(exc).__name__}: "
        f"{exc}); clipd downloads them once on first start, which needs internet access to "
        f"{where}. Offline: download that file on another machine, copy it here, and set "
        "model.pretrained in the config to the file's path"
    )


def _image_side(model: Any) -> int:
    size = getattr(model.visual, "image_size", 224)
    return int(size[0] if isinstance(size, tuple | list) else size)


def identity_of(ref: str) -> str:
    """Built-in names stay; a file is identified by its content, so moving it changes nothing."""
    path = Path(ref)
    if not path.is_file():
        return ref
    return f"{path.name}#sha256:{_file_digest(path)}"


# Digests of checkpoint files, so that a start does not read a whole checkpoint just to name
# it (1 CPU-s for ViT-B-32's 600 MB here, more for larger models).
_DIGESTS = JsonCache("checkpoints.json")


def _file_digest(path: Path) -> str:
    """The start of the file's sha256, remembered for this very file (same inode, size, mtime
    and ctime: no write or rename-over can keep all four) so that only its first use reads it."""
    stat = path.stat()
    key = " ".join(
        map(str, (path.resolve(), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns,
                  stat.st_ctime_ns))
    )  # fmt: skip
    known = _DIGESTS.lookup(key)
    if isinstance(known, str):
        return known
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    short = digest.hexdigest()[:16]
    _DIGESTS.store(key, short)
    return short
