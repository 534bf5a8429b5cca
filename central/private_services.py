"""A private Mosquitto and a private PostgreSQL on free loopback ports, in directories of their
own: what ``gasgate demo --central`` runs the center on, and what the tests and benchmarks use as
real peers. Debian's packages (``mosquitto``, ``postgresql``); nothing of the machine's own
services is touched.

Every child runs in a session of its own: Ctrl-C in a terminal reaches the whole foreground
process group, and the demo must stop its children itself, in order (a broker dying before the
gateways would fill their logs with reconnects).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

__all__ = ["Mosquitto", "PostgreSQL", "free_port", "fresh_database", "pg_bin", "wait_for_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


def _mosquitto_bin() -> str:
    found = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(found).exists():
        raise RuntimeError(
            "mosquitto is not installed: ./dev test (or ./dev demo --central) installs it"
        )
    return found


@dataclass
class Mosquitto:
    """A private Mosquitto (MQTT 3.1.1 and 5); ``stop()``/``start()`` keep the port so clients
    can reconnect."""

    workdir: Path
    port: int = field(default_factory=free_port)
    extra_config: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        conf = self.workdir / f"mosquitto-{self.port}.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            # As deployed (deploy/mosquitto/mosquitto.conf): Nagle would hold a close_valve
            # behind a delayed ACK (~40 ms).
            f"set_tcp_nodelay true\nlog_dest stderr\n{self.extra_config}"
        )
        # The child keeps its own copy of the fd; ours is closed at once (no ResourceWarning).
        with (self.workdir / f"mosquitto-{self.port}.log").open("ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - the installed mosquitto, our own config
                [_mosquitto_bin(), "-c", str(conf)],
                stderr=log,
                stdout=log,
                start_new_session=True,
            )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    @contextlib.contextmanager
    def running(self) -> Iterator[Mosquitto]:
        self.start()
        try:
            yield self
        finally:
            self.stop()


def pg_bin(name: str) -> str:
    """``initdb``/``pg_ctl``: Debian keeps them in /usr/lib/postgresql/<major>/bin."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    path = found[0] if found else shutil.which(name)
    if not path:
        raise RuntimeError(
            f"{name} is not installed: ./dev test (or ./dev demo --central) installs postgresql"
        )
    return path


def _as_owner() -> list[str]:
    # PostgreSQL refuses to run as root: as root the cluster runs as the ``postgres`` user.
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


@dataclass
class PostgreSQL:
    """A cluster in a temporary directory (``initdb``), trust authentication on loopback,
    nothing kept: ``start()`` creates it on first use; ``stop()``/``start()`` keep the port
    and the data, so clients can reconnect to the same server; ``remove()`` ends it."""

    port: int = field(default_factory=free_port)
    workdir: Path | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _data(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "data"

    def _run(self, *args: str) -> None:
        subprocess.run(  # noqa: S603 - PostgreSQL's own programs, our own arguments
            [*_as_owner(), *args],
            check=True,
            capture_output=True,
            timeout=120,
            start_new_session=True,  # the server pg_ctl leaves behind: not in our terminal's group
        )

    def start(self) -> None:
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="gasgate-pg-"))
            if os.geteuid() == 0:
                owner = pwd.getpwnam("postgres")
                os.chown(self.workdir, owner.pw_uid, owner.pw_gid)
            self._run(
                pg_bin("initdb"),
                "-D",
                str(self._data()),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            )
        self._run(
            pg_bin("pg_ctl"),
            "-D",
            str(self._data()),
            "-l",
            str(self.workdir / "server.log"),
            "-w",
            "-o",
            f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c synchronous_commit=on -c max_connections=200",
            "start",
        )
        wait_for_port(self.port)

    def stop(self, mode: str = "fast") -> None:
        if self.workdir is not None and (self._data() / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.CalledProcessError):
                self._run(pg_bin("pg_ctl"), "-D", str(self._data()), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        self.stop("immediate")
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


def fresh_database(server_dsn: str) -> str:
    """A new empty database on the server; returns its DSN."""
    name = f"gasgate_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # a generated name, not input
    base, _, _ = server_dsn.rpartition("/")
    return f"{base}/{name}"
