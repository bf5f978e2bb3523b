"""The page's own files (static/): kept in memory, each with an ETag, so that a browser's
revalidation costs a 304 and no disk read, and a file is read again only once it changes on
disk (a stat, a few microseconds, per request).

Only the files there when the daemon starts are ever served; nothing else under static/.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

from clipd.queries import QueryError
from clipd_api.kinds import ErrorKind

STATIC = Path(__file__).parent / "static"
# Revalidated on every use (a 304 while unchanged): an upgraded daemon serves its new page at
# once, and the page's modules import each other by plain names that carry no version.
_CACHE_CONTROL = "no-cache"


@dataclass(frozen=True, slots=True)
class _Kept:
    stamp: tuple[int, int]  # (size, mtime_ns) of the file read
    data: bytes
    etag: str


class Assets:
    """The files of static/ by name, read when first asked for and again once changed."""

    def __init__(self, folder: Path = STATIC) -> None:
        self._folder = folder
        self._types = {
            path.name: mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            for path in folder.iterdir()
            if path.is_file()
        }
        # Used on the event loop only.
        self._kept: dict[str, _Kept] = {}

    def response(self, name: str, request: Request | None = None, status: int = 200) -> Response:
        """The file `name` (a 304 if the request has its current ETag); NOT_FOUND if it is not
        one of the page's files."""
        content_type = self._types.get(name)
        if content_type is None:
            raise QueryError(f"no such file: /static/{name}", ErrorKind.NOT_FOUND)
        kept = self._current(name)
        headers = {"Cache-Control": _CACHE_CONTROL, "ETag": kept.etag}
        if request is not None and request.headers.get("if-none-match") == kept.etag:
            return Response(status_code=304, headers=headers)
        return Response(kept.data, status, headers=headers, media_type=content_type)

    def _current(self, name: str) -> _Kept:
        path = self._folder / name
        try:
            found = os.stat(path)
        except OSError as exc:
            raise QueryError(f"/static/{name} is gone", ErrorKind.NOT_FOUND) from exc
        stamp = (found.st_size, found.st_mtime_ns)
        kept = self._kept.get(name)
        if kept is None or kept.stamp != stamp:
            data = path.read_bytes()  # a few KiB, once per version of the file
            etag = f'"{hashlib.blake2b(data, digest_size=8).hexdigest()}"'
            kept = self._kept[name] = _Kept(stamp, data, etag)
        return kept
