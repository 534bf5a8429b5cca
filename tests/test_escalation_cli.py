"""``gasgate escalation check|trail|outbox`` on real files and a real store."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from click.testing import CliRunner

from gateway.clock import ManualClock
from gateway.escalation import audit
from gateway.escalation.cli import escalation
from gateway.store import Store


def test_check_prints_the_schedule_and_locates_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(
        "policies:\n"
        "  - name: leak\n"
        "    steps:\n"
        "      - {after_s: 0, notify: [{to: site_contacts, via: [sms]}]}\n"
        "      - {after_s: 120, notify: [{to: duty_supervisor, via: [sms, email]}]}\n"
        "    repeat: {every_s: 300, times: 1}\n"
    )
    result = CliRunner().invoke(escalation, ["check", str(good)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "leak: until acknowledged",
        "  +     0 s  site_contacts via sms",
        "  +   120 s  duty_supervisor via sms+email",
        "  +   420 s  duty_supervisor via sms+email (repeat 1)",
    ]
    bad = tmp_path / "bad.yaml"
    bad.write_text("policies:\n  - name: leak\n    steps: []\n")
    result = CliRunner().invoke(escalation, ["check", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:3:12: policies.0.steps" in result.output


def test_trail_and_outbox_read_the_store(tmp_path: Path) -> None:
    store = Store(tmp_path / "gasgate.db")
    store.open()
    store.migrate(audit.ROOM, audit.MIGRATIONS)
    with store.transaction() as db:
        audit.note(db, "gw1-A", "step", "fired", "policy leak step 0", at=ManualClock().now())
    store.close()
    result = CliRunner().invoke(escalation, ["trail", "gw1-A", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.output == "2026-11-28 10:00:00Z  step          fired       policy leak step 0\n"
    missing = CliRunner().invoke(escalation, ["trail", "gw1-B", "--data-dir", str(tmp_path)])
    assert missing.exit_code == 1
    assert "nothing recorded about alarm 'gw1-B'" in missing.output
    result = CliRunner().invoke(escalation, ["outbox", "--data-dir", str(tmp_path)])
    assert result.output == "the outbox is empty\n"


def test_between_lists_a_time_window_in_order(tmp_path: Path) -> None:
    clock = ManualClock()
    store = Store(tmp_path / "gasgate.db")
    store.open()
    store.migrate(audit.ROOM, audit.MIGRATIONS)
    start = clock.now()
    for alarm_id, step in (("gw1-A", 0.0), ("gw1-B", 0.5), ("gw1-A", 1.0), ("gw1-B", 60.0)):
        clock.advance(step)
        with store.transaction() as db:
            audit.note(db, alarm_id, "step", "fired", at=clock.now())
    window = audit.between(store, start, start + timedelta(seconds=60))
    store.close()
    assert [(e.alarm_id, (e.at - start).total_seconds()) for e in window] == [
        ("gw1-A", 0.0),
        ("gw1-B", 0.5),
        ("gw1-A", 1.5),
    ]
