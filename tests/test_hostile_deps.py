"""Dependency audit: ``pip-audit`` over the environment the tests run in finds no package with a
known vulnerability. It needs PyPI's (or OSV's) advisory data over the network: when it cannot
get any (offline, or a PyPI mirror without the per-release JSON API), the test is skipped and
says so, rather than passing on an audit that audited nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PIP_AUDIT = Path(sys.executable).parent / "pip-audit"


def test_no_installed_dependency_has_a_known_vulnerability() -> None:
    assert PIP_AUDIT.exists(), "pip-audit is missing: install the test extras (./dev test)"
    done = subprocess.run(
        [str(PIP_AUDIT), "--local", "--progress-spinner", "off", "--format", "json"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"pip-audit could not reach its advisory database: {last}")
    dependencies = report["dependencies"]
    audited = [d for d in dependencies if "skip_reason" not in d]
    if not audited:
        reason = dependencies[0]["skip_reason"] if dependencies else "no dependencies listed"
        pytest.skip(f"pip-audit got no advisory data for any of {len(dependencies)} packages "
                    f"(e.g. {reason!r}): the audit needs network access to pypi.org")  # fmt: skip
    vulnerable = [
        (d["name"], d["version"], [v["id"] for v in d["vulns"]]) for d in audited if d["vulns"]
    ]
    assert vulnerable == []
