"""The monitoring center's deployment (deploy/central/): checked by Debian's docker-compose, the
way the edge's is in test_deploy.py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_deploy import REPO, bind_mounts, installed, tracked

CENTRAL = REPO / "deploy" / "central"
ENV_EXAMPLE = CENTRAL / ".env.example"


def compose_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [installed("docker-compose"), "--env-file", str(env_file), "-f",
         str(CENTRAL / "docker-compose.yml"), "config"],
        cwd=REPO,
        env={"PATH": os.environ["PATH"], "HOME": str(env_file.parent)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    done = compose_config(ENV_EXAMPLE)
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def test_two_instances_one_group_one_database_after_the_migrations(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "gasco-broker", "migrate", "central-a", "central-b"}
    instances = [services["central-a"], services["central-b"]]
    assert {s["environment"]["GASGATE_CENTRAL_INSTANCE"] for s in instances} == {
        "central-a",
        "central-b",
    }
    for service in instances:
        env = service["environment"]
        assert service["command"] == ["central", "run"]
        assert env["GASGATE_CENTRAL_GROUP"] == "gasgate-central"
        assert env["GASGATE_CENTRAL_DB"] == services["migrate"]["environment"]["GASGATE_CENTRAL_DB"]
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert Path(service["build"]["context"]) == REPO
    assert services["migrate"]["command"] == ["central", "db", "upgrade"]


def test_every_mounted_file_is_in_the_repo_and_no_secret_is(compose: dict[str, Any]) -> None:
    mounted = [p for s in compose["services"].values() for p in bind_mounts(s).values()]
    for path in mounted:
        if path.name == "secrets":
            continue  # the password file is made on the host (mosquitto_passwd)
        assert tracked(path), f"{path} is mounted but not in the repository"
    example = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )
    for key in ("POSTGRES_PASSWORD", "CENTRAL_MQTT_PASSWORD", "CENTRAL_ALERT_SECRET"):
        assert example[key] == "change-me"
    for path in ("deploy/central/.env", "deploy/central/secrets/passwd"):
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO, check=False)
        assert ignored.returncode == 0, f"git would commit {path}"


def test_the_broker_keeps_sessions_and_lets_the_center_command(compose: dict[str, Any]) -> None:
    conf = (CENTRAL / "mosquitto.conf").read_text()
    assert "persistence true" in conf
    assert "allow_anonymous false" in conf
    acl = (CENTRAL / "acl").read_text()
    assert "topic write gasco/v1/+/cmd/+" in acl
    assert "pattern write gasco/v1/%u/alarms/events" in acl
