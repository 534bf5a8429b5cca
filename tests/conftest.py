from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.services import Mosquitto


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """One private Mosquitto for the session; tests that stop a broker start their own."""
    with Mosquitto(tmp_path_factory.mktemp("mosquitto")).running() as broker:
        yield broker


@pytest.fixture
def own_mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker this test may stop and restart."""
    with Mosquitto(tmp_path).running() as broker:
        yield broker
