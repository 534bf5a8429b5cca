"""The ``gasgate`` console script: one group, one subcommand per process or tool."""

from __future__ import annotations

import click

from central.cli import central
from firmware_bridge.cli import bridge
from firmware_bridge.simulator.cli import simulate
from gateway.api.cli import audit, user
from gateway.config_cli import config
from gateway.demo import demo
from gateway.escalation.cli import escalation
from gateway.interlock.cli import interlock
from gateway.registry.cli import registry
from gateway.run_cli import run
from rules.cli import rules

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="gasgate")
def main() -> None:
    """gasgate: safety gateway for bottled LPG cylinder kits."""


main.add_command(bridge)
main.add_command(central)
main.add_command(config)
main.add_command(escalation)
main.add_command(interlock)
main.add_command(demo)
main.add_command(registry)
main.add_command(simulate)
main.add_command(rules)
main.add_command(run)
main.add_command(user)
main.add_command(audit)
