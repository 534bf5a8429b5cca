"""Reading registry files into located rows: CSV and YAML text in, rows and problems out.

Pure (no I/O). Every value keeps the line and column it came from, so the validator can say
``sites.csv:7:3``. CSV: line 1 is the header, a line number is the physical line where the
record starts, a column is the 1-based field number. YAML: the value node's own mark.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import yaml

from gateway.registry.model import Problem, Severity
from gateway.registry.pool import Pool

if TYPE_CHECKING:
    from _csv import Reader

__all__ = [
    "MAX_FILE_BYTES",
    "TABLES",
    "Cell",
    "Row",
    "TableSpec",
    "decode",
    "read_csv",
    "read_yaml_tables",
    "yaml_root",
]

MAX_FILE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class TableSpec:
    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        return self.required + self.optional


TABLES: Mapping[str, TableSpec] = {
    t.name: t
    for t in (
        TableSpec(
            "sites",
            (
                "site_id",
                "name",
                "site_type",
                "kit",
                "district",
                "address",
                "contact_name",
                "contact_phone",
                "contact_lang",
            ),
            ("latitude", "longitude"),
        ),
        TableSpec(
            "components",
            ("site_id", "component", "device_id", "model", "installed_on", "links"),
            ("report_interval_s",),
        ),
        TableSpec("cylinders", ("site_id", "cylinder_id", "capacity_kg", "next_inspection_due")),
        TableSpec("contacts", ("site_id", "name", "phone"), ("lang", "role")),
        TableSpec(
            "models",
            ("model", "component", "power", "report_interval_s"),
            ("service_life_months",),
        ),
    )
}


@dataclass(frozen=True, slots=True)
class Cell:
    value: str
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class Row:
    """One record: column name → located value. A column the record lacks reads as an empty
    value located at the record's start."""

    file: str
    line: int
    column: int
    cells: Mapping[str, Cell]

    def __getitem__(self, name: str) -> Cell:
        cell = self.cells.get(name)
        return cell if cell is not None else Cell("", self.line, self.column)


class _CsvCells(Mapping[str, Cell]):
    """A CSV record's cells, each made when it is read: the record's fields and the file's one
    column index stand for them (a registry of 100,000 devices would otherwise hold over a
    million cells, and a dict per record, for the whole import)."""

    __slots__ = ("_columns", "_fields", "_line")

    def __init__(self, columns: Mapping[str, int], fields: list[str], line: int) -> None:
        self._columns = columns
        self._fields = fields
        self._line = line

    def __getitem__(self, name: str) -> Cell:
        index = self._columns[name]
        value = self._fields[index] if index < len(self._fields) else ""
        return Cell(value, self._line, index + 1)

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)


def _error(file: str, line: int, column: int, message: str, code: str) -> Problem:
    return Problem(file, line, column, message, code)


def decode(file: str, data: bytes) -> tuple[str | None, list[Problem]]:
    """UTF-8 text (a byte-order mark, as Excel writes it, is dropped); a problem at the first
    bad byte otherwise (spreadsheets often save CSV as GBK: "CSV UTF-8" is the format)."""
    if len(data) > MAX_FILE_BYTES:
        return None, [_error(file, 1, 1, f"file is over {MAX_FILE_BYTES} bytes", "too_large")]
    try:
        return data.decode("utf-8-sig"), []
    except UnicodeDecodeError as exc:
        head = data[: exc.start]
        line = head.count(b"\n") + 1
        column = len(head[head.rfind(b"\n") + 1 :].decode("utf-8", "replace")) + 1
        message = "not UTF-8 text (save the sheet as 'CSV UTF-8')"
        return None, [_error(file, line, column, message, "bad_encoding")]


def read_csv(
    file: str, text: str, spec: TableSpec, share: Pool | None = None
) -> tuple[list[Row] | None, list[Problem]]:
    """The records of one CSV file; None if the file cannot be read as this table (its header
    lacks a required column, or it is not CSV). Equal fields are one string (``share``: across
    the files of an import, so a site's id in sites.csv and in components.csv is one too)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    problems: list[Problem] = []
    try:
        header = next(reader, None)
    except csv.Error as exc:
        return None, [_error(file, 1, 1, f"not valid CSV: {exc}", "bad_csv")]
    if header is None:
        return None, [_error(file, 1, 1, "empty file: no header line", "missing_header")]
    columns = _header(file, header, spec, problems)
    if any(p.severity is Severity.ERROR for p in problems):
        return None, problems
    rows = _records(file, reader, columns, len(header), problems, share=share or Pool())
    return rows, problems


def _header(
    file: str, header: Sequence[str], spec: TableSpec, problems: list[Problem]
) -> dict[str, int]:
    """Column name → 0-based index. Names are matched trimmed and case-insensitively."""
    columns: dict[str, int] = {}
    for index, raw in enumerate(header):
        name = raw.strip().lower()
        if not name:
            continue  # a trailing comma on the header line, as spreadsheets write
        if name in columns:
            message = f"column {name!r} appears twice (first as column {columns[name] + 1})"
            problems.append(_error(file, 1, index + 1, message, "duplicate_column"))
        elif name not in spec.columns:
            # Extra columns are allowed (a sheet's own notes); said so, since a misspelt
            # optional column would otherwise be silently ignored.
            problems.append(
                Problem(
                    file,
                    1,
                    index + 1,
                    f"extra column {name!r} ignored",
                    "extra_column",
                    Severity.WARNING,
                )
            )
        else:
            columns[name] = index
    for name in spec.required:
        if name not in columns:
            message = f"missing column {name!r} (needs {', '.join(spec.required)})"
            problems.append(_error(file, 1, len(header) + 1, message, "missing_column"))
    return columns


def _records(
    file: str,
    reader: Reader,
    columns: Mapping[str, int],
    width: int,
    problems: list[Problem],
    *,
    share: Pool,
) -> list[Row] | None:
    rows: list[Row] = []
    line = reader.line_num  # the header's last line
    while True:
        start = line + 1
        try:
            fields = next(reader, None)
        except csv.Error as exc:  # e.g. a quote never closed: located where its record starts
            problems.append(_error(file, start, 1, f"not valid CSV: {exc}", "bad_csv"))
            return None
        if fields is None:
            return rows
        line = reader.line_num
        fields = [share(f.strip()) for f in fields]
        if not any(fields):
            continue  # blank lines and spreadsheets' trailing ",,,," rows
        if any(fields[width:]):
            extra = next(i for i in range(width, len(fields)) if fields[i])
            message = "more fields than the header has columns"
            problems.append(_error(file, start, extra + 1, message, "extra_field"))
        rows.append(Row(file, start, 1, _CsvCells(columns, fields, start)))


# --- YAML -----------------------------------------------------------------------------------


def yaml_root(file: str, text: str) -> tuple[yaml.Node | None, list[Problem]]:
    """The composed node tree (scalars stay text, marks kept); a located problem if not YAML."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader), []
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = f"not valid YAML: {exc.problem or exc.context}"
        return None, [_error(file, line, column, message, "bad_yaml")]
    except yaml.YAMLError as exc:
        return None, [_error(file, 1, 1, f"not valid YAML: {exc}", "bad_yaml")]
    except RecursionError:  # PyYAML composes nested collections recursively
        return None, [_error(file, 1, 1, "not valid YAML: nested too deeply", "bad_yaml")]


def _at(file: str, node: yaml.Node, message: str, code: str) -> Problem:
    return _error(file, node.start_mark.line + 1, node.start_mark.column + 1, message, code)


def _scalar_text(node: yaml.Node) -> str | None:
    """A scalar's text as written ('' for null), a sequence of scalars as space-separated
    text (``links: [a, b]``); None for anything else."""
    if isinstance(node, yaml.ScalarNode):
        return "" if node.tag == "tag:yaml.org,2002:null" else str(node.value).strip()
    if isinstance(node, yaml.SequenceNode) and all(
        isinstance(n, yaml.ScalarNode) for n in node.value
    ):
        return " ".join(str(n.value).strip() for n in node.value)
    return None


def read_yaml_tables(file: str, text: str) -> tuple[dict[str, list[Row]], list[Problem]]:
    """``registry.yaml``: a mapping of table name (sites, components, cylinders, contacts,
    models) → a list of mappings with the CSV columns as keys."""
    root, problems = yaml_root(file, text)
    tables: dict[str, list[Row]] = {}
    if root is None:
        return tables, problems
    if not isinstance(root, yaml.MappingNode):
        return tables, [_at(file, root, "expected a mapping of table: list", "bad_yaml")]
    for key, value in root.value:
        name = _scalar_text(key) or ""
        spec = TABLES.get(name)
        if spec is None:
            message = f"unknown table {name!r} (expected {', '.join(TABLES)})"
            problems.append(_at(file, key, message, "unknown_table"))
        elif name in tables:
            problems.append(_at(file, key, f"table {name!r} appears twice", "duplicate_table"))
        elif not isinstance(value, yaml.SequenceNode):
            problems.append(_at(file, value, f"{name}: expected a list of records", "bad_yaml"))
        else:
            tables[name] = [
                r
                for r in (_yaml_row(file, n, spec, problems) for n in value.value)
                if r is not None
            ]
    return tables, problems


def _yaml_row(file: str, node: yaml.Node, spec: TableSpec, problems: list[Problem]) -> Row | None:
    if not isinstance(node, yaml.MappingNode):
        problems.append(_at(file, node, f"{spec.name}: expected a mapping", "bad_yaml"))
        return None
    cells: dict[str, Cell] = {}
    for key, value in node.value:
        name = (_scalar_text(key) or "").lower()
        text = _scalar_text(value)
        if name in cells:
            problems.append(_at(file, key, f"key {name!r} appears twice", "duplicate_column"))
        elif name not in spec.columns:
            problems.append(
                Problem(
                    file,
                    key.start_mark.line + 1,
                    key.start_mark.column + 1,
                    f"extra key {name!r} ignored",
                    "extra_column",
                    Severity.WARNING,
                )
            )
        elif text is None:
            problems.append(_at(file, value, f"{name}: expected a plain value", "bad_yaml"))
        else:
            cells[name] = Cell(text, value.start_mark.line + 1, value.start_mark.column + 1)
    # A key left out reads as an empty value, as an empty CSV field does.
    line, column = node.start_mark.line + 1, node.start_mark.column + 1
    return Row(file, line, column, cells)
