"""A raw KSP/1 peer on a real pty: the test plays the receiver byte for byte.

The peer holds the pty master; the code under test opens the slave through a stable symlink, as
it would a USB-serial device. ``unplug()`` closes the master (the slave then reads EIO, like a
pulled USB cable) and ``plug()`` puts a fresh pty behind the same symlink.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from firmware_bridge import ksp

__all__ = ["RawPeer"]


class RawPeer:
    def __init__(self, link_path: Path) -> None:
        self.path = link_path
        self.decoder = ksp.Decoder()
        self.frames: asyncio.Queue[ksp.Frame] = asyncio.Queue()
        self.received = bytearray()  # every byte the link wrote, for exact-bytes assertions
        self._master: int | None = None
        self._slave: int | None = None

    def plug(self) -> None:
        master, slave = os.openpty()
        os.set_blocking(master, False)
        # Keep our slave fd open so the pty never hangs up between the link's reopen attempts.
        self._master, self._slave = master, slave
        tmp = self.path.with_name(self.path.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.ttyname(slave))
        tmp.replace(self.path)
        asyncio.get_running_loop().add_reader(master, self._readable)

    def unplug(self) -> None:
        if self._master is None:
            return
        asyncio.get_running_loop().remove_reader(self._master)
        os.close(self._master)
        assert self._slave is not None
        os.close(self._slave)
        self._master = self._slave = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _readable(self) -> None:
        assert self._master is not None
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # EIO: nobody holds the slave open right now
            return
        self.received += data
        for frame in self.decoder.feed(data):
            self.frames.put_nowait(frame)

    def write(self, data: bytes) -> None:
        assert self._master is not None
        os.write(self._master, data)

    def send(self, seq: int, message: ksp.Message) -> bytes:
        data = ksp.encode(seq, message)
        self.write(data)
        return data

    async def next_frame(self, within_s: float = 10.0) -> ksp.Frame:
        return await asyncio.wait_for(self.frames.get(), within_s)

    async def next_message(self, within_s: float = 10.0) -> tuple[int, ksp.Message]:
        frame = await self.next_frame(within_s)
        return frame.seq, ksp.parse(frame)

    async def expect_quiet(self, seconds: float) -> None:
        """Nothing at all arrives for ``seconds``."""
        with contextlib.suppress(TimeoutError):
            frame = await asyncio.wait_for(self.frames.get(), seconds)
            raise AssertionError(f"expected silence on the line, got {frame}")

    def close(self) -> None:
        self.unplug()
