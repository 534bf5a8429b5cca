"""``gasgate escalation check|trail|outbox`` on real files and a real store."""

from __future__ import annotations

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
