"""The simulated receiver's end of the UART: a pseudo-terminal behind a stable symlink, or a real
serial device.

The bridge opens ``link_path`` as if it were ``/dev/ttyUSB0``. :meth:`PtyPort.unplug` closes the
master side, so the bridge's reads fail exactly as they do when a USB-serial adapter is pulled;
:meth:`PtyPort.replug` makes a new pty and re-points the symlink, as udev does.

Writes never block the simulator: bytes that the line cannot take (nobody reading, port
unplugged) are dropped and counted, as a real UART loses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tty
from pathlib import Path
from typing import Protocol

import serial

__all__ = ["PtyPort", "SerialPort", "SimPort"]

log = logging.getLogger(__name__)

_READ_CHUNK = 4096
TX_BUFFER_BYTES = 4096  # a paced receiver's transmit buffer; a backlog beyond it is lost


class SimPort(Protocol):
    """What the simulated receiver needs from its line."""

    bytes_dropped: int

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def read(self) -> bytes: ...
    def write(self, data: bytes) -> None: ...


class _FdPort:
    """A byte line on a non-blocking file descriptor, read through the event loop."""

    def __init__(self) -> None:
        self.bytes_dropped = 0
        self._fd: int | None = None
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue()

    @property
    def connected(self) -> bool:
        return self._fd is not None

    async def read(self) -> bytes:
        """The next chunk the peer wrote; waits across an unplug until bytes arrive again."""
        return await self._inbox.get()

    def write(self, data: bytes) -> None:
        fd = self._fd
        if fd is None:
            self.bytes_dropped += len(data)
            return
        try:
            written = os.write(fd, data)
        except (BlockingIOError, OSError) as exc:
            log.debug("line dropped %d bytes: %s", len(data), exc)
            written = 0
        self.bytes_dropped += len(data) - written

    def _watch(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        asyncio.get_running_loop().add_reader(fd, self._on_readable, fd)

    def _unwatch(self) -> int | None:
        fd, self._fd = self._fd, None
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
        return fd

    def _on_readable(self, fd: int) -> None:
        try:
            data = os.read(fd, _READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            data = b""
            log.warning("line lost: %s", exc)
        if data:
            self._inbox.put_nowait(data)
        else:
            # EOF or an error (a real adapter pulled): stop reading, or the loop would spin on a
            # descriptor that stays readable. Writes fail from now on and are counted as dropped.
            asyncio.get_running_loop().remove_reader(fd)


class PtyPort(_FdPort):
    """A pseudo-terminal whose slave is reachable at ``link_path`` (a symlink).

    A pty moves bytes as fast as the CPU allows; with ``baud`` set, the receiver's bytes are
    paced as a UART at that rate (8N1: 10 bits a byte) sends them, each frame arriving when its
    last byte would, and bytes beyond the receiver's transmit buffer are dropped (counted).
    """

    def __init__(self, link_path: Path, *, baud: int | None = None) -> None:
        super().__init__()
        self.link_path = Path(link_path)
        self.baud = baud
        self.slave_path: str | None = None
        self._slave_fd: int | None = None
        self._line_free_at = 0.0
        self._plugs = 0  # bytes still on the wire when the adapter is pulled are lost

    def write(self, data: bytes) -> None:
        if self.baud is None:
            super().write(data)
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        start = max(now, self._line_free_at)
        if (start - now) * self.baud / 10 + len(data) > TX_BUFFER_BYTES:
            self.bytes_dropped += len(data)
            return
        self._line_free_at = start + len(data) * 10 / self.baud
        loop.call_at(self._line_free_at, self._arrive, self._plugs, data)

    def _arrive(self, plug: int, data: bytes) -> None:
        if plug == self._plugs:
            super().write(data)
        else:
            self.bytes_dropped += len(data)

    @property
    def master_fd(self) -> int:
        if self._fd is None:
            raise RuntimeError(f"{self.link_path} is unplugged")
        return self._fd

    async def start(self) -> None:
        if self.link_path.exists() and not self.link_path.is_symlink():
            # Never replace a real file or device node (a mistyped --pty-link /dev/ttyUSB0).
            raise FileExistsError(f"{self.link_path} exists and is not a symlink")
        self._open()

    async def stop(self) -> None:
        self.unplug()

    def unplug(self) -> None:
        """Pull the adapter: the bridge's reads fail and the symlink disappears."""
        master = self._unwatch()
        slave, self._slave_fd = self._slave_fd, None
        for fd in (master, slave):
            if fd is not None:
                os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            if self.link_path.is_symlink():
                self.link_path.unlink()
        if master is not None:
            log.info("unplugged %s (was %s)", self.link_path, self.slave_path)

    def replug(self) -> None:
        """Plug back in: a new pty on a new device node, the symlink pointing at it."""
        previous = self.slave_path
        self.unplug()
        self._open(avoid=previous)

    def _open(self, avoid: str | None = None) -> None:
        self._plugs += 1
        master, slave = os.openpty()
        if os.ttyname(slave) == avoid:
            # The kernel reuses a freed pts number; a replugged adapter must look new, so that
            # a bridge that kept the old path open cannot mistake the new node for the old one.
            spare = master, slave
            master, slave = os.openpty()
            for fd in spare:
                os.close(fd)
        # Raw mode: no echo, no line editing, no CR/LF mapping; every byte passes unchanged.
        tty.setraw(slave)
        tty.setraw(master)
        # Keeping our own slave fd open keeps the line discipline (and its raw settings) alive
        # while the bridge closes and reopens the port.
        self._slave_fd = slave
        self.slave_path = os.ttyname(slave)
        self._watch(master)
        tmp = self.link_path.with_name(f".{self.link_path.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(self.slave_path)
        tmp.replace(self.link_path)  # atomic: the bridge never sees a missing link mid-swap
        log.info("pty %s -> %s", self.link_path, self.slave_path)


class SerialPort(_FdPort):
    """A real serial device (a USB-serial adapter wired to the bridge's), via pyserial."""

    def __init__(self, device: str, baudrate: int = 115200) -> None:
        super().__init__()
        self.device = device
        self.baudrate = baudrate
        self._serial: serial.Serial | None = None

    async def start(self) -> None:
        self._serial = serial.Serial(self.device, self.baudrate, timeout=0, write_timeout=0)
        self._watch(self._serial.fileno())
        log.info("serial %s at %d baud", self.device, self.baudrate)

    async def stop(self) -> None:
        self._unwatch()
        ser, self._serial = self._serial, None
        if ser is not None:
            ser.close()
