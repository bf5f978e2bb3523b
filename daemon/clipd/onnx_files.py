"""Towers exported to ONNX, as files in $XDG_CACHE_HOME/clipd/onnx/: which cache entry is
current, writing one whole, a CPU session on one, whether there is memory to make one, and
partial files left by an export that was killed. Shared by clipd.onnx_images and
clipd.onnx_texts."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clipd.config import ModelConfig
from clipd.disk_cache import cache_dir

if TYPE_CHECKING:
    import onnxruntime

log = logging.getLogger(__name__)

# Exporting holds a tower's weights about this many times over besides what the process holds
# already (ViT-B-32-256's image tower: peak 0.86 -> 2.18 GiB for 335 MiB of fp32 weights).
_EXPORT_COPIES = 4


def folder() -> Path:
    return cache_dir() / "onnx"


def key_of(config: ModelConfig) -> str:
    """The caches' key of config's model and weights."""
    from clipd.embedder import identity_of

    return key(identity_of(config.name), identity_of(config.pretrained))


def key(name: str, pretrained: str) -> str:
    """Which export: the model and its weights (a file's by content alone, so a renamed
    checkpoint reuses it). One file each: a new open_clip version exports over it."""

    def content(identity: str) -> str:
        return identity.rpartition("#")[2]

    return f"{content(name)} | {content(pretrained)}"


def current(entry: object) -> dict[str, Any] | None:
    """The cache's entry, if made by this open_clip version (whose code builds the model)."""
    if isinstance(entry, dict) and entry.get("open_clip") == open_clip_version():
        return entry
    return None


def open_clip_version() -> str:
    return importlib.metadata.version("open_clip_torch")


def written(key: str, kind: str, write: Callable[[Path], None]) -> Path:
    """The file that keeps the export of `kind` ("visual", "text") for key, written whole by
    write(partial) and then renamed into place; partial files of exports killed midway go
    first. What write raises (a full disk, one of the many types torch's exporter raises)
    propagates, and leaves no partial file behind."""
    where = folder()
    path = where / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}-{kind}.onnx"
    partial = path.with_suffix(f".{os.getpid()}.part")
    try:
        where.mkdir(parents=True, exist_ok=True)
        remove_abandoned(where)
        write(partial)
        os.replace(partial, path)
    finally:
        with contextlib.suppress(OSError):  # gone once renamed; unreachable if mkdir failed
            partial.unlink(missing_ok=True)
    return path


def open_session(path: Path) -> onnxruntime.InferenceSession | None:
    """A CPU session on the file, one thread per core, or None if ONNX Runtime cannot load
    it."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    )
    options.inter_op_num_threads = 1
    # Loader threads decode beside the model: threads that spin while waiting for work would
    # take their CPU.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # its warnings about unused initializers are noise here
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types for damaged or foreign files
        log.debug("ONNX Runtime cannot load %s: %s", path, exc)
        return None


def memory_short_of(weights_bytes: int) -> str | None:
    """Why exporting (or quantising) a tower of weights_bytes cannot run now ("needs about ...
    GiB of free memory, ... is available"), or None: better torch this run than the process
    killed for memory on every start."""
    needed, available = _EXPORT_COPIES * weights_bytes, _memory_available()
    if available is None or available >= needed:
        return None
    return (f"needs about {needed / 2**30:.1f} GiB of free memory, {available / 2**30:.1f} GiB "
            "is available")  # fmt: skip


def _memory_available() -> int | None:
    """Bytes of memory the kernel can give without swapping (Linux MemAvailable), or None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def remove_abandoned(where: Path) -> None:
    """Delete partial exports (NAME.PID.part) whose process is gone: an export killed midway
    leaves one, as large as the model. A live process's partial file is left to it."""
    for partial in where.glob("*.part"):
        pid = partial.suffixes[-2].lstrip(".") if len(partial.suffixes) >= 2 else ""
        if pid.isdigit() and not _running(int(pid)):
            with contextlib.suppress(OSError):
                partial.unlink()


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True
