"""``gasgate central ...``: the monitoring center's commands (docs/central.md)."""

from __future__ import annotations

import click

from central.audit_cli import audit_command
from central.db import db
from central.fleet import simulate_command
from central.run_cli import retire_command, run_command
from central.users import user

__all__ = ["central"]


@click.group()
def central() -> None:
    """The gas company's monitoring center over every gateway (PostgreSQL + MQTT 5)."""


central.add_command(user)
central.add_command(simulate_command)
central.add_command(db)
central.add_command(audit_command)
central.add_command(run_command)
central.add_command(retire_command)
