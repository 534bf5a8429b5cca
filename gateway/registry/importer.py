"""Importing a directory of registry files: read, validate, and (only if clean) store.

All or nothing: one error anywhere in the import and nothing is stored; the gateway keeps the
registry it had. A clean import replaces the whole registry (a full snapshot) atomically.
"""

from __future__ import annotations

import getpass
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

from gateway.errors import GasgateError
from gateway.registry import tables
from gateway.registry.files import MAX_FILE_BYTES, TABLES
from gateway.registry.model import Problem, RegistryData, Severity
from gateway.registry.validate import KITS_FILE, YAML_FILE, csv_file, parse_files
from gateway.store import Store

__all__ = ["REGISTRY_FILES", "ImportResult", "RegistryImportError", "import_dir", "save"]

log = logging.getLogger(__name__)

REGISTRY_FILES = (*(csv_file(t) for t in TABLES), YAML_FILE, KITS_FILE)


class RegistryImportError(GasgateError):
    """An import that has errors was asked to be saved, or the directory cannot be read."""


@dataclass(frozen=True, slots=True)
class ImportResult:
    source: Path
    problems: tuple[Problem, ...]
    data: RegistryData
    files: Mapping[str, str] = field(default_factory=dict)  # file name → sha256

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity is Severity.ERROR)

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity is Severity.WARNING)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def counts(self) -> dict[str, int]:
        return self.data.counts()


def import_dir(path: Path, today: date | None = None) -> ImportResult:
    """Read and check the registry files in ``path`` (other files there are ignored).
    ``today`` (default: the local date) bounds install dates."""
    if not path.is_dir():
        raise RegistryImportError(f"{path}: not a directory")
    files: dict[str, bytes] = {}
    too_large: list[Problem] = []
    for name in REGISTRY_FILES:
        file = path / name
        if file.is_file():
            try:
                if file.stat().st_size > MAX_FILE_BYTES:
                    message = f"file is over {MAX_FILE_BYTES} bytes"
                    too_large.append(Problem(name, 1, 1, message, "too_large"))
                else:
                    files[name] = file.read_bytes()
            except OSError as exc:
                raise RegistryImportError(f"{file}: cannot read: {exc.strerror}") from None
    if too_large:
        return ImportResult(path, tuple(too_large), RegistryData())
    # The gateway's local calendar date: what a fitter wrote on the form.
    parsed = parse_files(files, today or date.today())
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    return ImportResult(path, parsed.problems, parsed.data, digests)


def save(store: Store, result: ImportResult, who: str | None = None) -> int:
    """Replace the stored registry with a clean import; returns its generation."""
    if not result.ok:
        raise RegistryImportError(f"{result.source}: {len(result.errors)} errors, nothing imported")
    record = tables.ImportRecord(
        generation=0,
        imported_at=datetime.now(UTC),
        who=who or _os_user(),
        source=str(result.source.resolve()),
        counts=result.counts,
        files=result.files,
        warnings=len(result.warnings),
    )
    generation = tables.replace(store, result.data, record)
    log.info(
        "registry import %d from %s by %s: %s", generation, record.source, record.who, record.counts
    )
    return generation


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in a container
        return "unknown"
