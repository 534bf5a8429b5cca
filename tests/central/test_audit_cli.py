"""``gasgate central audit`` against a real PostgreSQL (the city of audit_seed.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import psycopg
from click.testing import CliRunner

from central.audit_cli import audit_command
from tests.central.audit_seed import LIANGXI, create_schema, seed_city


def test_audit_json_to_stdout_and_html_to_a_file(pg_dsn: str, tmp_path: Path) -> None:
    create_schema(pg_dsn)
    seed_city(pg_dsn)
    with psycopg.connect(pg_dsn) as conn:  # the CLI's "now" is the real clock: make them silent
        conn.execute("UPDATE gateways SET last_seen = '2020-01-01T00:00Z'")
    runner = CliRunner()
    result = runner.invoke(
        audit_command,
        ["--db", pg_dsn, "--format", "json", "--district", LIANGXI, "--since", "2026-11-01"],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["district"], data["since"], data["timezone"]) == (
        LIANGXI,
        "2026-11-01",
        "Asia/Shanghai",
    )
    total = next(c for c in data["coverage"] if c["district"] is None and c["site_type"] is None)
    assert (total["registered"], total["protected"], total["unknown_no_recent_report"]) == (
        4,
        0,
        4,
    )
    out = tmp_path / "audit.html"
    result = runner.invoke(
        audit_command,
        [
            "--db",
            pg_dsn,
            "--format",
            "html",
            "--lang",
            "en",
            "--tz",
            "Europe/Berlin",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert '<html lang="en">' in html
    # Times in the asked zone, named as people say it (its abbreviation and offset).
    assert re.search(r"\(CES?T, UTC\+0[12]:00\)", html), html[-300:]
    csv = tmp_path / "audit.csv"
    result = runner.invoke(audit_command, ["--db", pg_dsn, "--format", "csv", "--out", str(csv)])
    assert result.exit_code == 0, result.output
    assert csv.read_bytes().startswith(b"\xef\xbb\xbfsection,report\r\n")


def test_audit_says_what_is_wrong(pg_dsn: str) -> None:
    runner = CliRunner()
    result = runner.invoke(audit_command, ["--db", pg_dsn, "--format", "json"])
    assert result.exit_code == 1
    assert "gasgate central db upgrade" in result.output
    result = runner.invoke(audit_command, ["--db", pg_dsn, "--tz", "Mars/Olympus"])
    assert result.exit_code == 2
    assert "unknown time zone" in result.output


def test_registered_under_gasgate_central() -> None:
    from central.cli import central  # noqa: PLC0415 - the group, as gasgate loads it

    assert central.commands["audit"] is audit_command
