"""clipd: a daemon that indexes image folders with OpenCLIP and serves searches over gRPC.

Importing the package imports nothing heavy: `clipd --version` needs only this.
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version

# ONNX Runtime 1.29 and later, on Linux and macOS, reports usage to Microsoft and writes a
# device identifier under ~/.cache/Microsoft unless this is set before it loads. clipd is a
# local search, and nothing of it leaves the machine; a user who sets the variable is obeyed.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


def clipd_version() -> str:
    try:
        return version("clipd")
    except PackageNotFoundError:
        return "unknown"
