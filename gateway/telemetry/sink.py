"""One synchronous write of a batch of lines to InfluxDB's v2 write API, classified.

influxdb-client's background batching retries and then drops (and loses its buffer on restart),
so the writer keeps its own batches and spool and uses the client's SYNCHRONOUS write API: one
request, one answer, no hidden retries (the client's urllib3 ``retries`` stays off).

The client is imported and built on the first write, in the writer's thread: importing it
(numpy, its generated API) takes ~0.4 s, which a restarting gateway must not spend before its
safety rooms are up.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import urllib3

from gateway.telemetry.settings import TelemetrySettings

if TYPE_CHECKING:
    from influxdb_client.client.influxdb_client import InfluxDBClient

__all__ = ["InfluxSink", "Outcome", "WriteResult"]

# Statuses that say "not now" rather than "not this point": keep the lines, retry later. A bad
# token (401/403) or a missing bucket (404) is a configuration fault an operator fixes; losing
# the data meanwhile would make it two faults.
_RETRY_STATUSES = frozenset({401, 403, 404, 408, 429})


class Outcome(StrEnum):
    WRITTEN = "written"
    REJECTED = "rejected"  # InfluxDB refused the content (4xx): retrying cannot help
    UNAVAILABLE = "unavailable"  # unreachable, slow, 5xx, 429...: retry later


@dataclass(frozen=True, slots=True)
class WriteResult:
    outcome: Outcome
    detail: str = ""
    retry_after_s: float | None = None


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP-date: fall back to our own backoff


def _text(body: object) -> str:
    raw = body.decode(errors="replace") if isinstance(body, bytes) else str(body or "")
    return raw.strip()[:500]


class InfluxSink:
    def __init__(self, settings: TelemetrySettings) -> None:
        self._settings = settings
        self._client: InfluxDBClient | None = None
        self._write_api: Any = None

    def _connect(self) -> None:
        from influxdb_client.client.influxdb_client import InfluxDBClient  # noqa: PLC0415  (slow)
        from influxdb_client.client.write_api import SYNCHRONOUS  # noqa: PLC0415  (slow)

        s = self._settings
        self._client = InfluxDBClient(
            url=s.influx_url,
            token=s.influx_token.get_secret_value() if s.influx_token else "",  # "": no header
            org=s.influx_org,
            timeout=int(s.telemetry_write_timeout_s * 1000),
        )
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()  # type: ignore[no-untyped-call]
            self._client = None

    def write(self, lines: list[str]) -> WriteResult:
        from influxdb_client.domain.write_precision import WritePrecision  # noqa: PLC0415  (slow)
        from influxdb_client.rest import ApiException  # noqa: PLC0415  (slow)

        if self._client is None:
            self._connect()
        body = "\n".join(lines).encode()
        try:
            self._write_api.write(
                bucket=self._settings.influx_bucket,
                org=self._settings.influx_org,
                record=body,
                write_precision=WritePrecision.NS,
            )
        except ApiException as exc:
            detail = f"HTTP {exc.status}: {_text(exc.body) or exc.reason}"
            status = exc.status or 0
            if status >= 500 or status in _RETRY_STATUSES:
                return WriteResult(Outcome.UNAVAILABLE, detail, _retry_after(exc.headers))
            return WriteResult(Outcome.REJECTED, detail)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            return WriteResult(Outcome.UNAVAILABLE, f"{type(exc).__name__}: {exc}")
        return WriteResult(Outcome.WRITTEN)
