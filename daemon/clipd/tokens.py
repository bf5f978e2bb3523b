"""The user's token: the secret that TCP callers and the web app must present.

One 0600 file only the user can read (token_file); the daemon reads it once at start-up for
both the gRPC TCP listener and the HTTP server, so one secret admits a person or a program to
either.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

from clipd.errors import TokenError

log = logging.getLogger(__name__)


def load_token(path: Path) -> str:
    """The token in `path`, created (random, 0600, in a 0700 folder) if it does not exist."""
    try:
        if not path.exists():
            _create_token(path)
        mode = path.stat().st_mode
        if mode & 0o077:
            raise TokenError(
                f"the token file {path} can be read by other users (mode "
                f"{stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
            )
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise TokenError(f"cannot use the token file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise TokenError(f"the token file {path} is not text; delete it to make a new one") from exc
    if not token:
        raise TokenError(f"the token file {path} is empty; delete it to make a new one")
    return token


def _create_token(path: Path) -> None:
    """Write a new token to `path` unless another process (a second daemon starting at the
    same moment, a clipq) makes it first: then theirs stands. The file appears whole or not at
    all, so nobody reads a half-written token."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    # O_EXCL: never write into a file someone else slipped in; 0600 from the first byte.
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as sink:
            sink.write(secrets.token_urlsafe(32) + "\n")
        os.link(draft, path)  # fails, and leaves theirs, if the token exists by now
    except FileExistsError:
        return
    finally:
        draft.unlink(missing_ok=True)
    log.info("created a new token for TCP and web clients in %s", path)
