"""``python -m bench central --quick`` works (not how fast anything is: the goals live in
bench/central.py): its table on stdout and its rows as JSON, every measure there, or, before
``gasgate central run`` exists, one row saying why nothing was measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.central import central_run_missing

ROOT = Path(__file__).resolve().parents[2]
MEASURES = {
    "events absorbed",
    "summaries absorbed",
    "storm absorbed",
    "alarm -> API (incidents)",
    "alarm -> console (SSE)",
}


@pytest.mark.slow
def test_quick_central_bench_leaves_table_and_json(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "central", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,  # below pytest's 300 s, so a hang fails here
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "central (quick)" in done.stdout
    document = json.loads((tmp_path / "central.json").read_text())
    rows = document["rows"]
    why = central_run_missing()
    if why is not None:
        assert [r["note"] for r in rows] == [why]
        return
    assert {r["measure"] for r in rows} == MEASURES
    cases = {(r["measure"], r["case"]) for r in rows}
    assert ("alarm -> console (SSE)", "idle") in cases
    assert ("alarm -> console (SSE)", "during the storm") in cases
    for row in rows:
        assert row["ok"] in ("yes", "NO", "-")
        assert row["measure"] in done.stdout
