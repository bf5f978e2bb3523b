"""Two daemons (two machines' hosts, two roots) sharing one PostgreSQL index, end to end: each
searches every machine's pictures, shows the other's as host:path, filters by host, and changes
only its own rows."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing
from pathlib import Path

import grpc
import psycopg
import pytest
from conftest import ConfigWriter
from harness import InProcessDaemon, in_process_daemon, picture, run_clipq
from pgserver import PgServer
from starlette.testclient import TestClient

from clipd.config import load_config
from clipd.queries import Queries
from clipd.web.api import Api, build_app
from clipd_api.v1 import clipd_pb2 as pb
from clipd_api.v1 import clipd_pb2_grpc as pb_grpc
from clipq import NotFound

pytestmark = pytest.mark.slow


@pytest.fixture
def two_machines(
    pg_url: str, tmp_path: Path, short_dir: Path, write_config: ConfigWriter
) -> Iterator[tuple[InProcessDaemon, InProcessDaemon]]:
    daemons = []
    with ExitStack() as stack:
        for host, colour in (("alpha", "red"), ("beta", "blue")):
            root = tmp_path / host
            for n, shape in enumerate(("circle", "square")):
                picture(root / f"{shape}.png", colour, shape, seed=n)
            config = load_config(
                write_config(
                    [root],
                    database=pg_url,
                    host=host,
                    socket=str(short_dir / f"{host}.sock"),
                    token_file=str(tmp_path / f"{host}.token"),
                ),
                require_roots=False,
            )
            daemons.append(stack.enter_context(in_process_daemon(config, root)))
        for daemon in daemons:
            daemon.wait_for(_own_files(daemon, 2), "its own 2 files indexed", timeout=120)
        yield daemons[0], daemons[1]


def _own_files(daemon: InProcessDaemon, count: int) -> Callable[[], bool]:
    return lambda: len(daemon.indexed()) == count


def test_each_machine_searches_every_machines_pictures(
    two_machines: tuple[InProcessDaemon, InProcessDaemon],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alpha, beta = two_machines
    with alpha.client() as client:
        result = client.search("a blue circle", limit=10)
        assert result.host == "alpha"
        assert {(hit.host, Path(hit.path).name) for hit in result} == {
            ("alpha", "circle.png"),
            ("alpha", "square.png"),
            ("beta", "circle.png"),
            ("beta", "square.png"),
        }
        assert result.hits[0].host == "beta"  # the blue circle is beta's
        assert result.shown_path(result.hits[0]) == f"beta:{beta.root / 'circle.png'}"
        # The thumbnail beta makes (here on a first view) is in the shared index, where alpha,
        # which lacks the file, finds it.
        assert beta.daemon.state is not None
        on_beta = Queries(beta.daemon.state, remote=False)
        made = on_beta.make_thumbnail(on_beta.current_version(result.hits[0].path))
        kept = alpha.store.thumbnail("beta", result.hits[0].path)  # type: ignore[attr-defined]
        assert kept is not None
        assert kept[2] == made
        # alpha draws it for clipq from there; a path beta keeps no picture of is NOT_FOUND.
        remote = client.thumbnail(result.hits[0].path, max_side=32, host="beta")
        assert remote.data.startswith(b"\x89PNG")
        assert max(remote.width, remote.height) == 32
        with pytest.raises(NotFound, match="has no picture in the shared index"):
            client.thumbnail(str(beta.root / "absent.png"), host="beta")
        only_alpha = client.search("a blue circle", limit=10, hosts=["alpha"])
        assert {hit.host for hit in only_alpha} == {"alpha"}
        assert all(only_alpha.shown_path(hit) == hit.path for hit in only_alpha)
    monkeypatch.setenv("CLIPD_SOCKET", str(alpha.config.socket))
    code, out, _ = run_clipq(capsys, "--paths", "-n", "4", "a blue circle")
    assert code == 0
    assert out.splitlines()[0] == f"beta:{beta.root / 'circle.png'}"
    assert f"{alpha.root / 'circle.png'}" in out.splitlines()
    code, out, _ = run_clipq(capsys, "--paths", "--host", "beta", "a red circle")
    assert code == 0
    assert all(line.startswith("beta:") for line in out.splitlines())
    # A hit of beta's, as clipq printed it, is a query word: the vector beta stored for it.
    shown = f"beta:{beta.root / 'circle.png'}"
    code, out, _ = run_clipq(capsys, "--paths", "-n", "1", shown)
    assert code == 0
    assert out.splitlines() == [shown]
    code, _, err = run_clipq(capsys, "--paths", f"beta:{beta.root / 'gone.png'}")
    assert code != 0
    assert "is not in the shared index" in err


def test_the_web_api_serves_another_machines_hits_from_the_shared_index(
    two_machines: tuple[InProcessDaemon, InProcessDaemon], pg_url: str
) -> None:
    alpha, beta = two_machines
    assert alpha.daemon.state is not None
    assert beta.daemon.state is not None
    blue_circle = str(beta.root / "circle.png")
    # Indexing kept a picture of each PNG; beta forgets them, as an index made before
    # thumbnails were kept at index time has none.
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DELETE FROM clipd_thumbnails WHERE host = 'beta'")
    on_beta = Queries(beta.daemon.state, remote=False)
    kept = on_beta.make_thumbnail(on_beta.current_version(blue_circle))  # beta shows it once
    with (
        closing(Api(alpha.daemon.state, threading.Event())) as api,
        TestClient(build_app(api), base_url="http://127.0.0.1") as web,
    ):
        found = web.get("/api/v1/search", params={"q": "a blue circle", "limit": 10}).json()
        assert found["host"] == "alpha"
        assert (found["hits"][0]["host"], found["hits"][0]["path"]) == ("beta", blue_circle)
        # The file is not on alpha: without the host it is not an image alpha indexed.
        assert web.get("/api/v1/thumbnail", params={"path": blue_circle}).status_code == 404
        picture_params = {"path": blue_circle, "host": "beta", "v": "1"}
        thumb = web.get("/api/v1/thumbnail", params=picture_params)
        assert thumb.status_code == 200
        assert thumb.content == kept
        assert thumb.headers["content-type"] == "image/jpeg"
        assert "immutable" in thumb.headers["cache-control"]
        again = web.get(
            "/api/v1/thumbnail",
            params=picture_params,
            headers={"If-None-Match": thumb.headers["etag"]},
        )
        assert again.status_code == 304
        small = web.get("/api/v1/thumbnail", params={**picture_params, "size": "16"})
        assert small.status_code == 200
        assert small.content != kept
        assert small.headers["etag"] != thumb.headers["etag"]
        # The original lives on beta; the largest picture alpha has of it is the kept one.
        original = web.get("/api/v1/image", params=picture_params)
        assert original.status_code == 200
        assert original.content == kept
        # More like beta's file: its stored vector, so it comes first.
        like = web.get("/api/v1/search", params={"like": f"beta:{blue_circle}", "limit": 4})
        assert like.status_code == 200
        first = like.json()["hits"][0]
        assert (first["host"], first["path"], round(first["score"], 4)) == ("beta", blue_circle, 1)
        # beta keeps no picture of its square (never shown): a clear 404 naming where it lives.
        square = {"path": str(beta.root / "square.png"), "host": "beta"}
        for endpoint in ("thumbnail", "image"):
            missing = web.get(f"/api/v1/{endpoint}", params=square)
            assert missing.status_code == 404
            assert "the file lives on beta" in missing.json()["error"]["message"]
        absent = web.get("/api/v1/search", params={"like": f"beta:{beta.root / 'gone.png'}"})
        assert absent.status_code == 404
        assert "is not in the shared index" in absent.json()["error"]["message"]


def test_a_machine_changes_only_its_own_rows(
    two_machines: tuple[InProcessDaemon, InProcessDaemon],
) -> None:
    alpha, beta = two_machines
    (alpha.root / "circle.png").unlink()
    (alpha.root / "square.png").rename(alpha.root / "moved.png")
    alpha.wait_for(
        lambda: alpha.indexed() == {str(alpha.root / "moved.png")}, "the deletion and the rename"
    )
    # A rescan of every root on beta leaves alpha's rows alone, and alpha's left beta's.
    with beta.client() as client:
        client.reindex(wait=True)
    assert beta.indexed() == {str(beta.root / "circle.png"), str(beta.root / "square.png")}
    assert alpha.indexed() == {str(alpha.root / "moved.png")}
    assert alpha.store.counts().indexed == 3


def test_searches_answer_unavailable_while_postgresql_is_away(
    private_pg_server: PgServer, tmp_path: Path, short_dir: Path, write_config: ConfigWriter
) -> None:
    root = tmp_path / "pics"
    picture(root / "circle.png")
    url = private_pg_server.url(private_pg_server.create_database())
    config = write_config([root], database=url, host="alpha", socket=str(short_dir / "a.sock"))
    with in_process_daemon(load_config(config), root) as daemon:
        daemon.wait_for(_own_files(daemon, 1), "its file indexed", timeout=120)
        stub = pb_grpc.ImageSearchStub(daemon.channel())  # type: ignore[no-untyped-call]
        request = pb.SearchRequest(terms=[pb.Term(text="a red circle")])
        private_pg_server.stop()
        with pytest.raises(grpc.RpcError) as refused:
            stub.Search(request, timeout=30)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert f"PostgreSQL at {url} is unavailable" in str(refused.value.details())
        private_pg_server.start()
        assert len(stub.Search(request, timeout=30).hits) == 1
