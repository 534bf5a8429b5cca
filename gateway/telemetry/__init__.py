"""Telemetry: the gateway's reports, alarm transitions and own metrics into InfluxDB.

The core builds one :class:`TelemetryWriter` and calls its ``write_*`` methods; they never block
and never raise for a bad value. See docs/telemetry.md for the schema and the spool policy.
"""

from gateway.telemetry.feed import TelemetryFeed
from gateway.telemetry.lineproto import Point, Priority, encode
from gateway.telemetry.schema import AlarmTransitionPoint, DeviceTags, SiteTags
from gateway.telemetry.settings import TelemetrySettings, influx_options
from gateway.telemetry.writer import SPOOL_FILE, TelemetryStats, TelemetryWriter

__all__ = [
    "SPOOL_FILE",
    "AlarmTransitionPoint",
    "DeviceTags",
    "Point",
    "Priority",
    "SiteTags",
    "TelemetryFeed",
    "TelemetrySettings",
    "TelemetryStats",
    "TelemetryWriter",
    "encode",
    "influx_options",
]
