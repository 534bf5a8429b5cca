"""``gasgate demo``, the README's main job, run as a person would: a subprocess, then Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

GASGATE = str(Path(sys.executable).with_name("gasgate"))

# What the story must show, in the demo's own words (each a regular expression).
STORY = {
    "leak alarm": r"ALARM .*leak_low, \w+ at site (rest-\d+)\) raised",
    "leak valve commanded": r"\] \w+ cmd: .*close_valve",
    "valve closed": r"valve state_change: state=closed",
    "over-flow alarm": r"ALARM .*\(high overflow, .*raised",
    "silent detector offline": r"ALARM .*device_offline, .*raised",
    "valve failed to close": r"ALARM .*critical valve_failed_to_close, .*raised",
}


def test_demo_plays_its_story_and_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [GASGATE, "demo", "--data-dir", str(tmp_path), "--time-scale", "0.05", "--http-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 150  # the story needs about 35 s; a loaded box more
        while time.monotonic() < deadline and proc.poll() is None:
            text = "".join(lines)
            if all(re.search(pattern, text) for pattern in STORY.values()):
                break
            time.sleep(0.5)
        console = re.search(r"demo: console (http://\S+)/ ", "".join(lines))
        assert console, "the demo did not print its console URL"
        health = httpx.get(f"{console.group(1)}/healthz", timeout=10)
        metrics = httpx.get(f"{console.group(1)}/metrics", timeout=10).text
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(5)
        if proc.stdout is not None:
            proc.stdout.close()
    text = "".join(lines)
    missing = [name for name, pattern in STORY.items() if not re.search(pattern, text)]
    assert not missing, f"story steps not seen: {missing}\n{text[-3000:]}"
    assert "demo: stopped cleanly" in text
    assert health.status_code == 200  # the console answered while the story played
    assert re.search(r'^gasgate_reports_total\{kind="detector"\} [1-9]', metrics, re.MULTILINE)
    assert re.search(r"^gasgate_report_to_valve_command_seconds_count [1-9]", metrics, re.MULTILINE)
    assert "Traceback" not in text
    assert "open" not in re.findall(r'"cmd":"(\w+)"', text)  # no valve is ever opened
    # The registry it made is the simulator's district, imported with no error.
    assert (tmp_path / "registry" / "sites.csv").exists()


@pytest.mark.parametrize("flag", ["--help"])
def test_demo_help_names_its_options(flag: str) -> None:
    out = subprocess.run([GASGATE, "demo", flag], capture_output=True, text=True, check=True)
    for option in ("--mqtt", "--duration", "--time-scale", "--no-story"):
        assert option in out.stdout
