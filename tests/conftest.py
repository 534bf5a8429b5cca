from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import postgres
from tests.support.receivers import HttpReceiver, SmtpReceiver
from tests.support.services import Mosquitto

# The interlock process (on by default in `gasgate run`) adds close commands of its own to the
# ones most tests count; its own tests turn it on (tests/test_interlock*.py). Subprocesses
# started by the tests inherit this.
os.environ["GASGATE_INTERLOCK"] = "off"


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


@pytest.fixture
def http() -> Iterator[HttpReceiver]:
    """A real HTTP receiver (webhooks: SMS, IM robots, work orders) recording every request."""
    with HttpReceiver().running() as receiver:
        yield receiver


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    """A real SMTP server (aiosmtpd) keeping every message it accepts."""
    with SmtpReceiver().running() as receiver:
        yield receiver


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """One private PostgreSQL for the session (or ``GASGATE_TEST_PG_DSN``): a server DSN."""
    with postgres.server() as dsn:
        yield dsn


@pytest.fixture
def pg_dsn(pg_server: str) -> str:
    """A new, empty database of its own for this test."""
    return postgres.fresh_database(pg_server)
