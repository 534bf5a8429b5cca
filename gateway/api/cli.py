"""``gasgate user add|token|list`` and ``gasgate audit``: people and the coverage audit, from
the command line, on the gateway's data directory (safe beside a running gateway: SQLite WAL).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO, cast

import click

from gateway.audit import AuditFormat, parse_since, run_audit
from gateway.errors import GasgateError
from gateway.registry import Registry
from gateway.registry.cli import existing_store
from gateway.users import Role, Users

__all__ = ["audit", "user"]

_data_dir = click.option(
    "--data-dir",
    default=Path("gasgate-data"),
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    envvar="GASGATE_DATA_DIR",
    help="The gateway's data directory (its store is gasgate.db there).",
)


@contextmanager
def _users(data_dir: Path) -> Iterator[Users]:
    store = existing_store(data_dir)
    try:
        store.open()
        users = Users(store)
        users.prepare()
        yield users
    except GasgateError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()


@click.group("user")
def user() -> None:
    """Console and API users: duty_officer, supervisor, regulator, installer, site_user."""


@user.command("add")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice([r.value for r in Role]))
@click.option("--site", "site_id", default=None, help="The site of a site_user.")
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from standard input (scripts)."
)
@_data_dir
def add(name: str, role: str, site_id: str | None, password_stdin: bool, data_dir: Path) -> None:
    """Add user NAME with ROLE; asks for the password (hashed with Argon2id)."""
    with _users(data_dir) as users:  # first: no password asked for a store that is not there
        if site_id is not None and role == Role.SITE_USER:
            _check_site(users, site_id)
        password = sys.stdin.readline().rstrip("\n") if password_stdin else _ask_password()
        added = users.add(name, Role(role), password, datetime.now(UTC), site_id)
    where = f" of site {added.site_id}" if added.site_id else ""
    click.echo(f"user {added.name} added: {added.role}{where}")


def _check_site(users: Users, site_id: str) -> None:
    """A site_user's site must be one the stored registry has: a mistyped site would give a
    user who sees nothing."""
    registry = Registry.load(users.store)
    if registry.site(site_id) is None:
        raise click.ClickException(
            f"site {site_id!r} is not in the registry stored in {users.store.path.absolute()}"
            f" ({len(registry.sites())} sites, generation {registry.generation}); see them"
            " with `gasgate registry show`, or import the registry first"
        )


def _ask_password() -> str:
    try:
        return str(click.prompt("password", hide_input=True, confirmation_prompt=True))
    except click.Abort:
        # No terminal (a script, docker exec without -t): the prompt reads end of input.
        raise click.ClickException(
            "no password given: without a terminal, pipe it in with --password-stdin"
        ) from None


@user.command("token")
@click.argument("name")
@_data_dir
def token(name: str, data_dir: Path) -> None:
    """Issue an API token for NAME (printed once; only its hash is kept)."""
    with _users(data_dir) as users:
        click.echo(users.issue_token(name, datetime.now(UTC)))


@user.command("list")
@_data_dir
def list_(data_dir: Path) -> None:
    """Every user and role."""
    with _users(data_dir) as users:
        for u in users.all():
            click.echo(f"{u.name}\t{u.role}\t{u.site_id or ''}")


@click.command("audit")
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "html", "json"]), default="json", show_default=True
)
@click.option("--district", default=None, help="Only this district's sites.")
@click.option("--since", default=None, help="Alarms since YYYY-MM-DD or an ISO time (UTC).")
@click.option("-o", "--output", type=click.File("w", encoding="utf-8"), default="-")
@_data_dir
def audit(
    fmt: str, district: str | None, since: str | None, output: TextIO, data_dir: Path
) -> None:
    """The coverage audit: kits, devices online in 24 h, service life, cylinders, alarms."""
    try:
        start = parse_since(since) if since else None
    except ValueError:
        raise click.BadParameter(
            f"{since!r}: not YYYY-MM-DD or an ISO time", param_hint="--since"
        ) from None
    store = existing_store(data_dir)
    try:
        store.open()
        report = run_audit(Registry.load(store), store, datetime.now(UTC), start, district)
    except GasgateError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()
    output.write(report.render(cast(AuditFormat, fmt)))
