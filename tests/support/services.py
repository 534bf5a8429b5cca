"""Real services for tests and benchmarks, each on a free loopback port in a private directory.

Tests that stop or restart a service use their own instance from here, never the machine's.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["InfluxDB1", "Mosquitto", "VictoriaMetrics", "free_port", "wait_for_port"]


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
        raise RuntimeError("mosquitto is not installed: run ./dev test, which installs it")
    return found


@dataclass
class Mosquitto:
    """A private Mosquitto; ``stop()``/``start()`` keep the port so clients can reconnect."""

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
            self.proc = subprocess.Popen(
                [_mosquitto_bin(), "-c", str(conf)], stderr=log, stdout=log
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


def _stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    if proc and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _installed(name: str) -> str:
    found = shutil.which(name) or f"/usr/bin/{name}"
    if not Path(found).exists():
        raise RuntimeError(f"{name} is not installed: run ./dev test, which installs it")
    return found


def _http_get(url: str, params: dict[str, str]) -> bytes:
    with urllib.request.urlopen(f"{url}?{urllib.parse.urlencode(params)}", timeout=30) as r:
        body: bytes = r.read()
        return body


@dataclass
class VictoriaMetrics:
    """A private VictoriaMetrics (Debian ``victoria-metrics``) with InfluxDB-like overwrite:
    one sample per series and millisecond (``-dedup.minScrapeInterval=1ms``), so a replayed
    point does not count twice. ``stop()``/``start()`` keep the port and the data."""

    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [
            _installed("victoria-metrics"),
            f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-storageDataPath={self.workdir / 'vmdata'}",
            "-dedup.minScrapeInterval=1ms",
            "-search.latencyOffset=0s",
            "-loggerLevel=WARN",
        ]
        with (self.workdir / f"victoria-metrics-{self.port}.log").open("ab") as log:
            self.proc = subprocess.Popen(args, stderr=log, stdout=log)
        wait_for_port(self.port, timeout=30)

    def stop(self) -> None:
        _stop_process(self.proc)
        self.proc = None

    def export(self, selector: str = '{__name__!=""}') -> list[dict[str, object]]:
        """Every series matching ``selector`` with all its samples (``/api/v1/export``)."""
        urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=30).close()
        body = _http_get(f"{self.url}/api/v1/export", {"match[]": selector})
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    @contextlib.contextmanager
    def running(self) -> Iterator[VictoriaMetrics]:
        self.start()
        try:
            yield self
        finally:
            self.stop()


@dataclass
class InfluxDB1:
    """A private InfluxDB 1.x (Debian ``influxdb``, 1.6.7): v1 ``/write`` and ``/query``."""

    workdir: Path
    port: int = field(default_factory=free_port)
    rpc_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        data = self.workdir / "influxdb"
        conf = self.workdir / f"influxdb-{self.port}.conf"
        conf.write_text(
            f'reporting-disabled = true\nbind-address = "127.0.0.1:{self.rpc_port}"\n'
            f'[meta]\n  dir = "{data}/meta"\n'
            f'[data]\n  dir = "{data}/data"\n  wal-dir = "{data}/wal"\n'
            "  query-log-enabled = false\n"
            f'[http]\n  bind-address = "127.0.0.1:{self.port}"\n  log-enabled = false\n'
            "[monitor]\n  store-enabled = false\n"
            "[continuous_queries]\n  enabled = false\n"
        )
        with (self.workdir / f"influxdb-{self.port}.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [_installed("influxd"), "-config", str(conf)], stderr=log, stdout=log
            )
        wait_for_port(self.port, timeout=30)

    def stop(self) -> None:
        _stop_process(self.proc)
        self.proc = None

    def query(self, q: str, db: str = "") -> dict[str, object]:
        """One InfluxQL statement's JSON answer (times as epoch ms)."""
        params = {"q": q, "epoch": "ms"} | ({"db": db} if db else {})
        data = urllib.parse.urlencode(params).encode()
        with urllib.request.urlopen(f"{self.url}/query", data=data, timeout=30) as r:
            answer: dict[str, object] = json.loads(r.read())
            return answer

    def write(self, db: str, lines: str) -> None:
        """Line protocol through the v1 ``/write`` (ns precision); raises on any non-2xx."""
        url = f"{self.url}/write?{urllib.parse.urlencode({'db': db, 'precision': 'ns'})}"
        urllib.request.urlopen(url, data=lines.encode(), timeout=30).close()

    @contextlib.contextmanager
    def running(self) -> Iterator[InfluxDB1]:
        self.start()
        try:
            yield self
        finally:
            self.stop()
