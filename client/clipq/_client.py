"""A typed, blocking client for the clipd daemon's gRPC API."""

from __future__ import annotations

import os
import time
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypeVar

import grpc
from google.protobuf.message import Message

from clipd_api.query import on_host
from clipd_api.v1 import clipd_pb2 as pb
from clipd_api.v1 import clipd_pb2_grpc as pb_grpc
from clipq._daemon_config import socket_path, token_path
from clipq._errors import ClipqError, DaemonStarting, DaemonUnavailable, from_rpc_error

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


@dataclass(frozen=True, slots=True)
class Text:
    """A text term of a query; a negative weight subtracts it."""

    text: str
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class ImageFile:
    """An image file as a query term: query by example.

    Over the Unix socket the daemon is sent the path, and uses the stored vector when the file
    is indexed; over TCP the file's bytes are sent, since the daemon may not see this file.
    With `host`, the file is another machine's in a shared index (`path` absolute there): the
    daemon uses the vector that machine stored, over either transport.
    """

    path: str | Path
    weight: float = 1.0
    host: str = ""


@dataclass(frozen=True, slots=True)
class ImageBytes:
    """The encoded bytes of an image (JPEG, PNG, WebP, GIF, BMP, TIFF) as a query term."""

    data: bytes
    weight: float = 1.0


QueryTerm: TypeAlias = str | tuple[str, float] | Text | ImageFile | ImageBytes
"""One part of a query: a text, a (text, weight) pair, or a Text, ImageFile or ImageBytes."""

Timestamp: TypeAlias = float | datetime
"""Seconds since the Unix epoch, or a datetime (a naive one is local time)."""

_Record = TypeVar("_Record", bound="DataclassInstance")

# A local daemon never sits behind a proxy, and *_proxy variables would send TCP targets
# through one. Reconnecting is cheap to a local daemon: after a failed attempt gRPC waits up to
# 120 s by default before the next, which would keep wait_until_ready() from seeing a daemon
# that has just started.
_CHANNEL_OPTIONS = [
    ("grpc.enable_http_proxy", 0),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]
# How often wait_until_ready() asks a loading daemon whether it is ready.
_READY_POLL_S = 0.2


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result: an image file and how well it matches the query."""

    path: str
    # Cosine similarity in [-1, 1]; higher is better.
    score: float
    width: int
    height: int
    size_bytes: int
    # Seconds since the Unix epoch.
    mtime: float
    # When the photo was taken (its EXIF capture time), seconds since the Unix epoch; None when
    # the file does not record it.
    taken: float | None = None
    # Other files of the same photo that are not indexed on their own (a RAW beside this JPEG).
    paired: tuple[str, ...] = ()
    # The machine whose file this is (its daemon's config `host`), in an index several
    # machines share; path is a path on that machine.
    host: str = ""


@dataclass(frozen=True, slots=True)
class SearchResult:
    """The hits of one search, best first; iterating over it, and len(), see only the hits.

    partial is True while the daemon is still (re)building its index, so files may be missing.
    took_ms is the daemon's own time for the search. nothing_indexed is True when the daemon
    has no searchable file at all yet, which explains empty hits. host is the answering
    daemon's machine: in an index several machines share, a hit of another host is a file there.
    """

    hits: tuple[Hit, ...]
    partial: bool
    took_ms: float
    nothing_indexed: bool = False
    host: str = ""

    def is_here(self, hit: Hit) -> bool:
        """Whether the hit's file is on the answering daemon's machine."""
        return not hit.host or not self.host or hit.host == self.host

    def shown_path(self, hit: Hit) -> str:
        """The hit's path, as `host:path` when its file is on another machine."""
        return hit.path if self.is_here(hit) else on_host(hit.host, hit.path)

    def __iter__(self) -> Iterator[Hit]:
        return iter(self.hits)

    def __len__(self) -> int:
        return len(self.hits)


@dataclass(frozen=True, slots=True)
class Status:
    """The daemon's state and counters; mirrors the wire Status message.

    state is "starting", "indexing", "idle", "stopping", "unspecified", or "unknown" for a
    state this client does not know yet.
    """

    state: str
    version: str
    indexed: int
    queued: int
    failed: int
    offline: int
    images_per_second: float
    eta_seconds: float
    model: str
    pretrained: str
    dim: int
    device: str
    roots: tuple[str, ...]
    database: str
    database_bytes: int
    started_at: float
    # What keeps the daemon from indexing, e.g. a full disk; "" when nothing does.
    problem: str = ""
    # The web app's address (without the token); "" when it is off.
    web_url: str = ""


@dataclass(frozen=True, slots=True)
class ReindexResult:
    """What a rescan did: files queued for embedding, and files removed because they are gone.

    indexed and failed, the files embedded and refused, are counted only with wait=True.
    Without it the daemon answers as soon as it has accepted the rescan, possibly before the
    scan has found anything; follow the work with watch_status().
    """

    queued: int
    removed: int
    indexed: int
    failed: int


@dataclass(frozen=True, slots=True)
class Failure:
    """A file that could not be indexed; it is retried when it changes."""

    path: str
    # The failure kind: one of clipd_api.kinds.FAILURE_KINDS, e.g. "CorruptImage".
    error: str
    # What went wrong, for a person.
    message: str
    attempts: int
    # Seconds since the Unix epoch of the last attempt.
    last_seen: float


@dataclass(frozen=True, slots=True)
class FailurePage:
    """One page of failures; iterating over it, and len(), see only the page.

    total is the number of failures in all, for paging with offset.
    """

    failures: tuple[Failure, ...]
    total: int

    def __iter__(self) -> Iterator[Failure]:
        return iter(self.failures)

    def __len__(self) -> int:
        return len(self.failures)


@dataclass(frozen=True, slots=True)
class DuplicateGroup:
    """Near-identical images, best kept first; each hit's score is its CLIP cosine with the
    first. tier is "exact" (the same bytes), "reencoded" (the same picture re-encoded, resized
    or lightly edited) or "variant" (close variants, such as bursts and small crops)."""

    tier: str
    files: tuple[Hit, ...]


@dataclass(frozen=True, slots=True)
class DuplicatesPage:
    """One page of duplicate groups; iterating over it, and len(), see only the page.

    total is the number of groups in all, for paging with offset. unchecked counts the files
    whose pixels the daemon has not compared yet (indexed before it made pixel signatures):
    until it has, they are found only as exact copies.
    """

    groups: tuple[DuplicateGroup, ...]
    total: int
    unchecked: int

    def __iter__(self) -> Iterator[DuplicateGroup]:
        return iter(self.groups)

    def __len__(self) -> int:
        return len(self.groups)


DUPLICATE_TIERS = ("exact", "reencoded", "variant")
"""The duplicate tiers, strictest first."""


@dataclass(frozen=True, slots=True)
class Thumbnail:
    """A small picture of an indexed image: a PNG file, or a sixel sequence for a terminal."""

    data: bytes
    # In pixels, EXIF orientation applied.
    width: int
    height: int


class Client:
    """A connection to a clipd daemon; use as a context manager, or call close().

    By default it talks to the daemon's Unix socket ($CLIPD_SOCKET, else the `socket` of the
    daemon's config file, else $XDG_RUNTIME_DIR/clipd/clipd.sock); `socket` names another one,
    `target` a daemon's TCP address such as "localhost:7474". Over TCP every call carries
    `token`, by default the one in the token file ($CLIPD_TOKEN_FILE, else the config's
    `token_file`, else ~/.config/clipd/token) when that file exists. Each call fails after
    `timeout` seconds. Failures raise the exceptions of clipq._errors, never grpc.RpcError.
    `where` is the absolute socket path, or the target, as error messages name it.
    """

    def __init__(
        self,
        socket: str | Path | None = None,
        *,
        target: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        if socket is not None and target is not None:
            raise ValueError("give either a socket path or a target, not both")
        self._metadata: tuple[tuple[str, str], ...] = ()
        # The token file looked for in vain, to say so if the daemon asks for a token.
        self._missing_token: Path | None = None
        self.over_tcp = target is not None
        if target is None:
            path = Path(socket).expanduser() if socket is not None else socket_path()
            # Absolute, so that error messages name the file unambiguously.
            self.where = str(path.absolute())
            target = f"unix:{self.where}"
        else:
            self.where = target
            if token is None:
                token, self._missing_token = _default_token()
            if token is not None:
                self._metadata = (("authorization", f"Bearer {token}"),)
        self._timeout = timeout
        self._closed = False
        self._channel = grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
        self._stub = pb_grpc.ImageSearchStub(self._channel)  # type: ignore[no-untyped-call]

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel, ending any watch_status(); the client cannot be used afterwards."""
        self._closed = True
        self._channel.close()

    def search(
        self,
        *terms: QueryTerm,
        limit: int = 20,
        offset: int = 0,
        min_score: float | None = None,
        under: Iterable[str | Path] = (),
        extensions: Iterable[str] = (),
        modified_after: Timestamp | None = None,
        modified_before: Timestamp | None = None,
        taken_after: Timestamp | None = None,
        taken_before: Timestamp | None = None,
        hosts: Iterable[str] = (),
        exact: bool = False,
    ) -> SearchResult:
        """The best `limit` hits after skipping `offset`, for the sum of the weighted terms.

        min_score drops hits scoring below it; under keeps only files at or below those
        paths (relative ones are made absolute); extensions ("jpg", "png") keeps only files
        with those endings; modified_after/modified_before keep only files modified in that
        window; taken_after/taken_before keep only photos taken in that window (a file that
        records no capture time counts by its modification time); hosts keeps only files of
        those machines, in an index several machines share; exact compares every file that
        passes instead of searching a shared index's approximate one. Raises ValueError for an
        empty query, and OSError for an ImageFile term that cannot be read over TCP, before
        any call.
        """
        request = pb.SearchRequest(
            terms=[self._term(t) for t in _non_empty(terms)],
            limit=limit,
            offset=offset,
            min_score=min_score,
            under=[_absolute(p) for p in under],
            extensions=list(extensions),
            modified_after=_epoch(modified_after),
            modified_before=_epoch(modified_before),
            taken_after=_epoch(taken_after),
            taken_before=_epoch(taken_before),
            hosts=list(hosts),
            exact=exact,
        )
        response: pb.SearchResponse = self._call(self._stub.Search, request)
        return SearchResult(
            hits=tuple(_hit(h) for h in response.hits),
            partial=response.partial,
            took_ms=response.took_ms,
            nothing_indexed=response.nothing_indexed,
            host=response.host,
        )

    def _term(self, term: QueryTerm) -> pb.Term:
        if isinstance(term, str):
            term = Text(term)
        elif isinstance(term, tuple):
            term = Text(*term)
        # Weight 1 is the wire default; leaving it unset keeps requests minimal.
        weight = None if term.weight == 1 else term.weight
        if isinstance(term, Text):
            if not term.text.strip():
                raise ValueError("empty query: a search text is blank")
            return pb.Term(text=term.text, weight=weight)
        if isinstance(term, ImageBytes):
            return pb.Term(image=term.data, weight=weight)
        if term.host:
            return pb.Term(path=_on_host(term.host, term.path), weight=weight)
        if self.over_tcp:
            return pb.Term(image=Path(term.path).expanduser().read_bytes(), weight=weight)
        return pb.Term(path=_absolute(term.path), weight=weight)

    def status(self) -> Status:
        """The daemon's current state, counters, model and roots."""
        response: pb.Status = self._call(self._stub.GetStatus, pb.StatusRequest())
        return _status(response)

    def wait_until_ready(self, timeout: float | None = None) -> Status:
        """Wait until the daemon has loaded its model, and return its status then.

        A daemon that does not answer yet (just started, socket not there yet) is waited for
        too. After `timeout` seconds (default: the client's timeout) it raises DaemonStarting,
        or DaemonUnavailable when no daemon ever answered.
        """
        limit = self._timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while True:
            remaining = deadline - time.monotonic()
            try:
                # wait_for_ready: a call waits for the socket to appear instead of failing.
                response: pb.Status = self._stub.GetStatus(
                    pb.StatusRequest(),
                    timeout=max(remaining, 0.001),
                    wait_for_ready=True,
                    metadata=self._metadata,
                )
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise self._error(error) from None
                raise DaemonUnavailable(self.where, f"no answer within {limit:g} s") from None
            status = _status(response)
            if status.state != "starting":
                return status
            if remaining <= _READY_POLL_S:
                raise DaemonStarting(status.state, waited=limit)
            time.sleep(_READY_POLL_S)

    def watch_status(self) -> Generator[Status, None, None]:
        """The daemon's status now, then again whenever it changes, until the daemon stops.

        The call has no time limit. It starts on the first next(), which raises
        DaemonUnavailable at once when no daemon is there. Closing the iterator (close(), or
        leaving a `with contextlib.closing(...)` block) cancels the call; to stop it from
        another thread, close the client, and the iterator then simply ends.
        """
        call = self._stub.WatchStatus(
            pb.StatusRequest(), wait_for_ready=False, metadata=self._metadata
        )
        try:
            for status in call:
                yield _status(status)
        except grpc.RpcError as error:
            if self._closed:
                return
            raise self._error(error) from None
        finally:
            call.cancel()

    def reindex(self, *paths: str | Path, wait: bool = False) -> ReindexResult:
        """Rescan these files or folders (relative ones are made absolute), or every root.

        New and changed images are queued for embedding, and vanished ones removed. With wait,
        it returns only once that work is done, and has no time limit, since a full rescan can
        take long.
        """
        request = pb.ReindexRequest(paths=[_absolute(p) for p in paths], wait=wait)
        response: pb.ReindexResponse = self._call(self._stub.Reindex, request, deadline=not wait)
        return ReindexResult(
            queued=response.queued,
            removed=response.removed,
            indexed=response.indexed,
            failed=response.failed,
        )

    def failures(self, limit: int = 100, offset: int = 0) -> FailurePage:
        """The files that could not be indexed, and why: `limit` (at most 1000) after `offset`."""
        request = pb.ListFailuresRequest(limit=limit, offset=offset)
        response: pb.ListFailuresResponse = self._call(self._stub.ListFailures, request)
        return FailurePage(
            failures=tuple(_failure(f) for f in response.failures), total=response.total
        )

    def duplicates(
        self,
        *,
        threshold: float | None = None,
        under: Iterable[str | Path] = (),
        tier: str = "variant",
        limit: int = 100,
        offset: int = 0,
    ) -> DuplicatesPage:
        """Groups of near-identical indexed images: `limit` (at most 1000) after `offset`.

        threshold is the lowest CLIP cosine at which two images are compared (default 0.9,
        from 0.5 to 1); pixels confirm every group. under keeps only files at or below those
        paths (relative ones are made absolute). tier is the loosest tier to group by: "exact",
        "reencoded" or "variant". The daemon only reports; it never deletes or moves a file.
        """
        if tier not in DUPLICATE_TIERS:
            raise ValueError(f"tier must be one of {', '.join(DUPLICATE_TIERS)}, not {tier!r}")
        request = pb.DuplicatesRequest(
            threshold=threshold,
            under=[_absolute(p) for p in under],
            tier=tier.upper(),
            limit=limit,
            offset=offset,
        )
        response: pb.DuplicatesResponse = self._call(self._stub.Duplicates, request)
        return DuplicatesPage(
            groups=tuple(_duplicate_group(g) for g in response.groups),
            total=response.total,
            unchecked=response.unchecked,
        )

    def embed(
        self,
        text: str | None = None,
        *,
        image: bytes | None = None,
        path: str | Path | None = None,
    ) -> list[float]:
        """The L2-normalised vector the daemon's model gives a text, image bytes, or image file.

        Give exactly one of them, else ValueError; a relative path is made absolute. Vectors
        of texts and images are comparable (cosine similarity is their dot product).
        """
        response: pb.EmbedResponse = self._call(self._stub.Embed, _embed_request(text, image, path))
        return list(response.vector)

    def thumbnail(
        self,
        path: str | Path,
        *,
        max_side: int = 256,
        fmt: Literal["png", "sixel"] = "png",
        host: str = "",
    ) -> Thumbnail:
        """A picture of an indexed image that fits in max_side x max_side pixels (at most 1024).

        fmt "png" gives a PNG file; "sixel" the escape sequence that draws the picture on a
        terminal that speaks sixel. A path the daemon has not indexed raises NotFound; an image
        it can no longer read raises BadRequest. host (Hit.host) names the machine of a hit in
        an index several machines share: another machine's picture comes from the index.
        """
        formats = {"png": pb.ThumbnailRequest.PNG, "sixel": pb.ThumbnailRequest.SIXEL}
        if fmt not in formats:
            raise ValueError(f"fmt must be 'png' or 'sixel', not {fmt!r}")
        # Not resolved: the daemon knows a file by the path it indexed, symlinks included.
        request = pb.ThumbnailRequest(
            path=os.path.abspath(path), max_side=max_side, format=formats[fmt], host=host
        )
        response: pb.ThumbnailResponse = self._call(self._stub.Thumbnail, request)
        return Thumbnail(data=response.data, width=response.width, height=response.height)

    def _call(
        self, method: grpc.UnaryUnaryMultiCallable, request: Message, *, deadline: bool = True
    ) -> Any:
        # wait_for_ready=False: fail at once when no daemon is there, rather than waiting out
        # the timeout for one to appear.
        timeout = self._timeout if deadline else None
        try:
            return method(request, timeout=timeout, wait_for_ready=False, metadata=self._metadata)
        except grpc.RpcError as error:
            raise self._error(error, timeout) from None

    def _error(self, error: grpc.RpcError, timeout: float | None = None) -> ClipqError:
        return from_rpc_error(error, self.where, timeout=timeout, missing_token=self._missing_token)


def _non_empty(terms: tuple[QueryTerm, ...]) -> tuple[QueryTerm, ...]:
    if not terms:
        raise ValueError("empty query: give at least one search term")
    return terms


def _epoch(moment: Timestamp | None) -> float | None:
    if isinstance(moment, datetime):
        return moment.timestamp()
    return moment


def read_token(path: str | Path) -> str:
    """The token in a token file; ClipqError naming the file when it cannot be read."""
    try:
        return Path(path).expanduser().read_text(encoding="utf-8").strip()
    except OSError as error:
        raise ClipqError(f"cannot read the token file {path}: {error.strerror}") from None


def _default_token() -> tuple[str | None, Path | None]:
    """(the token in the default token file, None), or (None, that file) when it is missing."""
    path = token_path()
    return (read_token(path), None) if path.exists() else (None, path)


def _absolute(path: str | Path) -> str:
    return str(Path(path).expanduser().resolve())


def _on_host(host: str, path: str | Path) -> str:
    """ImageFile's host and path checked (a host as the config's `host` allows) and named."""
    if not host.strip() or any(c in host for c in " :/"):
        raise ValueError(f"{host!r} is not a machine's name")
    if not str(path).startswith("/"):
        raise ValueError(f"{path}: another machine's file is named by its absolute path there")
    return on_host(host, str(path))


def _embed_request(
    text: str | None, image: bytes | None, path: str | Path | None
) -> pb.EmbedRequest:
    if text is not None and image is None and path is None:
        if not text.strip():
            raise ValueError("nothing to embed: the text is blank")
        return pb.EmbedRequest(text=text)
    if image is not None and text is None and path is None:
        return pb.EmbedRequest(image=image)
    if path is not None and text is None and image is None:
        return pb.EmbedRequest(path=_absolute(path))
    raise ValueError("give exactly one of text, image or path to embed")


def _from_message(cls: type[_Record], message: Message, **overrides: Any) -> _Record:
    """A dataclass filled from the message fields of the same names, some values replaced."""
    values = {f.name: getattr(message, f.name) for f in fields(cls) if f.name not in overrides}
    return cls(**values, **overrides)


def _hit(hit: pb.Hit) -> Hit:
    return _from_message(
        Hit, hit, taken=hit.taken if hit.HasField("taken") else None, paired=tuple(hit.paired)
    )


def _duplicate_group(group: pb.DuplicateGroup) -> DuplicateGroup:
    try:
        tier = pb.DuplicateGroup.Tier.Name(group.tier).lower()
    except ValueError:  # a tier added in a newer daemon than this client
        tier = "unknown"
    return DuplicateGroup(tier=tier, files=tuple(_hit(h) for h in group.files))


def _status(status: pb.Status) -> Status:
    return _from_message(Status, status, state=_state_name(status.state), roots=tuple(status.roots))


def _failure(failure: pb.Failure) -> Failure:
    return _from_message(Failure, failure)


def _state_name(state: int) -> str:
    try:
        name = pb.Status.State.Name(state)
    except ValueError:
        # A state added in a newer daemon than this client.
        return "unknown"
    return name.removeprefix("STATE_").lower()
