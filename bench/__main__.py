"""``python -m bench [SUITE ...] [--quick]`` (``./dev bench``): run benchmark suites.

A suite is a module of this package with ``run(quick: bool) -> list[dict[str, object]]``: one
row per measurement, the same keys in every row. The dispatcher prints the rows as a table and
writes them, with the machine they ran on, to ``bench/results/{suite}.json``. To add a suite,
add a module and one line to :data:`SUITES`. Timing goals live here, never in the tests.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

SUITES: dict[str, str] = {
    "decoder": "bench.decoder",
    "notify": "bench.notify",
    "ingest": "bench.ingest",
    "linkage": "bench.linkage",
    "telemetry": "bench.telemetry",
    "system": "bench.system",
    "fuzz": "bench.fuzz",
    "kill": "bench.kill",
    "central": "bench.central",
}

RESULTS = Path(__file__).with_name("results")


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if value < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_table(title: str, rows: list[dict[str, object]]) -> None:
    if not rows:
        print(f"{title}: no rows")
        return
    keys = list(rows[0])
    cells = [[_cell(row[k]) for k in keys] for row in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    print(f"\n{title}")
    print("  ".join(k.rjust(w) for k, w in zip(keys, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for line in cells:
        print("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)))


def run_suite(name: str, quick: bool, out_dir: Path = RESULTS) -> Path:
    module = importlib.import_module(SUITES[name])
    started = time.perf_counter()
    rows: list[dict[str, object]] = module.run(quick=quick)
    print_table(f"{name}{' (quick)' if quick else ''}", rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{name}.json"
    document = {
        "suite": name,
        "quick": quick,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 2),
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu(s)",
        "rows": rows,
    }
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"-> {out}")
    # A suite may leave more behind (raw samples, a plot): write_artifacts(out_dir) -> paths.
    for extra in getattr(module, "write_artifacts", lambda _d: ())(out_dir):
        print(f"-> {extra}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("suites", nargs="*", metavar="SUITE", help=f"of {', '.join(SUITES)}")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help=f"results directory (default {RESULTS})"
    )
    args = parser.parse_args(argv)
    unknown = [s for s in args.suites if s not in SUITES]
    if unknown:
        parser.error(f"unknown suite(s) {', '.join(unknown)}; known: {', '.join(SUITES)}")
    for name in args.suites or list(SUITES):
        run_suite(name, args.quick, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
