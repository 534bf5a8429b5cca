"""Broker addresses as URLs: ``mqtt://[user[:password]@]host[:port]`` and ``mqtts://...`` (TLS).

One parser for every MQTT client gasgate runs (the serial bridge, the gateway's site and gas
company brokers). ``mqtts`` verifies the broker against the system CAs, or against a private CA
given as ``?ca=/path/ca.pem``. User and password are percent-decoded (``%40`` for ``@``).
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

import aiomqtt

from gateway.errors import ConfigError

__all__ = ["MqttUrl", "no_delay", "parse_mqtt_url"]

_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
_NODELAY: Final = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


@dataclass(frozen=True, slots=True)
class MqttUrl:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None

    def __str__(self) -> str:
        """The URL without its password, for logs."""
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}:***@" if self.password else f"{self.username}@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{user if self.username else ''}{host}:{self.port}"

    def tls_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)

    def client(self, **options: Any) -> aiomqtt.Client:
        """An aiomqtt client for this broker; ``options`` (identifier, will, ...) pass through.

        With ``TCP_NODELAY``: every gasgate message is small and urgent, and Nagle would hold
        a leak report or a close_valve behind the broker's delayed ACK (~40 ms)."""
        options.setdefault("socket_options", _NODELAY)
        return aiomqtt.Client(
            self.host,
            self.port,
            username=self.username,
            password=self.password,
            tls_context=self.tls_context(),
            **options,
        )


def no_delay(gmqtt_client: Any) -> None:
    """``TCP_NODELAY`` on a connected gmqtt client's socket (gmqtt has no option for it): a
    close_valve or a PUBACK must not wait for the broker's delayed ACK (~40 ms)."""
    transport = getattr(getattr(gmqtt_client, "_connection", None), "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        for level, option, value in _NODELAY:
            sock.setsockopt(level, option, value)


def parse_mqtt_url(url: str) -> MqttUrl:
    """:class:`MqttUrl` for ``url``; :class:`ConfigError` saying what is wrong otherwise."""
    parts = urlsplit(url.strip())
    if parts.scheme not in _DEFAULT_PORTS:
        raise ConfigError(f"MQTT URL {url!r}: scheme must be mqtt:// or mqtts://")
    try:
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
    except ValueError as exc:
        raise ConfigError(f"MQTT URL {url!r}: {exc}") from None
    if not parts.hostname:
        raise ConfigError(f"MQTT URL {url!r}: no host")
    if parts.path not in ("", "/") or parts.fragment:
        raise ConfigError(f"MQTT URL {url!r}: a broker URL has no path")
    query = parse_qs(parts.query, keep_blank_values=True)
    if set(query) - {"ca"}:
        raise ConfigError(f"MQTT URL {url!r}: unknown option(s) {sorted(set(query) - {'ca'})}")
    ca = query.get("ca", [None])[-1]
    if ca is not None and parts.scheme != "mqtts":
        raise ConfigError(f"MQTT URL {url!r}: ?ca= needs mqtts://")
    return MqttUrl(
        host=parts.hostname,
        port=port,
        tls=parts.scheme == "mqtts",
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
        ca_file=Path(ca) if ca else None,
    )
