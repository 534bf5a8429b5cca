"""Debian's Chromium driven by Playwright, as the browser tests use it, and the page stubs for
what a headless browser cannot do."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import pytest
from playwright.async_api import Browser, async_playwright

__all__ = ["ARGS", "CHROMIUM", "HOOKS", "chromium"]

CHROMIUM: Final = "/usr/bin/chromium"
ARGS: Final = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Add to a context before its pages load: the sounds played and the notifications raised are
# counted (window.__played, window.__notes), the notification permission asked (__asked).
HOOKS: Final = """
window.__played = 0; window.__notes = []; window.__asked = 0;
HTMLMediaElement.prototype.play = function () { window.__played += 1; return Promise.resolve(); };
function FakeNotification(title, options) { window.__notes.push([title, options.body]); }
FakeNotification.permission = "default";
FakeNotification.requestPermission = function () {
  window.__asked += 1; FakeNotification.permission = "granted"; return Promise.resolve("granted");
};
window.Notification = FakeNotification;
"""


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} missing: ./dev test installs it (apt-get install chromium)")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()
