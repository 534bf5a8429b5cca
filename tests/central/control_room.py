"""A control room with a real gateway behind it, for the browser tests of issue 14.

    kit devices (simulated, MQTT-native) → site Mosquitto → ``gasgate run`` (a process of its
    own, escalation with an SMS webhook and the alert page link) → gas company Mosquitto →
    :class:`central.app.Central` in process (PostgreSQL, link, commands, HTTP) → Chromium

The gateway's registry is :mod:`tests.support.kit_site` (the restaurant "Golden Wok", its
detector closing two valves; contact Li Wei, Chinese). Its first SMS to the contact carries the
alert page link, signed with :data:`SECRET`, which the center shares.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import httpx
import psycopg
import yaml
from pydantic import SecretStr

from central.app import Central
from central.db import upgrade
from central.settings import CentralSettings
from central.users import add_user
from gateway.alert_link import AlertGrant, issue
from gateway.users import Role
from tests.support.escalation_kit import eventually
from tests.support.kit_site import SITE, write_registry
from tests.support.receivers import HttpReceiver
from tests.support.services import Mosquitto, free_port

__all__ = ["HOTLINE", "PASSWORD", "SECRET", "SHOTS", "Room", "api", "room"]

GASGATE: Final = Path(sys.executable).parent / "gasgate"
SHOTS: Final = Path(__file__).resolve().parents[2] / "test-artifacts" / "central"  # gitignored
SECRET: Final = "control-room-test-alert-secret"
HOTLINE: Final = "95158"
PASSWORD: Final = "a long enough password"
USERS: Final = {"wang": Role.DUTY_OFFICER, "zhang": Role.SUPERVISOR}
# The leak tells the site's contacts by SMS at once (the alert page link rides on it).
_POLICIES: Final = """\
policies:
  - name: leak
    match: {alarm_types: [leak_high]}
    steps:
      - after_s: 0
        notify: [{to: site_contacts, via: [sms]}]
"""


@dataclass
class Room:
    url: str  # the center's console, API and alert page
    dsn: str
    gateway_id: str
    site_mqtt: str
    sms: HttpReceiver

    def rows(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn) as conn:
            return conn.execute(sql, args).fetchall()

    def sms_links(self) -> list[str]:
        """The alert page links of the SMS sent so far, in order."""
        found = (re.search(r"https?://\S+/a/[A-Za-z0-9_-]+", r.json()["text"]) for r in
                 self.sms.received("/sms"))  # fmt: skip
        return [m.group(0) for m in found if m]

    def token(self, *, lang: str = "zh", ttl_s: float = 3600, secret: str = SECRET) -> str:
        """A link for the restaurant's open leak minted here (a forged one with another
        secret, an expired one with a negative ``ttl_s``)."""
        ((alarm_id,),) = self.rows(
            "SELECT alarm_id FROM alarms WHERE site_id = %s AND alarm_type = 'leak_high'", SITE
        )
        expires = datetime.now(UTC) + timedelta(seconds=ttl_s)
        return issue(secret.encode(), AlertGrant(alarm_id, 0, lang, expires))


@contextlib.asynccontextmanager
async def room(
    tmp_path: Path, dsn: str, gasco: Mosquitto, site: Mosquitto, *, rules: str = "",
    **gateway: object,
) -> AsyncIterator[Room]:  # fmt: skip
    """The whole chain running; ``rules`` a rule file layered over the gateway's built-in
    ones, ``gateway`` more of its settings. Yields once the center has heard the gateway come
    online."""
    upgrade(dsn)
    _users(dsn)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    central = Central(
        CentralSettings(
            db=dsn,
            gasco_mqtt=gasco.url,
            http_port=port,
            instance="room",
            group="room",
            alert_secret=SecretStr(SECRET),
            hotline=HOTLINE,
            timezone="Asia/Shanghai",
        )
    )
    await central.start()
    try:
        with HttpReceiver().running() as sms:
            gateway_id = f"gw-{uuid.uuid4().hex[:8]}"
            config = _gateway_config(
                tmp_path, gateway_id, site.url, gasco.url, url, sms, rules, gateway
            )
            with _process(tmp_path, config):
                await _online(dsn, gateway_id)
                yield Room(url, dsn, gateway_id, site.url, sms)
    finally:
        await central.stop()


def _users(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name, role in USERS.items():
            add_user(conn, name, role, PASSWORD, districts=[], at=datetime.now(UTC))


def _gateway_config(
    tmp_path: Path, gateway_id: str, site: str, gasco: str, center: str, sms: HttpReceiver,
    rules: str, more: dict[str, object],
) -> Path:  # fmt: skip
    (tmp_path / "policies.yaml").write_text(_POLICIES)
    settings: dict[str, Any] = {
        "gateway_id": gateway_id,
        "mqtt": site,
        "data_dir": str(tmp_path / "gateway-data"),
        "registry": str(write_registry(tmp_path / "registry")),
        "http_port": free_port(),
        "log_format": "text",
        "escalation": {
            "hotline": HOTLINE,
            "policies_file": str(tmp_path / "policies.yaml"),
            "gasco": {"url": gasco},
            "channels": {"sms": {"kind": "webhook", "template": "sms", "url": sms.url("/sms")}},
            "alert_page": {"base_url": center, "secret": SECRET},
        },
        **more,
    }
    if rules:
        (tmp_path / "rules").mkdir()
        (tmp_path / "rules" / "room.yaml").write_text(rules)
        settings["rules_dir"] = str(tmp_path / "rules")
    path = tmp_path / "gasgate.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


@contextlib.contextmanager
def _process(tmp_path: Path, config: Path) -> Iterator[None]:
    """``gasgate run`` with its output in gateway.log (printed when the test fails)."""
    log_path = tmp_path / "gateway.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [str(GASGATE), "run", "--config", str(config)], stdout=log, stderr=log,
            env={**os.environ, "GASGATE_LOG_FORMAT": "text"},
        )  # fmt: skip
    try:
        yield
    except BaseException:
        print(f"--- gateway.log\n{log_path.read_text(errors='replace')[-4000:]}")
        raise
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def _online(dsn: str, gateway_id: str) -> None:
    def online() -> bool:
        with psycopg.connect(dsn) as conn:
            row = conn.execute(
                "SELECT online FROM gateways WHERE gateway_id = %s", (gateway_id,)
            ).fetchone()
        return bool(row and row[0])

    await eventually(online, 60, f"{gateway_id} online at the center")


async def api(r: Room, user: str, method: str, path: str, body: object = None) -> Any:
    """The center's JSON API as ``user`` (a session of its own, logged in with the password)."""
    async with httpx.AsyncClient(base_url=r.url, timeout=10) as client:
        login = await client.post("/api/login", json={"name": user, "password": PASSWORD})
        login.raise_for_status()
        headers = {"X-CSRF-Token": login.json()["csrf"]}
        answer = await client.request(method, path, json=body, headers=headers)
        answer.raise_for_status()
        return answer.json()
