"""``gasgate config check`` and ``show``: problems located before a start, secrets never shown."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
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


REPO = Path(__file__).resolve().parents[1]
GASGATE = str(Path(sys.executable).with_name("gasgate"))


def test_the_shipped_examples_pass_both_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the example names examples/registry relative to the checkout
    for name in [n for n in os.environ if n.startswith("GASGATE_")]:
        monkeypatch.delenv(name)
    runner = CliRunner()
    registry = runner.invoke(main, ["registry", "check", "examples/registry"])
    assert registry.exit_code == 0, registry.output
    assert "0 warnings" in registry.output
    checked = runner.invoke(main, ["config", "check", "--config", "gasgate.example.yaml"])
    assert checked.exit_code == 0, checked.output
    assert "settings ok: gateway gw-example-001" in checked.output


def test_check_reports_every_problem_in_one_pass(tmp_path: Path) -> None:
    broken = tmp_path / "registry"
    shutil.copytree(GOOD, broken)
    sites = broken / "sites.csv"
    sites.write_text(sites.read_text().replace("two_piece,Luohu", "three_piece,Luohu"))
    conf = tmp_path / "gasgate.yaml"
    conf.write_text(
        "mqtt: ftp://nowhere\n"
        "http_port: 99999\n"
        f"registry: {broken}\n"
        f"rules_dir: {tmp_path / 'no-rules'}\n"
        "gasco_mqtt: mqtts://gw-1:change-me@gasco.example:8883\n"
        f"escalation:\n  policies_file: {tmp_path / 'none.yaml'}\n"
    )
    result = CliRunner().invoke(main, ["config", "check", "--config", str(conf)])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[:2] == [
        f"{conf}:1:7: mqtt: Value error, MQTT URL 'ftp://nowhere':"
        " scheme must be mqtt:// or mqtts://",
        f"{conf}:2:12: http_port: Input should be less than or equal to 65535",
    ]
    assert any(line.startswith("gasco_mqtt: a placeholder") for line in lines)
    assert any("sites.csv:5:4" in line and "unknown_kit" in line for line in lines)
    assert any(line.startswith(f"{tmp_path / 'no-rules'}: cannot be read") for line in lines)
    assert any("none.yaml" in line for line in lines)
    assert lines[-1] == "Error: 6 problem(s)"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"GASGATE_MQTT": "mqtt://gasgate.gateway:change-me@127.0.0.1:9"}, "mqtt"),
        ({"GASGATE_INFLUX_TOKEN": ""}, "influx_token"),
        ({"GASGATE_GASCO_MQTT": "mqtts://gw:CHANGE-ME@127.0.0.1:9"}, "gasco_mqtt"),
    ],
)
def test_run_refuses_to_start_on_a_placeholder_secret(
    tmp_path: Path, env: dict[str, str], named: str
) -> None:
    data = tmp_path / "data"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GASGATE_")}
    # A process of its own, bounded in time: a gateway that did start would run until stopped.
    done = subprocess.run(
        [GASGATE, "run", "--data-dir", str(data)],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "refusing to start" in done.stderr
    assert f"{named}: a placeholder or empty secret" in done.stderr
    assert not data.exists()  # refused before anything started


def test_a_placeholder_in_the_escalation_settings_is_found(tmp_path: Path) -> None:
    conf = tmp_path / "gasgate.yaml"
    conf.write_text(
        "escalation:\n  channels:\n"
        "    sms: {kind: webhook, template: sms, url: 'https://sms.example', secret: change-me}\n"
    )
    result = CliRunner().invoke(main, ["config", "check", "--config", str(conf)])
    assert result.exit_code == 1
    assert "escalation.channels.sms.secret: a placeholder" in result.output
