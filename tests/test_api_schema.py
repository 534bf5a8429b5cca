"""Schemathesis against the OpenAPI document of a real ``gasgate run`` process: requests
generated from the document (valid and not) for every operation never get a 5xx, and the
process stops cleanly afterwards. Bounded: a few dozen examples per operation."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from gateway.store import Store
from gateway.users import Role, Users
from tests.support.api_world import PASSWORD, write_world
from tests.support.services import Mosquitto

EXAMPLES: Final = 20
STREAMING: Final = {"/api/events"}  # never ends by design; covered by the console test


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def served(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[tuple[str, dict[str, str]]]:
    data = tmp_path / "data"
    store = Store(data / "gasgate.db")
    store.open()
    users = Users(store)
    users.prepare()
    tokens = {}
    for name, role in (("super", Role.SUPERVISOR), ("installer", Role.INSTALLER)):
        users.add(name, role, PASSWORD, datetime.now(UTC))
        tokens[name] = users.issue_token(name, datetime.now(UTC))
    store.close()
    port = _free_port()
    env = {
        "GASGATE_MQTT": mosquitto.url,
        "GASGATE_DATA_DIR": str(data),
        "GASGATE_REGISTRY": str(write_world(tmp_path / "registry")),
        "GASGATE_GATEWAY_ID": f"gw-{uuid.uuid4().hex[:12]}",
        "GASGATE_HTTP_PORT": str(port),
        "GASGATE_LOG_FORMAT": "text",
        "GASGATE_LOG_LEVEL": "warning",
        "PATH": "/usr/bin:/bin",
    }
    gasgate = Path(sys.executable).parent / "gasgate"
    log = (tmp_path / "gateway.log").open("w")
    process = subprocess.Popen([str(gasgate), "run"], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, (tmp_path / "gateway.log").read_text()
            assert time.monotonic() < deadline, "gasgate run never became ready"
            time.sleep(0.1)
        yield url, tokens
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=30)
        log.close()
    assert code == 0, (tmp_path / "gateway.log").read_text()
    assert "Traceback" not in (tmp_path / "gateway.log").read_text()


def _server_errors(
    operation: schemathesis.APIOperation, url: str, token: str, mode: schemathesis.GenerationMode
) -> tuple[int, list[str]]:
    """How many requests were generated for ``operation``, and every one that got a 5xx."""
    failures: list[str] = []
    calls = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def exercise(data: st.DataObject) -> None:
        case = data.draw(operation.as_strategy(mode))
        calls.append(case)
        response = case.call(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=20)
        if response.status_code >= 500:
            failures.append(f"{case.method} {case.formatted_path}: {response.status_code}")

    try:
        exercise()
    except Unsatisfiable:
        # Nothing invalid can be written for it (a free-text path parameter): fine.
        assert mode is schemathesis.GenerationMode.NEGATIVE, operation.label
    return len(calls), failures


def test_no_generated_request_gets_a_server_error(served: tuple[str, dict[str, str]]) -> None:
    url, tokens = served
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    checked = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in STREAMING:
            continue
        who = "installer" if operation.path == "/api/registry/import" else "super"
        for mode in schemathesis.GenerationMode:
            if mode is schemathesis.GenerationMode.NEGATIVE and not _has_inputs(operation):
                continue  # nothing to get wrong
            calls, failures = _server_errors(operation, url, tokens[who], mode)
            assert failures == []
            assert calls > 0 or mode is schemathesis.GenerationMode.NEGATIVE
            checked.append(f"{operation.label} ({mode.value}: {calls})")
    assert sum(not c.endswith(": 0)") for c in checked) >= 25, checked


def _has_inputs(operation: schemathesis.APIOperation) -> bool:
    return any(True for _ in operation.iter_parameters()) or bool(
        operation.get_request_payload_content_types()
    )
