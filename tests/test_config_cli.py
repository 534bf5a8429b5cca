"""``gasgate config check`` and ``show``: problems located before a start, secrets never shown."""

from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner

from gateway.cli import main

GOOD = Path(__file__).parent / "data" / "registry" / "good"


def test_check_passes_a_good_setup_and_locates_every_problem(tmp_path: Path) -> None:
    runner = CliRunner()
    good = tmp_path / "good.yaml"
    good.write_text(f"registry: {GOOD}\ndata_dir: {tmp_path / 'data'}\ngateway_id: gw-test\n")
    result = runner.invoke(main, ["config", "check", "--config", str(good)])
    assert result.exit_code == 0, result.output
    assert "settings ok: gateway gw-test" in result.output

    broken = tmp_path / "registry"
    shutil.copytree(GOOD, broken)
    sites = broken / "sites.csv"
    lines = sites.read_text(encoding="utf-8").splitlines()
    lines[1] = (
        lines[1].replace("four_piece", "three_piece", 1).replace("two_piece", "three_piece", 1)
    )
    sites.write_text("\n".join(lines) + "\n", encoding="utf-8")
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"registry: {broken}\nescalation:\n  policies_file: {tmp_path / 'none.yaml'}\n")
    result = runner.invoke(main, ["config", "check", "--config", str(bad)])
    assert result.exit_code == 1
    assert "sites.csv:2:" in result.output  # file:line:column of the unknown kit
    assert "unknown_kit" in result.output
    assert "none.yaml" in result.output  # the policy file that cannot be read


def test_a_bad_setting_names_the_file_and_field(tmp_path: Path) -> None:
    conf = tmp_path / "gasgate.yaml"
    conf.write_text("mqtt: ftp://nowhere\n")
    result = CliRunner().invoke(main, ["config", "check", "--config", str(conf)])
    assert result.exit_code == 1
    assert "gasgate.yaml" in result.output
    assert "mqtt" in result.output


def test_show_masks_secrets_and_documents_each_setting(tmp_path: Path) -> None:
    env = {"GASGATE_MQTT": "mqtt://gw:hunter22@127.0.0.1:1883", "GASGATE_INFLUX_TOKEN": "tok-123"}
    result = CliRunner().invoke(main, ["config", "show"], env=env)
    assert result.exit_code == 0, result.output
    assert "hunter22" not in result.output
    assert "tok-123" not in result.output
    assert "mqtt = mqtt://gw:***@127.0.0.1:1883" in result.output
    assert "influx_token = ***" in result.output
    assert "Site broker" in result.output  # the field's own description
