"""The deployment files: compose, image, systemd units and the scripts beside them.

Each is checked by the tool that will read it (Debian's docker-compose, systemd-analyze, sh,
sqlite3), not by eye. The Mosquitto ACL has its own file, test_deploy_acl.py.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.interlock.cli import InterlockSettings

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
ENV_EXAMPLE = DEPLOY / ".env.example"
SERVICES = {
    "mosquitto",
    "gateway",
    "interlock",
    "bridge",
    "simulator",
    "influxdb",
    "grafana",
    "secrets-check",
}


def installed(tool: str) -> str:
    found = shutil.which(tool) or f"/usr/bin/{tool}"
    assert Path(found).exists(), f"{tool} is not installed: ./dev test installs it"
    return found


def compose_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    # A clean environment: nothing of the caller's shell may fill in a missing setting.
    command = [installed("docker-compose"), "--env-file", str(env_file)]
    return subprocess.run(
        [*command, "-f", "docker-compose.yml", "config"],
        cwd=REPO,
        env={"PATH": os.environ["PATH"], "HOME": str(env_file.parent)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    done = compose_config(ENV_EXAMPLE)
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def tracked(path: Path) -> list[str]:
    """Files git tracks at or under ``path`` (what a fresh clone has)."""
    done = subprocess.run(
        ["git", "ls-files", "--", str(path.relative_to(REPO))],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.split()


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path → host path of a service's bind mounts (named volumes left out)."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("/"):
            mounts[target] = Path(source)
    return mounts


def test_compose_is_valid_and_every_mounted_file_is_in_the_repo(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == SERVICES
    mounted = [path for service in services.values() for path in bind_mounts(service).values()]
    assert len(mounted) >= 7
    for path in mounted:
        assert path.is_relative_to(REPO), f"{path} is outside the repository"
        assert tracked(path), f"{path} is mounted but not in the repository"
    for name in ("gateway", "interlock", "bridge", "simulator", "secrets-check"):
        assert Path(services[name]["build"]["context"]) == REPO
    assert tracked(REPO / "Dockerfile")


def test_the_interlock_runs_beside_the_gateway_on_its_data(compose: dict[str, Any]) -> None:
    """A service of its own (a crash of the gateway's container must not stop it), reading the
    link table the gateway writes into the data volume."""
    services = compose["services"]
    assert services["gateway"]["environment"]["GASGATE_INTERLOCK"] == "external"
    assert services["interlock"]["command"] == ["interlock"]
    gateway_env, interlock_env = (services[n]["environment"] for n in ("gateway", "interlock"))
    for key in ("GASGATE_MQTT", "GASGATE_GATEWAY_ID", "GASGATE_DATA_DIR"):
        assert interlock_env[key] == gateway_env[key], key
    assert services["interlock"]["volumes"] == ["gateway-data:/var/lib/gasgate:rw"]
    assert "gateway-data:/var/lib/gasgate:rw" in services["gateway"]["volumes"]


def test_the_interlock_may_take_its_real_time_priority_without_a_capability(
    compose: dict[str, Any],
) -> None:
    """The limits that let its own user take nice -10, or ``SCHED_FIFO`` 10 when asked
    (``GASGATE_INTERLOCK_RT_PRIORITY``), and in the unit the one system call that needs, refused
    and not fatal otherwise."""
    priority = 10
    assert InterlockSettings(interlock_rt_priority=priority).interlock_rt_priority == priority
    assert compose["services"]["interlock"]["ulimits"] == {"rtprio": priority, "nice": 30}
    unit = set((DEPLOY / "systemd" / "gasgate-interlock.service").read_text().splitlines())
    assert {
        f"LimitRTPRIO={priority}",
        "Nice=-10",
        "RestrictRealtime=no",
        "SystemCallFilter=sched_setscheduler",
        "SystemCallErrorNumber=EPERM",
        "CapabilityBoundingSet=",
    } <= unit


def test_profiles_keep_the_serial_bridge_and_the_simulator_apart(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["bridge"]["profiles"] == ["radio"]
    assert services["simulator"]["profiles"] == ["sim"]
    assert services["bridge"]["devices"] == ["/dev/ttyUSB0:/dev/ttyKSP0"]
    assert services["bridge"]["command"] == ["bridge", "--port", "/dev/ttyKSP0"]
    for name in SERVICES - {"bridge", "simulator"}:
        assert "profiles" not in services[name], f"{name} must run in every deployment"


def mosquitto_listeners() -> dict[str, dict[str, str]]:
    """deploy's mosquitto.conf: each listener's port → its settings (per_listener_settings)."""
    conf = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    listeners: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in conf.splitlines():
        if line and not line.startswith("#"):
            key, value = line.split(None, 1)
            if key == "listener":
                current = listeners.setdefault(value, {})
            current[key] = value
    return listeners


def test_mosquitto_reads_its_password_files_and_acl_from_its_mounts(
    compose: dict[str, Any],
) -> None:
    listeners = mosquitto_listeners()
    assert set(listeners) == {"1883", "1884"}
    for settings in listeners.values():
        assert settings["allow_anonymous"] == "false"
        assert settings["acl_file"] == "/mosquitto/secrets/acl"
    assert listeners["1883"]["password_file"] == "/mosquitto/secrets/passwd"
    assert listeners["1884"]["password_file"] == "/mosquitto/secrets/passwd-gateway"
    mounts = bind_mounts(compose["services"]["mosquitto"])
    assert mounts["/mosquitto/secrets"] == DEPLOY / "mosquitto" / "secrets"


def test_devices_cannot_reach_the_gateways_client_ids(compose: dict[str, Any]) -> None:
    """Where devices log in a client id is its username; the gateway, which keeps its two ids,
    has a listener of its own that compose does not publish."""
    listeners = mosquitto_listeners()
    assert listeners["1883"]["use_username_as_clientid"] == "true"
    assert "use_username_as_clientid" not in listeners["1884"]
    services = compose["services"]
    published = [p.rsplit(":", 1)[-1].split("/")[0] for p in services["mosquitto"]["ports"]]
    assert published == ["1883"]
    gateway_url = services["gateway"]["environment"]["GASGATE_MQTT"]
    assert gateway_url.startswith("mqtt://gasgate.gateway:")
    assert gateway_url.endswith("@mosquitto:1884")
    assert services["bridge"]["environment"]["GASGATE_MQTT"].endswith("@mosquitto:1883")
    assert "@127.0.0.1:1884" in (DEPLOY / "systemd" / "gateway.env.example").read_text()


def test_grafana_and_influxdb_get_their_provisioning_and_init_script(
    compose: dict[str, Any],
) -> None:
    grafana = bind_mounts(compose["services"]["grafana"])
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/gasgate.yaml").read_text())
    [dashboards] = [p["options"]["path"] for p in provider["providers"]]
    assert grafana[dashboards] == REPO / "dashboards"
    assert grafana["/etc/grafana/provisioning"] == DEPLOY / "grafana" / "provisioning"
    influxdb = compose["services"]["influxdb"]
    assert bind_mounts(influxdb)["/docker-entrypoint-initdb.d"] == DEPLOY / "influxdb"
    assert influxdb["environment"]["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    # The InfluxQL database the dashboards query is the bucket the gateway writes.
    gateway = compose["services"]["gateway"]["environment"]
    assert influxdb["environment"]["GASGATE_INFLUXQL_DB"] == gateway["GASGATE_INFLUX_BUCKET"]
    assert (
        compose["services"]["grafana"]["environment"]["INFLUXDB_DB"]
        == (gateway["GASGATE_INFLUX_BUCKET"])
    )


@pytest.mark.parametrize(
    "secret",
    [
        "GATEWAY_MQTT_PASSWORD",
        "BRIDGE_MQTT_PASSWORD",
        "INFLUXDB_TOKEN",
        "INFLUXDB_ADMIN_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD",
        "GATEWAY_ID",
        "GASCO_MQTT_URL",
    ],
)
def test_compose_refuses_to_run_without_a_setting_it_has_no_default_for(
    tmp_path: Path, secret: str
) -> None:
    env = tmp_path / "env"
    env.write_text(
        "".join(
            line + "\n"
            for line in ENV_EXAMPLE.read_text().splitlines()
            if not line.startswith(f"{secret}=")
        )
    )
    done = compose_config(env)
    assert done.returncode != 0
    assert secret in done.stderr


def test_no_secret_is_committed() -> None:
    example = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )
    secrets = [key for key in example if re.search("PASSWORD|TOKEN", key)]
    assert len(secrets) == 6
    for key in secrets:
        assert example[key] in ("change-me", ""), f"{key} has a real-looking value"
    for path in (
        "deploy/.env",
        "deploy/mosquitto/secrets/passwd",
        "deploy/mosquitto/secrets/devices",
        "deploy/registry/sites.csv",
    ):
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO, check=False)
        assert ignored.returncode == 0, f"git would commit {path}"


def refused_start(environment: dict[str, str], tmp_path: Path) -> str:
    """``gasgate run`` with a deployment's environment (files and dirs mapped onto the
    repository's examples); its stderr, after asserting that it refused to start."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GASGATE_")}
    env |= environment
    env |= {
        "GASGATE_CONFIG": str(REPO / "gasgate.example.yaml"),
        "GASGATE_DATA_DIR": str(tmp_path / "data"),
        "GASGATE_REGISTRY": str(REPO / "examples" / "registry"),
    }
    gasgate = str(Path(sys.executable).with_name("gasgate"))
    done = subprocess.run(
        [gasgate, "run"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1, done.stderr
    assert "refusing to start" in done.stderr
    assert not (tmp_path / "data").exists()
    return done.stderr


def test_the_gateway_gets_the_gas_company_link_and_its_channels(compose: dict[str, Any]) -> None:
    gateway = compose["services"]["gateway"]
    assert gateway["environment"]["GASGATE_GASCO_MQTT"].startswith("mqtts://")
    config = Path(gateway["environment"]["GASGATE_CONFIG"])
    assert bind_mounts(gateway)[str(config.parent)] == DEPLOY / "gateway"
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "deploy/gateway/gasgate.yaml"], cwd=REPO, check=False
    )
    assert ignored.returncode == 0, "git would commit the gateway's channels and people"
    guide = (REPO / "docs" / "deployment.md").read_text(encoding="utf-8")
    for step in ("GASCO_MQTT_URL", "deploy/gateway/gasgate.yaml", "gasgate user add"):
        assert step in guide


def test_the_stack_as_shipped_refuses_to_start_on_its_placeholders(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    stderr = refused_start(compose["services"]["gateway"]["environment"], tmp_path)
    for setting in ("mqtt", "influx_token", "gasco_mqtt"):
        assert setting in stderr


def test_influxdb_and_grafana_start_only_after_their_passwords_are_not_placeholders(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    check = services["secrets-check"]
    for service in ("influxdb", "grafana"):
        wait = services[service]["depends_on"]["secrets-check"]
        assert wait["condition"] == "service_completed_successfully"
    assert check["restart"] == "no"  # a one-shot: restarted, it would never complete
    gasgate = str(Path(sys.executable).with_name("gasgate"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INFLUXDB_", "GRAFANA_"))}

    def run(environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [gasgate, *check["command"]], env=env | environment, capture_output=True,
            text=True, timeout=60, check=False,
        )  # fmt: skip

    shipped = run(check["environment"])
    assert shipped.returncode == 1
    for name in ("INFLUXDB_ADMIN_PASSWORD", "INFLUXDB_TOKEN", "GRAFANA_ADMIN_PASSWORD"):
        assert name in shipped.stderr
    real = run(dict.fromkeys(check["environment"], "k3Q9-w2xT7"))
    assert real.returncode == 0, real.stderr


def test_the_systemd_gateway_env_as_shipped_refuses_to_start(tmp_path: Path) -> None:
    lines = (DEPLOY / "systemd" / "gateway.env.example").read_text().splitlines()
    environment = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    assert environment["GASGATE_CONFIG"] == "/etc/gasgate/gasgate.yaml"
    stderr = refused_start(environment, tmp_path)
    for setting in ("mqtt", "influx_token", "gasco_mqtt"):
        assert setting in stderr


def test_the_image_is_slim_runs_as_a_user_and_checks_healthz() -> None:
    lines = [
        line.strip()
        for line in (REPO / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    bases = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert bases == ["python:3.11-slim", "python:3.11-slim"]
    [user] = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert user not in ("root", "0")
    [health] = [line for line in lines if line.startswith("HEALTHCHECK ")]
    assert "http://127.0.0.1:8080/healthz" in health
    assert 'VOLUME ["/var/lib/gasgate"]' in lines
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") :].count("!deploy/") == 0  # no secrets in the build context


def verify(directory: Path, *units: str) -> None:
    """``systemd-analyze verify``: no error and no warning (an unknown key is only a warning)."""
    done = subprocess.run(
        [installed("systemd-analyze"), "verify", *units],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")


@pytest.mark.parametrize(
    ("unit", "instance"),
    [
        ("gasgate-gateway.service", None),
        ("gasgate-interlock.service", None),
        ("gasgate-bridge@.service", "rx1"),
    ],
)
def test_systemd_units_verify_and_are_hardened(
    tmp_path: Path, unit: str, instance: str | None
) -> None:
    text = (DEPLOY / "systemd" / unit).read_text()
    gasgate = Path(sys.executable).parent / "gasgate"
    assert "ExecStart=/opt/gasgate/bin/gasgate " in text
    # systemd-analyze checks that ExecStart exists: point it at this venv's gasgate.
    name = unit.replace("@", f"@{instance}") if instance else unit
    (tmp_path / name).write_text(text.replace("/opt/gasgate/bin/gasgate", str(gasgate)))
    verify(tmp_path, name)
    settings = set(text.splitlines())
    assert {"Restart=always", "User=gasgate", "ProtectSystem=strict", "NoNewPrivileges=yes"} <= (
        settings
    )


def test_backup_timer_and_unit_verify(tmp_path: Path) -> None:
    text = (DEPLOY / "systemd" / "gasgate-backup.service").read_text()
    assert "ExecStart=/usr/local/sbin/gasgate-backup /var/lib/gasgate " in text
    (tmp_path / "gasgate-backup.service").write_text(
        text.replace("/usr/local/sbin/gasgate-backup", str(DEPLOY / "backup.sh"))
    )
    shutil.copy(DEPLOY / "systemd" / "gasgate-backup.timer", tmp_path)
    verify(tmp_path, "gasgate-backup.service", "gasgate-backup.timer")


def test_gateway_unit_writes_only_its_data_dir() -> None:
    text = (DEPLOY / "systemd" / "gasgate-gateway.service").read_text()
    assert "ReadWritePaths=/var/lib/gasgate" in text.splitlines()
    assert "--data-dir /var/lib/gasgate" in text


def test_influxdb_init_script_maps_the_influxql_database_onto_the_bucket(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    influx = tmp_path / "influx"  # stands in for the image's influx CLI: records its arguments
    influx.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> {calls}\n')
    influx.chmod(0o755)
    script = DEPLOY / "influxdb" / "10-gasgate-dbrp.sh"
    assert os.access(script, os.X_OK), "the influxdb image runs only executable scripts"
    env = {"PATH": f"{tmp_path}:{os.environ['PATH']}", "DOCKER_INFLUXDB_INIT_BUCKET": "gasgate"}
    done = subprocess.run(
        [script],
        env=env | {"DOCKER_INFLUXDB_INIT_BUCKET_ID": "0a1b2c3d4e5f6a7b"},
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert calls.read_text().split() == [
        "v1", "dbrp", "create", "--db", "gasgate", "--rp", "autogen",
        "--bucket-id", "0a1b2c3d4e5f6a7b", "--default",
    ]  # fmt: skip
    calls.unlink()
    done = subprocess.run([script], env=env, capture_output=True, check=False)
    assert done.returncode != 0
    assert not calls.exists()


ENV_OK = "GATEWAY_MQTT_PASSWORD=g\nBRIDGE_MQTT_PASSWORD=b\n"


@pytest.mark.parametrize(
    ("env", "devices", "bridges", "problem"),
    [
        ("GATEWAY_MQTT_PASSWORD=change-me\nBRIDGE_MQTT_PASSWORD=b\n", "", "rx1:", "GATEWAY_MQTT"),
        ("GATEWAY_MQTT_PASSWORD=g\n", "", "rx1:", "BRIDGE_MQTT_PASSWORD"),
        (ENV_OK, "ok-1:p\nkit/v1/#:p\n", "rx1:", "devices:2"),
        (ENV_OK, "dev-1\n", "rx1:", "devices:1"),
        (ENV_OK, "d:1\nd:2\n", "rx1:", "listed twice: d"),
        (ENV_OK, "gasgate-gw-1:p\n", "rx1:", "devices:1: device id gasgate-gw-1: ids starting"),
        (ENV_OK, "abcdef01:p\n", "rx1: 1a2b3c4d abcdef01", "bridges:1: abcdef01 is an MQTT-native"),
        (ENV_OK, "", "rx1: +", "bridges:1: + is not a radio device id"),
        (ENV_OK, "", "rx1: 1a2b3c4d\nrx2: 2a2b3c4d", "bridges:2: one bridge line only"),
        (ENV_OK, "", None, "bridges: cannot read"),
    ],
    ids=[
        "unchanged",
        "missing",
        "wildcard-id",
        "no-password",
        "duplicate",
        "gateway-client-id",
        "bridge-speaks-for-mqtt-device",
        "bridge-wildcard",
        "two-bridges-one-user",
        "no-bridges-file",
    ],
)
def test_make_passwd_refuses_what_would_weaken_the_broker(
    tmp_path: Path, env: str, devices: str, bridges: str | None, problem: str
) -> None:
    (tmp_path / "env").write_text(env)
    (tmp_path / "devices").write_text(devices)
    if bridges is not None:
        (tmp_path / "bridges").write_text(bridges)
    done = subprocess.run(
        [DEPLOY / "mosquitto" / "make-passwd.sh", tmp_path / "env", tmp_path],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert problem in done.stderr
    assert not {"passwd", "passwd-gateway", "acl"} & {path.name for path in tmp_path.iterdir()}


def keep_writing(db_path: Path, stop: threading.Event, written: list[int]) -> None:
    """A gateway-like writer: one committed row per transaction, WAL, until told to stop."""
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    deadline = time.monotonic() + 30
    for n in range(1, 200_000):
        if stop.is_set() or time.monotonic() > deadline:
            break
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO alarm (n, body) VALUES (?, ?)", (n, "x" * 200))
        db.execute("UPDATE total SET n = ?", (n,))
        db.execute("COMMIT")
        written.append(n)
    db.close()


def tools_without_sqlite3(bin_dir: Path) -> str:
    """A PATH with what backup.sh needs but no sqlite3 CLI, as in the gasgate image."""
    bin_dir.mkdir()
    for tool in ("sh", "date", "mkdir", "basename", "head", "cp"):
        (bin_dir / tool).symlink_to(installed(tool) if tool != "sh" else "/bin/sh")
    (bin_dir / "python3").symlink_to(sys.executable)
    return str(bin_dir)


@pytest.mark.parametrize("tool", ["sqlite3", "python3"])
def test_backup_takes_a_consistent_snapshot_while_the_store_is_written(
    tmp_path: Path, tool: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    store = data / "gasgate.db"
    with sqlite3.connect(store) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(
            "CREATE TABLE alarm (n INTEGER PRIMARY KEY, body TEXT);"
            "CREATE TABLE total (n INTEGER); INSERT INTO total VALUES (0);"
        )
    (data / "outbox").mkdir()
    (data / "outbox" / "000001.json").write_text('{"alarm": 1}')
    written: list[int] = []
    stop = threading.Event()
    writer = threading.Thread(target=keep_writing, args=(store, stop, written))
    writer.start()
    try:
        while len(written) < 200:
            time.sleep(0.01)
        path = os.environ["PATH"] if tool == "sqlite3" else tools_without_sqlite3(tmp_path / "b")
        done = subprocess.run(
            ["/bin/sh", DEPLOY / "backup.sh", data, tmp_path / "backups"],
            env={"PATH": path},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        stop.set()
        writer.join(30)
    assert done.returncode == 0, done.stderr
    [snapshot] = (tmp_path / "backups").iterdir()
    assert sorted(p.name for p in snapshot.iterdir()) == ["gasgate.db", "outbox"]
    assert (snapshot / "outbox" / "000001.json").read_text() == '{"alarm": 1}'
    with sqlite3.connect(snapshot / "gasgate.db") as copy:
        rows, last = copy.execute("SELECT count(*), max(n) FROM alarm").fetchone()
        [total] = copy.execute("SELECT n FROM total").fetchone()
    # One transaction's two writes are both in the snapshot or both not: it is consistent.
    assert rows == last == total
    assert 200 <= total <= len(written)


def test_the_image_gets_every_package_and_file_the_install_needs() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = sorted(pattern.rstrip("*") for pattern in include)
    needed = ["pyproject.toml", project["project"]["readme"], *packages]
    dockerfile = (REPO / "Dockerfile").read_text()
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    for path in needed:
        assert (REPO / path).exists()
        assert re.search(rf"^COPY .*\b{re.escape(path)}\b", dockerfile, re.MULTILINE), path
        assert f"!{path}/" in ignore or f"!{path}" in ignore, f".dockerignore leaves out {path}"


def test_backup_keeps_only_the_newest_snapshots(tmp_path: Path) -> None:
    data, backups = tmp_path / "data", tmp_path / "backups"
    data.mkdir()
    (data / "gasgate.db").write_bytes(b"")  # not SQLite yet: copied as a plain file
    old = ["gasgate-20250101T000000Z", "gasgate-20250102T000000Z", "gasgate-20250103T000000Z"]
    for name in [*old, "notes"]:
        (backups / name).mkdir(parents=True)

    def backup(*keep: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/bin/sh", DEPLOY / "backup.sh", data, backups, *keep],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert backup("0").returncode == 2
    done = backup("2")
    assert done.returncode == 0, done.stderr
    kept = sorted(p.name for p in backups.iterdir())
    assert kept[:2] == ["gasgate-20250103T000000Z", kept[1]]
    assert kept[1] > old[-1]
    assert kept[2:] == ["notes"]  # only snapshots are ever pruned
