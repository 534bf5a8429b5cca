"""Rule files: every problem located at file:line:column with its field; the CLI exits 1."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.cli import main
from gateway.errors import ConfigError
from rules.schema import DEFAULT_RULES_FILE, RuleSet, check_rules, load_rules


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_built_in_rules_are_the_safety_domain_defaults() -> None:
    assert check_rules([]) == []
    leak = RuleSet.defaults().base.leak
    assert (leak.low_lel_pct, leak.high_lel_pct, leak.clear_lel_pct, leak.clear_hold_s) == (
        20,
        50,
        10,
        30,
    )


def test_problems_name_file_line_column_and_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "city.yaml",
        "leak:\n"
        "  low_lel_pct: 20\n"
        "  clear_lel_pct: lots\n"
        "  hold: 3\n"
        "severity:\n"
        "  leak_low: urgent\n",
    )
    got = [str(p) for p in check_rules([path])]
    assert got == [
        f"{path}:3:18: leak.clear_lel_pct: Input should be a valid number, unable to parse "
        "string as a number",
        f"{path}:4:9: leak.hold: Extra inputs are not permitted",
        f"{path}:6:13: severity.leak_low: Input should be 'critical', 'high', 'medium' or 'low'",
    ]


def test_cross_field_errors_point_at_the_override_that_caused_them(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "sites.yaml",
        "overrides:\n"
        "  site_type:\n"
        "    villa: {}\n"
        "  site:\n"
        "    S0007:\n"
        "      leak: {high_lel_pct: 15}\n"
        "    S0008:\n"
        "      offline: {missed_intervals: 5}\n",
    )
    got = [str(p) for p in check_rules([path])]
    assert got == [
        f"{path}:3:5: overrides.site_type.villa: unknown site type (expected restaurant, "
        "household, other)",
        f"{path}:8:7: overrides.site.S0008.offline: set for the whole gateway only",
        f"{path}:6:13: overrides.site.S0007: leak: needs clear_lel_pct < low_lel_pct <= "
        "high_lel_pct, got 10.0, 20.0, 15.0",
    ]


def test_bad_yaml_is_located(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.yaml", "leak:\n  low_lel_pct: [20\n")
    (problem,) = check_rules([path])
    assert (problem.file, problem.line) == (str(path), 3)
    assert problem.message.startswith("not valid YAML")


def test_layering_and_site_resolution(tmp_path: Path) -> None:
    first = write(tmp_path, "10-city.yaml", "leak: {low_lel_pct: 18}\n")
    second = write(
        tmp_path,
        "20-sites.yaml",
        "overrides:\n"
        "  site_type: {household: {leak: {clear_lel_pct: 5}}}\n"
        "  site: {S0001: {leak: {high_lel_pct: 40}}}\n",
    )
    ruleset = load_rules([first, second])
    assert ruleset.base.leak.low_lel_pct == 18
    household = ruleset.for_site("S0009", "household").leak
    assert (household.low_lel_pct, household.clear_lel_pct) == (18, 5)
    site = ruleset.for_site("S0001", "household").leak
    assert (site.low_lel_pct, site.clear_lel_pct, site.high_lel_pct) == (18, 5, 40)
    assert ruleset.for_site("S0001", "restaurant").leak.clear_lel_pct == 10


def test_load_rules_raises_with_every_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "x.yaml", "leak: {low_lel_pct: -1, high_lel_pct: 200}\n")
    with pytest.raises(ConfigError) as err:
        load_rules([path])
    assert f"{path}:1:21: leak.low_lel_pct" in str(err.value)
    assert f"{path}:1:39: leak.high_lel_pct" in str(err.value)


def test_cli_check_prints_every_problem_and_exits_1(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "leak: {low_lel_pct: x}\n")
    write(tmp_path, "b.yml", "gas_rising: {enabled: maybe}\n")
    result = CliRunner().invoke(main, ["rules", "check", str(tmp_path)])
    assert result.exit_code == 1
    assert f"{tmp_path / 'a.yaml'}:1:21: leak.low_lel_pct" in result.output
    assert f"{tmp_path / 'b.yml'}:1:23: gas_rising.enabled" in result.output


def test_cli_check_ok(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "leak: {low_lel_pct: 22}\n")
    result = CliRunner().invoke(main, ["rules", "check", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert str(DEFAULT_RULES_FILE) in result.output
