"""``gasgate run``: the gateway process.

Every setting comes from (lowest first) its default, the YAML ``--config`` file (keys are the
field names of :class:`gateway.app.GatewaySettings`), the environment (``GASGATE_`` + the name in
capitals: ``GASGATE_MQTT``, ``GASGATE_DATA_DIR``, ``GASGATE_REGISTRY``, ``GASGATE_RULES_DIR``,
``GASGATE_GATEWAY_ID``, ...) and the flags. SIGINT or SIGTERM stops it cleanly (exit status 0);
a setting, registry or rule file that cannot be used stops it before it starts (status 1).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import click

from gateway import heap
from gateway.app import Gateway, GatewaySettings
from gateway.errors import GasgateError
from gateway.logs import setup_logging
from gateway.settings import refuse_placeholder_secrets
from gateway.telemetry import influx_options

__all__ = ["run", "run_gateway"]

_log = logging.getLogger(__name__)


async def run_gateway(settings: GatewaySettings) -> None:
    """Run until SIGINT/SIGTERM, then stop cleanly."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    gateway = Gateway(settings)
    await gateway.start()
    heap.settle()
    try:
        await stopping.wait()
        _log.info("gateway %s stopping", settings.gateway_id)
    finally:
        await gateway.stop()


@click.command("run")
@click.option(
    "--registry",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Registry directory to import on start [env GASGATE_REGISTRY].",
)
@click.option("--mqtt", help="Site broker URL, mqtt:// or mqtts:// [env GASGATE_MQTT].")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory of the gateway's store [env GASGATE_DATA_DIR].",
)
@click.option(
    "--rules-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Directory of rule files layered over the built-in rules [env GASGATE_RULES_DIR].",
)
@click.option("--gateway-id", help="This gateway's id [env GASGATE_GATEWAY_ID].")
@click.option(
    "--gasco-mqtt", help="Gas company broker URL, mqtt:// or mqtts:// [env GASGATE_GASCO_MQTT]."
)
@influx_options
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="GASGATE_CONFIG",
    help="YAML file of settings (keys: mqtt, data_dir, registry, rules_dir, gateway_id, ...;"
    " gasgate.example.yaml) [env GASGATE_CONFIG].",
)
def run(config_file: Path | None, **flags: Path | str | None) -> None:
    """Run the gateway: kit reports in, alarms, valve linkage, supervision, escalation,
    telemetry."""
    try:
        settings = GatewaySettings.load(config_file, flags)
        refuse_placeholder_secrets(settings)  # a deployment's example values are never live
        setup_logging(settings.log_level, settings.log_format)
        asyncio.run(run_gateway(settings))
    except GasgateError as exc:
        raise click.ClickException(str(exc)) from None
