"""gasgate's exception hierarchy: everything the package raises on purpose derives from here."""

from __future__ import annotations

__all__ = ["ConfigError", "GasgateError", "RejectedInput"]


class GasgateError(Exception):
    """Base of every error gasgate raises on purpose."""


class RejectedInput(GasgateError):
    """Input refused at the edge. ``reason`` is a short code metrics count; ``where`` locates it
    (an MQTT topic, ``file:line:column``, a byte offset)."""

    def __init__(self, reason: str, message: str, where: str = "") -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.reason = reason
        self.detail = message
        self.where = where


class ConfigError(GasgateError):
    """Settings or files that cannot be used; the message names the file and the field."""
