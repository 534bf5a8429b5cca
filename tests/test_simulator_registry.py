"""``gasgate simulate --registry DIR``: an integrator's own sites (their device ids, links and
intervals) played on a real pty (KSP/1) and a real Mosquitto (kit/v1)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiomqtt
from click.testing import CliRunner

from firmware_bridge import ksp
from firmware_bridge.simulator import SimDetector, SimRegulator, SimValve
from firmware_bridge.simulator.cli import simulate
from firmware_bridge.simulator.registry_district import district_from_registry
from gateway.contract import KitReport, decode, report_topic
from tests.support.services import Mosquitto

WAIT = 20.0  # generous: a loaded 2-core box must not flake
GASGATE = str(Path(sys.executable).with_name("gasgate"))
DETECTOR, VALVE, REGULATOR = "0a0b0c0d", "0a0b0c0e", "0a0b0c0f"  # radio: 8 hex digits
HOME_DETECTOR = "acme-home-det-1"  # MQTT-native

SITES = """site_id,name,site_type,kit,district,address,contact_name,contact_phone,contact_lang
ACME-R1,Acme Noodles,restaurant,four_piece,Futian,1 Main St,Li,13800000001,en
ACME-H1,Flat 9,household,two_piece,Nanshan,9 Hill Rd,Wu,13800000002,zh
"""
COMPONENTS = f"""site_id,component,device_id,model,installed_on,links,report_interval_s
ACME-R1,leak_detector,{DETECTOR},AC-DET,2025-03-01,,7
ACME-R1,shutoff_valve,{VALVE},AC-VALVE,2025-03-01,{DETECTOR},9
ACME-R1,smart_regulator,{REGULATOR},AC-REG,2025-03-01,{VALVE},11
ACME-R1,metal_hose,,AC-HOSE,2025-03-01,,
ACME-H1,leak_detector,{HOME_DETECTOR},AC-DET-B,2025-03-01,,5
ACME-H1,self_closing_regulator,,AC-SCR,2025-03-01,,
ACME-H1,metal_hose,,AC-HOSE,2025-03-01,,
"""
MODELS = """model,component,power,report_interval_s
AC-DET,leak_detector,mains,60
AC-DET-B,leak_detector,battery,600
AC-VALVE,shutoff_valve,mains,60
AC-REG,smart_regulator,mains,60
"""
CYLINDERS = """site_id,cylinder_id,capacity_kg,next_inspection_due
ACME-R1,R1-1,50,2030-01-01
ACME-H1,H1-1,15,2030-01-01
"""


def write_registry(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "sites.csv": SITES,
        "components.csv": COMPONENTS,
        "models.csv": MODELS,
        "cylinders.csv": CYLINDERS,
    }
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory


async def test_registry_district_keeps_ids_links_and_intervals(tmp_path: Path) -> None:
    district = district_from_registry(write_registry(tmp_path / "reg"), time_scale=0.5)
    site = district.site("ACME-R1")
    detector, valve, regulator = (site.devices[i] for i in (DETECTOR, VALVE, REGULATOR))
    assert isinstance(detector, SimDetector)
    assert isinstance(valve, SimValve)
    assert isinstance(regulator, SimRegulator)
    assert (detector.device_id, detector.interval_s, detector.battery_mv) == (0x0A0B0C0D, 7, 0)
    assert (valve.interval_s, regulator.interval_s) == (9, 11)
    assert detector.time_scale == 0.5
    home = district.site("ACME-H1")
    assert home.mqtt_native
    assert home.detector.battery_mv > 0
    assert home.detector.interval_s == 5
    assert [s.site_id for s in district.radio_sites] == ["ACME-R1"]
    assert [d.device_id for d in district.mqtt_devices("mqtt://127.0.0.1:1")] == [HOME_DETECTOR]
    # The registry's link: the detector's alarm closes its valve by radio.
    detector.set_lel(30.0)
    for _ in range(200):
        if valve.state is ksp.ValveState.CLOSED:
            break
        await asyncio.sleep(0.01)
    assert valve.state is ksp.ValveState.CLOSED


def test_registry_with_errors_is_refused_with_their_place(tmp_path: Path) -> None:
    directory = write_registry(tmp_path / "reg")
    (directory / "components.csv").write_text(
        COMPONENTS.replace(f",{DETECTOR},9", ",ffffffff,9"), encoding="utf-8"
    )
    result = CliRunner().invoke(simulate, ["--registry", str(directory), "--duration", "0"])
    assert result.exit_code == 1, result.output
    assert "components.csv:3:" in result.output
    result = CliRunner().invoke(simulate, ["--registry", str(directory), "--restaurants", "3"])
    assert result.exit_code == 2
    assert "drop --restaurants" in result.output


def read_frames(fd: int, decoder: ksp.Decoder) -> list[ksp.Message]:
    with contextlib.suppress(BlockingIOError):
        return [ksp.parse(frame) for frame in decoder.feed(os.read(fd, 4096))]
    return []


async def test_cli_plays_the_registry_on_the_pty_and_on_mqtt(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    link = tmp_path / "ttyKIT0"
    proc = await asyncio.create_subprocess_exec(
        GASGATE, "simulate", "--registry", str(write_registry(tmp_path / "reg")),
        "--pty-link", str(link), "--mqtt", mosquitto.url, "--time-scale", "0.1",
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
            await client.subscribe(report_topic(HOME_DETECTOR), qos=1)
            async with asyncio.timeout(WAIT):
                while not link.is_symlink():  # noqa: ASYNC110 - a file system path, no event
                    await asyncio.sleep(0.05)
                fd = os.open(link, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
                try:
                    heard = await _radio_reports(fd)
                finally:
                    os.close(fd)
                message = await anext(aiter(client.messages))
        report = decode(KitReport, message.payload, str(message.topic))  # type: ignore[arg-type]
        assert report.kind is ksp.DeviceKind.DETECTOR
        assert heard == {int(i, 16) for i in (DETECTOR, VALVE, REGULATOR)}
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(WAIT):
            raw, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    out = raw.decode()
    assert proc.returncode == 0, out
    assert "district: 2 sites" in out
    assert "receiver: 3 radio devices" in out
    assert "mqtt: 1 MQTT-native devices" in out


async def _radio_reports(fd: int) -> set[int]:
    """The ids of the radio devices heard on the line (unacknowledged: retransmitted)."""
    decoder, heard = ksp.Decoder(), set()
    while len(heard) < 3:
        for message in read_frames(fd, decoder):
            if isinstance(message, ksp.Report):
                heard.add(message.device_id)
        await asyncio.sleep(0.05)
    return heard
