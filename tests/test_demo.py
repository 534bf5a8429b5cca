"""``gasgate demo``, the README's main job, run as a person would: a subprocess, then Ctrl-C."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.support.demo_proc import GASGATE, log_in, running_demo, wait_for
from tests.support.services import Mosquitto

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
    with running_demo("--data-dir", str(tmp_path)) as (proc, lines):
        console = wait_for(lines, r"demo: console (http://\S+)/ ")
        # The address and login come first; the story waits for someone to log in.
        wait_for(lines, r"story starts when you log in")
        time.sleep(2)
        assert "STORY" not in "".join(lines)
        log_in(console.group(1))
        deadline = time.monotonic() + 150  # the story needs about 35 s; a loaded box more
        while time.monotonic() < deadline and proc.poll() is None:
            text = "".join(lines)
            if all(re.search(pattern, text) for pattern in STORY.values()):
                break
            time.sleep(0.5)
        health = httpx.get(f"{console.group(1)}/healthz", timeout=10)
        metrics = httpx.get(f"{console.group(1)}/metrics", timeout=10).text
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    text = "".join(lines)
    missing = [name for name, pattern in STORY.items() if not re.search(pattern, text)]
    assert not missing, f"story steps not seen: {missing}\n{text[-3000:]}"
    assert "demo: stopped cleanly" in text
    assert health.status_code == 200  # the console answered while the story played
    assert re.search(r'^gasgate_reports_total\{kind="detector"\} [1-9]', metrics, re.MULTILINE)
    assert re.search(r"^gasgate_report_to_valve_command_seconds_count [1-9]", metrics, re.MULTILINE)
    assert "Traceback" not in text
    assert "open" not in re.findall(r'"cmd":"(\w+)"', text)  # no valve is ever opened
    before_console = text[: text.index("demo: console")]
    assert "nobody configured" not in before_console
    assert text.count("nobody configured") <= 1  # one line at most, never one per alarm
    assert re.search(r"^STORY \[1/4 \+3 s, next in 9 s\] gas leak at ", text, re.MULTILINE)
    assert re.search(r"^STORY \[4/4 \+28 s, the last\] valve fails to close", text, re.MULTILINE)
    # The registry it made is the simulator's district, imported with no error.
    assert (tmp_path / "registry" / "sites.csv").exists()


@pytest.mark.parametrize("flag", ["--help"])
def test_demo_help_names_its_options(flag: str) -> None:
    out = subprocess.run([GASGATE, "demo", flag], capture_output=True, text=True, check=True)
    options = ("--mqtt", "--duration", "--time-scale", "--no-story", "--story-now", "--central")
    for option in (*options, "--db"):
        assert option in out.stdout


def retained_on(broker: Mosquitto, *filters: str) -> list[str]:
    """The topics the broker holds a retained message for, under ``filters``."""
    args = ["mosquitto_sub", "-p", str(broker.port), "-v", "--retained-only", "-W", "2"]
    for topic_filter in filters:
        args += ["-t", topic_filter]
    out = subprocess.run(args, capture_output=True, text=True, check=False).stdout
    return [line.split(" ", 1)[0] for line in out.splitlines() if line.strip()]


def test_demo_on_a_shared_broker_says_how_to_watch_and_leaves_nothing_retained(
    tmp_path: Path, own_mosquitto: Mosquitto
) -> None:
    # issue 15, item 9: a gateway run on this broker later found the demo's receivers
    # retained (offline at the end) and paged its duty room about them. A broker of this
    # test's own: other tests leave retained messages of their bridges on the shared one.
    mosquitto = own_mosquitto
    with running_demo("--mqtt", mosquitto.url, "--data-dir", str(tmp_path), "--no-story") as (
        proc,
        lines,
    ):
        watch = wait_for(lines, r"^demo: watch the gas company events: (mosquitto_sub .*)$")
        assert f"-p {mosquitto.port}" in watch.group(1)
        assert "-t gasco/v1/+/alarms/events" in watch.group(1)
        wait_for(lines, r"receiver demo-receiver-2: online")
        held = retained_on(mosquitto, "kit/v1/#")
        assert "kit/v1/_bridge/demo-receiver-1/receiver" in held  # what the demo must remove
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    text = "".join(lines)
    assert "demo: stopped cleanly" in text
    assert re.search(r"demo: removed the \d+ retained message", text)
    assert retained_on(mosquitto, "kit/v1/#", "gasgate/v1/gw-demo/#", "gasco/v1/gw-demo/#") == []
