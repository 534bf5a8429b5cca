"""The documented path of a new integrator (issue 15): tools that read or add to the gateway's
store never create one, and a prompt without a terminal says what to do instead."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.cli import main
from gateway.store import Store

READERS = [
    ["user", "add", "zhou", "--role", "duty_officer", "--password-stdin"],
    ["user", "list"],
    ["user", "token", "zhou"],
    ["audit", "--format", "html"],
    ["registry", "show"],
    ["escalation", "outbox"],
]


@pytest.mark.parametrize("args", READERS, ids=lambda a: " ".join(a[:2]))
def test_a_tool_refuses_a_data_dir_without_a_store(args: list[str], tmp_path: Path) -> None:
    data = tmp_path / "gasgate-data"
    data.mkdir()  # there, but no gateway has run on it (or --data-dir names the wrong one)
    result = CliRunner().invoke(
        main, [*args, "--data-dir", str(data)], input="a long enough secret\n"
    )
    assert result.exit_code == 1, result.output
    assert f"no gateway store at {data / 'gasgate.db'}" in result.output
    assert "--data-dir" in result.output
    assert list(data.iterdir()) == []  # nothing created: no empty store that answers "0 of 0"


def test_the_default_data_dir_is_named_when_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GASGATE_DATA_DIR", raising=False)
    result = CliRunner().invoke(main, ["audit"])
    assert result.exit_code == 1
    assert str(tmp_path / "gasgate-data" / "gasgate.db") in result.output
    assert not (tmp_path / "gasgate-data").exists()


def test_user_add_without_a_terminal_names_password_stdin(tmp_path: Path) -> None:
    store = Store(tmp_path / "gasgate.db")
    store.open()
    store.close()
    result = CliRunner().invoke(
        main, ["user", "add", "zhou", "--role", "duty_officer", "--data-dir", str(tmp_path)]
    )  # no input: the prompt meets the end of input at once, as without a terminal
    assert result.exit_code == 1
    assert "--password-stdin" in result.output
    assert "Aborted" not in result.output


REPO = Path(__file__).resolve().parent.parent
# The commands that read a gateway's store and must never create one where they stand.
STORE_READERS = ("gasgate user", "gasgate audit", "gasgate registry show", "gasgate escalation")


def readme_lines() -> list[str]:
    """The lines of the README's code blocks, as a newcomer would copy them."""
    blocks = (REPO / "README.md").read_text(encoding="utf-8").split("```")[1::2]
    return [line.strip() for block in blocks for line in block.splitlines()]


def test_the_readmes_store_commands_name_their_data_dir_and_the_examples_are_used() -> None:
    lines = readme_lines()
    readers = [line for line in lines if line.startswith(STORE_READERS)]
    assert readers, "the README shows how to add a user and run the audit"
    for command in readers:
        assert "--data-dir" in command.split("#")[0], command
    assert any(line.startswith("gasgate registry check examples/registry") for line in lines)
    assert any(line.startswith("cp gasgate.example.yaml ") for line in lines)
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert "gasgate-data/" in ignored  # the default data dir never lands in a commit
