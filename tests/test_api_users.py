"""``gasgate user add|token|list`` on a real store: Argon2id hashes, tokens kept only as
hashes, the rules for names, passwords and site users (whose site must be in the registry)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from click.testing import CliRunner

from gateway.cli import main
from gateway.registry import import_dir, save
from gateway.store import Store
from gateway.users import Role, Users
from tests.support.kit_site import SITE, write_registry

PASSWORD = "a long enough secret"


def _run(*args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), input=stdin)
    return result.exit_code, result.output


def _gateway_data_dir(tmp_path: Path) -> str:
    """A data directory with a store, as ``gasgate run`` leaves it (the tools never create one),
    and a registry of one site (:data:`SITE`) in it."""
    store = Store(tmp_path / "data" / "gasgate.db")
    store.open()
    save(store, import_dir(write_registry(tmp_path / "registry")), who="test")
    store.close()
    return str(tmp_path / "data")


def test_add_token_list(tmp_path: Path) -> None:
    data = _gateway_data_dir(tmp_path)
    code, out = _run(
        "user", "add", "alice", "--role", "duty_officer", "--data-dir", data,
        stdin=f"{PASSWORD}\n{PASSWORD}\n",
    )  # fmt: skip
    assert code == 0, out
    assert "user alice added: duty_officer" in out
    code, out = _run(
        "user", "add", "bob", "--role", "site_user", "--site", SITE, "--password-stdin",
        "--data-dir", data, stdin=f"{PASSWORD}\n",
    )  # fmt: skip
    assert code == 0, out
    code, token = _run("user", "token", "alice", "--data-dir", data)
    assert code == 0
    token = token.strip()
    assert token.startswith("gg_")
    code, out = _run("user", "list", "--data-dir", data)
    assert out.splitlines() == ["alice\tduty_officer\t", f"bob\tsite_user\t{SITE}"]

    store = Store(tmp_path / "data" / "gasgate.db")
    store.open()
    try:
        stored = store.db.execute("SELECT password_hash FROM users WHERE name = 'alice'")
        assert stored.fetchone()[0].startswith("$argon2id$")
        tokens = [r[0] for r in store.db.execute("SELECT token_sha256 FROM api_tokens")]
        assert tokens == [hashlib.sha256(token.encode()).hexdigest()]
        users = Users(store)
        users.prepare()
        alice = users.by_token(token)
        assert alice is not None
        assert alice.role is Role.DUTY_OFFICER
        assert users.by_token(token + "x") is None
        assert users.check_password("alice", PASSWORD) == alice
        assert users.check_password("alice", PASSWORD + "!") is None
        assert users.check_password("nobody", PASSWORD) is None
    finally:
        store.close()


def test_refusals(tmp_path: Path) -> None:
    data = _gateway_data_dir(tmp_path)

    def add(*args: str, password: str = PASSWORD) -> tuple[int, str]:
        return _run("user", "add", *args, "--password-stdin", "--data-dir", data, stdin=password)

    assert add("carol", "--role", "regulator")[0] == 0
    code, out = add("carol", "--role", "regulator")
    assert (code, "already exists" in out) == (1, True)
    code, out = add("dave", "--role", "supervisor", password="short")
    assert (code, "at least 10 characters" in out) == (1, True)
    code, out = add("erin", "--role", "site_user")
    assert (code, "needs --site" in out) == (1, True)
    # A site the registry does not have: refused, naming the site and the store looked in.
    code, out = add("erin", "--role", "site_user", "--site", "NOPE")
    assert code == 1
    assert "site 'NOPE' is not in the registry" in out
    assert str(tmp_path / "data" / "gasgate.db") in out
    assert "erin" not in _run("user", "list", "--data-dir", data)[1]
    code, out = add("bad name!", "--role", "installer")
    assert code == 1
    assert "user name" in out
    code, out = add("frank", "--role", "admin")
    assert code == 2  # click: not one of the roles
    code, out = _run("user", "token", "nobody", "--data-dir", data)
    assert (code, "no user nobody" in out) == (1, True)
