"""A private PostgreSQL cluster for tests and benchmarks: Debian's ``initdb``/``pg_ctl`` in a
temporary directory, on a free loopback port, trust authentication, nothing on disk kept.

``GASGATE_TEST_PG_DSN`` (a server DSN whose user may create databases) uses that server instead.
PostgreSQL refuses to run as root, so as root the cluster runs as the ``postgres`` user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from tests.support.services import free_port, wait_for_port

__all__ = ["PostgreSQL", "fresh_database", "pg_bin"]


def pg_bin(name: str) -> str:
    """``initdb``/``pg_ctl``: Debian keeps them in /usr/lib/postgresql/<major>/bin."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    path = found[0] if found else shutil.which(name)
    if not path:
        raise RuntimeError(f"{name} is not installed: run ./dev test, which installs postgresql")
    return path


def _as_owner() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


@dataclass
class PostgreSQL:
    """``start()`` creates the cluster on first use; ``stop()``/``kill()``/``start()`` keep the
    port and the data, so clients can reconnect to the same server."""

    port: int = field(default_factory=free_port)
    workdir: Path | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _data(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "data"

    def _run(self, *args: str) -> None:
        subprocess.run([*_as_owner(), *args], check=True, capture_output=True, timeout=120)

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


@contextlib.contextmanager
def server() -> Iterator[str]:
    """A server DSN: ``GASGATE_TEST_PG_DSN``, else a private cluster for the block."""
    given = os.environ.get("GASGATE_TEST_PG_DSN")
    if given:
        yield given
        return
    cluster = PostgreSQL()
    cluster.start()
    try:
        yield cluster.dsn
    finally:
        cluster.remove()
