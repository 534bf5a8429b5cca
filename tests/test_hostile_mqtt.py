"""The site broker as deployed, over TLS: deploy/mosquitto's own config and ACL with a TLS
listener (a private CA), every client with its own user and password. The real gateway connects
over mqtts://; a household's detector, logged in as itself, tries to report a leak in the name
of a restaurant's detector: the broker drops it, so no alarm is raised at the wrong site and no
valve of that site moves; its own leak raises its own site's alarm.

(``tests/test_deploy_acl.py`` checks the ACL rule by rule on plain MQTT,
``tests/test_bridge_mqtturl.py`` that an untrusted broker certificate is refused, and
``tests/test_escalation_gasco.py::test_mqtts_with_credentials_and_a_private_ca`` the gas company
broker with TLS and a password.)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_bridge.ksp import DeviceKind, Event
from gateway.app import Gateway, GatewaySettings
from gateway.contract import KitReport, report_topic
from gateway.mqtturl import parse_mqtt_url
from tests.support.api_world import HOUSE, HOUSE_DETECTOR, HOUSE_VALVE, write_world
from tests.support.kit_site import DETECTOR, VALVES
from tests.support.services import free_port
from tests.test_bridge_mqtturl import _certificates
from tests.test_deploy_acl import Listeners, broker_conf, make_secrets, mosquitto, port_of
from tests.test_gateway_e2e import Spy, wait_until

PASSWORDS = {"gasgate.gateway": "gw-Tls-1", "gasgate.bridge": "br-Tls-3", HOUSE_DETECTOR: "h-Tls-2"}


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[Listeners, Path]]:
    """(ports, CA file) of deploy's Mosquitto with TLS on both listeners and our users."""
    ca, cert, key = _certificates(tmp_path)
    secrets = make_secrets(tmp_path / "secrets", PASSWORDS, "rx1:")
    listeners = Listeners(devices=free_port(), gateway=free_port())
    conf = broker_conf(listeners, secrets, tmp_path)
    for port in (listeners.devices, listeners.gateway):
        conf = conf.replace(
            f"listener {port} 127.0.0.1\n",
            f"listener {port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n",
        )
    (tmp_path / "mosquitto.conf").write_text(conf)
    with mosquitto(tmp_path / "mosquitto.conf", listeners):
        yield listeners, ca


def leak_report(seq: int) -> bytes:
    report = KitReport(
        kind=DeviceKind.DETECTOR, seq=seq, event=Event.ALARM, detector={"lel_pct": 60.0}
    )
    return report.to_json()


async def test_over_tls_a_device_cannot_raise_an_alarm_at_another_site(
    tmp_path: Path, tls_broker: tuple[Listeners, Path]
) -> None:
    listeners, ca = tls_broker

    def url(user: str) -> str:
        port = port_of(listeners, user)
        return f"mqtts://{user}:{PASSWORDS[user]}@127.0.0.1:{port}?ca={ca}"

    settings = GatewaySettings.load(
        None,
        {
            "mqtt": url("gasgate.gateway"),
            "data_dir": tmp_path / "data",
            "registry": write_world(tmp_path / "registry"),
            "gateway_id": f"gw-{uuid.uuid4().hex[:8]}",
            "log_format": "text",
            "http_port": 0,
        },
    )
    gateway = Gateway(settings)
    await gateway.start()
    spy = Spy(url("gasgate.gateway"))  # the gateway's user may read every command
    try:
        await wait_until(gateway.site_mqtt.connected.is_set)
        await spy.start()
        house = parse_mqtt_url(url(HOUSE_DETECTOR)).client(identifier=HOUSE_DETECTOR)
        async with house:
            # In the restaurant detector's name: acknowledged by the broker, then dropped.
            await house.publish(report_topic(DETECTOR), leak_report(1), qos=1)
            await house.publish(report_topic(HOUSE_DETECTOR), leak_report(2), qos=1)
        await wait_until(
            lambda: any(a.source == HOUSE_DETECTOR for a in gateway.alarms.open_alarms())
        )
        await wait_until(lambda: spy.to(HOUSE_VALVE))
        await gateway.bus.join()
        alarms = gateway.alarms.open_alarms()
        assert {(a.source, a.site_id) for a in alarms if a.alarm_type == "leak_high"} == {
            (HOUSE_DETECTOR, HOUSE)
        }
        assert all(spy.to(v) == [] for v in VALVES)
        assert gateway.ingest.counts["accepted.report"] == 1
    finally:
        await spy.stop()
        await gateway.stop()
    spy.assert_no_open_command()
