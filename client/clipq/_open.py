"""Opening files in the user's image viewer, for `clipq --open`."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Sequence

from clipq._errors import ClipqError

OPENER_ENV = "CLIPQ_OPENER"


def open_paths(paths: Sequence[str]) -> None:
    """Open the files with $CLIPQ_OPENER (one call, every path), else the OS default viewer.

    macOS `open` takes every file at once; `xdg-open` takes one, so it is run per file. The
    viewers are started in their own session and not waited for: clipq returns at once.
    """
    override = os.environ.get(OPENER_ENV, "").strip()
    if override:
        _start([*shlex.split(override), *paths], chosen_by=f"${OPENER_ENV}")
    elif sys.platform == "darwin":
        _start(["open", *paths], chosen_by="the default on macOS")
    else:
        for path in paths:
            _start(["xdg-open", path], chosen_by="the default on Linux; it comes with xdg-utils")


def _start(argv: list[str], *, chosen_by: str) -> None:
    program = argv[0]
    if shutil.which(program) is None:
        # Suggest a viewer other than the one that is missing.
        example = "eog" if program == "feh" else "feh"
        raise ClipqError(
            f"cannot open the results: {program!r} ({chosen_by}) was not found; install it, "
            f"or set {OPENER_ENV} to an image viewer that is installed, e.g. {OPENER_ENV}={example}"
        )
    # posix_spawn rather than Popen: clipq exits without waiting for the viewer, and a Popen
    # object dropped while its process runs is reported as a leak.
    quiet = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
    ]
    try:
        os.posix_spawnp(program, argv, os.environ, file_actions=quiet, setsid=True)
    except OSError as error:
        raise ClipqError(f"cannot open the results with {program!r}: {error.strerror}") from None
