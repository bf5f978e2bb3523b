"""clipd: a daemon that indexes image folders with OpenCLIP and serves searches over gRPC.

Importing the package imports nothing heavy: `clipd --version` needs only this.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def clipd_version() -> str:
    try:
        return version("clipd")
    except PackageNotFoundError:
        return "unknown"
