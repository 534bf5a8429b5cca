"""``./dev bench kill``: ``kill -9`` timed against the leak path, 200 trials (20 with --quick).

The harness of ``tests/test_fault_kill_timed.py`` (``tests/support/kill_trials.py``) on a private
Mosquitto, with the figures the test only bounds: leaks lost, valves never commanded, the time
from a restart's ``ready`` to the first close command of a leak the kill interrupted (goal:
≤ 1 s), jammed valves without their ``valve_failed_to_close``.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
from pathlib import Path

from tests.support.kill_trials import COMMAND_AFTER_READY_S, KillTrials
from tests.support.services import Mosquitto


async def _trials(workdir: Path, count: int) -> dict[str, object]:
    broker = Mosquitto(workdir)
    broker.start()
    try:
        trials = KillTrials(workdir, broker.url, count)
        outcome = await trials.run()
    finally:
        broker.stop()
    delays = sorted(outcome.after_ready_s) or [0.0]
    return {
        "trials": outcome.trials,
        "leaks": outcome.leaks,
        "lost": len(outcome.lost),
        "never_commanded": len(outcome.uncommanded),
        "commanded_after_restart": len(outcome.after_ready_s),
        "ready_to_close_p50_ms": statistics.median(delays) * 1000,
        "ready_to_close_max_ms": delays[-1] * 1000,
        "goal_max_ms": COMMAND_AFTER_READY_S * 1000,
        "failed_to_close_missing": len(outcome.failures_missing),
        "non_close_commands": len(outcome.not_close),
        "seed": trials.seed,
        "met": "yes" if outcome.ok else "NO",
    }


def run(quick: bool) -> list[dict[str, object]]:
    with tempfile.TemporaryDirectory(prefix="gasgate-kill-") as tmp:
        return [asyncio.run(_trials(Path(tmp), 20 if quick else 200))]
