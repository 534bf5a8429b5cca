"""The device contract the project carries: docs/ksp.md's test vectors are what the codec
reads and writes, and docs/schemas/kit-*.schema.json are the contract's models as JSON Schema,
against which the examples of docs/kit-v1.md validate (and an "open" command does not).

The schema files are generated from gateway/contract.py: after changing a model, run
``.venv/bin/python -m tests.test_device_contract`` and commit the files it rewrites."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel

from firmware_bridge import ksp
from gateway.contract import CmdAckMessage, CmdMessage, KitReport

DOCS = Path(__file__).resolve().parents[1] / "docs"
SCHEMAS: dict[str, tuple[type[BaseModel], str, str]] = {
    "kit-report": (
        KitReport,
        "device → gateway: a kit device's report",
        "kit/v1/{device_id}/report, QoS 1, not retained (docs/kit-v1.md).",
    ),
    "kit-command": (
        CmdMessage,
        "gateway → device: a command",
        "kit/v1/{device_id}/cmd, QoS 1, not retained. There is no open command.",
    ),
    "kit-command-answer": (
        CmdAckMessage,
        "device → gateway: the answer to a command",
        "kit/v1/{device_id}/cmd/ack, QoS 1, not retained; id repeats the command's.",
    ),
}


def generated(name: str) -> dict[str, Any]:
    model, title, description = SCHEMAS[name]
    schema = model.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://gasgate.example/schemas/{name}.schema.json",
        **schema,
        "title": title,
        "description": description,
    }


def schema_file(name: str) -> Path:
    return DOCS / "schemas" / f"{name}.schema.json"


def write_schemas() -> None:
    for name in SCHEMAS:
        text = json.dumps(generated(name), indent=2, ensure_ascii=False) + "\n"
        schema_file(name).write_text(text, encoding="utf-8")


# --- KSP/1 -----------------------------------------------------------------------------------

_VECTOR = re.compile(r"^\| (?P<what>[^|]+) \| 0x(?P<seq>[0-9A-F]{2}) \| `(?P<hex>[0-9A-F ]+)` \|$")


def vectors() -> list[tuple[str, int, bytes]]:
    text = (DOCS / "ksp.md").read_text(encoding="utf-8")
    found = [m for m in map(_VECTOR.match, text.splitlines()) if m]
    return [(m["what"], int(m["seq"], 16), bytes.fromhex(m["hex"])) for m in found]


def test_the_ksp_page_has_a_vector_per_frame_type() -> None:
    types = {frame[3] for _, _, frame in vectors()}
    assert types == {t.value for t in ksp.FrameType}


@pytest.mark.parametrize(("what", "seq", "frame"), vectors(), ids=lambda v: str(v)[:40])
def test_each_ksp_vector_decodes_and_encodes_back(what: str, seq: int, frame: bytes) -> None:
    decoder = ksp.Decoder()
    [decoded] = decoder.feed(b"\x00\xa5" + frame)  # after noise: the decoder resynchronises
    assert decoded.seq == seq
    message = ksp.parse(decoded)
    assert ksp.encode(seq, message) == frame
    crc = ksp.crc16_modbus(frame[2:-2])
    assert frame[-2:] == bytes((crc & 0xFF, crc >> 8))  # low byte first


def test_the_crc_check_value_on_the_page() -> None:
    assert ksp.crc16_modbus(b"123456789") == 0x4B37
    assert "0x4B37" in (DOCS / "ksp.md").read_text(encoding="utf-8")


# --- kit/v1 JSON Schemas ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_the_schema_files_are_the_models(name: str) -> None:
    stored = json.loads(schema_file(name).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(stored)
    assert stored == generated(name), f"regenerate: python -m tests.test_device_contract ({name})"


def _examples() -> list[dict[str, Any]]:
    """The JSON objects in docs/kit-v1.md's code blocks."""
    text = (DOCS / "kit-v1.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```json\n(.*?)```", text, re.DOTALL)
    objects = []
    for block in blocks:
        decoder, rest = json.JSONDecoder(), block.strip()
        while rest:
            value, end = decoder.raw_decode(rest)
            objects.append(value)
            rest = rest[end:].strip()
    return objects


def _valid(name: str, payload: dict[str, Any]) -> bool:
    validator = jsonschema.Draft202012Validator(generated(name))
    return validator.is_valid(payload)


def test_the_page_examples_validate_against_the_schemas_and_the_models() -> None:
    report, command, answer, _status = _examples()
    assert _valid("kit-report", report)
    KitReport.model_validate(report)
    assert _valid("kit-command", command)
    CmdMessage.model_validate(command)
    assert _valid("kit-command-answer", answer)
    CmdAckMessage.model_validate(answer)


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("kit-command", {"id": "x", "cmd": "open"}),
        ("kit-command", {"id": "x", "cmd": "open_valve"}),
        ("kit-command", {"id": "", "cmd": "close_valve"}),
        ("kit-command-answer", {"id": "x", "result": "done"}),
        ("kit-report", {"kind": "detector", "seq": 70000, "event": "alarm", "detector": {}}),
        ("kit-report", {"kind": "valve", "seq": 1, "event": "alarm", "valve": {"state": "ajar"}}),
    ],
)
def test_the_schemas_refuse_what_the_models_refuse(name: str, payload: dict[str, Any]) -> None:
    assert not _valid(name, payload)
    with pytest.raises(ValueError):
        SCHEMAS[name][0].model_validate(payload)


def test_the_project_cites_no_spec_it_does_not_carry() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "docs", "README.md", "gateway", "firmware_bridge", "rules"],
        cwd=DOCS.parent,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.split()
    citing = [
        path
        for path in tracked
        if path.endswith((".md", ".py", ".yaml"))
        and "shared/specs" in (DOCS.parent / path).read_text(encoding="utf-8")
    ]
    assert citing == []


if __name__ == "__main__":
    write_schemas()
