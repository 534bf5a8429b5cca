from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser

from tests.central.control_room import SHOTS
from tests.support.browser import chromium


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Chromium for the control room's browser tests; their screenshots go to SHOTS."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    print(f"screenshots in {SHOTS}")
    async with chromium() as b:
        yield b
