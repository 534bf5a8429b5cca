"""Real services for tests and benchmarks, each on a free loopback port in a private directory
(Mosquitto is the product's own: central/private_services.py, which the central demo runs).

Tests that stop or restart a service use their own instance from here, never the machine's.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from central.private_services import Mosquitto, free_port, wait_for_port

__all__ = ["InfluxDB1", "Mosquitto", "VictoriaMetrics", "free_port", "wait_for_port"]


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
