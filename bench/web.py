"""The web page in a real browser: from pressing Enter to the first 60 thumbnails painted.

    python -m bench.web [--quick] [--images N] [--queries N] [--model vit-b-32|tiny]

A warm `clipd serve` (ViT-B-32 with random weights by default: a real text encoder's cost)
holds the phone-photo corpus; Debian's Chromium, driven by Playwright, works the real
page. Each sample starts at the Enter key's keydown and ends when the first 60 tiles' images
are decoded and two animation frames have passed (they are on screen), both seen from inside
the page, which starts watching at the keydown itself (waiting for Playwright's key press to
return first would add its round trip to every sample). New queries are texts
the daemon has not seen, set in the box without typing (typing would search before Enter);
a repeat is an earlier query again, after another one (the page's answer cache and the
browser's image cache at work). Also: the server's time per thumbnail request once made, over
keep-alive.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, sync_playwright

from bench.common import BIN, write_config
from bench.corpus import corpus
from clipd.thumbcache import cache_path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
FIRST = 60  # thumbnails that must be painted: the page's first request
WORDS = [
    "red brick wall",
    "a dog on a beach",
    "sunset over mountains",
    "a bowl of fruit",
    "snow on pine trees",
    "a city street at night",
    "children playing",
    "an old car",
]

# Injected into the page: at the Enter keydown, a promise (window.__painted) for
# [ms to the first 60 painted, ms to the grid's tiles in the page].
_WATCH_ENTER = """(first) => {
    const grid = document.querySelector("#results");
    const frame = () => new Promise((resolve) => requestAnimationFrame(resolve));
    async function watch(enterAt, before) {
        while (!(grid.dataset.run !== before && grid.dataset.shown === grid.dataset.run)) {
            await frame();
        }
        const shown = performance.now() - enterAt;
        const images = [...grid.querySelectorAll(".hit img")].slice(0, first);
        if (images.length < first) throw new Error(`only ${images.length} hits`);
        const painted = Promise.all(images.map((image) => image.decode()));
        const late = new Promise((_, reject) => setTimeout(() => reject(new Error(
            `not painted after 60 s: ${images.filter((i) => i.complete).length} of ${first} loaded`
        )), 60000));
        await Promise.race([painted, late]);
        await frame();
        await frame();
        return [performance.now() - enterAt, shown];
    }
    document.querySelector("#q").addEventListener("keydown", (event) => {
        if (event.key === "Enter") window.__painted = watch(performance.now(), grid.dataset.run);
    }, {capture: true});
}"""


@dataclass(frozen=True, slots=True)
class WebResult:
    images: int
    new_ms: list[float]
    repeat_ms: list[float]
    new_grid_ms: list[float]  # Enter to the tiles in the page, before their images
    repeat_grid_ms: list[float]
    thumbnail_ms: list[float]  # server time per thumbnail request, client-measured, keep-alive
    thumbnail_bytes: int  # the thumbnail cache on disk once indexed (its WAL included)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class _Daemon:
    def __init__(self, work: Path, photos: Path, model: str) -> None:
        self.port = _free_port()
        self.token = os.urandom(16).hex()
        work.mkdir(parents=True, exist_ok=True)
        token_file = work / "token"
        token_file.write_text(self.token + "\n")
        token_file.chmod(0o600)
        config = write_config(work, photos, model, web=f"127.0.0.1:{self.port}",
                              token_file=str(token_file))  # fmt: skip
        self.process = subprocess.Popen([BIN / "clipd", "serve", "--config", str(config)])
        self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {self.token}"}
        for attempt in (1, 2):
            try:
                self.connection.request("GET", path, headers=headers)
                response = self.connection.getresponse()
                return response.status, response.read()
            except OSError:
                # Not listening yet, or a keep-alive connection the server closed: a new one.
                self.connection.close()
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def get_json(self, path: str) -> Any:
        status, body = self.get(path)
        if status != 200:
            raise OSError(f"{path}: HTTP {status}: {body[:200]!r}")
        return json.loads(body)

    def wait_indexed(self, count: int) -> None:
        deadline = time.monotonic() + 6 * 3600
        shown = 0.0
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit("clipd serve exited while indexing")
            try:
                status = self.get_json("/api/v1/status")
            except OSError:
                time.sleep(0.5)
                continue
            if status["state"] == "idle" and status["indexed"] + status["failed"] >= count:
                return
            if time.monotonic() - shown > 30:
                print(f"  web: indexed {status['indexed']} of {count}", flush=True)
                shown = time.monotonic()
            time.sleep(0.5)
        raise SystemExit("the daemon did not finish indexing")

    def stop(self) -> None:
        self.connection.close()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=120)


def _enter_to_painted(page: Page, text: str) -> tuple[float, float]:
    """Milliseconds from the Enter keydown to the first 60 thumbnails on screen, and to the
    grid's tiles being in the page (the search answered and rendered, images not yet in)."""
    # Set without input events: as typed, the page would search before Enter (as you type).
    page.locator("#q").evaluate("(box, text) => { box.value = text; }", text)
    page.locator("#q").press("Enter")
    painted, grid = page.evaluate("() => window.__painted")
    return float(painted), float(grid)


def _thumbnail_ms(daemon: _Daemon, query: str) -> list[float]:
    """Client-side time of each of the first 60 thumbnail requests, already made once."""
    hits = daemon.get_json(f"/api/v1/search?{urllib.parse.urlencode({'q': query, 'limit': FIRST})}")
    paths = [hit["path"] for hit in hits["hits"]]
    times = []
    for path in paths:
        url = f"/api/v1/thumbnail?{urllib.parse.urlencode({'path': path, 'size': 400})}"
        daemon.get(url)  # made (or cached) by the page already; once more to be sure
        started = time.perf_counter()
        status, _ = daemon.get(url)
        times.append(time.perf_counter() - started)
        assert status == 200, status
    return [t * 1e3 for t in times]


def run(work: Path, images: int, queries: int, model: str = "vit-b-32") -> WebResult:
    photos = corpus(images)
    daemon = _Daemon(work, photos, model)
    try:
        daemon.wait_indexed(images)
        kept = cache_path(work / f"{model}.db")  # as bench.common.write_config names it
        thumbnail_bytes = sum(
            path.stat().st_size for path in (kept, Path(f"{kept}-wal")) if path.exists()
        )
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            context = browser.new_context(viewport={"width": 1600, "height": 1000})
            page = context.new_page()
            page.goto(f"{daemon.url}/?token={daemon.token}")
            page.evaluate(_WATCH_ENTER, FIRST)
            _enter_to_painted(page, "warm up the model and the browser")
            # Each repeat follows another query, as when a person comes back to a search: the
            # grid it replaces shows other pictures.
            texts = [f"{WORDS[n % len(WORDS)]} {n}" for n in range(queries)]
            new, repeat = [], []
            for number, text in enumerate(texts):
                new.append(_enter_to_painted(page, text))
                if number:
                    repeat.append(_enter_to_painted(page, texts[number - 1]))
            repeat.append(_enter_to_painted(page, texts[-1] if queries == 1 else texts[0]))
            for (a, b), (c, d) in zip(new, repeat, strict=True):
                print(f"  web: new {a:.0f} ms (grid {b:.0f}), repeat {c:.0f} (grid {d:.0f})")
            thumbs = _thumbnail_ms(daemon, f"{WORDS[0]} 0")
            browser.close()
    finally:
        daemon.stop()
    return WebResult(
        images,
        [total for total, _ in new],
        [total for total, _ in repeat],
        [grid for _, grid in new],
        [grid for _, grid in repeat],
        thumbs,
        thumbnail_bytes,
    )


def report(result: WebResult) -> list[tuple[str, str, str]]:
    """Rows for bench's table: label, value, note."""
    return [
        (f"(h) web: Enter -> first {FIRST} thumbnails painted, new query",
         f"{statistics.median(result.new_ms):.0f} ms",
         f"median of {len(result.new_ms)}, max {max(result.new_ms):.0f}; grid in "
         f"{statistics.median(result.new_grid_ms):.0f}; {result.images:,} photos; target <= 500"),
        ("    same query again",
         f"{statistics.median(result.repeat_ms):.0f} ms",
         f"median of {len(result.repeat_ms)}, max {max(result.repeat_ms):.0f}; grid in "
         f"{statistics.median(result.repeat_grid_ms):.0f}; target <= 150"),
        ("    server time per thumbnail (made once)",
         f"{statistics.median(result.thumbnail_ms):.2f} ms",
         f"p90 {statistics.quantiles(result.thumbnail_ms, n=10)[-1]:.2f} ms over keep-alive; "
         "target <= 2"),
        ("    thumbnails on disk, per 10k photos",
         f"{result.thumbnail_bytes / result.images * 10_000 / 1e6:.0f} MB",
         f"{result.thumbnail_bytes / result.images / 1024:.1f} KiB per photo, "
         f"{result.images:,} photos"),
    ]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--images", type=int)
    parser.add_argument("--queries", type=int)
    parser.add_argument("--model", choices=["vit-b-32", "tiny"], default="vit-b-32")
    args = parser.parse_args()
    images = args.images or (300 if args.quick else 10_000)
    queries = args.queries or (5 if args.quick else 15)
    work = Path(tempfile.mkdtemp(prefix="clipd-bench-web-"))
    try:
        result = run(work, images, queries, args.model)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for label, value, note in report(result):
        print(f"{label:58}  {value:>10}  {note}")
    print("new ms:", " ".join(f"{ms:.0f}" for ms in result.new_ms))
    print("repeat ms:", " ".join(f"{ms:.0f}" for ms in result.repeat_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
