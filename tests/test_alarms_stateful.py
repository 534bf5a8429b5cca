"""Hypothesis drives random condition changes, operations, restarts and time through the alarms
room and checks the invariants after every step: one open alarm per (source, type) in memory
and in the store, revisions strictly increasing, a latched alarm never closed without a person.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from gateway.alarms import Alarms
from gateway.bus import Bus
from gateway.clock import ManualClock
from gateway.events import AlarmChanged, ConditionChanged, Severity
from gateway.model import AlarmState, Transition
from gateway.store import Store

SOURCES = st.sampled_from(["det1", "det2"])
TYPES = st.sampled_from(["leak_high", "gas_rising"])
PEOPLE = st.sampled_from(["officer7", "officer8"])


class AlarmMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = tempfile.TemporaryDirectory()
        self.clock = ManualClock()
        self.changes: list[AlarmChanged] = []
        self._boot()

    def _run(self, coro: Coroutine[Any, Any, None]) -> None:
        self.loop.run_until_complete(coro)

    def _boot(self) -> None:
        self.bus = Bus()
        self.store = Store(Path(self.dir.name) / "gasgate.db")
        self.alarms = Alarms(self.bus, self.store, self.clock, "gw1")
        self.store.open()
        self._run(self.alarms.start())
        self.bus.subscribe(AlarmChanged, self.changes.append)

    def _do(self, action: Callable[[], object]) -> None:
        """Run one action inside the event loop (the bus needs one), then let the bus drain."""

        async def step() -> None:
            action()
            await self.bus.join()

        self._run(step())

    def _pick(self, index: int) -> str:
        ids = [a.alarm_id for a in self.alarms.open_alarms()] or ["gw1-none"]
        return ids[index % len(ids)]

    @rule(source=SOURCES, alarm_type=TYPES, active=st.booleans(), lel=st.sampled_from([30, 60]))
    def condition(self, source: str, alarm_type: str, active: bool, lel: int) -> None:
        condition = ConditionChanged(
            alarm_type,
            source,
            "s1",
            source,
            active,
            Severity.HIGH,
            "r",
            "m",
            self.clock.now(),
            {"lel_pct": lel},
        )
        self._do(lambda: self.bus.publish(condition))

    @rule(index=st.integers(0, 3), by=PEOPLE)
    def acknowledge(self, index: int, by: str) -> None:
        self._do(lambda: self.alarms.acknowledge(self._pick(index), by))

    @rule(index=st.integers(0, 3), by=PEOPLE)
    def resolve(self, index: int, by: str) -> None:
        self._do(lambda: self.alarms.resolve(self._pick(index), by))

    @rule(index=st.integers(0, 3), seconds=st.sampled_from([30, 300]))
    def shelve(self, index: int, seconds: int) -> None:
        self._do(lambda: self.alarms.shelve(self._pick(index), "officer7", "noisy", seconds))

    @rule(index=st.integers(0, 3), out=st.booleans())
    def out_of_service(self, index: int, out: bool) -> None:
        self._do(lambda: self.alarms.set_out_of_service(self._pick(index), "tech3", "work", out))

    @rule(seconds=st.sampled_from([1, 20, 61, 400]))
    def advance(self, seconds: int) -> None:
        self._do(lambda: self.clock.advance(seconds))

    @rule()
    def restart(self) -> None:
        self._run(self.alarms.stop())
        self.store.close()
        self._boot()

    @invariant()
    def one_open_alarm_per_key(self) -> None:
        rows = self.store.db.execute(
            "SELECT source, alarm_type, count(*) FROM alarms WHERE is_open = 1"
            " GROUP BY source, alarm_type"
        ).fetchall()
        assert all(r[2] == 1 for r in rows)
        assert len(rows) == len(self.alarms.open_alarms())

    @invariant()
    def revisions_strictly_increase(self) -> None:
        last: dict[str, int] = {}
        for change in self.changes:
            if change.transition is Transition.RESTORED:
                assert change.alarm.revision <= last.get(change.alarm.alarm_id, 0)
                continue
            assert change.alarm.revision > last.get(change.alarm.alarm_id, 0)
            last[change.alarm.alarm_id] = change.alarm.revision

    @invariant()
    def latched_never_closes_without_a_person(self) -> None:
        for change in self.changes:
            alarm = change.alarm
            if alarm.latched and alarm.state is AlarmState.NORMAL:
                assert change.by in ("officer7", "officer8"), change

    @invariant()
    def nobody_called_for_a_suppressed_alarm(self) -> None:
        for change in self.changes:
            if change.notify:
                assert not change.alarm.suppressed, change
                assert not change.alarm.chattering, change

    def teardown(self) -> None:
        self._run(self.alarms.stop())
        self.store.close()
        self.loop.close()
        self.dir.cleanup()


AlarmMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestAlarmMachine = AlarmMachine.TestCase
