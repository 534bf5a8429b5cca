"""``gasgate bridge``: run the firmware bridge between one KSP/1 receiver and the site broker.

Every setting comes from (lowest first) its default, the YAML ``--config`` file (keys are the
field names of :class:`BridgeSettings`), the environment (``GASGATE_`` + the field name in
capitals: ``GASGATE_PORT``, ``GASGATE_BAUD``, ``GASGATE_MQTT``, ``GASGATE_BRIDGE_ID``, ...) and the
command-line flags. SIGINT or SIGTERM stops it cleanly: queued reports are flushed (for up to
5 s), ``offline`` is published, the exit status is 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Annotated

import click
from pydantic import Field, field_validator

from firmware_bridge.bridge import Bridge, BridgeConfig
from firmware_bridge.link import BAUD_RATES, LinkConfig
from gateway.errors import ConfigError
from gateway.logs import LogFormat, setup_logging
from gateway.mqtturl import parse_mqtt_url
from gateway.settings import GasgateSettings

__all__ = ["BridgeSettings", "bridge"]

_log = logging.getLogger(__name__)


class BridgeSettings(GasgateSettings):
    """Settings of ``gasgate bridge``."""

    port: str = Field(description="Serial device of the KSP/1 receiver, e.g. /dev/ttyUSB0.")
    baud: int = Field(115200, description="Line speed, 8N1: 115200 (KSP/1 default) or 9600.")
    mqtt: str = Field(
        description="Site broker: mqtt://[user:pass@]host[:port] or mqtts://... (TLS)."
    )
    bridge_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = Field(
        description="This bridge's id in kit/v1/_bridge/{bridge_id}/..."
    )
    heartbeat_timeout_s: float = Field(
        90.0, gt=0, description="Receiver offline after this long without a heartbeat."
    )
    queue_limit: int = Field(
        100_000, ge=1, description="Reports held in memory while the broker is unreachable."
    )
    log_level: str = Field("INFO", description="debug, info, warning or error.")
    log_format: LogFormat = Field("auto", description="auto, json or text.")

    @field_validator("baud")
    @classmethod
    def _known_baud(cls, value: int) -> int:
        if value not in BAUD_RATES:
            raise ValueError(f"baud must be one of {', '.join(map(str, BAUD_RATES))}")
        return value

    @field_validator("mqtt")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        try:
            parse_mqtt_url(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value


async def run_bridge(settings: BridgeSettings) -> None:
    """Run until SIGINT/SIGTERM, then stop cleanly."""
    bridge = Bridge(
        BridgeConfig(settings.bridge_id, parse_mqtt_url(settings.mqtt), settings.queue_limit),
        LinkConfig(settings.port, settings.baud, heartbeat_timeout_s=settings.heartbeat_timeout_s),
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    await bridge.start()
    _log.info("bridge %s: %s <-> %s", settings.bridge_id, settings.port, bridge.config.mqtt)
    await stopping.wait()
    _log.info("bridge %s stopping", settings.bridge_id)
    await bridge.stop()


@click.command("bridge")
@click.option("--port", help="Serial device of the receiver [env GASGATE_PORT].")
@click.option("--baud", type=int, help="115200 (default) or 9600 [env GASGATE_BAUD].")
@click.option("--mqtt", help="Site broker URL, mqtt:// or mqtts:// [env GASGATE_MQTT].")
@click.option("--bridge-id", help="Id in kit/v1/_bridge/{id}/... [env GASGATE_BRIDGE_ID].")
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML file of settings (keys: port, baud, mqtt, bridge_id, ...).",
)
def bridge(
    port: str | None,
    baud: int | None,
    mqtt: str | None,
    bridge_id: str | None,
    config_file: Path | None,
) -> None:
    """Bridge a KSP/1 kit receiver on a serial port to kit/v1 MQTT."""
    flags = {"port": port, "baud": baud, "mqtt": mqtt, "bridge_id": bridge_id}
    try:
        settings = BridgeSettings.load(config_file, flags)
        setup_logging(settings.log_level, settings.log_format)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    asyncio.run(run_bridge(settings))
