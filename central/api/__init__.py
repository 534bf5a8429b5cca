"""The monitoring center's HTTP side: JSON API, control-room pages, operations endpoints."""

from central.api.app import create_app

__all__ = ["create_app"]
