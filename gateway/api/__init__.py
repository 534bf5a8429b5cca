"""The people-facing side: the HTTP API, the console and the operations endpoints.
See docs/api.md and docs/console.md."""

from gateway.api.app import create_app
from gateway.api.context import ApiContext
from gateway.api.room import ApiRoom

__all__ = ["ApiContext", "ApiRoom", "create_app"]
