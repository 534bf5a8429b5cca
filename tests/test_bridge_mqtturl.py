"""Broker URLs (gateway.mqtturl): parsing, credentials, TLS, and a real connection."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import aiomqtt
import pytest

from gateway.errors import ConfigError
from gateway.mqtturl import MqttUrl, parse_mqtt_url
from tests.support.services import Mosquitto


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://broker", MqttUrl("broker", 1883)),
        ("mqtt://127.0.0.1:1884", MqttUrl("127.0.0.1", 1884)),
        ("mqtts://broker.gas.example", MqttUrl("broker.gas.example", 8883, tls=True)),
        (
            "mqtt://bridge:s%40cret%3A1@broker:1883/",
            MqttUrl("broker", 1883, username="bridge", password="s@cret:1"),
        ),
        ("mqtt://user@[::1]:1999", MqttUrl("::1", 1999, username="user")),
        (
            "mqtts://broker:8884?ca=/etc/gasgate/ca.pem",
            MqttUrl("broker", 8884, tls=True, ca_file=Path("/etc/gasgate/ca.pem")),
        ),
    ],
)
def test_parse(url: str, expected: MqttUrl) -> None:
    assert parse_mqtt_url(url) == expected


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("tcp://broker", "scheme"),
        ("broker:1883", "scheme"),
        ("mqtt://", "no host"),
        ("mqtt://broker:99999", "out of range"),
        ("mqtt://broker/topic", "no path"),
        ("mqtt://broker?ca=/x.pem", "needs mqtts"),
        ("mqtts://broker?cafile=/x.pem", "unknown option"),
    ],
)
def test_bad_urls_say_why(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_mqtt_url(url)


def test_password_never_in_str_or_repr() -> None:
    url = parse_mqtt_url("mqtts://bridge:hunter2@broker")
    assert str(url) == "mqtts://bridge:***@broker:8883"
    assert "hunter2" not in repr(url)


def test_tls_context_verifies_the_broker() -> None:
    context = parse_mqtt_url("mqtts://broker").tls_context()
    assert context is not None
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert parse_mqtt_url("mqtt://broker").tls_context() is None


def _broker(tmp_path: Path, config: str) -> Mosquitto:
    # A root-run Mosquitto drops to its own user; "user root" keeps it able to read our files.
    return Mosquitto(tmp_path, extra_config=f"user root\n{config}")


def _password_file(tmp_path: Path, user: str, password: str) -> Path:
    passwords = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwords), user, password], check=True)
    return passwords


async def test_credentials_from_the_url_are_used(tmp_path: Path) -> None:
    passwords = _password_file(tmp_path, "bridge", "s@cret")
    config = f"allow_anonymous false\npassword_file {passwords}\n"
    with _broker(tmp_path, config).running() as broker:
        good = parse_mqtt_url(f"mqtt://bridge:s%40cret@127.0.0.1:{broker.port}").client()
        async with good:
            await good.publish("kit/v1/_test/ping", b"1", qos=1)
        wrong = parse_mqtt_url(f"mqtt://bridge:guess@127.0.0.1:{broker.port}").client()
        with pytest.raises(aiomqtt.MqttError):
            async with wrong:
                pass


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1."""
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, csr = directory / "server.pem", directory / "server.key", directory / "server.csr"
    san = directory / "san.cnf"
    san.write_text("subjectAltName=IP:127.0.0.1\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    sign = ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial"]
    for args in (
        ["req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-subj", "/CN=gasgate test CA"],
        ["req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        [*sign, "-out", cert, "-days", "2", "-extfile", san],
    ):
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)
    return ca, cert, key


# paho-mqtt 2.2 leaves the socket of a failed TLS handshake to the garbage collector.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_mqtts_verifies_the_broker_against_the_given_ca(tmp_path: Path) -> None:
    ca, cert, key = _certificates(tmp_path)
    config = f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
    with _broker(tmp_path, config).running() as broker:
        client = parse_mqtt_url(f"mqtts://127.0.0.1:{broker.port}?ca={ca}").client()
        async with client:
            await client.publish("kit/v1/_test/ping", b"1", qos=1)
        # Without our CA the broker's certificate is not trusted: no connection.
        untrusted = parse_mqtt_url(f"mqtts://127.0.0.1:{broker.port}").client()
        with pytest.raises(aiomqtt.MqttError):
            async with untrusted:
                pass
