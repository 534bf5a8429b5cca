"""A real small filesystem for disk faults: a tmpfs mounted on a test's directory (root is
needed to mount; the test is skipped with that reason otherwise), filled to the last byte or
remounted read-only."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["fill", "remount", "small_tmpfs"]

SIZE = "4m"


@contextlib.contextmanager
def small_tmpfs(mount: Path, size: str = SIZE) -> Iterator[Path]:
    mount.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def remount(mount: Path, mode: str) -> None:
    """``ro`` or ``rw``: as an operator (or a kernel on I/O errors) would."""
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mount)], check=True, timeout=30)


def fill(directory: Path) -> Path:
    """Write a ballast file until the filesystem refuses another byte."""
    ballast = directory / "ballast"
    with ballast.open("wb", buffering=0) as f:
        for size in (1 << 16, 1 << 12, 1 << 8, 1):
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * size)
    with pytest.raises(OSError) as refused, (directory / "probe").open("wb", buffering=0) as f:
        f.write(b"\0" * 4096)
        os.fsync(f.fileno())
    assert refused.value.errno == errno.ENOSPC
    return ballast
