"""How the interlock process is scheduled: nice -10, or SCHED_FIFO when asked and permitted, and
one line saying so.

The real ``python -m gateway.interlock`` (as the gateway spawns it), on a broker that is not
there (the priority is taken before it connects); its policy read back from the kernel. Root
is needed to start it with or without CAP_SYS_NICE (``setpriv``) or under a given policy
(``chrt``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="root: to grant or drop CAP_SYS_NICE")

NO_NICE = ["setpriv", "--bounding-set=-sys_nice", "--inh-caps=-sys_nice"]


def started(tmp_path: Path, prefix: list[str], **env: str) -> tuple[int, int, int, list[str]]:
    """(policy, real-time priority, nice, what it said about how it runs) of an interlock
    started so, once it tried its broker (after it chose its priority)."""
    log = tmp_path / "interlock.log"
    command = [*prefix, sys.executable, "-m", "gateway.interlock"]
    flags = ["--mqtt=mqtt://127.0.0.1:9", f"--data-dir={tmp_path / 'data'}"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*command, *flags], stderr=out, env=os.environ | {"GASGATE_LOG_FORMAT": "json"} | env
        )
    try:
        deadline = time.monotonic() + 30
        while b"interlock: broker" not in log.read_bytes():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        policy = os.sched_getscheduler(proc.pid) & ~os.SCHED_RESET_ON_FORK
        priority = os.sched_getparam(proc.pid).sched_priority
        nice = os.getpriority(os.PRIO_PROCESS, proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    said = [json.loads(line)["msg"] for line in log.read_text().splitlines()]
    return policy, priority, nice, [s for s in said if " runs at " in s]


def test_asked_and_permitted_it_runs_at_a_real_time_priority(tmp_path: Path) -> None:
    assert started(tmp_path, [], GASGATE_INTERLOCK_RT_PRIORITY="10") == (
        os.SCHED_FIFO,
        10,
        0,
        ["interlock: runs at SCHED_FIFO priority 10"],
    )


def test_refused_it_says_so_once_and_runs_at_the_normal_priority(tmp_path: Path) -> None:
    assert started(tmp_path, NO_NICE, GASGATE_INTERLOCK_RT_PRIORITY="10") == (
        os.SCHED_OTHER,
        0,
        0,
        ["interlock: no permission for SCHED_FIFO priority 10, nor for nice -10: runs at nice 0"],
    )


def test_by_default_it_runs_at_nice_minus_10(tmp_path: Path) -> None:
    assert started(tmp_path, []) == (
        os.SCHED_OTHER,
        0,
        -10,
        ["interlock: no real-time priority asked: runs at nice -10"],
    )


def test_a_policy_it_was_started_with_is_kept(tmp_path: Path) -> None:
    """Started under a real-time policy (``chrt``, a unit's ``CPUSchedulingPolicy=``), it keeps
    it and asks nothing."""
    assert started(tmp_path, ["chrt", "--fifo", "5"]) == (
        os.SCHED_FIFO,
        5,
        0,
        ["interlock: runs at real-time priority 5, as started"],
    )


def test_a_nice_value_it_was_started_with_is_kept(tmp_path: Path) -> None:
    """The unit's ``Nice=-10`` without its real-time policy: refused the priority, it asks
    nothing more (the unit's system call filter would refuse ``setpriority`` too)."""
    assert started(
        tmp_path, ["nice", "-n", "-15", *NO_NICE], GASGATE_INTERLOCK_RT_PRIORITY="10"
    ) == (
        os.SCHED_OTHER,
        0,
        -15,
        ["interlock: no permission for SCHED_FIFO priority 10: runs at nice -15"],
    )
