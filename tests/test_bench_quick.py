"""The benchmark harness works (not how fast anything is: timing goals live in bench/).

``python -m bench system --quick`` starts its own Mosquitto brokers, the gateway, the bridge
and the load generator as separate processes, and must leave a table on stdout, the rows as
JSON, the raw latency samples and (with matplotlib installed) the PNG plot.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MEASURES = {"P1 throughput", "P2 serial", "P2 MQTT", "P3 gas company", "P3 SMS webhook"}
MEASURES |= {"P4 outage", "P5 scale", "P6 restart"}


@pytest.mark.slow
def test_quick_system_bench_leaves_table_json_samples_and_plot(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "system", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,  # it takes about a minute; below pytest's 300 s, so a hang fails here
        check=False,
    )
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

    samples = json.loads((tmp_path / "system-samples.json").read_text())
    assert samples
    assert all(all(x > 0 for x in values) for values in samples.values())

    png = tmp_path / "system.png"
    if importlib.util.find_spec("matplotlib") is None:
        assert "no PNG: matplotlib is not installed" in done.stdout
    else:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
