"""The web page in a real browser: Debian's Chromium, driven by Playwright, against a real
`clipd serve` with the tiny model.

One daemon serves the module's searches (the shapes corpus, three unreadable files, one folder
with old file times); the status test runs its own, starting empty. Screenshots of the main
states land in tests/artifacts/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import random
import re
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from browser import ARTIFACTS, EXPECT_MS, Daemon, Session, sign_in, start_daemon
from fixtures.corpus import Corpus, write_corpus
from fixtures.shapes import draw
from harness import wait_until
from playwright.sync_api import Browser, FilePayload, Page, expect

pytestmark = pytest.mark.slow

PER_CLASS = 13  # 156 pictures: more than two pages of 60
OLD = datetime(2019, 6, 1, 12).timestamp()  # the file time of every picture under set0/


def picture_bytes(colour: str, shape: str, seed: int = 1) -> bytes:
    out = io.BytesIO()
    draw(colour, shape, (160, 120), random.Random(seed)).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Corpus]]:
    work = tmp_path_factory.mktemp("web")
    root = work / "pictures"
    corpus = write_corpus(root, per_class=PER_CLASS)
    for path in corpus.images:
        if path.parent.parent.name == "set0":
            os.utime(path, (OLD, OLD))
    daemon = start_daemon(work, root, upload_dir=str(root / "uploads"))
    try:
        daemon.wait_idle(len(corpus.images))
        yield daemon, corpus
    finally:
        daemon.stop()


@pytest.fixture
def session(browser: Browser, shapes: tuple[Daemon, Corpus]) -> Iterator[Session]:
    signed_in = sign_in(browser, shapes[0])
    yield signed_in
    signed_in.page.context.close()
    assert not signed_in.errors, signed_in.errors


def shot(page: Page, name: str) -> None:
    """Save a screenshot once the tiles in view have painted."""
    page.wait_for_function(
        # A function, not an expression: the page's CSP forbids eval, which expressions need.
        "() => [...document.querySelectorAll('#results .hit img')].slice(0, 18)"
        ".every(i => i.complete)"
    )
    page.wait_for_timeout(300)  # the tiles' fade-in
    ARTIFACTS.mkdir(exist_ok=True)
    # Written here rather than by Playwright, whose file writes start an executor thread.
    (ARTIFACTS / f"{name}.png").write_bytes(page.screenshot())


def tiles(page: Page) -> list[dict[str, Any]]:
    """The grid as shown: each tile's path, alt text and visible score."""
    found: list[dict[str, Any]] = page.eval_on_selector_all(
        "#results .hit",
        """tiles => tiles.map(t => {
            const img = t.querySelector("img");
            return {path: t.dataset.path, alt: img.alt,
                    score: t.querySelector(".score").innerText};
        })""",
    )
    return found


def classes(page: Page, corpus: Corpus, count: int) -> list[tuple[str, str] | None]:
    return [corpus.class_of(tile["path"]) for tile in tiles(page)[:count]]


def wait_for_new_grid(page: Page, before: str | None) -> None:
    """Wait until the grid shows a search other than `before` (see data-run and data-shown)."""
    page.wait_for_function(
        "(before) => { const r = document.querySelector('#results');"
        " return r.dataset.run !== before && r.dataset.shown === r.dataset.run; }",
        arg=before,
    )


def search(page: Page, text: str) -> None:
    """Type a query and press Enter; wait for its grid."""
    before = page.locator("#results").get_attribute("data-run")
    box = page.locator("#q")
    box.fill(text)
    box.press("Enter")
    expect(page).to_have_url(re.compile(r"[?&]q=" + re.escape(text.replace(" ", "+"))))
    wait_for_new_grid(page, before)


def mostly(found: list[tuple[str, str] | None], wanted: tuple[str, str], share: float) -> bool:
    return sum(c == wanted for c in found) >= share * len(found)


def wait_for_first(page: Page, corpus: Corpus, wanted: tuple[str, str], count: int = 5) -> None:
    """Wait until the grid's first `count` tiles are mostly of the wanted class (4 in 5, as the
    end-to-end tests ask of the tiny model)."""

    def shown_first() -> bool:
        found = classes(page, corpus, count)
        return len(found) == count and found[0] == wanted and mostly(found, wanted, 0.8)

    try:
        wait_until(shown_first, f"{wanted} first", timeout=EXPECT_MS / 1000)
    except AssertionError as error:
        raise AssertionError(f"{error}; the grid shows {classes(page, corpus, count)}") from None


# ---------------------------------------------------------------------------------------------


def test_typing_a_red_circle_fills_the_grid_with_red_circles_first(
    session: Session, shapes: tuple[Daemon, Corpus]
) -> None:
    page, (_, corpus) = session.page, shapes
    shot(page, "empty")
    expect(page.locator("#state")).to_contain_text(f"{len(corpus.images)} pictures")
    # Search as you type: no Enter.
    page.locator("#q").press_sequentially("a red circle", delay=40)
    wait_for_first(page, corpus, ("red", "circle"), count=10)
    expect(page).to_have_url(f"{session.daemon.url}/?q=a+red+circle")
    shown = tiles(page)
    assert len(shown) == 60  # the first page
    assert all(tile["alt"] == Path(tile["path"]).name for tile in shown)
    first = shown[0]
    assert re.fullmatch(r"\d\.\d{3}", first["score"])
    page.wait_for_function(
        "() => [...document.querySelectorAll('#results .hit img')].slice(0, 12)"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    shot(page, "results")

    # Reload restores the query; another query, then Back, returns to it.
    page.reload()
    expect(page.locator("#q")).to_have_value("a red circle")
    wait_for_first(page, corpus, ("red", "circle"))
    search(page, "a blue square")
    wait_for_first(page, corpus, ("blue", "square"))
    page.go_back()
    expect(page.locator("#q")).to_have_value("a red circle")
    wait_for_first(page, corpus, ("red", "circle"))


def test_the_dark_scheme_follows_the_system(
    browser: Browser, shapes: tuple[Daemon, Corpus]
) -> None:
    dark = sign_in(browser, shapes[0], scheme="dark")
    try:
        search(dark.page, "a yellow triangle")
        background = dark.page.evaluate("getComputedStyle(document.body).backgroundColor")
        channels = [int(c) for c in re.findall(r"\d+", background)[:3]]
        assert max(channels) < 60, background
        shot(dark.page, "results-dark")
    finally:
        dark.page.context.close()
    assert not dark.errors


def test_infinite_scroll_loads_the_next_pages(
    session: Session, shapes: tuple[Daemon, Corpus]
) -> None:
    page, (_, corpus) = session.page, shapes
    search(page, "a green square")
    assert len(tiles(page)) == 60
    for wanted in (120, len(corpus.images)):
        page.mouse.wheel(0, 100_000)
        expect(page.locator("#results .hit")).to_have_count(wanted)
    paths = [tile["path"] for tile in tiles(page)]
    assert len(set(paths)) == len(corpus.images)
    scores = [float(tile["score"]) for tile in tiles(page)]
    assert scores == sorted(scores, reverse=True)


def drop_file(page: Page, data: bytes, name: str, target: str = "body") -> None:
    """Drag a file over the page and drop it on `target`, as a file manager would."""
    page.evaluate(
        """([b64, name, target]) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, {type: "image/png"}));
            const on = document.querySelector(target);
            const send = (type, at) => at.dispatchEvent(
                new DragEvent(type, {dataTransfer: transfer, bubbles: true, cancelable: true}));
            send("dragenter", document.body);
            send("dragover", on);
            send("drop", on);
        }""",
        [base64.b64encode(data).decode(), name, target],
    )


def test_drop_paste_and_pick_an_image_to_search_by_it(
    session: Session, shapes: tuple[Daemon, Corpus]
) -> None:
    page, (_, corpus) = session.page, shapes
    page.evaluate(
        """() => document.body.dispatchEvent(new DragEvent("dragenter", {
            dataTransfer: (() => { const t = new DataTransfer();
                t.items.add(new File(["x"], "x.png", {type: "image/png"})); return t; })(),
            bubbles: true}))"""
    )
    expect(page.locator("#dropzone")).to_be_visible()
    shot(page, "drop")
    drop_file(page, picture_bytes("blue", "triangle"), "blue-triangle.png")
    expect(page.locator("#dropzone")).to_be_hidden()
    wait_for_first(page, corpus, ("blue", "triangle"))
    expect(page.locator("#chips .chip")).to_contain_text("blue-triangle.png")

    page.evaluate(
        """(b64) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "image.png", {type: "image/png"}));
            document.dispatchEvent(
                new ClipboardEvent("paste", {clipboardData: transfer, bubbles: true}));
        }""",
        base64.b64encode(picture_bytes("green", "circle")).decode(),
    )
    wait_for_first(page, corpus, ("green", "circle"))

    picked: FilePayload = {
        "name": "y.png",
        "mimeType": "image/png",
        "buffer": picture_bytes("yellow", "square"),
    }
    page.set_input_files("input[type=file]#image-file", files=[picked])
    wait_for_first(page, corpus, ("yellow", "square"))
    # The bytes were a query, never a file: nothing new was indexed.
    assert session.daemon.status()["indexed"] == len(corpus.images)


def test_more_like_this_searches_by_a_tiles_stored_vector(
    session: Session, shapes: tuple[Daemon, Corpus]
) -> None:
    page, (_, corpus) = session.page, shapes
    search(page, "a red triangle")
    wait_for_first(page, corpus, ("red", "triangle"))
    # The first tile of another class: more like it should be more of that class.
    target = next(t for t in tiles(page) if corpus.class_of(t["path"]) != ("red", "triangle"))
    wanted = corpus.class_of(target["path"])
    assert wanted is not None
    tile = page.locator(f'#results .hit[data-path="{target["path"]}"]')
    tile.hover()
    tile.locator(".more-like").click()
    expect(page).to_have_url(re.compile(r"[?&]like="))
    wait_for_first(page, corpus, wanted)
    first = tiles(page)[0]
    assert first["path"] == target["path"]  # its own vector is its best match
    assert float(first["score"]) == pytest.approx(1.0, abs=1e-3)
    expect(page.locator("#chips .chip")).to_contain_text(Path(target["path"]).name)


def set_filter(page: Page, selector: str, value: str | bool) -> None:
    """Change one filter as a person would and wait for the grid it asks for."""
    before = page.locator("#results").get_attribute("data-run")
    field = page.locator(selector)
    if isinstance(value, bool):
        field.set_checked(value)
    elif field.get_attribute("type") == "range":
        field.evaluate(
            "(input, v) => { input.value = v;"
            " input.dispatchEvent(new Event('input', {bubbles: true})); }",
            value,
        )
    else:
        field.fill(value)
    wait_for_new_grid(page, before)


def test_filters_narrow_results(session: Session, shapes: tuple[Daemon, Corpus]) -> None:
    page, (_, corpus) = session.page, shapes
    root = str(corpus.root)
    search(page, "a red square")
    page.locator("#filters summary").click()

    set_filter(page, "#f-under", f"{root}/set1")
    paths = [t["path"] for t in tiles(page)]
    assert paths
    assert all(p.startswith(f"{root}/set1/") for p in paths), paths
    expect(page).to_have_url(re.compile(r"under="))
    shot(page, "filters")
    set_filter(page, "#f-under", "")

    set_filter(page, "input[name=ext][value=png]", True)
    paths = [t["path"] for t in tiles(page)]
    assert paths
    assert all(p.endswith(".png") for p in paths), paths
    set_filter(page, "input[name=ext][value=png]", False)

    # Everything under set0/ was last changed in June 2019.
    set_filter(page, "#f-until", "2019-12-31")
    paths = [t["path"] for t in tiles(page)]
    assert paths
    assert all(p.startswith(f"{root}/set0/") for p in paths), paths
    set_filter(page, "#f-until", "")
    set_filter(page, "#f-since", "2020-01-01")
    paths = [t["path"] for t in tiles(page)]
    assert paths
    assert not any(p.startswith(f"{root}/set0/") for p in paths), paths
    set_filter(page, "#f-since", "")

    scores = sorted(float(t["score"]) for t in tiles(page))
    floor = scores[len(scores) // 2]
    set_filter(page, "#f-min", f"{floor:.2f}")
    kept = [float(t["score"]) for t in tiles(page)]
    assert kept
    assert len(kept) < len(scores)
    assert min(kept) >= round(floor, 2) - 1e-6


def test_the_lightbox_and_its_keys(session: Session, shapes: tuple[Daemon, Corpus]) -> None:
    page, (_, corpus) = session.page, shapes
    page.locator("body").click(position={"x": 5, "y": 400})
    page.keyboard.press("/")
    expect(page.locator("#q")).to_be_focused()
    page.keyboard.type("a yellow circle")
    page.keyboard.press("Enter")
    wait_for_first(page, corpus, ("yellow", "circle"))
    shown = tiles(page)

    page.keyboard.press("ArrowDown")  # from the box into the grid
    expect(page.locator("#results .hit").first.locator(".open")).to_be_focused()
    page.keyboard.press("Enter")
    lightbox = page.locator("dialog#lightbox")
    expect(lightbox).to_be_visible()
    expect(page.locator("#lb-name")).to_have_text(shown[0]["alt"])
    expect(page.locator("#lb-path")).to_have_text(shown[0]["path"])
    expect(page.locator("#lb-score")).to_have_text(shown[0]["score"])
    expect(page.locator("#lb-dims")).to_contain_text("pixels")
    page.wait_for_function(
        "() => document.querySelector('#lb-image').src.includes('/api/v1/image')"
        " && document.querySelector('#lb-image').complete"
    )
    shot(page, "lightbox")
    page.keyboard.press("ArrowRight")
    expect(page.locator("#lb-name")).to_have_text(shown[1]["alt"])
    page.keyboard.press("ArrowRight")
    expect(page.locator("#lb-name")).to_have_text(shown[2]["alt"])
    page.keyboard.press("ArrowLeft")
    expect(page.locator("#lb-name")).to_have_text(shown[1]["alt"])

    # Enter opens the original picture.
    with page.context.expect_page() as opened:
        page.keyboard.press("Enter")
    original = opened.value
    original.wait_for_load_state()
    assert "/api/v1/image?path=" in original.url
    assert original.evaluate("document.images[0].naturalWidth") > 0
    original.close()

    page.keyboard.press("Escape")
    expect(lightbox).to_be_hidden()
    # Focus goes back to the tile the lightbox last showed.
    expect(page.locator("#results .hit").nth(1).locator(".open")).to_be_focused()
    page.keyboard.press("ArrowRight")
    expect(page.locator("#results .hit").nth(2).locator(".open")).to_be_focused()


def test_failures_are_listed_with_reasons(session: Session, shapes: tuple[Daemon, Corpus]) -> None:
    page, (_, corpus) = session.page, shapes
    link = page.locator("#status a[href='#failures']")
    expect(link).to_contain_text(f"{len(corpus.bad)} files could not be read")
    link.click()
    expect(page.locator("#failures")).to_be_visible()
    rows = page.locator("#failures-table tbody tr")
    expect(rows).to_have_count(len(corpus.bad))
    listed = rows.locator("th").all_inner_texts()
    assert sorted(listed) == sorted(str(p) for p in corpus.bad)
    for row in rows.all():
        assert row.locator("td").first.inner_text().strip()  # a reason for each
    shot(page, "failures")
    page.go_back()
    expect(page.locator("#search-view")).to_be_visible()


# What a browser does to a tab the user leaves for another (headless Chromium keeps every tab
# visible, and has no command to hide one).
_TO_THE_BACKGROUND = """() => {
    Object.defineProperty(document, "hidden", {value: true, configurable: true});
    Object.defineProperty(document, "visibilityState", {value: "hidden", configurable: true});
    document.dispatchEvent(new Event("visibilitychange"));
}"""
_BACK_IN_VIEW = """() => {
    Object.defineProperty(document, "hidden", {value: false, configurable: true});
    Object.defineProperty(document, "visibilityState", {value: "visible", configurable: true});
    document.dispatchEvent(new Event("visibilitychange"));
}"""


def test_tabs_in_the_background_leave_the_browsers_connections_to_the_tab_in_view(
    browser: Browser, shapes: tuple[Daemon, Corpus]
) -> None:
    # Chromium opens at most six connections to one host, and a tab's live status stream holds
    # one for as long as it is open: six tabs left open would starve a seventh of any.
    daemon, corpus = shapes
    signed_in = sign_in(browser, daemon)
    context = signed_in.page.context
    indexed = f"{daemon.status()['indexed']} pictures indexed"
    try:
        tabs = [signed_in.page, *(context.new_page() for _ in range(5))]
        for tab in tabs[1:]:
            tab.set_default_timeout(EXPECT_MS)
            tab.goto(f"{daemon.url}/")
        for tab in tabs:
            expect(tab.locator("#status-text")).to_contain_text(indexed)
            tab.evaluate(_TO_THE_BACKGROUND)
        in_view = context.new_page()
        in_view.set_default_timeout(EXPECT_MS)
        in_view.goto(f"{daemon.url}/")
        search(in_view, "red circle")
        wait_for_first(in_view, corpus, ("red", "circle"))
        expect(in_view.locator("#status-text")).to_contain_text(indexed)
        # Back in view, a tab opens its stream again.
        in_view.evaluate(_TO_THE_BACKGROUND)
        with tabs[0].expect_request(lambda request: "/status/events" in request.url):
            tabs[0].evaluate(_BACK_IN_VIEW)
        expect(tabs[0].locator("#status-text")).to_contain_text(indexed)
    finally:
        context.close()
    assert not signed_in.errors, signed_in.errors


def test_without_the_token_only_the_login_hint_is_served(
    browser: Browser, shapes: tuple[Daemon, Corpus]
) -> None:
    daemon, corpus = shapes
    context = browser.new_context()
    try:
        page = context.new_page()
        answer = page.goto(daemon.url + "/")
        assert answer is not None
        assert answer.status == 401
        expect(page.locator("body")).to_contain_text("clipq web")
        expect(page.locator("#q")).to_have_count(0)
        shot(page, "login")
        wrong = page.goto(daemon.url + "/?token=not-the-token")
        assert wrong is not None
        assert wrong.status == 401
        picture = str(next(iter(corpus.images)))
        for path in (
            "/api/v1/status",
            "/api/v1/search?q=red",
            "/api/v1/failures",
            "/api/v1/thumbnail?" + urllib.parse.urlencode({"path": picture}),
            "/api/v1/image?" + urllib.parse.urlencode({"path": picture}),
        ):
            refused = context.request.get(daemon.url + path)
            assert refused.status == 401, path
            assert refused.json()["error"]["kind"] == "unauthenticated"
        assert not context.cookies()
    finally:
        context.close()


def raw_request(daemon: Daemon, method: str, path: str, headers: dict[str, str]) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=10)
    try:
        connection.request(method, path, body=b"{}" if method == "POST" else None, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_a_foreign_host_or_a_cross_origin_post_is_refused(
    browser: Browser, shapes: tuple[Daemon, Corpus]
) -> None:
    daemon, _ = shapes
    bearer = {"Authorization": f"Bearer {daemon.token}"}
    own = {"Host": f"127.0.0.1:{daemon.port}"}
    assert raw_request(daemon, "GET", "/api/v1/status", {**bearer, **own}) == 200
    # DNS rebinding: a page of evil.example resolved to 127.0.0.1 sends its own Host.
    for host in (f"evil.example:{daemon.port}", "127.0.0.1:1", f"localhost.evil:{daemon.port}"):
        assert raw_request(daemon, "GET", "/api/v1/status", {**bearer, "Host": host}) == 403, host
    # CSRF: a signed-in browser's cookie riding a POST from another origin.
    session = sign_in(browser, daemon)
    try:
        posted = session.page.context.request.post(
            daemon.url + "/api/v1/reindex",
            data=json.dumps({"paths": []}),
            headers={"Origin": "http://evil.example", "Content-Type": "application/json"},
        )
        assert posted.status == 403
        assert posted.json()["error"]["kind"] == "forbidden"
        same = session.page.context.request.post(
            daemon.url + "/api/v1/reindex",
            data=json.dumps({"paths": []}),
            headers={"Origin": daemon.url, "Content-Type": "application/json"},
        )
        assert same.status == 200, same.text()
    finally:
        session.page.context.close()


def test_dropped_files_are_added_when_uploads_are_on(
    session: Session, shapes: tuple[Daemon, Corpus]
) -> None:
    page, (daemon, corpus) = session.page, shapes
    expect(page.locator("#add-images")).to_be_visible()
    drop_file(page, picture_bytes("red", "square", seed=9), "new-red-square.png",
              target='[data-drop="upload"]')  # fmt: skip
    expect(page.locator("#toasts")).to_contain_text("Added 1 picture")
    saved = list((corpus.root / "uploads").iterdir())
    assert [p.name for p in saved] == ["new-red-square.png"]
    # The watcher indexes it like any new file; it is the last test on this daemon.
    daemon.wait_idle(len(corpus.images) + 1)


def test_nothing_indexed_then_the_status_line_moves_while_files_are_added(
    browser: Browser, tmp_path: Path
) -> None:
    root = tmp_path / "pictures"
    root.mkdir()
    # One picture a batch: at 8 a batch the tiny model in int8 indexed these 150 pictures so
    # fast that the status line showed only "Indexing: 0 of 0" before the end, in one run.
    daemon = start_daemon(tmp_path, root, batch_size=1)
    try:
        daemon.wait_idle(0)
        session = sign_in(browser, daemon)
        page = session.page
        expect(page.locator("#state")).to_contain_text("Nothing is indexed yet")
        page.locator("#q").fill("a red circle")
        page.locator("#q").press("Enter")
        expect(page.locator("#state")).to_contain_text("Nothing is indexed yet")
        shot(page, "nothing-indexed")
        # Record every text the status line shows from now on, and the progress bar's states:
        # indexing can end before a check made after the files land would see it.
        page.evaluate(
            """() => {
                window.__seen = [];
                const line = document.querySelector("#status");
                new MutationObserver(() => window.__seen.push(line.innerText))
                    .observe(line, {subtree: true, childList: true, characterData: true,
                                    attributes: true});
                window.__bar = [];
                const bar = document.querySelector("#status-bar");
                new MutationObserver(() => window.__bar.push([bar.hidden, bar.value, bar.max]))
                    .observe(bar, {attributes: true});
            }"""
        )
        count = 150
        rng = random.Random(5)
        staging = tmp_path / "staging"
        staging.mkdir()
        for number in range(count):
            draw("red", "circle", (320, 240), rng).save(staging / f"red-circle-{number}.png")
        for path in sorted(staging.iterdir()):
            path.rename(root / path.name)  # whole files only: the watcher sees finished ones
        expect(page.locator("#status-text")).to_contain_text("Indexing")
        shot(page, "indexing")
        expect(page.locator("#status-text")).to_contain_text(f"{count} pictures indexed",
                                                             timeout=120_000)  # fmt: skip
        # The search that found nothing ran again by itself once there was something to find
        # (as soon as the first files were in, so the grid may hold only a few).
        wait_for_first(page, Corpus(root, dict.fromkeys(root.iterdir(), ("red", "circle"))),
                       ("red", "circle"), count=1)  # fmt: skip
        seen: list[str] = page.evaluate("window.__seen")
        progress = [int(m.group(1).replace(",", "")) for t in seen
                    if (m := re.search(r"Indexing: ([\d,]+) of", t))]  # fmt: skip
        assert progress, seen
        assert progress == sorted(progress)
        assert len(set(progress)) >= 2, seen  # it moved while we watched, not only at the end
        bar: list[tuple[bool, float, float]] = page.evaluate("window.__bar")
        assert any(not hidden and value < most for hidden, value, most in bar), bar

        # The daemon goes away: the status line and the next search say so.
        daemon.stop()
        expect(page.locator("#status")).to_contain_text("Lost contact with clipd")
        search(page, "a blue circle")
        expect(page.locator("#state")).to_contain_text("clipd is not answering")
        expect(page.locator("#state button")).to_have_text("Try again")
        session.page.context.close()
        assert not session.errors, session.errors
    finally:
        daemon.stop()
