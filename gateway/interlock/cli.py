"""``gasgate interlock``: the interlock process for one gateway's data dir.

Settings from the environment, as the gateway's (``GASGATE_MQTT``, ``GASGATE_GATEWAY_ID``,
``GASGATE_VALVE_RETRY_S``, ``GASGATE_LOG_LEVEL``, ``GASGATE_LOG_FORMAT``) or the flags, and its
own ``GASGATE_INTERLOCK_RT_PRIORITY`` (a spawned interlock inherits the gateway's environment);
the link table is the one the gateway writes into ``--data-dir``. The gateway starts it by itself
(``interlock: spawn``); a systemd unit of its own runs it with ``interlock: external``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
from pydantic import Field

from gateway.errors import GasgateError
from gateway.interlock.process import serve
from gateway.linkage import RETRY_S
from gateway.logs import LogFormat, setup_logging
from gateway.settings import GasgateSettings

__all__ = ["InterlockSettings", "interlock"]


class InterlockSettings(GasgateSettings):
    """The gateway's settings the interlock needs, under the same names."""

    mqtt: str = Field("mqtt://127.0.0.1:1883", description="Site broker (the gateway's).")
    data_dir: Path = Field(Path("gasgate-data"), description="The gateway's data dir.")
    gateway_id: str = Field("gateway", description="The gateway's id.")
    valve_retry_s: float = Field(RETRY_S, gt=0, le=60, description="Retry interval of a close.")
    interlock_rt_priority: int = Field(
        0,
        ge=0,
        le=99,
        description="SCHED_FIFO priority of the interlock when permitted, for a box whose cores "
        "other work oversubscribes; 0 (the default, faster on a box of its own): nice -10 "
        "(docs/interlock.md).",
    )
    log_level: str = Field("INFO", description="debug, info, warning or error.")
    log_format: LogFormat = Field("auto", description="auto, json or text.")


@click.command("interlock")
@click.option("--mqtt", help="Site broker URL [env GASGATE_MQTT].")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="The gateway's data dir, where it writes the link table [env GASGATE_DATA_DIR].",
)
@click.option("--gateway-id", help="The gateway's id [env GASGATE_GATEWAY_ID].")
def interlock(**flags: Path | str | None) -> None:
    """Run the interlock: a linked detector's leak closes its valves, first."""
    try:
        s = InterlockSettings.load(None, flags)
        setup_logging(s.log_level, s.log_format)
        code = asyncio.run(
            serve(s.mqtt, s.data_dir, s.gateway_id, s.valve_retry_s, s.interlock_rt_priority)
        )
    except GasgateError as exc:
        raise click.ClickException(str(exc)) from None
    raise SystemExit(code)
