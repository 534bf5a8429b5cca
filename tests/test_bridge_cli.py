"""``gasgate bridge`` as a real process: settings layering, a report through, clean SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from firmware_bridge import ksp
from firmware_bridge.cli import BridgeSettings
from gateway import contract
from gateway.cli import main
from gateway.errors import ConfigError
from tests.support.ksp_peer import RawPeer
from tests.support.services import Mosquitto
from tests.test_bridge import VALVE, vector, watching


def test_settings_layering(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text("port: /dev/ttyFILE\nbaud: 9600\nmqtt: mqtt://file:1883\nbridge_id: file\n")
    monkeypatch.setenv("GASGATE_MQTT", "mqtts://env.example:8883")
    monkeypatch.setenv("GASGATE_BRIDGE_ID", "env")
    settings = BridgeSettings.load(config, {"bridge_id": "flag", "port": None})
    assert (settings.port, settings.baud, settings.mqtt, settings.bridge_id) == (
        "/dev/ttyFILE",
        9600,
        "mqtts://env.example:8883",
        "flag",
    )


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        ({"baud": 4800}, "baud must be one of"),
        ({"mqtt": "http://broker"}, "scheme must be mqtt:// or mqtts://"),
        ({"bridge_id": "a/b"}, "bridge_id"),
    ],
)
def test_bad_settings_are_config_errors(flags: dict[str, object], problem: str) -> None:
    base = {"port": "/dev/ttyUSB0", "mqtt": "mqtt://localhost", "bridge_id": "b1"}
    with pytest.raises(ConfigError, match=problem):
        BridgeSettings.load(None, base | flags)


def test_missing_setting_is_reported_by_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GASGATE_PORT", "GASGATE_MQTT", "GASGATE_BRIDGE_ID"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(main, ["bridge", "--port", "/dev/ttyUSB0"])
    assert result.exit_code == 1
    assert "mqtt" in result.output
    assert "bridge_id" in result.output


async def test_bridge_process_runs_and_stops_cleanly_on_sigterm(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    peer = RawPeer(tmp_path / "ttyKIT")
    peer.plug()
    config = tmp_path / "bridge.yaml"
    config.write_text("bridge_id: cli-test\nlog_format: text\n")
    env = os.environ | {"GASGATE_MQTT": mosquitto.url}
    availability = contract.bridge_availability_topic("cli-test")
    async with watching(mosquitto.url) as watcher:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from gateway.cli import main; main()",
            "bridge",
            "--port",
            str(peer.path),
            "--config",
            str(config),
            env=env,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert (await peer.next_message(20))[1] == ksp.Ping()
            await watcher.wait_for(lambda: watcher.on(availability)[-1:] == [b"online"], 20)
            peer.write(vector("valve closed"))
            await watcher.wait_for(lambda: len(watcher.reports()) == 1)
            assert watcher.reports()[0][0] == VALVE
            proc.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(proc.communicate(), 20)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            peer.close()
        assert proc.returncode == 0, stderr.decode()
        await watcher.wait_for(lambda: watcher.on(availability)[-1:] == [b"offline"])
