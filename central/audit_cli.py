"""``gasgate central audit``: the coverage and response audit (central/audit.py) to a file or
standard output, for a regulator or the gas company's own records."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click
import psycopg
from psycopg_pool import AsyncConnectionPool

from central.audit import DEFAULT_SILENT_AFTER_S, audit_report
from central.audit_render import FORMATS, AuditFormat, Rendered, render

__all__ = ["audit_command"]


@click.command("audit")
@click.option("--db", "dsn", envvar="GASGATE_CENTRAL_DB", required=True, help="PostgreSQL DSN.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="html", show_default=True)
@click.option("--district", default=None, help="One district only (as the sites name it).")
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="Count incidents opened from this local day on (YYYY-MM-DD); default: all.",
)
@click.option("--lang", type=click.Choice(["zh", "zh-CN", "en"]), default="zh", show_default=True)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Write here instead of standard output.",
)
@click.option(
    "--tz",
    envvar="GASGATE_CENTRAL_TIMEZONE",
    default="Asia/Shanghai",
    show_default=True,
    help="IANA time zone of the report's times and months.",
)
@click.option(
    "--silent-after-s",
    envvar="GASGATE_CENTRAL_SILENT_AFTER_S",
    type=click.FloatRange(min=1),
    default=DEFAULT_SILENT_AFTER_S,
    show_default=True,
    help="A gateway heard from less recently than this is silent: its sites count as unknown.",
)
def audit_command(
    *,
    dsn: str,
    fmt: AuditFormat,
    district: str | None,
    since: datetime | None,
    lang: str,
    out: Path | None,
    tz: str,
    silent_after_s: float,
) -> None:
    """Coverage (protected ÷ registered, by district and site type) and response times
    (p50/p90, closed-loop rate, by district and month) as csv, html or json."""
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise click.BadParameter(f"unknown time zone {tz!r}", param_hint="--tz") from exc
    day = since.date() if since else None
    try:
        rendered = asyncio.run(
            _audit(
                dsn,
                fmt=fmt,
                district=district,
                since=day,
                lang=lang,
                tz=zone,
                silent_after_s=silent_after_s,
            )
        )
    except psycopg.errors.UndefinedTable as exc:
        raise click.ClickException(
            "the database has no gasgate schema: run `gasgate central db upgrade` first"
        ) from exc
    except psycopg.OperationalError as exc:
        raise click.ClickException(f"cannot reach the database: {exc}") from exc
    if out is None:
        sys.stdout.buffer.write(rendered.body)
        sys.stdout.buffer.flush()
    else:
        out.write_bytes(rendered.body)
        click.echo(f"wrote {out} ({len(rendered.body):,} bytes)", err=True)


async def _audit(
    dsn: str,
    *,
    fmt: AuditFormat,
    district: str | None,
    since: date | None,
    lang: str,
    tz: ZoneInfo,
    silent_after_s: float,
) -> Rendered:
    # One connection is all a single report needs; a short timeout so a wrong DSN says so.
    pool: AsyncConnectionPool[psycopg.AsyncConnection[tuple[object, ...]]] = AsyncConnectionPool(
        dsn, min_size=1, max_size=1, open=False, timeout=10
    )
    async with pool:
        report = await audit_report(
            pool,
            district=district,
            since=since,
            now=datetime.now(UTC),
            tz=tz,
            silent_after_s=silent_after_s,
        )
    return render(report, fmt, lang)
