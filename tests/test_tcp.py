"""Who may connect: a private Unix socket, and a TCP port that wants a token and reads no files."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import ConfigWriter
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from harness import InProcessDaemon, free_port, in_process_daemon, picture

from clipd.config import TcpAddress, load_config
from clipd.errors import ConfigError, TokenError
from clipd.tcp import _warn_if_exposed
from clipd.tokens import load_token
from clipd_api.v1 import clipd_pb2 as pb
from clipd_api.v1 import clipd_pb2_grpc as pb_grpc

Metadata = tuple[tuple[str, str], ...]


class Remote:
    """A daemon serving TCP on loopback, and a channel to it."""

    def __init__(
        self, live: InProcessDaemon, channel: grpc.Channel, token: str, outside: Path
    ) -> None:
        self.live = live
        self.stub = pb_grpc.ImageSearchStub(channel)  # type: ignore[no-untyped-call]
        self.channel = channel
        self.token = token
        self.auth: Metadata = (("authorization", f"Bearer {token}"),)
        self.outside = outside  # an image the daemon can read, outside every root


@pytest.fixture
def remote(
    tmp_path: Path, write_config: ConfigWriter, caplog: pytest.LogCaptureFixture
) -> Iterator[Remote]:
    caplog.set_level(logging.DEBUG)
    root = tmp_path / "pics"
    picture(root / "red.png")
    picture(root / "blue.png", "blue", "square")
    outside = picture(tmp_path / "private" / "secret.png", "green", "triangle")
    port = free_port()
    config = write_config([root], tcp=f"127.0.0.1:{port}")
    with (
        in_process_daemon(config, root, 2) as live,
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        token = load_token(live.daemon.config.token_file)
        yield Remote(live, channel, token, outside)


def code_of(call: object) -> grpc.StatusCode:
    assert isinstance(call, grpc.RpcError)
    code: grpc.StatusCode = call.code()
    return code


def search(remote: Remote, term: pb.Term, metadata: Metadata) -> pb.SearchResponse:
    answer: pb.SearchResponse = remote.stub.Search(
        pb.SearchRequest(terms=[term]), metadata=metadata, timeout=10
    )
    return answer


@pytest.mark.parametrize("metadata", [(), (("authorization", "Bearer wrong"),)])
def test_tcp_without_the_token_is_unauthenticated(remote: Remote, metadata: Metadata) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        search(remote, pb.Term(text="a red circle"), metadata)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert str(remote.live.daemon.config.token_file) in caught.value.details()
    with pytest.raises(grpc.RpcError) as watched:
        next(remote.stub.WatchStatus(pb.StatusRequest(), metadata=metadata, timeout=10))
    assert watched.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_health_is_open_and_reflection_needs_the_token(remote: Remote) -> None:
    health = health_pb2_grpc.HealthStub(remote.channel)
    answer = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING

    reflection = reflection_pb2_grpc.ServerReflectionStub(remote.channel)
    ask = reflection_pb2.ServerReflectionRequest(list_services="")
    with pytest.raises(grpc.RpcError) as caught:
        list(reflection.ServerReflectionInfo(iter([ask]), timeout=10))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    (listed,) = reflection.ServerReflectionInfo(iter([ask]), metadata=remote.auth, timeout=10)
    assert "clipd.v1.ImageSearch" in {s.name for s in listed.list_services_response.service}


def test_tcp_uses_indexed_paths_only_and_never_opens_a_named_file(remote: Remote) -> None:
    indexed = remote.live.root / "red.png"
    best = search(remote, pb.Term(path=str(indexed)), remote.auth).hits[0]
    assert best.path == str(indexed)

    for term in (pb.Term(path=str(remote.outside)), pb.Term(path="/etc/shadow")):
        with pytest.raises(grpc.RpcError) as caught:
            search(remote, term, remote.auth)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (
            "over TCP and HTTP only indexed paths can be used as query terms"
            in caught.value.details()
        )
    with pytest.raises(grpc.RpcError) as embedded:
        remote.stub.Embed(pb.EmbedRequest(path=str(remote.outside)), metadata=remote.auth)
    assert embedded.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    with pytest.raises(grpc.RpcError) as reindexed:
        remote.stub.Reindex(
            pb.ReindexRequest(paths=[str(remote.outside.parent)]), metadata=remote.auth
        )
    assert reindexed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "only paths below a root" in reindexed.value.details()
    escape = str(remote.live.root / ".." / "private")
    with pytest.raises(grpc.RpcError):
        remote.stub.Reindex(pb.ReindexRequest(paths=[escape]), metadata=remote.auth)
    done = remote.stub.Reindex(
        pb.ReindexRequest(paths=[str(remote.live.root)], wait=True), metadata=remote.auth
    )
    assert done.failed == 0


def test_the_unix_socket_still_reads_a_named_file(remote: Remote) -> None:
    config = remote.live.daemon.config
    with grpc.insecure_channel(f"unix:{config.socket}") as channel:
        stub = pb_grpc.ImageSearchStub(channel)  # type: ignore[no-untyped-call]
        answer = stub.Search(pb.SearchRequest(terms=[pb.Term(path=str(remote.outside))]))
    assert len(answer.hits) == 2


def test_the_token_never_reaches_the_log(
    remote: Remote, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    search(remote, pb.Term(text="a red circle"), remote.auth)
    with pytest.raises(grpc.RpcError):
        search(remote, pb.Term(text="a red circle"), (("authorization", "Bearer nope"),))
    with pytest.raises(grpc.RpcError):
        search(remote, pb.Term(path=str(remote.outside)), remote.auth)
    captured = capfd.readouterr()
    logged = "\n".join(
        record.getMessage() for when in ("setup", "call") for record in caplog.get_records(when)
    )
    assert "listening on TCP 127.0.0.1" in logged
    assert "over TCP and HTTP only indexed paths" not in logged, (
        "refusals are answers, not log lines"
    )
    for text in (logged, captured.out, captured.err):
        assert remote.token not in text


def test_socket_is_private_in_a_private_directory(remote: Remote) -> None:
    path = remote.live.daemon.config.socket
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_the_token_file_is_read_once_for_tcp_and_the_web_app(
    tmp_path: Path, write_config: ConfigWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "pics"
    root.mkdir()
    config = write_config([root], tcp=f"127.0.0.1:{free_port()}")
    token_file = load_config(config).token_file
    reads: list[Path] = []
    read_text = Path.read_text

    def counted(path: Path, *args: Any, **kwargs: Any) -> str:
        if path == token_file:
            reads.append(path)
        return read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counted)
    with in_process_daemon(config, root, 0) as live:
        assert live.daemon.state is not None
        assert live.daemon.state.web_url  # both listeners are up
    assert len(reads) == 1


def test_token_file_is_made_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "config" / "clipd" / "token"
    token = load_token(path)
    assert len(token) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_token(path) == token


@pytest.mark.parametrize(("mode", "problem"), [(0o640, "chmod 600"), (0o600, "is empty")])
def test_unsafe_or_empty_token_file_is_refused(tmp_path: Path, mode: int, problem: str) -> None:
    path = tmp_path / "token"
    path.write_text("" if problem == "is empty" else "secret\n")
    path.chmod(mode)
    with pytest.raises(TokenError, match=problem):
        load_token(path)


def test_tcp_config(
    tmp_path: Path, write_config: ConfigWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "pics"
    root.mkdir()
    assert load_config(write_config([root])).tcp is None
    by_port = load_config(write_config([root], tcp=50051))
    assert by_port.tcp == TcpAddress("127.0.0.1", 50051)
    assert by_port.tcp.loopback
    assert by_port.token_file == Path(os.environ["XDG_CONFIG_HOME"]) / "clipd" / "token"
    exposed = load_config(write_config([root], tcp="0.0.0.0:50051")).tcp
    assert exposed is not None
    assert not exposed.loopback
    ipv6 = load_config(write_config([root], tcp="[::1]:7")).tcp
    assert ipv6 == TcpAddress("::1", 7)
    assert ipv6.loopback
    with pytest.raises(ConfigError, match="key 'tcp'"):
        load_config(write_config([root], tcp="localhost:http"))
    monkeypatch.setenv("CLIPD_TOKEN_FILE", str(tmp_path / "elsewhere"))
    assert load_config(write_config([root])).token_file == tmp_path / "elsewhere"


def test_a_host_beyond_loopback_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    _warn_if_exposed(TcpAddress("127.0.0.1", 1))
    assert not caplog.records
    _warn_if_exposed(TcpAddress("0.0.0.0", 1))
    assert "is reachable from the network" in caplog.text


def test_the_client_finds_the_token_and_sends_image_files_as_bytes(
    remote: Remote, capsys: pytest.CaptureFixture[str]
) -> None:
    from clipq import Client, ImageFile
    from clipq.cli import main

    address = str(remote.live.daemon.config.tcp)
    # The daemon wrote its token to the default file, where the client looks for it.
    with Client(target=address) as client:
        # Over TCP the client sends a file's bytes, so even one outside the roots works.
        hits = client.search(ImageFile(remote.outside), limit=1)
        assert hits.hits
    assert main(["--address", address, "--json", "a red circle"]) == 0
    assert "red.png" in capsys.readouterr().out
    assert main(["--address", address, "--token-file", os.devnull, "a red circle"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("clipq: clipd refused the token:")
    assert err.count("\n") == 1


def test_a_loosened_socket_directory_is_made_private_again(tmp_path: Path) -> None:
    from clipd.instance import prepare_socket
    from clipd_api.paths import runtime_dir

    own = runtime_dir()
    own.mkdir(parents=True, exist_ok=True)
    own.chmod(0o755)
    prepare_socket(own / "clipd.sock")
    assert stat.S_IMODE(own.stat().st_mode) == 0o700
    # A directory the user chose for `socket` is theirs to set; the socket is 0600 anyway.
    chosen = tmp_path / "chosen"
    chosen.mkdir()
    chosen.chmod(0o755)
    prepare_socket(chosen / "clipd.sock")
    assert stat.S_IMODE(chosen.stat().st_mode) == 0o755


def test_daemons_starting_at_once_make_one_token_and_share_it(tmp_path: Path) -> None:
    """Two daemons sharing a home (or a daemon and a clipq) may both find no token: one makes
    it, the other reads that one, whole; neither fails."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    path = tmp_path / "config" / "clipd" / "token"
    together = threading.Barrier(8)

    def start() -> str:
        together.wait()
        return load_token(path)

    with ThreadPoolExecutor(8) as pool:
        tokens = list(pool.map(lambda _: start(), range(8)))
    assert len(set(tokens)) == 1
    assert tokens[0] == path.read_text().strip()
    assert os.listdir(path.parent) == ["token"]  # no draft left behind
