"""``kill -9`` mid-escalation: a subprocess runs the alarms room, the store and escalation (the
parts that matter here); it is killed between two steps and started again. The step that came
due while it was down fires once, at once; nobody is told twice; the gas company gets every
event, in order.

Run as a program (``python -m tests.test_escalation_restart DIR HTTP SMTP_PORT GASCO [raise]``)
it is that subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from gateway.alarms import Alarms
from gateway.bus import Bus
from gateway.clock import SystemClock
from gateway.escalation import EscalationSettings, PolicySet, build
from gateway.store import Store
from tests.support.escalation_kit import eventually, leak, registry, settings_for
from tests.support.receivers import HttpReceiver, SmtpReceiver
from tests.support.services import Mosquitto
from tests.test_escalation_gasco import gas_company

ROOT = Path(__file__).parents[1]
SUPERVISOR_S, DISPATCHER_S = 8.0, 11.0
POLICY = {
    "policies": [
        {
            "name": "leak",
            "steps": [
                {"after_s": 0, "notify": [{"to": "site_contacts", "via": ["sms"]}]},
                {
                    "after_s": SUPERVISOR_S,
                    "notify": [{"to": "duty_supervisor", "via": ["sms", "email"]}],
                },
                {
                    "after_s": DISPATCHER_S,
                    "notify": [{"to": "emergency_dispatcher", "via": ["sms"]}],
                },
            ],
        }
    ]
}


async def _child(data_dir: str, http_base: str, smtp_port: str, gasco: str, *flags: str) -> None:
    bus, clock = Bus(), SystemClock()
    store = Store(Path(data_dir) / "gasgate.db")
    store.open()
    alarms = Alarms(bus, store, clock, "gw1")
    settings = EscalationSettings.model_validate(
        settings_for(lambda path: f"{http_base}{path}", int(smtp_port), gasco)
    )
    service = build(
        settings,
        bus=bus,
        store=store,
        clock=clock,
        registry=registry(),
        desk=alarms,
        gateway_id="gw1",
        policies=PolicySet.model_validate(POLICY),
    )
    await alarms.start()
    await service.start()
    alarms.announce_restored()  # as gateway/app.py does after every room started
    if "raise" in flags:
        bus.publish(leak(clock.now()))
    await bus.join()
    print("READY", flush=True)
    await asyncio.Event().wait()  # until killed


def _spawn(
    tmp: Path, http: HttpReceiver, smtp: SmtpReceiver, broker: Mosquitto, *flags: str
) -> subprocess.Popen[str]:
    args = [str(tmp), f"http://127.0.0.1:{http.port}", str(smtp.port), broker.url, *flags]
    with (tmp / "child.log").open("a") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.test_escalation_restart", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "READY"
    return proc


def _sent(tmp: Path, lane: str) -> int:
    """Rows of ``lane`` the child recorded as sent (read-only, beside the running child)."""
    try:
        with contextlib.closing(
            sqlite3.connect(f"file:{tmp / 'gasgate.db'}?mode=ro", uri=True)
        ) as db:
            row = db.execute(
                "SELECT COUNT(*) FROM outbox WHERE lane = ? AND status = 'sent'", (lane,)
            ).fetchone()
    except sqlite3.OperationalError:  # not created yet, or the table not yet migrated
        return 0
    count: int = row[0]
    return count


def _kill9(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()


async def test_kill_9_between_steps_resumes_once(tmp_path: Path, own_mosquitto: Mosquitto) -> None:
    with HttpReceiver().running() as http, SmtpReceiver().running() as smtp:
        async with gas_company(own_mosquitto) as company:
            first = _spawn(tmp_path, http, smtp, own_mosquitto, "raise")
            started = time.monotonic()  # the leak was raised just before READY
            try:
                # Killed once the site's texts are recorded as sent (a kill between a send
                # and its record resends it: the documented at-least-once window, which the
                # receiver closes with the delivery key; not what this test is about).
                await eventually(lambda: _sent(tmp_path, "sms") == 2, what="site SMS recorded")
            finally:
                _kill9(first)
            assert time.monotonic() - started < SUPERVISOR_S, "machine too slow for this test"
            await asyncio.sleep(SUPERVISOR_S + 0.5 - (time.monotonic() - started))

            second = _spawn(tmp_path, http, smtp, own_mosquitto)  # the supervisor step is due
            try:
                await eventually(lambda: len(smtp.messages()) == 1, what="supervisor e-mail")
                await eventually(lambda: "13900000002" in phones(http), what="dispatcher SMS")
                await eventually(lambda: len(company.events()) >= 3, what="escalated events")
                await asyncio.sleep(1.0)  # anything duplicated would arrive by now
            finally:
                _kill9(second)

    assert sorted(phones(http)) == ["13800000001", "13800000002", "13900000001", "13900000002"]
    assert len(smtp.messages()) == 1
    revisions = [e["revision"] for e in company.events()]
    assert sorted(set(revisions)) == [1, 2, 3]
    assert revisions == sorted(revisions)
    assert company.events()[0]["transition"] == "raised"
    assert {e["escalation"]["step"] for e in company.events() if e["escalation"]} == {1, 2}


def phones(http: HttpReceiver) -> list[str]:
    return [json.loads(r.body)["phone"] for r in http.received("/sms")]


if __name__ == "__main__":
    asyncio.run(_child(*sys.argv[1:]))
