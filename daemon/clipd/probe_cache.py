"""The bf16 drift probe's results, kept on disk so that only the first start pays for the probe.

`precision: auto` on a CPU with native bf16 loads the model in fp32, embeds fixed probes, casts
it to bf16 and embeds them again (embedder.Embedder): seconds of every start, and a transient
fp32 copy of the weights. The answer depends only on the weights, the torch build and the CPU,
so it is stored under a key of those in $XDG_CACHE_HOME/clipd/precision.json; a later start
with the same key loads the model straight in the precision the probe chose. A missing,
unreadable or damaged file only means that the probe runs again.
"""

from __future__ import annotations

import platform
from pathlib import Path

from clipd.disk_cache import JsonCache

_CACHE = JsonCache("precision.json")
# Units whose bf16 arithmetic could round differently (a VM may hide some behind one name).
_BF16_UNITS = frozenset({"avx512_bf16", "amx_bf16", "amx_tile"})


def cache_file() -> Path:
    return _CACHE.path


def probe_key(model: str, pretrained: str, torch_version: str) -> str:
    """What the probe's answer depends on: the model and its weights, torch, the CPU."""
    return f"{model} | {pretrained} | torch {torch_version} | {_cpu()}"


def lookup(key: str) -> float | None:
    """The stored minimum cosine of bf16 to fp32 for key, or None."""
    value = _CACHE.lookup(key)
    return float(value) if isinstance(value, int | float) else None


def store(key: str, cosine: float) -> None:
    """Remember key's result; a cache that cannot be written is logged, never fatal."""
    _CACHE.store(key, cosine)


def _cpu() -> str:
    """The CPU's model name and bf16 units (Linux), else what the platform module knows."""
    name, units = "", ""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not name:
                    name = value.strip()
                elif key.strip() == "flags" and not units:
                    units = " ".join(sorted(_BF16_UNITS & set(value.split())))
    except OSError:
        pass
    return f"{name} ({units})" if name else platform.processor() or platform.machine()
