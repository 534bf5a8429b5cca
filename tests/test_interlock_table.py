"""The interlock's link table and leak test (pure), and the gateway's reconciliation of what the
interlock did with the alarms it recorded."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.alarms import Alarms
from gateway.bus import Bus
from gateway.clock import ManualClock
from gateway.events import AlarmChanged, ConditionChanged, Severity
from gateway.interlock import Entry, InterlockRoom, build, dumps, is_leak, loads
from gateway.interlock.process import JOURNAL_FILE, TABLE_FILE
from gateway.interlock.room import GRACE_S, TABLE_CHECK_S
from gateway.registry import Registry, import_dir, save
from gateway.store import Store
from rules.schema import load_rules
from tests.support.kit_site import DETECTOR, SITE, VALVES, write_registry

ENTRY = Entry(VALVES, 20.0)


def report(**detector: object) -> bytes:
    return json.dumps(
        {"kind": "detector", "seq": 1, "event": "alarm", "detector": detector}
    ).encode()


@pytest.mark.parametrize(
    ("reading", "leak"),
    [
        ({"lel_pct": 20.0}, True),
        ({"lel_pct": 19.9}, False),
        ({"lel_pct": 3, "flags": ["alarm_low"]}, True),
        ({"lel_pct": 0, "flags": ["tamper", "alarm_high"]}, True),
        ({"lel_pct": 0, "flags": ["sensor_fault"]}, False),
        ({"lel_pct": "55"}, False),  # not a number: the gateway refuses it too
        ({"lel_pct": True}, False),
        ({"lel_pct": float("nan")}, False),
    ],
)
def test_a_leak_is_the_threshold_or_the_detectors_own_flag(
    reading: dict[str, object], leak: bool
) -> None:
    assert is_leak(report(**reading), ENTRY) is leak


def test_a_leak_with_an_odd_device_time_or_extra_keys_is_still_a_leak() -> None:
    body = {"kind": "detector", "ts": "yesterday", "fw": "1.2", "detector": {"lel_pct": 60}}
    assert is_leak(json.dumps(body).encode(), ENTRY)


@given(st.binary(max_size=300))
def test_any_bytes_get_an_answer_never_an_exception(payload: bytes) -> None:
    assert is_leak(payload, ENTRY) in (True, False)


_JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@given(_JSON, _JSON)
def test_any_json_reading_gets_an_answer(lel: object, flags: object) -> None:
    assert is_leak(report(lel_pct=lel, flags=flags), ENTRY) in (True, False)


@given(st.floats(0, 100), st.floats(0, 100))
def test_a_higher_reading_is_never_less_of_a_leak(low: float, high: float) -> None:
    low, high = sorted((low, high))
    assert is_leak(report(lel_pct=low), ENTRY) <= is_leak(report(lel_pct=high), ENTRY)


def test_the_table_holds_linked_detectors_with_their_sites_threshold(tmp_path: Path) -> None:
    registry = Registry(import_dir(write_registry(tmp_path / "registry")).data)
    rules_file = tmp_path / "site.yaml"
    rules_file.write_text(f"overrides:\n  site:\n    {SITE}:\n      leak: {{low_lel_pct: 12}}\n")
    table = build(registry, load_rules([rules_file]))
    assert table == {DETECTOR: Entry(VALVES, 12.0)}  # the regulator's valve is not a detector's
    assert loads(dumps(table)) == table


@pytest.mark.parametrize("data", [b"", b"[]", b'{"version": 2}', b'{"version": 1}', b"\xff"])
def test_a_broken_table_file_is_refused_with_a_reason(data: bytes) -> None:
    with pytest.raises(ValueError, match="table"):
        loads(data)


# --- reconciling the journal ------------------------------------------------------------------


class _World:
    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.clock = ManualClock()
        self.bus = Bus()
        self.store = Store(tmp_path / "gasgate.db")
        self.store.open()
        self.registry = Registry(import_dir(write_registry(tmp_path / "registry")).data)
        self.alarms = Alarms(self.bus, self.store, self.clock, "gw1")
        self.changes: list[AlarmChanged] = []
        self.bus.subscribe(AlarmChanged, self.changes.append)

    def room(self) -> InterlockRoom:
        return InterlockRoom(
            "off",
            self.dir,
            registry=self.registry,
            rules=load_rules(()),
            bus=self.bus,
            store=self.store,
            clock=self.clock,
            child_env={},
        )

    def journal(self, event: str, seconds_ago: float) -> None:
        at = self.clock.now() - timedelta(seconds=seconds_ago)
        line = {"at": at.isoformat(), "event": event, "detector": DETECTOR, "valves": list(VALVES)}
        with (self.dir / JOURNAL_FILE).open("a") as journal:
            journal.write(json.dumps(line) + "\n")

    def unrecorded(self) -> list[AlarmChanged]:
        return [c for c in self.changes if c.alarm.alarm_type == "interlock_closed_unrecorded"]


async def test_a_close_no_alarm_covers_is_raised_once_and_never_forgotten(tmp_path: Path) -> None:
    world = _World(tmp_path)
    await world.alarms.start()
    room = world.room()
    await room.start()
    assert (tmp_path / TABLE_FILE).exists()
    world.journal("closed", seconds_ago=GRACE_S + 5)
    world.journal("confirmed", seconds_ago=GRACE_S + 4)
    world.journal("closed", seconds_ago=1)  # too recent: the gateway may still record it
    room.reconcile()
    await world.bus.join()
    (raised,) = [c for c in world.unrecorded() if c.transition == "raised"]
    assert raised.alarm.severity is Severity.CRITICAL
    assert "no alarm recorded" in raised.alarm.message
    assert raised.alarm.latched  # open until a person acknowledges it
    assert raised.alarm.is_open
    room.reconcile()  # the same lines are not read twice
    await world.bus.join()
    assert len([c for c in world.unrecorded() if c.transition == "raised"]) == 1
    await room.stop()

    again = world.room()  # a restart: the store remembers how far the journal was read
    await again.start()
    again.reconcile()
    await world.bus.join()
    assert len([c for c in world.unrecorded() if c.transition == "raised"]) == 1
    await again.stop()


async def test_a_close_the_leak_alarm_covers_raises_nothing(tmp_path: Path) -> None:
    world = _World(tmp_path)
    await world.alarms.start()
    room = world.room()
    await room.start()
    world.journal("closed", seconds_ago=0)
    world.bus.publish(
        ConditionChanged(
            "leak_high",
            DETECTOR,
            SITE,
            DETECTOR,
            True,
            Severity.CRITICAL,
            "r",
            "m",
            world.clock.now(),
        )
    )
    await world.bus.join()
    world.clock.advance(GRACE_S + 1)
    room.reconcile()
    await world.bus.join()
    assert world.unrecorded() == []
    await room.stop()


async def test_the_table_follows_a_registry_import(tmp_path: Path) -> None:
    world = _World(tmp_path)
    room = world.room()
    await room.start()
    assert set(loads((tmp_path / TABLE_FILE).read_bytes())) == {DETECTOR}
    source = write_registry(tmp_path / "new")
    with (source / "components.csv").open("a") as components:
        components.write(
            f"{SITE},leak_detector,det-b,KD-210C,2025-03-01,,60\n"
            f"{SITE},shutoff_valve,valve-b,SV-25E,2025-03-01,det-b,60\n"
        )
    save(world.store, import_dir(source), who="test")  # an import while the gateway runs
    world.registry.swap(Registry.load(world.store))
    world.clock.advance(TABLE_CHECK_S)
    table = loads((tmp_path / TABLE_FILE).read_bytes())
    assert table["det-b"] == Entry(("valve-b",), 20.0)
    await room.stop()
