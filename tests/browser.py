"""Shared by the browser tests: Debian's Chromium driven by Playwright, a real `clipd serve`
with its web app on a free loopback port, and a page signed in to it."""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from conftest import TINY_MODEL_JSON, TINY_MODEL_WEIGHTS
from harness import DaemonProcess, free_port, wait_until
from playwright.sync_api import Browser, Page, expect, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).parent / "artifacts"
EXPECT_MS = 20_000  # the tiny model answers in milliseconds; this is only for a loaded machine


@dataclass
class Daemon:
    """A `clipd serve` process with its web app on a known loopback port."""

    process: DaemonProcess
    root: Path
    port: int
    token: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str) -> Any:
        request = urllib.request.Request(
            self.url + path, headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.api("/api/v1/status")
        return status

    def wait_idle(self, indexed: int, timeout: float = 120) -> dict[str, Any]:
        def idle() -> dict[str, Any] | None:
            assert self.process.popen.poll() is None, self.process.output
            status = self.status()
            return status if status["state"] == "idle" and status["indexed"] >= indexed else None

        # OSError: not listening yet, or 503 while the model loads.
        status = wait_until(
            idle, f"clipd idle with {indexed} files", timeout=timeout, ignoring=(OSError,)
        )
        assert status is not None
        return status

    def stop(self) -> None:
        assert self.process.stop() == 0, self.process.output


def start_daemon(work: Path, root: Path, **config: Any) -> Daemon:
    """`clipd serve` over root with the web app on a free port and a token of our own."""
    home = work / "home"
    token_file = work / "secrets" / "token"
    token_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = "browser-test-token-" + os.urandom(8).hex()
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    port = free_port()
    settings = {
        "roots": [str(root)],
        "database": str(work / "index.db"),
        "socket": str(work / "clipd.sock"),
        "token_file": str(token_file),
        "web": f"127.0.0.1:{port}",
        "model": {
            "name": str(TINY_MODEL_JSON),
            "pretrained": str(TINY_MODEL_WEIGHTS),
            "device": "cpu",
        },
        "batch_size": 8,
        **config,
    }  # fmt: skip
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CACHE_HOME": str(home / "cache"),
        "XDG_RUNTIME_DIR": str(work),
        "HF_HUB_OFFLINE": "1",
    }
    return Daemon(DaemonProcess(path, env=env), root, port, token)


@dataclass
class Session:
    """A signed-in page, and the JavaScript errors it raised."""

    page: Page
    daemon: Daemon
    errors: list[str]


def sign_in(
    browser: Browser, daemon: Daemon, scheme: Literal["light", "dark"] = "light"
) -> Session:
    context = browser.new_context(viewport={"width": 1280, "height": 860}, color_scheme=scheme)
    page = context.new_page()
    page.set_default_timeout(EXPECT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{daemon.url}/?token={daemon.token}")
    # The token is traded for a cookie and leaves the address bar.
    assert page.url == f"{daemon.url}/", page.url
    expect(page.locator("input[type=search]#q")).to_be_visible()
    return Session(page, daemon, errors)


@contextmanager
def launch_chromium() -> Iterator[Browser]:
    """Headless Chromium (each launch with a fresh, temporary user-data directory)."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests drive Debian's Chromium. Install it with "
            "`sudo apt-get update && sudo apt-get install -y chromium` (CI's .ci/run does)."
        )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
