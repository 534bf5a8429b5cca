"""The deployment's Mosquitto users and ACL, on a real Mosquitto running deploy/'s own files.

The broker runs deploy/mosquitto/mosquitto.conf with only the listener and the paths moved into
the test's directory, deploy/mosquitto/acl as it is, and a password file made by
deploy/mosquitto/make-passwd.sh. A denied publish is acknowledged and silently dropped by
Mosquitto, so each test ends with a publish that is allowed (a sentinel): whatever the observer
has not seen by the time the sentinel arrives was dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiomqtt
import pytest

from firmware_bridge import ksp
from firmware_bridge.simulator.devices import SimDetector, SimValve
from firmware_bridge.simulator.mqtt_device import MqttDevice
from gateway.app import Gateway, GatewaySettings
from gateway.site_mqtt import gateway_availability_topic
from tests.support.kit_site import DETECTOR, VALVES, write_registry
from tests.support.services import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy" / "mosquitto"
PASSWORDS = {
    "gasgate.gateway": "gw-Secret1",
    "gasgate.bridge": "br-Secret2",
    "dev-a": "a-Secret3",
    "dev-b": "b-Secret4",
    DETECTOR: "det-Secret5",
    VALVES[0]: "v1-Secret6",
    VALVES[1]: "v2-Secret7",
}
DEVICES = [user for user in PASSWORDS if "." not in user]
TIMEOUT_S = 10.0


def broker_conf(port: int, passwd: Path, data: Path) -> str:
    """deploy's mosquitto.conf with the listener on loopback and the files in the test's dir."""
    text = (DEPLOY / "mosquitto.conf").read_text()
    moves = {
        r"^listener 1883$": f"listener {port} 127.0.0.1",
        r"^password_file /mosquitto/secrets/passwd$": f"password_file {passwd}",
        r"^acl_file /mosquitto/config/acl$": f"acl_file {DEPLOY / 'acl'}",
        r"^persistence_location /mosquitto/data/$": f"persistence_location {data}/",
        r"^log_dest stdout$": "log_dest stderr",
    }
    for line, replacement in moves.items():
        text, count = re.subn(line, replacement, text, flags=re.MULTILINE)
        assert count == 1, f"deploy mosquitto.conf has no line {line}"
    # Started as root, Mosquitto would drop to the "mosquitto" user, who cannot read the test's
    # private directory; as anyone else this line changes nothing.
    return f"{text}\nuser {getpass.getuser()}\n"


@pytest.fixture(scope="module")
def broker_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    work = tmp_path_factory.mktemp("deploy-acl")
    env = work / "env"
    env.write_text(
        f"GATEWAY_MQTT_PASSWORD={PASSWORDS['gasgate.gateway']}\n"
        f'BRIDGE_MQTT_PASSWORD="{PASSWORDS["gasgate.bridge"]}"\n'
        "SIM_MQTT_PASSWORD=\n"
    )
    devices = work / "devices"
    devices.write_text("# MQTT-native kits\n\n" + "".join(f"{d}:{PASSWORDS[d]}\n" for d in DEVICES))
    passwd = work / "passwd"
    subprocess.run(
        [DEPLOY / "make-passwd.sh", env, devices, passwd], check=True, capture_output=True
    )
    port = free_port()
    conf = work / "mosquitto.conf"
    conf.write_text(broker_conf(port, passwd, work))
    with (work / "mosquitto.log").open("ab") as log:
        proc = subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(conf)], stdout=log, stderr=log)
    try:
        wait_for_port(port)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.asynccontextmanager
async def client(
    port: int, user: str | None, password: str | None = None
) -> AsyncIterator[aiomqtt.Client]:
    secret = PASSWORDS.get(user or "") if password is None else password
    async with aiomqtt.Client(
        "127.0.0.1", port, username=user, password=secret, timeout=TIMEOUT_S
    ) as connected:
        yield connected


async def topics_until(observer: aiomqtt.Client, sentinel: str) -> list[str]:
    """Topics the observer receives, up to and including the sentinel."""
    seen: list[str] = []
    async with asyncio.timeout(TIMEOUT_S):
        async for message in observer.messages:
            seen.append(message.topic.value)
            if message.topic.value == sentinel:
                return seen
    raise AssertionError("the observer's message stream ended")


async def test_a_device_publishes_its_own_topics_and_nothing_in_another_name(
    broker_port: int,
) -> None:
    async with client(broker_port, "gasgate.gateway") as gateway:
        await gateway.subscribe("#", qos=1)
        async with client(broker_port, "dev-a") as device:
            for topic in (
                "kit/v1/dev-a/report",  # allowed
                "kit/v1/dev-b/report",  # another device's name
                "kit/v1/dev-b/availability",
                "kit/v1/dev-a/cmd",  # only the gateway commands
                "kit/v1/dev-b/cmd",
                "kit/v1/_bridge/rx1/availability",
                "gasgate/v1/gw/availability",
                "kit/v1/dev-a/cmd/ack",  # allowed
                "kit/v1/dev-a/availability",  # allowed: the sentinel
            ):
                await device.publish(topic, b"{}", qos=1)
            seen = await topics_until(gateway, "kit/v1/dev-a/availability")
    assert seen == ["kit/v1/dev-a/report", "kit/v1/dev-a/cmd/ack", "kit/v1/dev-a/availability"]


async def test_a_device_reads_only_its_own_commands(broker_port: int) -> None:
    async with client(broker_port, "dev-a") as device:
        await device.subscribe("kit/v1/+/cmd", qos=1)
        await device.subscribe("kit/v1/dev-a/cmd", qos=1)
        async with client(broker_port, "gasgate.gateway") as gateway:
            await gateway.publish("kit/v1/dev-b/cmd", b'{"id": "1", "cmd": "close_valve"}', qos=1)
            await gateway.publish("kit/v1/dev-a/cmd", b'{"id": "2", "cmd": "query"}', qos=1)
        async with asyncio.timeout(TIMEOUT_S):
            first = await anext(aiter(device.messages))
    assert first.topic.value == "kit/v1/dev-a/cmd"


async def test_the_gateway_commands_devices_but_cannot_speak_for_one(broker_port: int) -> None:
    async with client(broker_port, "gasgate.gateway") as observer:
        await observer.subscribe("#", qos=1)
        async with client(broker_port, "gasgate.gateway") as gateway:
            await gateway.publish("kit/v1/dev-a/report", b"{}", qos=1)
            await gateway.publish("kit/v1/dev-a/availability", b"offline", qos=1)
            await gateway.publish("kit/v1/dev-a/cmd", b"{}", qos=1)
            await gateway.publish("gasgate/v1/gw-1/availability", b"online", qos=1)
        seen = await topics_until(observer, "gasgate/v1/gw-1/availability")
    assert seen == ["kit/v1/dev-a/cmd", "gasgate/v1/gw-1/availability"]


async def test_the_bridge_speaks_for_radio_devices_and_never_commands(broker_port: int) -> None:
    async with client(broker_port, "gasgate.gateway") as observer:
        await observer.subscribe("#", qos=1)
        async with client(broker_port, "gasgate.bridge") as bridge:
            await bridge.subscribe("kit/v1/+/cmd", qos=1)
            for topic in (
                "kit/v1/1a2b3c4d/report",  # allowed
                "kit/v1/1a2b3c4d/cmd",  # only the gateway commands
                "kit/v1/_bridge/rx2/availability",  # another bridge
                "gasgate/v1/gw-1/availability",
                "kit/v1/1a2b3c4d/cmd/ack",  # allowed
                "kit/v1/_bridge/rx1/availability",  # allowed: the sentinel
            ):
                await bridge.publish(topic, b"{}", qos=1)
            seen = await topics_until(observer, "kit/v1/_bridge/rx1/availability")
    assert seen == [
        "kit/v1/1a2b3c4d/report",
        "kit/v1/1a2b3c4d/cmd/ack",
        "kit/v1/_bridge/rx1/availability",
    ]


@pytest.mark.parametrize(
    ("user", "password"),
    [
        (None, None),  # anonymous
        ("dev-a", PASSWORDS["dev-b"]),  # another device's password
        ("dev-c", "anything"),  # not in the password file
        ("gasgate.sim", ""),  # the simulator's user exists only when SIM_MQTT_PASSWORD is set
    ],
    ids=["anonymous", "wrong-password", "unknown-user", "no-sim-user"],
)
async def test_only_known_users_with_their_own_password_connect(
    broker_port: int, user: str | None, password: str | None
) -> None:
    with pytest.raises(aiomqtt.MqttError):
        async with client(broker_port, user, password):
            pass


async def test_the_gateway_closes_valves_with_every_device_logged_in_as_itself(
    broker_port: int, tmp_path: Path
) -> None:
    """The real gateway and MQTT-native kit devices, each with the deployment's own user."""

    def url(user: str) -> str:
        return f"mqtt://{user}:{PASSWORDS[user]}@127.0.0.1:{broker_port}"

    settings = GatewaySettings.load(
        None,
        {
            "mqtt": url("gasgate.gateway"),
            "data_dir": tmp_path / "data",
            "registry": write_registry(tmp_path / "registry"),
            "gateway_id": "gw-acl",
            "log_format": "text",
        },
    )
    detector = SimDetector(1, battery_mv=0, interval_s=60)
    valves = [SimValve(n, interval_s=60, close_time_s=0.2) for n in (2, 3)]
    kit = [
        MqttDevice(url(DETECTOR), DETECTOR, detector.kind, model=detector, reconnect_s=0.2),
        *(
            MqttDevice(url(ident), ident, valve.kind, model=valve, reconnect_s=0.2)
            for ident, valve in zip(VALVES, valves, strict=True)
        ),
    ]
    gateway = Gateway(settings)
    await gateway.start()
    try:
        for device in kit:
            await device.start()
        async with asyncio.timeout(TIMEOUT_S):
            for device in kit:
                await device.online.wait()
        detector.set_lel(55.0)
        async with asyncio.timeout(TIMEOUT_S):
            while not all(v.state is ksp.ValveState.CLOSED for v in valves):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        async with client(broker_port, "gasgate.gateway") as observer:
            await observer.subscribe(gateway_availability_topic("gw-acl"), qos=1)
            async with asyncio.timeout(TIMEOUT_S):
                retained = await anext(aiter(observer.messages))
        assert retained.payload == b"online"
    finally:
        for device in kit:
            await device.stop()
        await gateway.stop()


async def test_the_compose_bridge_and_simulator_commands_publish_through_the_acl(
    broker_port: int, tmp_path: Path
) -> None:
    """``gasgate simulate`` and ``gasgate bridge`` as the compose file starts them: settings from
    GASGATE_* variables, the bridge's user and bridge id as deployed."""
    gasgate = str(Path(sys.executable).parent / "gasgate")
    link = tmp_path / "ksp-receiver"
    broker = f"127.0.0.1:{broker_port}"
    env = {
        "PATH": os.environ["PATH"],
        "GASGATE_MQTT": f"mqtt://gasgate.bridge:{PASSWORDS['gasgate.bridge']}@{broker}",
        "GASGATE_BRIDGE_ID": "rx1",
        "GASGATE_LOG_FORMAT": "json",
    }
    bridge_log = tmp_path / "bridge.log"
    district = ["--restaurants", "2", "--households", "2", "--time-scale", "0.01"]
    wanted = {"kit/v1/_bridge/rx1/availability", "kit/v1/_bridge/rx1/receiver", "report"}
    seen: set[str] = set()
    with (tmp_path / "sim.log").open("wb") as sim_out, bridge_log.open("wb") as bridge_out:
        async with client(broker_port, "gasgate.gateway") as observer:
            await observer.subscribe("kit/v1/#", qos=1)
            simulator = await asyncio.create_subprocess_exec(
                gasgate, "simulate", "--pty-link", str(link), *district, "--duration", "60",
                stdout=sim_out, stderr=sim_out,
            )  # fmt: skip
            bridge = await asyncio.create_subprocess_exec(
                gasgate, "bridge", "--port", str(link),
                env=env, stdout=bridge_out, stderr=bridge_out,
            )  # fmt: skip
            try:
                async with asyncio.timeout(30):
                    async for message in observer.messages:
                        topic = message.topic.value
                        seen.add("report" if topic.endswith("/report") else topic)
                        if wanted <= seen:
                            break
            finally:
                for process in (bridge, simulator):
                    process.terminate()
                    async with asyncio.timeout(15):
                        await process.wait()
    assert bridge.returncode == 0, bridge_log.read_text()
    assert b'"level": "ERROR"' not in bridge_log.read_bytes()
