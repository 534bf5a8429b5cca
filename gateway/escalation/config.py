"""Escalation settings: the gas company link, the notification channels, who the people are.

:class:`EscalationSettings` is embedded by the gateway's settings (``escalation:`` in the config
file). Secrets (passwords, webhook secrets) are ``SecretStr`` so they never reach a log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from gateway.errors import ConfigError
from gateway.escalation.messages import check_zone
from gateway.mqtturl import parse_mqtt_url

__all__ = [
    "AlertPageSettings",
    "ChannelSettings",
    "EmailSettings",
    "EscalationSettings",
    "GascoSettings",
    "OutboxSettings",
    "Recipient",
    "WebhookSettings",
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GascoSettings(_Model):
    """The gas company's MQTT broker (docs/gas-company-contract.md)."""

    url: str | None = Field(
        None,
        description="Gas company broker, mqtt://host:1883 or mqtts://host:8883 "
        "(flag --gasco-mqtt); unset: no gas company link (events wait in the outbox)",
    )
    username: str | None = Field(None, description="overrides the URL's user")
    password: SecretStr | None = Field(None, description="overrides the URL's password")
    client_id: str | None = Field(
        None,
        description="MQTT client id; default gasgate-<gateway id>-gasco (the site link is "
        "gasgate-<gateway id>: one broker may serve both without them kicking each other off)",
    )
    tls_ca: Path | None = Field(None, description="CA bundle for mqtts:// (or the URL's ?ca=)")
    tls_cert: Path | None = Field(None, description="client certificate (mutual TLS)")
    tls_key: Path | None = None
    tls_insecure: bool = Field(False, description="skip host name verification (tests only)")
    topic_prefix: str = "gasco/v1"
    session_expiry_s: Annotated[int, Field(ge=0, le=2**32 - 1)] = Field(
        7 * 86400, description="MQTT v5 session expiry: the broker keeps our session this long"
    )
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    publish_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    summary_interval_s: Annotated[float, Field(ge=1, le=86400)] = 300.0
    officers: tuple[str, ...] = Field(
        (), description="officer ids allowed to acknowledge / resolve; empty: any officer"
    )

    @field_validator("url")
    @classmethod
    def _mqtt_url(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_mqtt_url(value)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return value


WebhookTemplate = Literal["generic", "sms", "voice", "wecom", "dingtalk"]


class WebhookSettings(_Model):
    kind: Literal["webhook"] = "webhook"
    url: str
    template: WebhookTemplate = "generic"
    secret: SecretStr | None = Field(
        None, description="HMAC-SHA256 key for the X-Gasgate-Signature header"
    )
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("expected an http:// or https:// URL")
        return value


class EmailSettings(_Model):
    kind: Literal["email"] = "email"
    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 25
    starttls: bool = Field(False, description="upgrade the session with STARTTLS")
    tls_ca: Path | None = Field(None, description="CA bundle for STARTTLS (default: system CAs)")
    username: str | None = None
    password: SecretStr | None = None
    sender: str = "gasgate@localhost"
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 15.0


ChannelSettings = Annotated[WebhookSettings | EmailSettings, Field(discriminator="kind")]


class Recipient(_Model):
    """A person or group told by a step: a channel uses the address it needs (phone, e-mail);
    a group robot webhook needs none."""

    name: str
    phone: str = ""
    email: str = ""
    lang: Literal["zh", "en"] = "zh"


class OutboxSettings(_Model):
    backoff_initial_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    backoff_max_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    max_attempts: Annotated[int, Field(ge=1, le=10000)] = Field(
        60,
        description="attempts before a notification to a person is given up (recorded); "
        "gas company events are retried without limit",
    )
    keep_days: Annotated[int, Field(ge=1, le=3650)] = Field(
        30,
        description="days a delivered, failed or cancelled row is kept (the audit trail keeps "
        "its record for good); pending rows are never removed",
    )


class DigestSettings(_Model):
    """The daily digest of open maintenance alarms (policies with ``digest: true``)."""

    at: Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")] = Field(
        "08:00", description="local time (HH:MM) it is sent"
    )
    to: tuple[Literal["duty_room", "duty_supervisor", "service_team"], ...] = ("service_team",)
    via: tuple[str, ...] = Field(("email",), description="channel names")


class AlertPageSettings(_Model):
    """The link to the monitoring center's alert page in a site contact's first SMS."""

    base_url: str | None = Field(
        None, description="the center's public address, e.g. https://gc.example (unset: no link)"
    )
    secret: SecretStr | None = Field(
        None, description="shared with the center (GASGATE_CENTRAL_ALERT_SECRET) to sign links"
    )
    ttl_s: Annotated[float, Field(gt=0, le=7 * 86400)] = 86400.0

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("expected an http:// or https:// URL")
        return value

    @property
    def enabled(self) -> bool:
        return bool(self.base_url and self.secret_bytes())

    def secret_bytes(self) -> bytes:
        return self.secret.get_secret_value().encode() if self.secret else b""


class EscalationSettings(_Model):
    policies_file: Path | None = Field(
        None, description="YAML escalation policies (default: the built-in ones)"
    )
    hotline: str = Field("", description="the gas company's phone number, quoted in alerts")
    timezone: str = Field("Asia/Shanghai", description="local time zone of times in alerts")
    digest: DigestSettings = DigestSettings()
    gasco: GascoSettings = GascoSettings()
    channels: dict[str, ChannelSettings] = Field(
        default_factory=dict, description="named notification channels the policies use"
    )
    duty_room: tuple[Recipient, ...] = ()
    duty_supervisor: tuple[Recipient, ...] = ()
    emergency_dispatcher: tuple[Recipient, ...] = ()
    service_team: tuple[Recipient, ...] = ()
    district_regulators: dict[str, tuple[Recipient, ...]] = Field(
        default_factory=dict, description="district → its regulator's recipients"
    )
    outbox: OutboxSettings = OutboxSettings()
    alert_page: AlertPageSettings = AlertPageSettings()

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return check_zone(value)

    def with_gasco_url(self, url: str | None) -> EscalationSettings:
        """These settings with the gas company broker the ``--gasco-mqtt`` flag names, if any."""
        if url is None:
            return self
        gasco = GascoSettings.model_validate({**self.gasco.model_dump(), "url": url})
        return self.model_copy(update={"gasco": gasco})
