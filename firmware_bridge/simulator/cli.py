"""``gasgate simulate``: a simulated district of kits on a pty (or serial line) and on MQTT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import tempfile
from pathlib import Path

import click

from firmware_bridge.simulator.district import District
from firmware_bridge.simulator.port import PtyPort, SerialPort, SimPort
from firmware_bridge.simulator.receiver import CAPACITY
from firmware_bridge.simulator.registry_district import district_from_registry
from firmware_bridge.simulator.simulation import SCENARIOS, Simulation, scenario_story
from gateway.errors import GasgateError
from gateway.logs import setup_logging
from gateway.mqtturl import parse_mqtt_url

__all__ = ["simulate"]

log = logging.getLogger(__name__)

_DEFAULT_LINK = Path(tempfile.gettempdir()) / "gasgate-ttyKIT0"
# What --registry replaces: the generated district's shape and its registry files.
_GENERATOR_OPTIONS = ("restaurants", "households", "seed", "registry_out")


def _district(
    registry_dir: Path | None, restaurants: int, households: int, seed: int, time_scale: float
) -> District:
    if registry_dir is None:
        return District.generate(restaurants, households, seed, time_scale)
    context = click.get_current_context()
    given = [
        f"--{name.replace('_', '-')}"
        for name in _GENERATOR_OPTIONS
        if context.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE
    ]
    if given:
        raise click.UsageError(
            f"--registry plays the registry's own sites: drop {', '.join(given)}"
        )
    try:
        return district_from_registry(registry_dir, time_scale)
    except GasgateError as exc:
        raise click.ClickException(str(exc)) from None


def _ports(
    district: District, pty_link: Path | None, serial_dev: str | None, baud: int, capacity: int
) -> list[SimPort]:
    needed = district.receivers_needed(capacity) if district.radio_sites else 0
    if serial_dev is not None:
        if needed > 1:
            raise click.UsageError(
                f"{len(district.radio_devices)} radio devices need {needed} receivers of "
                f"{capacity}; one serial line holds one: simulate fewer sites or raise --capacity"
            )
        return [SerialPort(serial_dev, baud)]
    link = pty_link or _DEFAULT_LINK
    # One receiver per pty, as in the field: the second one's link is PATH.2, and so on.
    return [
        PtyPort(link if n == 1 else link.with_name(f"{link.name}.{n}"), baud=baud)
        for n in range(1, needed + 1)
    ]


def _describe(sim: Simulation, registry: list[Path]) -> None:
    district = sim.district
    kinds = ", ".join(f"{n} {k}s" for k, n in district.kinds().items())
    click.echo(f"district: {len(district.sites)} sites ({kinds}), time scale {district.time_scale}")
    for port, receiver in zip(sim.ports, sim.receivers, strict=True):
        if isinstance(port, PtyPort):
            where = f"{port.link_path} -> {port.slave_path}"
        else:
            where = f"{port.device}" if isinstance(port, SerialPort) else "?"
        click.echo(f"receiver: {len(receiver.devices)} radio devices on {where}")
    if sim.mqtt_url is not None:
        broker = parse_mqtt_url(sim.mqtt_url)  # printed without its password
        click.echo(f"mqtt: {len(sim.mqtt_devices)} MQTT-native devices on {broker}")
    for path in registry:
        click.echo(f"registry: {path}")


async def _run(
    sim: Simulation, scenarios: tuple[str, ...], registry_out: Path | None, duration: float | None
) -> None:
    registry = sim.district.write_registry(registry_out) if registry_out else []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        try:
            await sim.start()
        except (OSError, GasgateError) as exc:  # a busy link path, no serial device, bad URL
            raise click.ClickException(str(exc)) from None
        _describe(sim, registry)
        story = asyncio.create_task(scenario_story(sim, scenarios).run())
        click.echo("running; Ctrl-C stops")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(duration):
                await stop.wait()
        story.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await story
    finally:
        await sim.stop()
    click.echo("stopped")


@click.command("simulate")
@click.option(
    "--pty-link",
    type=click.Path(path_type=Path),
    help=f"symlink to the receiver's pty [default: {_DEFAULT_LINK}]",
)
@click.option(
    "--serial", "serial_dev", metavar="DEV", help="run the receiver on a real serial device instead"
)
@click.option(
    "--baud",
    type=click.Choice(["115200", "9600"]),
    default="115200",
    show_default=True,
    help="line rate; a pty is paced at it like a UART",
)
@click.option(
    "--mqtt", "mqtt_url", metavar="URL", help="broker for MQTT-native devices (mqtt://host:port)"
)
@click.option(
    "--registry",
    "registry_dir",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    help="play this registry's own sites (devices, links, intervals) instead of a generated "
    "district; 8-hex-digit ids are radio devices, others MQTT-native",
)
@click.option("--restaurants", type=click.IntRange(0, 999), default=20, show_default=True)
@click.option("--households", type=click.IntRange(0, 999), default=50, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option(
    "--time-scale",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="multiply every device interval (0.01: 60 s reports every 0.6 s)",
)
@click.option("--heartbeat-s", type=click.FloatRange(min=0.1), default=30.0, show_default=True)
@click.option(
    "--registry-out",
    type=click.Path(path_type=Path, file_okay=False),
    help="write sites.csv, components.csv, cylinders.csv here",
)
@click.option(
    "--scenario",
    "scenarios",
    multiple=True,
    type=click.Choice(sorted(SCENARIOS)),
    help="play a scenario (repeatable; 30 story seconds apart)",
)
@click.option(
    "--capacity",
    type=click.IntRange(1, 255),
    default=CAPACITY,
    show_default=True,
    help="devices one receiver holds (KSP/1 receivers: 64); more sites, more receivers",
)
@click.option(
    "--log-level",
    envvar="GASGATE_LOG_LEVEL",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
)
@click.option(
    "--log-format",
    envvar="GASGATE_LOG_FORMAT",
    type=click.Choice(["auto", "json", "text"]),
    default="auto",
    show_default=True,
)
@click.option("--duration", type=click.FloatRange(min=0), help="stop after this many seconds")
def simulate(
    *,
    pty_link: Path | None,
    serial_dev: str | None,
    baud: str,
    mqtt_url: str | None,
    registry_dir: Path | None,
    restaurants: int,
    households: int,
    seed: int,
    time_scale: float,
    heartbeat_s: float,
    registry_out: Path | None,
    scenarios: tuple[str, ...],
    duration: float | None,
    capacity: int,
    log_level: str,
    log_format: str,
) -> None:
    """Simulate a district of gas-safety kits: a KSP/1 receiver on a pty, MQTT-native devices."""
    if pty_link is not None and serial_dev is not None:
        raise click.UsageError("--pty-link and --serial exclude each other")
    setup_logging(log_level, log_format)  # type: ignore[arg-type]  # click.Choice checked it
    district = _district(registry_dir, restaurants, households, seed, time_scale)
    ports = _ports(district, pty_link, serial_dev, int(baud), capacity)
    sim = Simulation(district, ports, mqtt_url=mqtt_url, heartbeat_s=heartbeat_s, capacity=capacity)
    asyncio.run(_run(sim, scenarios, registry_out, duration))
