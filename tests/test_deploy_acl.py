"""The deployment's Mosquitto users and ACL, on a real Mosquitto running deploy/'s own files.

The broker runs deploy/mosquitto/mosquitto.conf with only the listeners and the paths moved into
the test's directory, and the password files and ACL made by deploy/mosquitto/make-passwd.sh
from deploy/mosquitto/acl. A denied publish is acknowledged and silently dropped by Mosquitto,
so each test ends with a publish that is allowed (a sentinel): whatever the observer has not
seen by the time the sentinel arrives was dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest

from firmware_bridge import ksp
from firmware_bridge.simulator.devices import SimDetector, SimValve
from firmware_bridge.simulator.district import District
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
# The radio devices behind the bridge's receiver: one of the test's own, and those of the
# district "gasgate simulate --restaurants 2 --households 2" plays (its default seed).
RADIO = "1a2b3c4d"
SIM_RADIO = [
    ident
    for site in District.generate(restaurants=2, households=2).sites
    for ident in site.devices
    if re.fullmatch(r"[0-9a-f]{8}", ident)
]
TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Listeners:
    """The ports of deploy's two listeners, as the test moved them."""

    devices: int  # 1883: kit devices and the bridge, client id = username
    gateway: int  # 1884: the gateway, its own client ids


def make_secrets(work: Path, passwords: Mapping[str, str], bridge_line: str) -> Path:
    """deploy's make-passwd.sh run on an env file, a devices file and a bridges file: returns
    the directory with passwd, passwd-gateway and acl."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "env").write_text(
        f"GATEWAY_MQTT_PASSWORD={passwords['gasgate.gateway']}\n"
        f'BRIDGE_MQTT_PASSWORD="{passwords["gasgate.bridge"]}"\n'
        "SIM_MQTT_PASSWORD=\n"
    )
    devices = "".join(f"{user}:{secret}\n" for user, secret in passwords.items() if "." not in user)
    (work / "devices").write_text(f"# MQTT-native kits\n\n{devices}")
    (work / "bridges").write_text(f"# the receiver on /dev/ttyUSB0\n{bridge_line}\n")
    subprocess.run([DEPLOY / "make-passwd.sh", work / "env", work], check=True, capture_output=True)
    return work


def broker_conf(listeners: Listeners, secrets: Path, data: Path) -> str:
    """deploy's mosquitto.conf with the listeners on loopback and the files in the test's dir."""
    text = (DEPLOY / "mosquitto.conf").read_text()
    moves = {  # line → (replacement, how many there are)
        r"^listener 1883$": (f"listener {listeners.devices} 127.0.0.1", 1),
        r"^listener 1884$": (f"listener {listeners.gateway} 127.0.0.1", 1),
        r" /mosquitto/secrets/": (f" {secrets}/", 4),
        r"^persistence_location /mosquitto/data/$": (f"persistence_location {data}/", 1),
        r"^log_dest stdout$": ("log_dest stderr", 1),
    }
    for line, (replacement, expected) in moves.items():
        text, count = re.subn(line, replacement, text, flags=re.MULTILINE)
        assert count == expected, f"deploy mosquitto.conf has {count} of {line}, not {expected}"
    # Started as root, Mosquitto would drop to the "mosquitto" user, who cannot read the test's
    # private directory; as anyone else this line changes nothing.
    return f"{text}\nuser {getpass.getuser()}\n"


@contextlib.contextmanager
def mosquitto(conf: Path, listeners: Listeners) -> Iterator[None]:
    """Mosquitto on conf until the block ends; its log beside conf."""
    with (conf.parent / "mosquitto.log").open("ab") as log:
        proc = subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(conf)], stdout=log, stderr=log)
    try:
        wait_for_port(listeners.devices)
        wait_for_port(listeners.gateway)
        yield
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Listeners]:
    work = tmp_path_factory.mktemp("deploy-acl")
    secrets = make_secrets(work / "secrets", PASSWORDS, f"rx1: {' '.join([RADIO, *SIM_RADIO])}")
    listeners = Listeners(devices=free_port(), gateway=free_port())
    conf = work / "mosquitto.conf"
    conf.write_text(broker_conf(listeners, secrets, work))
    with mosquitto(conf, listeners):
        yield listeners


def port_of(listeners: Listeners, user: str | None) -> int:
    """Where a user logs in: the gateway on its own listener, everyone else on 1883."""
    return listeners.gateway if user == "gasgate.gateway" else listeners.devices


@contextlib.asynccontextmanager
async def client(
    listeners: Listeners,
    user: str | None,
    password: str | None = None,
    *,
    port: int | None = None,
    identifier: str | None = None,
    clean_session: bool | None = None,
) -> AsyncIterator[aiomqtt.Client]:
    secret = PASSWORDS.get(user or "") if password is None else password
    async with aiomqtt.Client(
        "127.0.0.1",
        port_of(listeners, user) if port is None else port,
        username=user,
        password=secret,
        identifier=identifier,
        clean_session=clean_session,
        timeout=TIMEOUT_S,
    ) as connected:
        yield connected


async def first_message(subscriber: aiomqtt.Client) -> aiomqtt.Message:
    async with asyncio.timeout(TIMEOUT_S):
        return await anext(aiter(subscriber.messages))


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
    broker: Listeners,
) -> None:
    async with client(broker, "gasgate.gateway") as gateway:
        await gateway.subscribe("#", qos=1)
        async with client(broker, "dev-a") as device:
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


async def test_a_device_reads_only_its_own_commands(broker: Listeners) -> None:
    async with client(broker, "dev-a") as device:
        await device.subscribe("kit/v1/+/cmd", qos=1)
        await device.subscribe("kit/v1/dev-a/cmd", qos=1)
        async with client(broker, "gasgate.gateway") as gateway:
            await gateway.publish("kit/v1/dev-b/cmd", b'{"id": "1", "cmd": "close_valve"}', qos=1)
            await gateway.publish("kit/v1/dev-a/cmd", b'{"id": "2", "cmd": "query"}', qos=1)
        first = await first_message(device)
    assert first.topic.value == "kit/v1/dev-a/cmd"


async def test_the_gateway_commands_devices_but_cannot_speak_for_one(broker: Listeners) -> None:
    async with client(broker, "gasgate.gateway") as observer:
        await observer.subscribe("#", qos=1)
        async with client(broker, "gasgate.gateway") as gateway:
            await gateway.publish("kit/v1/dev-a/report", b"{}", qos=1)
            await gateway.publish("kit/v1/dev-a/availability", b"offline", qos=1)
            await gateway.publish("kit/v1/dev-a/cmd", b"{}", qos=1)
            await gateway.publish("gasgate/v1/gw-1/availability", b"online", qos=1)
        seen = await topics_until(observer, "gasgate/v1/gw-1/availability")
    assert seen == ["kit/v1/dev-a/cmd", "gasgate/v1/gw-1/availability"]


async def test_the_bridge_speaks_for_radio_devices_and_never_commands(broker: Listeners) -> None:
    async with client(broker, "gasgate.gateway") as observer:
        await observer.subscribe("#", qos=1)
        async with client(broker, "gasgate.bridge") as bridge:
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


async def test_the_bridge_cannot_report_for_a_device_outside_its_receiver(
    broker: Listeners,
) -> None:
    """Its ACL names the radio devices of its own receiver: not an MQTT-native valve (which
    reports itself), not a radio device behind another receiver."""
    async with client(broker, "gasgate.gateway") as observer:
        await observer.subscribe("#", qos=1)
        async with client(broker, "gasgate.bridge") as bridge:
            await bridge.subscribe("kit/v1/+/cmd", qos=1)
            for topic in (
                f"kit/v1/{VALVES[0]}/report",  # an MQTT-native valve: "closed" in its name
                f"kit/v1/{VALVES[0]}/cmd/ack",
                "kit/v1/99999999/report",  # a radio id, but not behind this receiver
                "kit/v1/99999999/cmd/ack",
                f"kit/v1/{RADIO}/report",  # allowed: the sentinel
            ):
                await bridge.publish(topic, b'{"valve": {"state": "closed"}}', qos=1)
            seen = await topics_until(observer, f"kit/v1/{RADIO}/report")
            await observer.publish(f"kit/v1/{VALVES[0]}/cmd", b"{}", qos=1)
            await observer.publish(f"kit/v1/{RADIO}/cmd", b"{}", qos=1)
            first = await first_message(bridge)
    assert seen == [f"kit/v1/{RADIO}/report"]
    assert first.topic.value == f"kit/v1/{RADIO}/cmd"  # nor does it read another's commands


def gateway_client_ids(gateway_id: str) -> tuple[str, str]:
    """The report stream's and the control link's client ids (gateway/app.py, site_mqtt.py)."""
    return f"gasgate-{gateway_id}", f"gasgate-{gateway_id}-out"


async def test_a_device_with_the_gateways_client_ids_cannot_take_its_sessions(
    broker: Listeners,
) -> None:
    """On the device listener a client's id is its username: a device that asks for the
    gateway's ids gets its own, and the gateway's two connections stay up."""
    stream_id, out_id = gateway_client_ids("gw-takeover")
    async with (
        client(broker, "gasgate.gateway", identifier=stream_id, clean_session=False) as stream,
        client(broker, "gasgate.gateway", identifier=out_id, clean_session=True) as out,
    ):
        await stream.subscribe("kit/v1/+/report", qos=1)
        for ident in (stream_id, out_id, stream_id):
            async with client(broker, DETECTOR, identifier=ident, clean_session=True):
                pass
        async with client(broker, "dev-a") as device:
            await device.publish("kit/v1/dev-a/report", b"{}", qos=1)
        await out.publish("gasgate/v1/gw-takeover/availability", b"online", qos=1)
        heard = await first_message(stream)
    assert heard.topic.value == "kit/v1/dev-a/report"


@pytest.mark.parametrize(
    ("user", "listener"),
    [(DETECTOR, "gateway"), ("gasgate.bridge", "gateway"), ("gasgate.gateway", "devices")],
    ids=["device-on-gateway-listener", "bridge-on-gateway-listener", "gateway-on-device-listener"],
)
async def test_each_listener_knows_only_its_own_users(
    broker: Listeners, user: str, listener: str
) -> None:
    """A device's password does not log in where client ids are kept, and the gateway cannot
    end up where its two client ids would both become "gasgate.gateway"."""
    with pytest.raises(aiomqtt.MqttError):
        async with client(broker, user, port=getattr(broker, listener)):
            pass


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
    broker: Listeners, user: str | None, password: str | None
) -> None:
    with pytest.raises(aiomqtt.MqttError):
        async with client(broker, user, password):
            pass


@dataclass(frozen=True)
class Site:
    gateway: Gateway
    detector: SimDetector
    valves: list[SimValve]

    async def leak_closes_the_valves(self) -> None:
        self.detector.set_lel(55.0)
        async with asyncio.timeout(TIMEOUT_S):
            while not all(v.state is ksp.ValveState.CLOSED for v in self.valves):  # noqa: ASYNC110
                await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def protected_site(broker: Listeners, tmp_path: Path, gateway_id: str) -> AsyncIterator[Site]:
    """The real gateway and MQTT-native kit devices, each with the deployment's own user and
    on its own listener, all online."""

    def url(user: str) -> str:
        return f"mqtt://{user}:{PASSWORDS[user]}@127.0.0.1:{port_of(broker, user)}"

    settings = GatewaySettings.load(
        None,
        {
            "mqtt": url("gasgate.gateway"),
            "data_dir": tmp_path / "data",
            "registry": write_registry(tmp_path / "registry"),
            "gateway_id": gateway_id,
            "log_format": "text",
            "http_port": 0,
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
        yield Site(gateway, detector, valves)
    finally:
        for device in kit:
            await device.stop()
        await gateway.stop()


async def test_the_gateway_closes_valves_with_every_device_logged_in_as_itself(
    broker: Listeners, tmp_path: Path
) -> None:
    async with protected_site(broker, tmp_path, "gw-acl") as site:
        await site.leak_closes_the_valves()
        async with client(broker, "gasgate.gateway") as observer:
            await observer.subscribe(gateway_availability_topic("gw-acl"), qos=1)
            retained = await first_message(observer)
        assert retained.payload == b"online"


async def hammer(broker: Listeners, identifiers: tuple[str, ...], attempts: int) -> int:
    """A hostile device connecting with each of identifiers in turn, as fast as it can:
    returns how many connections the broker accepted."""
    accepted = 0
    async with asyncio.timeout(TIMEOUT_S):
        for attempt in range(attempts):
            with contextlib.suppress(aiomqtt.MqttError):
                ident = identifiers[attempt % len(identifiers)]
                async with client(broker, "dev-a", identifier=ident, clean_session=True):
                    accepted += 1
    return accepted


async def test_a_leak_is_acted_on_while_a_device_hammers_the_gateways_client_ids(
    broker: Listeners, tmp_path: Path
) -> None:
    """50 connections in the gateway's client ids (both), the leak sent while they go on: the
    gateway is never disconnected, and the leak closes the valves."""
    async with protected_site(broker, tmp_path, "gw-hammer") as site:
        hostile = asyncio.create_task(hammer(broker, gateway_client_ids("gw-hammer"), 50))
        await asyncio.sleep(0)  # the first connection is on its way before the leak
        started = time.monotonic()
        await site.leak_closes_the_valves()
        accepted = await hostile
        hammered_s = time.monotonic() - started
        counts = site.gateway.site_mqtt.counts.copy()
    assert accepted == 50, "the device was refused: this test no longer tries a takeover"
    assert hammered_s < TIMEOUT_S
    assert (counts["disconnects"], counts["connects"], counts["stream_connects"]) == (0, 1, 1)


async def test_the_compose_bridge_and_simulator_commands_publish_through_the_acl(
    broker: Listeners, tmp_path: Path
) -> None:
    """``gasgate simulate`` and ``gasgate bridge`` as the compose file starts them: settings from
    GASGATE_* variables, the bridge's user and bridge id as deployed."""
    gasgate = str(Path(sys.executable).parent / "gasgate")
    link = tmp_path / "ksp-receiver"
    at = f"127.0.0.1:{broker.devices}"
    env = {
        "PATH": os.environ["PATH"],
        "GASGATE_MQTT": f"mqtt://gasgate.bridge:{PASSWORDS['gasgate.bridge']}@{at}",
        "GASGATE_BRIDGE_ID": "rx1",
        "GASGATE_LOG_FORMAT": "json",
    }
    bridge_log = tmp_path / "bridge.log"
    district = ["--restaurants", "2", "--households", "2", "--time-scale", "0.01"]
    wanted = {"kit/v1/_bridge/rx1/availability", "kit/v1/_bridge/rx1/receiver", "report"}
    seen: set[str] = set()
    with (tmp_path / "sim.log").open("wb") as sim_out, bridge_log.open("wb") as bridge_out:
        async with client(broker, "gasgate.gateway") as observer:
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
