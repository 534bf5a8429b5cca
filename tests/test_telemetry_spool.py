"""The disk spool against a model: order kept, bound honoured, alarm transitions never dropped."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.telemetry import Priority
from gateway.telemetry.spool import Spool

BOUND = 600

appends = st.lists(
    st.tuples(st.sampled_from(list(Priority)), st.integers(min_value=1, max_value=120)),
    min_size=1,
    max_size=12,
)
ops = st.lists(st.one_of(appends, st.integers(min_value=1, max_value=15)), max_size=25)


@settings(max_examples=60, deadline=None)
@given(ops)
def test_spool_matches_its_model(steps):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spool.sqlite3"
        spool = Spool(path, BOUND)
        spool.open()
        model: list[tuple[Priority, str]] = []
        serial = 0
        for step in steps:
            if isinstance(step, list):
                batch = []
                for priority, size in step:
                    serial += 1
                    batch.append((priority, f"{serial:06d}".ljust(size, "x")))
                dropped = spool.append(batch)
                model += batch
                # The model's policy: oldest periodic lines go first, alarms never.
                over = sum(len(line) for _, line in model) - BOUND
                expect_dropped = 0
                while over > 0:
                    oldest = next(
                        (i for i, (p, _) in enumerate(model) if p is Priority.TELEMETRY), None
                    )
                    if oldest is None:
                        break
                    over -= len(model.pop(oldest)[1])
                    expect_dropped += 1
                assert dropped == expect_dropped
            else:
                head = spool.head(step)
                assert [line for _, line in head] == [line for _, line in model[:step]]
                if head:
                    spool.remove_through(head[-1][0])
                    del model[: len(head)]
            assert spool.count == len(model)
            assert spool.size == sum(len(line) for _, line in model)
            assert spool.size <= BOUND or all(p is Priority.ALARM for p, _ in model)
        spool.close()
        reopened = Spool(path, BOUND)
        reopened.open()
        assert [line for _, line in reopened.head(10_000)] == [line for _, line in model]
        assert (reopened.count, reopened.size) == (spool.count, spool.size)
        reopened.close()
