"""``gasgate rules ...``: check rule files before they reach a gateway."""

from __future__ import annotations

from pathlib import Path

import click

from rules.schema import DEFAULT_RULES_FILE, check_rules, rule_files

__all__ = ["rules"]


@click.group()
def rules() -> None:
    """Alarm rules: thresholds, hold times, per-site-type and per-site overrides."""


@rules.command("check")
@click.argument(
    "directory",
    required=False,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
def check(directory: Path | None) -> None:
    """Validate the built-in rules layered with every *.yaml in DIRECTORY.

    Prints every problem as file:line:column: field: message; exits 1 if there is any.
    """
    files = rule_files(directory) if directory is not None else []
    files = [f for f in files if f.resolve() != DEFAULT_RULES_FILE.resolve()]
    problems = check_rules(files)
    for problem in problems:
        click.echo(str(problem), err=True)
    if problems:
        raise SystemExit(1)
    names = ", ".join(str(f) for f in (DEFAULT_RULES_FILE, *files))
    click.echo(f"ok: {names}")
