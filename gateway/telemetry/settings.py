"""Telemetry settings: where InfluxDB is, and how writes are batched and spooled.

A plain pydantic model so the gateway's settings can take it in as a base class (flat names:
``influx_url`` ↔ ``--influx-url`` ↔ ``GASGATE_INFLUX_URL`` ↔ ``influx_url:`` in the YAML file).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar
from urllib.parse import urlsplit

import click
from pydantic import BaseModel, Field, SecretStr, field_validator

__all__ = ["TelemetrySettings", "influx_options"]

F = TypeVar("F", bound=Callable[..., object])


class TelemetrySettings(BaseModel):
    influx_url: str | None = Field(
        None,
        description="InfluxDB base URL (v2 write API, /api/v2/write), e.g. http://127.0.0.1:8086; "
        "unset: telemetry is off and the gateway says so once",
    )
    influx_org: str = Field("gasgate", description="InfluxDB organisation")
    influx_bucket: str = Field("gasgate", description="InfluxDB bucket (InfluxQL database name)")
    influx_token: SecretStr | None = Field(None, description="InfluxDB API token")
    telemetry_batch_size: Annotated[int, Field(ge=1, le=50_000)] = Field(
        1000, description="points per write request"
    )
    telemetry_flush_interval_s: Annotated[float, Field(gt=0, le=60)] = Field(
        1.0, description="longest a point waits in memory before its batch is written"
    )
    telemetry_spool_max_bytes: Annotated[int, Field(ge=4096)] = Field(
        256 * 1024 * 1024,
        description="disk spool bound; over it the oldest periodic telemetry is dropped "
        "(alarm transitions never are)",
    )
    telemetry_write_timeout_s: Annotated[float, Field(gt=0, le=120)] = Field(
        5.0, description="one write request's timeout; a slow InfluxDB counts as down"
    )
    telemetry_retry_max_s: Annotated[float, Field(gt=0, le=600)] = Field(
        1.0,
        description="longest wait between probes while InfluxDB is down (each probe is one "
        "line, so writes resume about this long after InfluxDB answers again)",
    )

    @field_validator("influx_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
        return url.rstrip("/")

    @property
    def telemetry_enabled(self) -> bool:
        return bool(self.influx_url)


def influx_options(command: F) -> F:
    """The four ``--influx-*`` flags for a click command; values are ``None`` when not given."""
    for flag, text in reversed(
        [
            ("--influx-url", "InfluxDB base URL (off when unset)"),
            ("--influx-org", "InfluxDB organisation"),
            ("--influx-bucket", "InfluxDB bucket"),
            ("--influx-token", "InfluxDB API token (prefer GASGATE_INFLUX_TOKEN)"),
        ]
    ):
        command = click.option(flag, default=None, help=text)(command)
    return command
