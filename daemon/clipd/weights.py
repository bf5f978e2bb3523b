"""Building an OpenCLIP model and giving it a checkpoint's weights, without wasted work.

open_clip's own load draws random weights for the whole model, reads the checkpoint into RAM
and copies it over them, then (for bf16) casts: seconds of every start, and the model two or
three times in RAM at the peak. Here the model is built without drawing anything, takes the
checkpoint's tensors as its own (a zip checkpoint memory-mapped, so an fp32 model reads its
weights straight from the page cache), and a cast to bf16 hands each fp32 tensor's pages back
as soon as it is converted. Only the embedder calls this module; it imports torch lazily too.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import sys
import threading
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# torch.nn.init is patched while a model is built: one build at a time.
_BUILD_LOCK = threading.Lock()
_MADV_DONTNEED = 4  # Linux <sys/mman.h>
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def build(model_name: str, weights: str | None) -> tuple[Any, Callable[..., Any]]:
    """The model (fp32, on the CPU) and its preprocessing. With `weights` (a tag or a file),
    the tag's checkpoint is fetched if need be, and the model's own weights are left unset:
    load() must follow."""
    import open_clip

    with _built_for_a_checkpoint(weights is not None):
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=weights, load_weights=False
        )
    return model, preprocess


def checkpoint_of(model_name: str, weights: str) -> str:
    """The checkpoint file of a path or a pretrained tag (fetched already by build())."""
    if Path(weights).is_file():
        return weights
    import open_clip
    from huggingface_hub import constants

    source = open_clip.get_pretrained_cfg(model_name, weights)
    saved = constants.HF_HUB_OFFLINE
    try:
        constants.HF_HUB_OFFLINE = True  # in the hub's cache since build(): no second request
        path: str = open_clip.download_pretrained(source)
    except Exception:  # an unusual cache layout: ask the way build() did
        constants.HF_HUB_OFFLINE = saved
        path = open_clip.download_pretrained(source)
    finally:
        constants.HF_HUB_OFFLINE = saved
    return path


def load(
    model: Any, checkpoint: str, dtype: Any, *, texts: bool = True, images: bool = True
) -> None:
    """Put the checkpoint into the model (through open_clip, its format conversions included),
    then cast the model to dtype as Module.to does (every floating-point tensor). Without
    texts (or images), that tower is dropped before the cast: its mapped weights are never
    read."""
    import open_clip

    with _memory_mapped(checkpoint):
        # assign: the model takes the loaded tensors instead of copying them into its own.
        model.load_state_dict = functools.partial(type(model).load_state_dict, model, assign=True)
        try:
            open_clip.load_checkpoint(model, checkpoint)  # strict: every weight is replaced
        finally:
            del model.load_state_dict
    drop_towers(model, texts=texts, images=images)
    _cast(model, dtype, _mapped_ranges(checkpoint))


def drop_towers(model: Any, *, texts: bool, images: bool) -> None:
    """Drop the towers not asked for: the text tower (keep_only_the_image_tower), and the
    image tower where another runtime embeds images (clipd.image_model)."""
    if not texts:
        keep_only_the_image_tower(model)
    if not images:
        model.visual = None  # encode_text never reads it


def keep_only_the_image_tower(model: Any) -> None:
    """Drop every part of an OpenCLIP model but `visual`, all that encode_image uses (CLIP,
    CustomTextCLIP and CoCa alike): the text tower, its buffers and the logit scale."""
    for name in [*model._modules, *model._parameters, *model._buffers]:
        if name != "visual":
            delattr(model, name)


@contextmanager
def _built_for_a_checkpoint(checkpoint_follows: bool) -> Iterator[None]:
    """Within (if checkpoint_follows): torch.nn.init's functions leave tensors as they are, so
    a model built only to receive a checkpoint's weights does not draw random ones first (about
    2 CPU-s for ViT-B-32), and open_clip's warning that it loaded no weights is dropped. Safe
    because the load that follows is strict: it must replace every weight."""
    with _BUILD_LOCK:
        if not checkpoint_follows:
            yield
            return
        import torch.nn.init

        saved = {name: getattr(torch.nn.init, name) for name in dir(torch.nn.init)
                 if name.endswith("_") and not name.startswith("_")}  # fmt: skip

        def untouched(tensor: Any, *args: Any, **kwargs: Any) -> Any:
            return tensor

        for name in saved:
            setattr(torch.nn.init, name, untouched)
        root = logging.getLogger()  # open_clip logs through the logging module's functions
        root.addFilter(_not_the_no_weights_warning)
        try:
            yield
        finally:
            root.removeFilter(_not_the_no_weights_warning)
            for name, function in saved.items():
                setattr(torch.nn.init, name, function)


def _not_the_no_weights_warning(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("No pretrained weights loaded")


@contextmanager
def _memory_mapped(checkpoint: str) -> Iterator[None]:
    """Within: torch.load maps a zip checkpoint (torch.save's format) instead of reading it.
    Other formats (legacy pickles, safetensors) load as before."""
    try:
        from torch.utils.serialization import config  # torch >= 2.5
    except ImportError:
        yield
        return
    if not zipfile.is_zipfile(checkpoint):
        yield
        return
    saved = config.load.mmap
    config.load.mmap = True
    try:
        yield
    finally:
        config.load.mmap = saved


def _cast(model: Any, dtype: Any, mapped: list[tuple[int, int]]) -> None:
    """model.to(dtype), one module at a time, children before parents, handing the pages of
    each converted tensor of the mapped checkpoint back at once: the peak holds the cast model
    and one module's checkpoint tensors, not the whole checkpoint beside the cast model."""
    modules = list(model.modules())
    for module in reversed(modules):  # reversed pre-order: every child before its parent
        own = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
        # Only tensors that the cast replaces; one it keeps (already in dtype) stays in use.
        spans = [(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
                 for t in own if t.is_floating_point() and t.dtype != dtype]  # fmt: skip
        module.to(dtype=dtype)
        for start, size in spans:
            _release(start, size, mapped)


def _mapped_ranges(checkpoint: str) -> list[tuple[int, int]]:
    """The address ranges where this process maps the checkpoint (Linux); else none."""
    if sys.platform != "linux":
        return []
    target = os.path.realpath(checkpoint)
    ranges = []
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].strip() == target:
                    low, high = fields[0].split("-")
                    ranges.append((int(low, 16), int(high, 16)))
    except OSError:
        return []
    return ranges


def _release(start: int, size: int, mapped: list[tuple[int, int]]) -> None:
    """Drop this process's pages of [start, start+size) if they lie in the mapped checkpoint.

    Only there: the mapping is private and never written, so a page dropped by mistake would
    just be read from the file again, whereas dropping heap pages would destroy live data."""
    low = -(-start // _PAGE) * _PAGE  # whole pages only: a neighbour may share the edges
    high = (start + size) // _PAGE * _PAGE
    if high <= low or not any(first <= low and high <= last for first, last in mapped):
        return
    _libc().madvise(ctypes.c_void_p(low), ctypes.c_size_t(high - low), _MADV_DONTNEED)


@functools.cache
def _libc() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc
