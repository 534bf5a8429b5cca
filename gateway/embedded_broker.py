"""An embedded MQTT broker (amqtt) for the one-machine demo and tests.

Production sites run Mosquitto; amqtt is the maintained fork of hbmqtt (which cannot import on
Python 3.11) and runs inside the demo's own process, so a fresh machine needs nothing else.
"""

from __future__ import annotations

import logging
from typing import Any

from amqtt.broker import Broker

__all__ = ["EmbeddedBroker"]


class EmbeddedBroker:
    """A loopback-only, anonymous broker on ``port``; ``start()``/``stop()`` like every room."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self._broker: Any = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        # amqtt logs every packet at INFO; the demo's own output is what a person should read.
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }
        self._broker = Broker(config)
        await self._broker.start()

    async def stop(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None
