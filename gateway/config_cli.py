"""``gasgate config``: check a gateway's settings and the files they name before starting it, and
show the effective settings (defaults < file < env), documented from the settings model itself."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel, SecretStr

from gateway.app import GatewaySettings
from gateway.errors import ConfigError, GasgateError
from gateway.escalation import load_policies
from gateway.logs import redact
from gateway.registry import import_dir
from gateway.settings import PLACEHOLDER, InvalidSettings, is_placeholder, placeholder_secrets
from rules.schema import check_rules, rule_files

__all__ = ["config"]

_CONFIG = click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML file of settings, as gasgate run takes it (env GASGATE_* applies too).",
)


@click.group("config")
def config() -> None:
    """The gateway's settings: check them, or show what is in force."""


def _load(config_file: Path | None) -> GatewaySettings:
    try:
        return GatewaySettings.load(config_file, {})
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _checked(config_file: Path | None) -> tuple[GatewaySettings | None, list[str]]:
    """The settings and every problem in them. Invalid settings are reported and taken at their
    defaults, so that the files the valid ones name are still checked in the same pass."""
    try:
        return GatewaySettings.load(config_file, {}), []
    except InvalidSettings as exc:
        problems = exc.problems
        try:
            return GatewaySettings.load(config_file, {}, defaults_for=exc.fields), problems
        except ConfigError:
            return None, problems
    except ConfigError as exc:  # the file itself cannot be read or parsed
        return None, [str(exc)]


def _problems(settings: GatewaySettings) -> list[str]:
    """Every problem in the files the settings name, each located (file:line:column)."""
    problems: list[str] = []
    registry, rules_dir = settings.registry, settings.rules_dir
    if registry is not None:
        problems += _each(registry, lambda: [str(p) for p in import_dir(registry).errors])
    if rules_dir is not None:
        problems += _each(rules_dir, lambda: [str(p) for p in check_rules(rule_files(rules_dir))])
    policies = settings.escalation.policies_file
    if policies is not None:
        problems += _each(policies, lambda: _policies(policies))
    return problems


def _policies(path: Path) -> list[str]:
    load_policies(path)  # its ConfigError names file:line:column of every problem
    return []


def _each(path: Path, check: Callable[[], list[str]]) -> list[str]:
    """One file's problems; a file that cannot be read at all is one problem, not the end."""
    try:
        return check()
    except GasgateError as exc:
        return [str(exc)]
    except OSError as exc:
        return [f"{path}: cannot be read: {exc.strerror}"]


@config.command("check")
@_CONFIG
def check(config_file: Path | None) -> None:
    """Validate the settings and the registry, rules and policy files they name; exit 1 on any
    problem, listing each with its file, line and column. Every problem is listed in one pass,
    including passwords and tokens left at a placeholder such as change-me."""
    settings, problems = _checked(config_file)
    if settings is not None:
        problems += [f"{name}: {PLACEHOLDER}" for name in placeholder_secrets(settings)]
        problems += _problems(settings)
    for problem in problems:
        click.echo(problem, err=True)
    if problems or settings is None:
        raise click.ClickException(f"{len(problems)} problem(s)")
    click.echo(f"settings ok: gateway {settings.gateway_id}, data in {settings.data_dir}")


@config.command("placeholders")
@click.argument("variables", nargs=-1, required=True)
def placeholders(variables: tuple[str, ...]) -> None:
    """Exit 1 naming every environment variable of VARIABLES that is unset, empty or a
    placeholder such as change-me: the stack's pre-flight for services that would take any
    password given (InfluxDB's and Grafana's admin passwords)."""
    bad = [name for name in variables if is_placeholder(os.environ.get(name, ""))]
    if bad:
        raise click.ClickException(f"refusing to start: {', '.join(bad)}: {PLACEHOLDER}")
    click.echo(f"no placeholder in {', '.join(variables)}")


@config.command("show")
@_CONFIG
def show(config_file: Path | None) -> None:
    """Every setting in force, secrets masked, with what it means."""
    settings = _load(config_file)
    for name, field in GatewaySettings.model_fields.items():
        value = _shown(getattr(settings, name))
        click.echo(f"{name} = {value}")
        if field.description:
            click.echo(f"    {field.description}")


def _shown(value: Any) -> str:
    if isinstance(value, SecretStr):
        return "***" if value.get_secret_value() else "(unset)"
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", exclude_defaults=True) or "(defaults)"
    return redact(str(value))
