"""The HTTP API of a real in-process daemon on a loopback port, driven by a real HTTP client:
who may call, which files are served, search in every form, errors, uploads, status events."""

from __future__ import annotations

import io
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import TINY_MODEL_JSON, TINY_MODEL_WEIGHTS
from fixtures.corpus import Corpus, write_corpus
from fixtures.shapes import draw
from harness import (
    InProcessDaemon,
    daemon_process,
    hold_model_loading,
    in_process_daemon,
    wait_until,
)
from PIL import Image

from clipd import queries
from clipd.tokens import load_token
from clipd.web import api, inputs

JSON_CONTENT = {"content-type": "application/json"}


class Web:
    """A daemon serving a corpus, its web URL, its token, and an authenticated client."""

    def __init__(
        self, live: InProcessDaemon, corpus: Corpus, outside: Path, upload_dir: Path
    ) -> None:
        state = live.daemon.state
        assert state is not None
        assert state.web_url
        self.live = live
        self.corpus = corpus
        self.outside = outside  # an image the daemon can read, outside every root
        self.upload_dir = upload_dir
        self.url = state.web_url
        self.token = load_token(live.daemon.config.token_file)
        self.anonymous = httpx.Client(base_url=self.url, timeout=30)
        self.client = httpx.Client(
            base_url=self.url, timeout=30, headers={"Authorization": f"Bearer {self.token}"}
        )

    def close(self) -> None:
        self.anonymous.close()
        self.client.close()

    def search(self, **params: Any) -> dict[str, Any]:
        response = self.client.get("/api/v1/search", params=params)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def classes(self, answer: dict[str, Any]) -> list[tuple[str, str] | None]:
        return [self.corpus.class_of(hit["path"]) for hit in answer["hits"]]


def write_web_config(folder: Path, roots: list[Path], **overrides: Any) -> Path:
    data: dict[str, Any] = {
        "roots": [str(root) for root in roots],
        "database": str(folder / "index.db"),
        "socket": str(folder / "clipd.sock"),
        "token_file": str(folder / "secret" / "token"),
        "model": {"name": str(TINY_MODEL_JSON), "pretrained": str(TINY_MODEL_WEIGHTS)},
        "batch_size": 8,
        "settle_seconds": 0.2,
        **overrides,
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


# The module's daemon serves every test; its thread pools grow on demand, during one test or
# another (AnyIO's are the web server's, reading the originals it sends as files). So threads
# are checked once, when it stops, instead of after each test.
DAEMON_THREADS = ("clipd-", "test-daemon", "AnyIO worker thread")


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """conftest's check, blind to the shared daemon's threads (see `web`)."""
    before = set(threading.enumerate())
    yield
    leaked = [
        t.name
        for t in threading.enumerate()
        if t not in before and t.is_alive() and not t.name.startswith(DAEMON_THREADS)
    ]
    assert not leaked, f"threads left running: {leaked}"


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    # Short: the socket path must fit in ~104 bytes.
    folder = tmp_path_factory.mktemp("web")
    corpus = write_corpus(folder / "pics", per_class=2)
    outside = folder / "private" / "secret.png"
    outside.parent.mkdir()
    draw("red", "circle", (200, 160), __import__("random").Random(5)).save(outside)
    # A link inside the root to the private image: not followed, so never indexed.
    os.symlink(outside, corpus.root / "link-to-secret.png")
    # Decoded whole for the tiny model (its shorter side is under 2 x 32 pixels), so the indexer
    # can make its thumbnail from the very image it embeds.
    small = corpus.root / "small-red-circle.png"
    draw("red", "circle", (60, 50), __import__("random").Random(6)).save(small)
    corpus.images[small] = ("red", "circle")
    upload_dir = corpus.root / "added"
    config = write_web_config(folder, [corpus.root], upload_dir=str(upload_dir))
    files = len(corpus.images) + len(corpus.bad)
    before = set(threading.enumerate())
    with in_process_daemon(config, corpus.root, files) as live:
        web = Web(live, corpus, outside, upload_dir)
        try:
            yield web
        finally:
            web.close()
    # Threads that were told to end may need a moment.
    wait_until(
        lambda: not [t for t in threading.enumerate() if t not in before and t.is_alive()],
        "the daemon's threads to end",
        timeout=5,
    )


def an_indexed(web: Web, suffix: str = ".jpg") -> Path:
    return next(path for path in web.corpus.images if path.suffix == suffix)


def image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def png_bytes(colour: str, shape: str) -> bytes:
    import random

    buffer = io.BytesIO()
    draw(colour, shape, (200, 160), random.Random(99)).save(buffer, format="PNG")
    return buffer.getvalue()


def redirect_of(web: Web, raw_path: str) -> str:
    """The Location answered to a request line with exactly this path (no client rewriting)."""
    import http.client

    url = httpx.URL(web.url)
    assert url.port is not None
    connection = http.client.HTTPConnection(url.host, url.port, timeout=30)
    try:
        connection.request("GET", raw_path)
        response = connection.getresponse()
        response.read()
        assert response.status == 303
        return response.headers["location"]
    finally:
        connection.close()


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    """(status, kind, message) of a JSON error answer."""
    assert response.headers["content-type"].startswith("application/json"), response.text
    error = response.json()["error"]
    return response.status_code, error["kind"], error["message"]


# Who may call


def test_without_the_token_only_the_login_hint_and_static_files_are_served(web: Web) -> None:
    page = web.anonymous.get("/")
    assert page.status_code == 401
    assert "clipq web" in page.text
    for path in ("/api/v1/status", "/api/v1/search?q=red", "/api/v1/openapi.json"):
        status, kind, message = error_of(web.anonymous.get(path))
        assert (status, kind) == (401, "unauthenticated")
        assert str(web.live.daemon.config.token_file) in message
    assert web.anonymous.get("/static/app.css").status_code == 200
    wrong = web.anonymous.get("/api/v1/status", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401


def test_the_token_in_the_url_becomes_a_cookie_and_leaves_the_url(web: Web) -> None:
    assert web.anonymous.get("/", params={"token": "wrong"}).status_code == 401
    with httpx.Client(base_url=web.url, timeout=30) as browser:
        traded = browser.get("/", params={"q": "red circle", "token": web.token})
        assert traded.status_code == 303
        assert traded.headers["location"] == "/?q=red+circle"
        cookie = traded.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        assert web.token not in cookie  # the cookie admits a browser; it is not the TCP token
        assert redirect_of(web, f"//evil.example/?token={web.token}") == "/evil.example/"
        page = browser.get("/?q=red+circle")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert browser.get("/api/v1/status").status_code == 200
    assert "no-referrer" in traded.headers["referrer-policy"]


def test_a_foreign_host_is_refused(web: Web) -> None:
    port = httpx.URL(web.url).port
    refused = web.client.get("/api/v1/status", headers={"Host": f"evil.example:{port}"})
    assert error_of(refused)[:2] == (403, "forbidden")
    assert web.client.get("/", headers={"Host": "evil.example"}).status_code == 403
    assert web.client.get("/api/v1/status", headers={"Host": f"localhost:{port}"}).is_success


def test_a_cross_origin_change_is_refused(web: Web) -> None:
    body = {"paths": [str(web.corpus.root)]}
    refused = web.client.post(
        "/api/v1/reindex", json=body, headers={"Origin": "http://evil.example"}
    )
    assert error_of(refused)[:2] == (403, "forbidden")
    own = web.url.rstrip("/")
    assert web.client.post("/api/v1/reindex", json=body, headers={"Origin": own}).is_success
    assert web.client.post("/api/v1/reindex", json=body).is_success  # programs send no Origin


# Only indexed files are served


def test_thumbnails_and_originals_of_indexed_images_only(web: Web) -> None:
    path = an_indexed(web)
    thumb = web.client.get("/api/v1/thumbnail", params={"path": str(path)})
    assert thumb.status_code == 200
    assert thumb.headers["content-type"] == "image/jpeg"
    assert "no-cache" in thumb.headers["cache-control"]  # revalidated: the file may change
    versioned = web.client.get("/api/v1/thumbnail", params={"path": str(path), "v": "1.5"})
    assert "immutable" in versioned.headers["cache-control"]  # v names one version of it
    with Image.open(io.BytesIO(thumb.content)) as image, Image.open(path) as full:
        assert max(image.size) == min(400, max(full.size))
    etag = {"If-None-Match": thumb.headers["etag"]}
    again = web.client.get("/api/v1/thumbnail", params={"path": str(path)}, headers=etag)
    assert again.status_code == 304

    original = web.client.get("/api/v1/image", params={"path": str(path)})
    assert (original.status_code, original.content) == (200, path.read_bytes())
    assert original.headers["content-type"] == "image/jpeg"

    escape = str(web.corpus.root / ".." / "private" / "secret.png")
    refused = [
        str(web.outside),  # readable by the daemon, but outside every root
        escape,
        str(web.corpus.root / "link-to-secret.png"),  # a symlink out of the root
        str(web.corpus.bad[0]),  # in a root, but not indexed (it failed)
        "/etc/passwd",
    ]
    for endpoint in ("/api/v1/thumbnail", "/api/v1/image"):
        for bad in refused:
            answer = web.client.get(endpoint, params={"path": bad})
            assert error_of(answer)[:2] == (404, "not_found"), (endpoint, bad)
        relative = web.client.get(endpoint, params={"path": "pics/a.jpg"})
        assert error_of(relative)[:2] == (400, "bad_request")


def test_thumbnails_are_made_at_index_time_else_on_first_view(web: Web) -> None:
    state = web.live.daemon.state
    assert state is not None
    assert state.thumbnails is not None
    kept = state.thumbnails
    # Decoded whole for the model, so its thumbnail was made then.
    original = web.corpus.root / "small-red-circle.png"
    source = original.stat()
    assert kept.get(str(original), source.st_size, source.st_mtime_ns)
    # Decoded whole but reduced for the model: its thumbnail comes from the same decode.
    assert state.embedder is not None
    for path in web.corpus.images:
        with Image.open(path) as image:
            reduced = image.format != "JPEG" and min(image.size) >= 2 * state.embedder.image_size
        if reduced:
            found = path.stat()
            assert kept.get(str(path), found.st_size, found.st_mtime_ns), path
    # A copy takes its original's vector without being decoded, and its thumbnail too.
    twin = original.with_name(f"twin-{original.name}")
    twin.write_bytes(original.read_bytes())
    try:
        web.client.post("/api/v1/reindex", json={"paths": [str(twin)], "wait": True})
        found = twin.stat()
        thumbnail = kept.get(str(twin), found.st_size, found.st_mtime_ns)
        assert thumbnail
        assert thumbnail == kept.get(str(original), source.st_size, source.st_mtime_ns)
        # One the cache lacks (indexed before it, or its file was lost) is made on first view.
        assert kept.keep_only(set(state.store.known_files(str(web.corpus.root))) - {str(twin)})
        assert kept.get(str(twin), found.st_size, found.st_mtime_ns) is None
        assert web.client.get("/api/v1/thumbnail", params={"path": str(twin)}).status_code == 200
        assert kept.get(str(twin), found.st_size, found.st_mtime_ns)
    finally:
        twin.unlink()
        web.client.post("/api/v1/reindex", json={"paths": [str(twin)], "wait": True})


def test_a_file_swapped_for_a_symlink_after_indexing_is_not_served(
    web: Web, tmp_path: Path
) -> None:
    victim = next(p for p in web.corpus.images if p.suffix == ".png")
    kept = tmp_path / "kept.png"
    os.replace(victim, kept)
    try:
        os.symlink(web.outside, victim)
        answer = web.client.get("/api/v1/image", params={"path": str(victim)})
        assert error_of(answer)[:2] == (404, "not_found")
    finally:
        victim.unlink()
        os.replace(kept, victim)


@pytest.mark.parametrize("suffix", [".tiff", ".heic", ".jxl"])
def test_formats_browsers_cannot_show_come_as_jpeg(web: Web, suffix: str) -> None:
    path = an_indexed(web, suffix)
    answer = web.client.get("/api/v1/image", params={"path": str(path)})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(answer.content)) as image, Image.open(path) as original:
        assert image.format == "JPEG"
        assert image.size == original.size


def test_formats_browsers_show_come_as_they_are(web: Web) -> None:
    for suffix, content_type in ((".png", "image/png"), (".avif", "image/avif")):
        path = an_indexed(web, suffix)
        answer = web.client.get("/api/v1/image", params={"path": str(path)})
        assert answer.headers["content-type"] == content_type
        assert answer.content == path.read_bytes()


def test_an_avif_whose_major_brand_is_generic_comes_as_avif(web: Web) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), "red").save(buffer, format="AVIF")
    data = bytearray(buffer.getvalue())
    assert data[8:12] == b"avif"
    assert b"avif" in data[16:32]  # listed among the compatible brands too
    data[8:12] = b"mif1"  # as some encoders write it: generic HEIF, compatible with AVIF
    path = web.corpus.root / "generic-brand.avif"
    path.write_bytes(data)
    try:
        web.client.post("/api/v1/reindex", json={"paths": [str(path)], "wait": True})
        answer = web.client.get("/api/v1/image", params={"path": str(path)})
        assert answer.status_code == 200, answer.text
        assert (answer.headers["content-type"], answer.content) == ("image/avif", bytes(data))
    finally:
        path.unlink()
        web.client.post("/api/v1/reindex", json={"paths": [str(path)], "wait": True})


def test_an_original_browsers_show_is_sent_as_a_file_with_ranges(web: Web) -> None:
    path = an_indexed(web, ".png")
    data = path.read_bytes()
    part = web.client.get(
        "/api/v1/image", params={"path": str(path)}, headers={"Range": "bytes=8-23"}
    )
    assert part.status_code == 206
    assert part.content == data[8:24]
    whole = web.client.get("/api/v1/image", params={"path": str(path)})
    assert int(whole.headers["content-length"]) == len(data)


def test_an_unchanged_original_gets_304_before_it_is_decoded(
    web: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = an_indexed(web, ".heic")  # browsers cannot show it: converted when sent
    first = web.client.get("/api/v1/image", params={"path": str(path)})
    assert first.headers["content-type"] == "image/jpeg"

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded an image for a request answered by its ETag")

    monkeypatch.setattr(queries.Queries, "_decode", no_decoding)
    etag = {"If-None-Match": first.headers["etag"]}
    again = web.client.get("/api/v1/image", params={"path": str(path)}, headers=etag)
    assert again.status_code == 304


def test_the_pages_files_are_revalidated_by_etag(web: Web) -> None:
    script = web.anonymous.get("/static/app.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    etag = {"If-None-Match": script.headers["etag"]}
    assert web.anonymous.get("/static/app.js", headers=etag).status_code == 304
    assert web.anonymous.get("/static/api.js", headers=etag).status_code == 200
    assert error_of(web.anonymous.get("/static/nothing.js"))[:2] == (404, "not_found")


# Search


def test_search_by_words_in_clipqs_query_language(web: Web) -> None:
    answer = web.search(q="a red circle", limit=3)  # there are three
    assert web.classes(answer) == [("red", "circle")] * 3
    assert set(answer) == {"hits", "partial", "took_ms", "nothing_indexed", "host"}
    assert set(answer["hits"][0]) >= {"path", "score", "width", "height", "size_bytes", "mtime"}
    steered = web.search(q='"a red square" -0.5:"a red circle"', limit=3)
    assert all(c is not None and c[1] != "circle" for c in web.classes(steered))
    example = next(p for p, c in web.corpus.images.items() if c == ("green", "triangle"))
    by_word = web.search(q=str(example), limit=1)  # an indexed path queries by example
    assert by_word["hits"][0]["path"] == str(example)


def test_search_pages_and_filters(web: Web) -> None:
    both = web.search(q="a yellow square", limit=8)["hits"]
    first = web.search(q="a yellow square", limit=4)["hits"]
    second = web.search(q="a yellow square", limit=4, offset=4)["hits"]
    assert [h["path"] for h in first + second] == [h["path"] for h in both]
    assert web.search(q="a yellow square", limit=8, exact="true")["hits"] == both  # always, here

    pngs = web.search(q="a red circle", limit=100, ext="png,GIF")["hits"]
    assert pngs
    assert all(h["path"].endswith((".png", ".gif")) for h in pngs)
    sub = str(web.corpus.root / "set1")
    under = web.search(q="a red circle", limit=100, under=sub)["hits"]
    assert under
    assert all(h["path"].startswith(sub + "/") for h in under)
    assert not web.search(q="a red circle", min_score=0.999)["hits"]
    assert not web.search(q="a red circle", after=1e12)["hits"]
    example = next(p for p, c in web.corpus.images.items() if c == ("blue", "square"))
    like = web.search(like=str(example), limit=1)
    assert like["hits"][0]["path"] == str(example)


def test_search_by_an_uploaded_image_and_by_json_terms(web: Web) -> None:
    posted = web.client.post(
        "/api/v1/search",
        files={"image": ("query.png", png_bytes("blue", "square"), "image/png")},
        data={"limit": "3", "under": str(web.corpus.root)},
    )
    assert posted.status_code == 200, posted.text
    assert web.classes(posted.json()).count(("blue", "square")) == 2  # both of them
    import base64

    terms = [
        {"image_base64": base64.b64encode(png_bytes("green", "triangle")).decode()},
        {"text": "a green triangle", "weight": 0.5},
    ]
    answer = web.client.post("/api/v1/search", json={"terms": terms, "limit": 3})
    assert answer.status_code == 200, answer.text
    assert web.classes(answer.json())[0] == ("green", "triangle")
    assert not any(p.name == "query.png" for p in web.corpus.root.rglob("*"))  # never stored


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "give q"),
        ({"q": "red", "limit": "many"}, "limit must be a whole number"),
        ({"q": "red", "limit": "1001"}, "over the maximum"),
        ({"q": "red", "min_score": "nan"}, "finite"),
        ({"q": "red", "under": "relative"}, "not an absolute path"),
        ({"q": "0:red"}, "a weight of 0"),
        ({"q": "red", "like": "/not/indexed.jpg"}, "only indexed paths"),
        ({"q": "red", "after": "20", "before": "10"}, "must be earlier than"),
        ({"q": "red", "exact": "maybe"}, "exact must be true or false"),
    ],
)
def test_bad_searches_get_400_with_a_message(
    web: Web, params: dict[str, str], message: str
) -> None:
    status, kind, said = error_of(web.client.get("/api/v1/search", params=params))
    assert (status, kind) == (400, "bad_request")
    assert message in said


def test_bad_bodies_get_400_or_413(web: Web, monkeypatch: pytest.MonkeyPatch) -> None:
    not_json = web.client.post("/api/v1/search", content=b"{", headers=JSON_CONTENT)
    assert error_of(not_json)[:2] == (400, "bad_request")
    no_image = web.client.post("/api/v1/search", files={"other": ("x", b"1")})
    assert "image" in error_of(no_image)[2]
    garbage = web.client.post("/api/v1/search", files={"image": ("x.jpg", b"not an image")})
    assert error_of(garbage)[:2] == (400, "bad_request")
    monkeypatch.setattr(inputs, "MAX_BODY_BYTES", 1000)
    big = web.client.post("/api/v1/search", files={"image": ("x.png", b"\0" * 5000)})
    assert error_of(big)[:2] == (413, "too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"terms": ['
        yield b" " * 5000
        yield b"]}"

    streamed = web.client.post("/api/v1/search", content=chunks(), headers=JSON_CONTENT)
    assert error_of(streamed)[:2] == (413, "too_large")


# Status, failures, reindex, embed, OpenAPI


def test_status_failures_embed_and_openapi(web: Web) -> None:
    status = web.client.get("/api/v1/status").json()
    assert status["state"] == "idle"
    assert status["indexed"] >= len(web.corpus.images)
    assert status["web_url"] == web.url
    assert status["upload_enabled"] is True

    failures = web.client.get("/api/v1/failures", params={"limit": 2}).json()
    assert failures["total"] == len(web.corpus.bad)
    assert len(failures["failures"]) == 2
    assert set(failures["failures"][0]) == {"path", "error", "message", "attempts", "last_seen"}

    embedded = web.client.post("/api/v1/embed", json={"text": "a red circle"}).json()
    assert abs(sum(v * v for v in embedded["vector"]) - 1) < 1e-3
    both = web.client.post("/api/v1/embed", json={"text": "a", "path": "/x"})
    assert error_of(both)[:2] == (400, "bad_request")

    document = web.client.get("/api/v1/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    assert set(document["paths"]) == {path for path, _, _ in api.ROUTES}
    for path, _, methods in api.ROUTES:
        assert set(document["paths"][path]) == {method.lower() for method in methods}, path


def test_duplicates_lists_copies_and_refuses_bad_input(web: Web) -> None:
    original = an_indexed(web, ".png")
    copy = original.with_name(f"copy-{original.name}")
    copy.write_bytes(original.read_bytes())
    try:
        web.client.post("/api/v1/reindex", json={"paths": [str(copy)], "wait": True})
        answer = web.client.get("/api/v1/duplicates", params={"tier": "exact"}).json()
        assert (answer["total"], answer["unchecked"]) == (1, 0)
        [group] = answer["groups"]
        assert group["tier"] == "exact"
        assert {hit["path"] for hit in group["files"]} == {str(original), str(copy)}
        hit_fields = {"path", "score", "width", "height", "size_bytes", "mtime", "taken", "paired"}
        assert set(group["files"][0]) == hit_fields
        refused = web.client.get("/api/v1/duplicates", params={"tier": "similar"})
        assert error_of(refused)[:2] == (400, "bad_request")
    finally:
        copy.unlink()
        web.client.post("/api/v1/reindex", json={"paths": [str(copy)], "wait": True})


def test_reindex_waits_and_counts(web: Web) -> None:
    answer = web.client.post(
        "/api/v1/reindex", json={"paths": [str(web.corpus.root / "set1")], "wait": True}
    )
    assert answer.status_code == 200
    assert set(answer.json()) == {"queued", "removed", "indexed", "failed"}
    outside = web.client.post("/api/v1/reindex", json={"paths": [str(web.outside.parent)]})
    assert "only paths below a root" in error_of(outside)[2]


def test_status_events_stream_changes(web: Web) -> None:
    # The daemon is shared by this module's tests: one of them may have left a rescan running.
    wait_until(
        lambda: web.client.get("/api/v1/status").json()["state"] == "idle", "the daemon to be idle"
    )
    with web.client.stream("GET", "/api/v1/status/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        assert next(lines) == "event: status"
        first = json.loads(next(lines).removeprefix("data: "))
        assert first["state"] == "idle"
        web.client.post("/api/v1/reindex", json={"paths": [str(web.corpus.root)]})
        # The rescan changes the status: another event comes (the client's timeout bounds it).
        assert any(line == "event: status" for line in lines)


def test_the_status_is_made_once_until_something_it_shows_changes(web: Web) -> None:
    state = web.live.daemon.state
    assert state is not None
    core = queries.Queries(state, remote=True)
    wait_until(lambda: core.status().state == "idle", "the daemon to be idle")
    first = core.status()
    assert core.status() is first  # every stream and request shares it
    state.store.forget_failures("no such error")  # a write: the counts may have changed
    assert core.status() is not first


def test_status_streams_are_limited_as_they_are_asked_for(
    web: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from starlette.requests import Request

    monkeypatch.setattr(api, "MAX_EVENT_STREAMS", 2)
    state = web.live.daemon.state
    assert state is not None
    stopping = threading.Event()
    web_api = api.Api(state, stopping)
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": []})

    async def ask(times: int) -> list[str]:
        answers = []
        for _ in range(times):  # as fast as requests can come: no stream has started yet
            try:
                await web_api.status_events(request)
                answers.append("stream")
            except queries.QueryError as exc:
                answers.append(exc.kind.value)
        return answers

    try:
        assert asyncio.run(ask(3)) == ["stream", "stream", "unavailable"]
    finally:
        web_api.close()


def test_a_closed_status_stream_gives_its_place_back(
    web: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api, "MAX_EVENT_STREAMS", 1)
    with web.client.stream("GET", "/api/v1/status/events") as stream:
        lines = stream.iter_lines()  # kept: a dropped iterator closes the connection
        assert next(lines) == "event: status"
        refused = web.client.get("/api/v1/status/events")
        assert error_of(refused)[:2] == (503, "unavailable")
    wait_until(lambda: stream_opens(web), "the closed stream's place to be free")


def stream_opens(web: Web) -> bool:
    with web.client.stream("GET", "/api/v1/status/events") as stream:
        return stream.status_code == 200


# Adding images


def test_uploads_are_checked_kept_apart_and_never_overwrite(web: Web) -> None:
    image = png_bytes("yellow", "circle")
    files = [
        ("file", ("../../escape.png", image, "image/png")),
        ("file", ("notes.png", b"not an image at all", "image/png")),
        ("file", ("shot.jpg", image, "image/jpeg")),  # a PNG, whatever its name says
    ]
    answer = web.client.post("/api/v1/upload", files=files)
    assert answer.status_code == 200, answer.text
    saved = [Path(p) for p in answer.json()["saved"]]
    assert saved == [web.upload_dir / "escape.png", web.upload_dir / "shot.png"]
    assert [r["name"] for r in answer.json()["refused"]] == ["notes.png"]
    assert saved[1].read_bytes() == image

    again = web.client.post("/api/v1/upload", files=[("file", ("shot.png", b"x" + image[1:]))])
    assert again.json()["saved"] == []  # not an image: refused, and nothing replaced
    second = web.client.post("/api/v1/upload", files=[("file", ("shot.png", image))])
    assert second.json()["saved"] == [str(web.upload_dir / "shot (2).png")]
    assert saved[1].read_bytes() == image
    assert not any(p.name.startswith(".clipd-upload") for p in web.upload_dir.iterdir())
    web.live.wait_for(
        lambda: str(web.upload_dir / "shot (2).png") in web.live.indexed(), "upload indexed"
    )


def test_uploads_are_off_without_an_upload_dir(tmp_path: Path) -> None:
    root = tmp_path / "pics"
    root.mkdir()
    draw("red", "circle", (64, 64), __import__("random").Random(1)).save(root / "a.png")
    with in_process_daemon(write_web_config(tmp_path, [root]), root, 1) as live:
        web = Web(live, Corpus(root), tmp_path, tmp_path)
        try:
            refused = web.client.post("/api/v1/upload", files=[("file", ("a.png", b"x"))])
            assert error_of(refused)[:2] == (404, "not_found")
            assert web.client.get("/api/v1/status").json()["upload_enabled"] is False
        finally:
            web.close()


def test_while_the_model_loads_searches_get_503_with_retry_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_gate = hold_model_loading(monkeypatch)
    root = tmp_path / "pics"
    root.mkdir()
    with in_process_daemon(write_web_config(tmp_path, [root]), root) as live:
        try:
            daemon = live.daemon
            wait_until(lambda: daemon.state is not None and bool(daemon.state.web_url), "web up")
            web = Web(live, Corpus(root), tmp_path, tmp_path)
            try:
                answer = web.client.get("/api/v1/search", params={"q": "red"})
                assert error_of(answer)[:2] == (503, "not_ready")
                assert int(answer.headers["retry-after"]) > 0
                assert web.client.get("/api/v1/status").json()["state"] == "starting"
            finally:
                web.close()
        finally:
            model_gate.release()  # before the stop: the loader then ends, not left waiting


def test_web_off_serves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "pics"
    root.mkdir()
    with in_process_daemon(write_web_config(tmp_path, [root], web="off"), root, 0) as live:
        assert live.daemon.state is not None
        assert live.daemon.state.web_url == ""


# Fuzzing from the OpenAPI document


@pytest.mark.slow
def test_no_input_from_the_openapi_document_gets_a_server_error(web: Web) -> None:
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    from clipd.web.openapi import DOCUMENT

    schema = schemathesis.openapi.from_dict(DOCUMENT)
    auth = {"Authorization": f"Bearer {web.token}"}
    fuzzed = 0
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an Err raises: what we want
        if operation.path == "/api/v1/status/events":
            continue  # an endless stream; test_status_events_stream_changes covers it

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def answers_without_a_server_error(case: schemathesis.Case[Any]) -> None:
            response = case.call(base_url=web.url.rstrip("/"), headers=auth, timeout=60)
            assert response.status_code < 500, (case.method, case.path, response.text)
            if response.status_code >= 400:
                assert response.json()["error"]["message"]

        answers_without_a_server_error()
        fuzzed += 1
    assert fuzzed == sum(len(methods) for _, _, methods in api.ROUTES) - 1


# The real processes: clipd serve, clipq web


@pytest.mark.slow
def test_clipq_web_signs_a_browser_in_and_sigterm_ends_open_streams(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    root = tmp_path / "pics"
    root.mkdir()
    draw("red", "circle", (64, 64), __import__("random").Random(1)).save(root / "a.png")
    config = write_web_config(tmp_path, [root], log_level="info")
    with daemon_process(config) as process:
        process.wait_for_output("web app on http://127.0.0.1:", timeout=120)
        process.wait_for_output("serving on", timeout=120)
        # clipq in its own process: the URL with the token, and no web stack imported.
        code = (
            "import sys\n"
            "from clipq.cli import main\n"
            f"status = main(['web', '--print', '--socket', {str(tmp_path / 'clipd.sock')!r}, "
            f"'--token-file', {str(tmp_path / 'secret' / 'token')!r}])\n"
            "heavy = sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('starlette', 'uvicorn', 'numpy', 'PIL', 'torch'))\n"
            "print('HEAVY', heavy, file=sys.stderr)\n"
            "sys.exit(status)\n"
        )
        clipq = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
        )
        assert clipq.returncode == 0, clipq.stderr
        assert "HEAVY []" in clipq.stderr
        url = clipq.stdout.strip()
        assert "?token=" in url
        with httpx.Client(timeout=30) as browser:
            signed_in = browser.get(url, follow_redirects=True)
            assert signed_in.status_code == 200
            assert "token=" not in str(signed_in.url)
            assert browser.get(str(signed_in.url.join("/api/v1/status"))).is_success
            with browser.stream("GET", str(signed_in.url.join("/api/v1/status/events"))) as events:
                lines = events.iter_lines()
                assert next(lines) == "event: status"
                process.send_signal(signal.SIGTERM)
                # The stream ends once the daemon stops (else heartbeats would keep it open
                # until the test's timeout).
                for _ in lines:
                    pass
        assert process.wait() == 0
    assert "Traceback" not in process.output
