"""``gasgate central run``: one monitoring center instance (docs/central.md).

Settings: defaults < environment (``GASGATE_CENTRAL_`` + the name in capitals) < flags. SIGINT
or SIGTERM stops it cleanly (exit status 0); settings that cannot be used stop it before it
starts (status 1). The instance's rooms (FastAPI, uvicorn, gmqtt) load only when it runs.
"""

from __future__ import annotations

import asyncio
import importlib

import click
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from central.db import open_pool
from central.ingest import Ingest
from central.link import Link
from central.metrics import CentralMetrics
from central.settings import CentralSettings
from gateway.errors import GasgateError
from gateway.logs import setup_logging
from gateway.settings import refuse_placeholder_secrets

__all__ = ["retire_command", "run_command"]


@click.command("run")
@click.option("--db", help="PostgreSQL DSN [env GASGATE_CENTRAL_DB].")
@click.option("--gasco-mqtt", help="Gas company broker URL [env GASGATE_CENTRAL_GASCO_MQTT].")
@click.option("--http-host", help="API address, default 127.0.0.1 [env GASGATE_CENTRAL_HTTP_HOST].")
@click.option(
    "--http-port", type=int, help="API port, default 8090 [env GASGATE_CENTRAL_HTTP_PORT]."
)
@click.option("--instance", help="This instance's name, default the host name [env ..._INSTANCE].")
@click.option("--group", help="The instances' $share group [env GASGATE_CENTRAL_GROUP].")
@click.option(
    "--map-tile-url",
    help="Tiles for the control room's map, http(s)://host/{z}/{x}/{y}.png; default none "
    "[env GASGATE_CENTRAL_MAP_TILE_URL].",
)
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


@click.command("retire")
@click.option("--db", help="PostgreSQL DSN [env GASGATE_CENTRAL_DB].")
@click.option("--gasco-mqtt", help="Gas company broker URL [env GASGATE_CENTRAL_GASCO_MQTT].")
@click.option("--instance", required=True, help="The name of the instance to retire.")
@click.option("--group", help="Its $share group [env GASGATE_CENTRAL_GROUP].")
def retire_command(**flags: str | None) -> None:
    """End a stopped instance's broker sessions for good, after taking in what they hold (a
    broker may keep dealing messages to an absent member until its session expires). Run it
    once an instance is stopped and will not come back under its name."""
    try:
        settings = CentralSettings.load(flags)
        setup_logging(settings.log_level, settings.log_format)
        taken = asyncio.run(_retire(settings))
    except ValidationError as exc:
        raise click.ClickException(f"settings: {exc}") from None
    except (GasgateError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"instance {settings.instance}: {taken} message(s) taken in; its sessions ended")


async def _retire(settings: CentralSettings) -> int:
    pool = await open_pool(settings.db)
    try:
        link = Link(
            settings.gasco_mqtt,
            instance=settings.instance,
            group=settings.group,
            prefix=settings.topic_prefix,
            session_expiry_s=settings.session_expiry_s,
            ingest=Ingest(pool, settings.instance),
            metrics=CentralMetrics(CollectorRegistry()),
        )
        return await link.retire()
    finally:
        await pool.close()
