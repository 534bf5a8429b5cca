"""Settings of ``gasgate central run``: defaults, then the environment (``GASGATE_CENTRAL_`` +
the name in capitals: ``GASGATE_CENTRAL_DB``, ``GASGATE_CENTRAL_GASCO_MQTT``, ...), then the
flags. A deployment can give every one of them as an environment variable
(deploy/central/docker-compose.yml does)."""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.errors import ConfigError
from gateway.logs import LogFormat
from gateway.mqtturl import parse_mqtt_url

__all__ = ["CentralSettings"]


def _default_instance() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:60] or "central"


class CentralSettings(BaseSettings):
    """One center instance. Several instances share ``db``, ``gasco_mqtt`` and ``group``; each
    has its own ``instance`` name, which names its broker sessions, so it must be stable
    across restarts and unique among the running instances."""

    model_config = SettingsConfigDict(env_prefix="GASGATE_CENTRAL_", extra="forbid")

    db: str = Field(description="PostgreSQL DSN (postgresql://user:pass@host:5432/gasgate).")
    gasco_mqtt: str = Field(
        description="The gas company's broker: mqtt://[user:pass@]host[:port] or mqtts://..."
    )
    http_host: str = Field("127.0.0.1", description="Address of the API and console.")
    http_port: Annotated[int, Field(ge=0, le=65535)] = Field(8090, description="Its port.")
    instance: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = Field(
        default_factory=_default_instance,
        description="This instance's name (default: the host name): its MQTT client ids and "
        "alarm_events.received_by.",
    )
    group: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = Field(
        "gasgate-central", description="The $share group every instance of this center joins."
    )
    topic_prefix: str = Field("gasco/v1", description="The gateways' topic prefix.")
    silent_after_s: Annotated[float, Field(gt=0)] = Field(
        900.0,
        description="A gateway not heard from for this long is an incident (3 x the gateways' "
        "300 s summary interval).",
    )
    session_expiry_s: Annotated[int, Field(ge=0, le=2**32 - 1)] = Field(
        7 * 24 * 3600,
        description="MQTT 5 session expiry of the stream sessions: how long the broker keeps "
        "messages for an instance that is away.",
    )
    alert_secret: SecretStr | None = Field(
        None, description="Shared with the gateways' escalation.alert_page.secret (issue 14)."
    )
    hotline: str = Field("", description="The gas company's number, shown on the alert page.")
    timezone: str = Field("Asia/Shanghai", description="IANA time zone of pages and reports.")
    map_tile_url: str = Field(
        "",
        description="A tile server for the control room's map, as http(s)://host/{z}/{x}/{y}.png "
        "({s} for a subdomain); empty: no tiles, the map needs no internet.",
    )
    log_level: str = Field(
        "INFO", validation_alias=AliasChoices("log_level", "gasgate_central_log_level")
    )
    log_format: LogFormat = Field(
        "auto",
        validation_alias=AliasChoices(
            "log_format", "gasgate_central_log_format", "gasgate_log_format"
        ),
    )

    @field_validator("gasco_mqtt")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        try:
            parse_mqtt_url(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("map_tile_url")
    @classmethod
    def _tiles(cls, value: str) -> str:
        value = value.strip()
        if value and not (
            re.match(r"^https?://[^/\s]+/", value)
            and all(k in value for k in ("{z}", "{x}", "{y}"))
        ):
            raise ValueError("map_tile_url: http(s)://host/.../{z}/{x}/{y}.png, or empty")
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = value.strip("/")
        if not value or any(c in value for c in "+#") or value.startswith("$"):
            raise ValueError("topic_prefix: a topic without wildcards, not starting with $")
        return value

    @classmethod
    def load(cls, flags: Mapping[str, Any]) -> CentralSettings:
        """Defaults < environment < flags; a flag that is ``None`` was not given."""
        given = {k: v for k, v in flags.items() if v is not None}
        return cls(**given)
