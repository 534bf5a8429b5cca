"""``gasgate demo`` as a person runs it: a subprocess whose output lines are read as they come."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

__all__ = ["GASGATE", "log_in", "running_demo", "wait_for"]

GASGATE = str(Path(sys.executable).with_name("gasgate"))


@contextlib.contextmanager
def running_demo(*args: str) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """The demo as a person runs it, its output lines as they come; killed if still running."""
    proc = subprocess.Popen(
        [GASGATE, "demo", *args, "--time-scale", "0.05", "--http-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    reader.start()
    try:
        yield proc, lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(5)
        if proc.stdout is not None:
            proc.stdout.close()


def wait_for(lines: list[str], pattern: str, within_s: float = 60) -> re.Match[str]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        found = re.search(pattern, "".join(lines), re.MULTILINE)
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{pattern!r} not seen within {within_s} s:\n{''.join(lines)[-3000:]}")


def log_in(console: str, name: str = "officer", client: httpx.Client | None = None) -> None:
    """Sign in with the demo's password (``client``: keep the session cookie in it)."""
    post = client.post if client is not None else httpx.post
    answer = post(
        f"{console}/api/login", json={"name": name, "password": "gasgate-demo"}, timeout=10
    )
    assert answer.status_code == 200, answer.text
