"""The benchmark harness works (not how fast anything is: timing goals live in bench/).

``python -m bench system --quick`` starts its own Mosquitto brokers, the gateway, the bridge
and the load generator as separate processes, and must leave a table on stdout, the rows as
JSON, the raw latency samples, the side-by-side table with the Node-RED peer and (with
matplotlib installed) the PNG plot. Without the peer's packages (CI never runs npm) the peer
is skipped with a row that says so.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import aiomqtt
import pytest

from bench import system
from bench.peer import node_red
from tests.support.services import Mosquitto, VictoriaMetrics

ROOT = Path(__file__).resolve().parents[1]
MEASURES = {"P1 throughput", "P2 serial", "P2 MQTT", "P3 gas company", "P3 SMS webhook"}
MEASURES |= {"P4 outage", "P5 scale", "P6 restart", "P2 MQTT vs node-red"}


def quick_system(out: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", "system", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,  # it takes about a minute; below pytest's 300 s, so a hang fails here
        check=False,
        env=os.environ | env,
    )


@pytest.mark.slow
def test_quick_system_bench_leaves_table_json_samples_and_plot(tmp_path: Path) -> None:
    done = quick_system(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "system (quick)" in done.stdout
    header = next(line for line in done.stdout.splitlines() if "measure" in line)
    assert header.split()[:3] == ["measure", "case", "p50_ms"]

    document = json.loads((tmp_path / "system.json").read_text())
    assert document["suite"] == "system"
    assert document["quick"] is True
    rows = document["rows"]
    assert {row["measure"] for row in rows} >= MEASURES
    for row in rows:  # every row printed; its numbers are the machine's business
        assert row["measure"] in done.stdout
        assert row["ok"] in ("yes", "NO", "-")

    cases = {row["case"] for row in rows if row["measure"] == "P2 MQTT vs node-red"}
    assert cases == {"idle", "1,000 reports/s", "2,000 reports/s"}
    if node_red.missing():  # CI: skipped, and the table says why
        assert node_red.NOT_INSTALLED in done.stdout
    else:
        assert {"P2 MQTT node-red"} <= {row["measure"] for row in rows}
    versus = (tmp_path / "system-vs-node-red.md").read_text()
    assert "| gasgate p50 / p99 ms | node-red p50 / p99 ms |" in versus
    assert versus in done.stdout.replace("\r", "") + "\n"

    samples = json.loads((tmp_path / "system-samples.json").read_text())
    assert samples
    assert all(all(x > 0 for x in values) for values in samples.values())

    png = tmp_path / "system.png"
    if importlib.util.find_spec("matplotlib") is None:
        assert "no PNG: matplotlib is not installed" in done.stdout
    else:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_the_comparison_alone_measures_only_the_mqtt_path_of_both(tmp_path: Path) -> None:
    """``GASGATE_BENCH_SYSTEM=versus``: gasgate's MQTT path with its P3 rows, its interlock's
    alone and the peer's, at every step, and the side-by-side table with each path's run-queue
    waits; nothing else."""
    done = quick_system(tmp_path, **{system.MODE_ENV: "versus", "GASGATE_INTERLOCK": "spawn"})
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((tmp_path / "system.json").read_text())["rows"]
    measured = {row["measure"] for row in rows} - {"machine", "node-red"}
    expected = {
        "P2 MQTT",
        "P3 gas company",
        "P3 SMS webhook",
        "P2 MQTT vs node-red",
        "P2 MQTT interlock alone",
    }
    assert measured == expected | (set() if node_red.missing() else {"P2 MQTT node-red"})
    steps = {"idle", "1,000 reports/s", "2,000 reports/s"}
    assert {row["case"] for row in rows if row["measure"] == "P3 SMS webhook"} == steps
    alone = [row for row in rows if row["measure"] == "P2 MQTT interlock alone"]
    assert {row["case"] for row in alone} == steps
    assert all(isinstance(row["p50_ms"], float) for row in alone), alone
    versus = (tmp_path / "system-vs-node-red.md").read_text()
    assert "| the interlock alone p50 / p99 ms, CPU |" in versus
    assert versus in done.stdout.replace("\r", "") + "\n"
    if not node_red.missing():
        notes = [row["note"] for row in rows if row["measure"] == "P2 MQTT vs node-red"]
        waits = "run-queue wait per run, ms: gasgate interlock"
        assert all(f"{waits} " in n and "; node-red node-red " in n for n in notes), notes
    wrong = quick_system(tmp_path, **{system.MODE_ENV: "serial"})
    assert wrong.returncode != 0
    assert f"{system.MODE_ENV}=serial: versus, p1 or unset" in wrong.stderr


async def test_without_its_packages_the_peer_is_skipped_with_a_row_that_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node_red, "HOME", tmp_path / "node-red")  # as in CI: no node_modules
    system.SIDE.clear()
    system.SIDE_RATE.clear()
    rows = await system.node_red_peer(VictoriaMetrics(tmp_path), tmp_path, quick=True)
    assert [(r["measure"], r["note"]) for r in rows] == [("node-red", node_red.NOT_INSTALLED)]
    assert {r["note"] for r in system.versus_rows()} == {node_red.NOT_INSTALLED}
    assert any(node_red.NOT_INSTALLED in line for line in system.side_by_side())


async def test_the_probe_takes_the_first_close_valve_for_its_valve_whoever_sent_it(
    tmp_path: Path,
) -> None:
    """The interlock's ids (``ilk-...``) count as the linkage's do; a command that is not a
    close (here a query) is not the valve closing."""
    watch = system.Watch()
    with Mosquitto(tmp_path).running() as broker:
        async with (
            aiomqtt.Client("127.0.0.1", broker.port, identifier="probe") as probe,
            aiomqtt.Client("127.0.0.1", broker.port, identifier="sender") as sender,
        ):
            await probe.subscribe("kit/v1/+/cmd", qos=1)
            reader = asyncio.create_task(watch.commands_from(probe))
            try:
                started = time.monotonic()
                await sender.publish("kit/v1/mv0/cmd", b'{"id":"gw-1","cmd":"query"}', qos=1)
                await sender.publish("kit/v1/mv1/cmd", b"not json", qos=1)
                await asyncio.sleep(0.3)
                closed_after = time.monotonic()
                close = b'{"id":"ilk-mv0-1","cmd":"close_valve"}'
                await sender.publish("kit/v1/mv0/cmd", close, qos=1)
                latency = await watch.until(watch.commands, "mv0", started)
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
    assert latency is not None
    assert latency >= (closed_after - started) * 1000
    assert "mv1" not in watch.commands
