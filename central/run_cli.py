"""``gasgate central run``: one monitoring center instance (docs/central.md).

Settings: defaults < environment (``GASGATE_CENTRAL_`` + the name in capitals) < flags. SIGINT
or SIGTERM stops it cleanly (exit status 0); settings that cannot be used stop it before it
starts (status 1). The instance's rooms (FastAPI, uvicorn, gmqtt) load only when it runs.
"""

from __future__ import annotations

import asyncio
import importlib

import click
from pydantic import ValidationError

from central.settings import CentralSettings
from gateway.errors import GasgateError
from gateway.logs import setup_logging
from gateway.settings import refuse_placeholder_secrets

__all__ = ["run_command"]


@click.command("run")
@click.option("--db", help="PostgreSQL DSN [env GASGATE_CENTRAL_DB].")
@click.option("--gasco-mqtt", help="Gas company broker URL [env GASGATE_CENTRAL_GASCO_MQTT].")
@click.option("--http-host", help="API address, default 127.0.0.1 [env GASGATE_CENTRAL_HTTP_HOST].")
@click.option(
    "--http-port", type=int, help="API port, default 8090 [env GASGATE_CENTRAL_HTTP_PORT]."
)
@click.option("--instance", help="This instance's name, default the host name [env ..._INSTANCE].")
@click.option("--group", help="The instances' $share group [env GASGATE_CENTRAL_GROUP].")
def run_command(**flags: str | int | None) -> None:
    """Run one monitoring center instance: the gateways' streams into PostgreSQL, officer
    commands out, the API and the control room."""
    try:
        settings = CentralSettings.load(flags)
        refuse_placeholder_secrets(settings)  # a deployment's example values are never live
        setup_logging(settings.log_level, settings.log_format)
        app = importlib.import_module("central.app")
        asyncio.run(app.run_central(settings))
    except ValidationError as exc:
        raise click.ClickException(f"settings: {exc}") from None
    except GasgateError as exc:
        raise click.ClickException(str(exc)) from None
