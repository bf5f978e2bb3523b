"""The web page's duplicates view in a real browser: Debian's Chromium, driven by Playwright,
against a real `clipd serve` with the tiny model, over generated near-copies (tests/fixtures/
near_copies.py) and a folder of many exact copies for paging.
"""

from __future__ import annotations

import random
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import ARTIFACTS, Daemon, Session, sign_in
from browser import start_daemon as start_web_daemon
from fixtures.near_copies import NearCopies, write_near_copies
from fixtures.shapes import COLOURS, SHAPES, draw
from playwright.sync_api import Browser, Page, expect

pytestmark = pytest.mark.slow

MANY = 21  # exact-copy pairs under many/: one more than the view's page of 20 groups


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, NearCopies]]:
    work = tmp_path_factory.mktemp("web-duplicates")
    root = work / "pictures"
    copies = write_near_copies(root / "near")
    many = root / "many"
    (many / "copies").mkdir(parents=True)
    kinds = [(c, s) for c in COLOURS for s in SHAPES]
    for i in range(MANY):
        colour, shape = kinds[i % len(kinds)]
        draw(colour, shape, (160, 120), random.Random(100 + i)).save(many / f"pic{i:02d}.png")
        shutil.copyfile(many / f"pic{i:02d}.png", many / "copies" / f"pic{i:02d}.png")
    daemon = start_web_daemon(work, root)
    try:
        daemon.wait_idle(sum(1 for p in root.rglob("*") if p.is_file()))
        yield daemon, copies
    finally:
        daemon.stop()


@pytest.fixture
def session(browser: Browser, library: tuple[Daemon, NearCopies]) -> Iterator[Session]:
    signed_in = sign_in(browser, library[0])
    yield signed_in
    signed_in.page.context.close()
    assert not signed_in.errors, signed_in.errors


def wait_for_list(page: Page, before: str | None) -> None:
    """Wait until the list shows an answer other than `before` (see data-shown)."""
    page.wait_for_function(
        "(before) => { const list = document.querySelector('#dup-groups');"
        " return list.dataset.shown && list.dataset.shown !== before"
        " && !list.hasAttribute('aria-busy'); }",
        arg=before,
    )


def set_control(page: Page, selector: str, value: str) -> None:
    """Change one of the view's controls as a person would; wait for the list it asks for."""
    before = page.locator("#dup-groups").get_attribute("data-shown")
    field = page.locator(selector)
    if field.evaluate("f => f.tagName") == "SELECT":
        field.select_option(value)
    elif field.get_attribute("type") == "range":
        field.evaluate(
            "(input, v) => { input.value = v;"
            " input.dispatchEvent(new Event('input', {bubbles: true})); }",
            value,
        )
    else:
        field.fill(value)
    wait_for_list(page, before)


def groups(page: Page) -> list[tuple[str, list[str]]]:
    """The list as shown: each group's tier and its files' paths, in order."""
    found: list[list[Any]] = page.eval_on_selector_all(
        "#dup-groups .dup-group",
        "items => items.map(g => [g.dataset.tier,"
        " [...g.querySelectorAll('.dup-file')].map(t => t.dataset.path)])",
    )
    return [(tier, files) for tier, files in found]


def open_view(page: Page) -> None:
    page.locator("#duplicates-link").click()
    expect(page).to_have_url(re.compile(r"#duplicates$"))
    expect(page.locator("#duplicates")).to_be_visible()
    expect(page.locator("#search-view")).to_be_hidden()
    wait_for_list(page, None)


def shot(page: Page, name: str) -> None:
    page.wait_for_function(
        "() => [...document.querySelectorAll('#dup-groups img')].every(i => i.complete)"
    )
    page.wait_for_timeout(300)  # the tiles' fade-in
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"{name}.png").write_bytes(page.screenshot(full_page=True))


def test_near_copies_are_shown_grouped_by_tier_the_one_to_keep_first(
    session: Session, library: tuple[Daemon, NearCopies]
) -> None:
    page, (_, copies) = session.page, library
    open_view(page)
    set_control(page, "#dup-under", str(copies.root))
    right, right_small, right_webp = map(str, copies.reencoded[0])
    shown = groups(page)
    assert [tier for tier, _ in shown] == ["exact", "reencoded", "variant"]
    assert [set(files) for _, files in shown] == [
        set(map(str, copies.exact[0])),
        {right, right_small, right_webp},
        set(map(str, copies.variant[0])),
    ]
    assert shown[1][1] == [right, right_webp, right_small]  # most pixels, then most bytes
    grouped = {path for _, files in shown for path in files}
    assert not grouped & {str(p) for p in copies.alone}  # same subject, other pictures
    expect(page.locator("#dup-state")).to_contain_text("3 groups")
    first_tiles = page.locator(".dup-group .dup-file:first-child")
    expect(first_tiles.locator(".keep")).to_have_count(3)
    expect(page.locator(".dup-file .keep")).to_have_count(3)  # only the first of each
    alts = page.eval_on_selector_all("#dup-groups img", "images => images.map(i => i.alt)")
    assert alts == [Path(path).name for _, files in shown for path in files]
    page.wait_for_function(
        "() => [...document.querySelectorAll('#dup-groups img')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    shot(page, "duplicates")

    # Clicking a file opens it in the lightbox; the arrows walk through the files listed.
    page.locator(f".dup-file[data-path='{right_webp}'] .open").click()
    lightbox = page.locator("dialog#dup-lightbox")
    expect(lightbox).to_be_visible()
    expect(page.locator("#dup-lb-name")).to_have_text("right.webp")
    expect(page.locator("#dup-lb-path")).to_have_text(right_webp)
    expect(page.locator("#dup-lb-where")).to_contain_text("Re-encoded or resized: file 2 of 3")
    page.wait_for_function(
        "() => { const i = document.querySelector('#dup-lb-image');"
        " return i.src.includes('/api/v1/image') && i.complete && i.naturalWidth === 640; }"
    )
    page.keyboard.press("ArrowRight")
    expect(page.locator("#dup-lb-path")).to_have_text(right_small)
    expect(page.locator("#dup-lb-dims")).to_have_text("320 \u00d7 240 pixels")
    page.keyboard.press("Escape")
    expect(lightbox).to_be_hidden()
    # Focus returns to the file last shown; the arrows move between tiles; Enter opens one.
    last = page.locator(f".dup-file[data-path='{right_small}'] .open")
    expect(last).to_be_focused()
    page.keyboard.press("ArrowLeft")
    expect(page.locator(f".dup-file[data-path='{right_webp}'] .open")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#dup-lb-path")).to_have_text(right_webp)
    page.keyboard.press("Escape")

    # The loosest tier: exact copies only.
    set_control(page, "#dup-tier", "exact")
    assert groups(page) == [("exact", shown[0][1])]

    page.locator("#duplicates .button", has_text="Back to search").click()
    expect(page.locator("#search-view")).to_be_visible()
    expect(page.locator("#duplicates")).to_be_hidden()


def test_groups_come_a_page_at_a_time_and_the_threshold_is_asked_for(
    session: Session, library: tuple[Daemon, NearCopies]
) -> None:
    page, (daemon, copies) = session.page, library
    page.goto(f"{daemon.url}/#duplicates")  # the address opens the view
    wait_for_list(page, None)
    set_control(page, "#dup-tier", "exact")
    set_control(page, "#dup-under", str(copies.root.parent / "many"))
    expect(page.locator(".dup-group")).to_have_count(20)
    expect(page.locator("#dup-state")).to_contain_text(f"20 of {MANY} groups")
    more = page.locator("#dup-more")
    before = page.locator("#dup-groups").get_attribute("data-shown")
    more.click()
    wait_for_list(page, before)
    expect(page.locator(".dup-group")).to_have_count(MANY)
    expect(more).to_be_hidden()
    assert all(len(files) == 2 for _, files in groups(page))

    with page.expect_request(re.compile(r"/api/v1/duplicates\?threshold=0\.75&")):
        page.locator("#dup-threshold").evaluate(
            "input => { input.value = '0.75';"
            " input.dispatchEvent(new Event('input', {bubbles: true})); }"
        )
    expect(page.locator("#dup-threshold-out")).to_have_text("0.75")


def test_the_view_follows_the_dark_scheme(
    browser: Browser, library: tuple[Daemon, NearCopies]
) -> None:
    daemon, copies = library
    dark = sign_in(browser, daemon, scheme="dark")
    try:
        open_view(dark.page)
        set_control(dark.page, "#dup-under", str(copies.root))
        expect(dark.page.locator(".dup-group")).to_have_count(3)
        background = dark.page.evaluate(
            "getComputedStyle(document.querySelector('.dup-group')).backgroundColor"
        )
        channels = [int(c) for c in re.findall(r"\d+", background)[:3]]
        assert max(channels) < 60, background
        shot(dark.page, "duplicates-dark")
    finally:
        dark.page.context.close()
    assert not dark.errors
