"""``gasgate escalation check|trail|outbox``: check a policy file, read an alarm's audit trail,
see what waits for delivery. The trail and outbox commands only read the store, so they are
safe beside a running gateway (SQLite WAL)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from gateway.errors import GasgateError
from gateway.escalation import audit, outbox
from gateway.escalation.policy import load_policies
from gateway.registry.cli import existing_store
from gateway.store import Store

__all__ = ["escalation"]

_data_dir = click.option(
    "--data-dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    envvar="GASGATE_DATA_DIR",
    help="The gateway's data directory (its store is gasgate.db there).",
)


@click.group("escalation")
def escalation() -> None:
    """Escalation to the gas company and to people: policies, audit trail, outbox."""


@escalation.command("check")
@click.argument("policy_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def check(policy_file: Path) -> None:
    """Validate POLICY_FILE and print each policy's schedule (exit 1 on an error)."""
    try:
        policies = load_policies(policy_file)
    except GasgateError as exc:
        raise click.ClickException(str(exc)) from None
    for policy in policies.policies:
        stops = " or ".join(s.value for s in policy.stop_on)
        click.echo(f"{policy.name}: until {stops}")
        for step in policy.schedule():
            targets = ", ".join(f"{n.to.value} via {'+'.join(n.via)}" for n in step.notify)
            again = f" (repeat {step.repeat})" if step.repeat else ""
            click.echo(f"  +{step.after_s:>6.0f} s  {targets}{again}")


@escalation.command("trail")
@click.argument("alarm_id")
@_data_dir
def trail(alarm_id: str, data_dir: Path) -> None:
    """Print everything recorded about ALARM_ID: steps, notifications, commands, times."""
    with _store(data_dir) as store:
        entries = audit.trail(store, alarm_id)
    if not entries:
        raise click.ClickException(f"nothing recorded about alarm {alarm_id!r}")
    for e in entries:
        where = " ".join(x for x in (e.channel, e.recipient) if x)
        click.echo(f"{e.at:%Y-%m-%d %H:%M:%S}Z  {e.kind:<13} {e.result:<9} {where}  {e.detail}")


@escalation.command("outbox")
@_data_dir
def outbox_(data_dir: Path) -> None:
    """Count the outbox's rows by channel and status (pending rows wait for delivery)."""
    with _store(data_dir) as store:
        rows = store.db.execute(
            "SELECT lane, status, COUNT(*) FROM outbox GROUP BY lane, status ORDER BY lane, status"
        ).fetchall()
    if not rows:
        click.echo("the outbox is empty")
    for lane, status, count in rows:
        click.echo(f"{lane:<16} {status:<10} {count}")


@contextmanager
def _store(data_dir: Path) -> Iterator[Store]:
    store = existing_store(data_dir)
    try:
        store.open()
        store.migrate(audit.ROOM, audit.MIGRATIONS)
        store.migrate(outbox.ROOM, outbox.MIGRATIONS)
        yield store
    except GasgateError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()
