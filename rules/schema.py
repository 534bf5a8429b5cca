"""Rule files: what the rules are set to, per site type and per site, validated with locations.

A rule file is YAML (see ``rules/default.yaml`` and ``docs/rules.md``)::

    leak: {low_lel_pct: 20, high_lel_pct: 50, clear_lel_pct: 10, clear_hold_s: 30}
    severity: {gas_rising: medium}
    overrides:
      site_type: {household: {leak: {low_lel_pct: 15}}}
      site: {S0007: {isolation: {valve_closed_within_s: 20}}}

Files are layered: the built-in ``default.yaml`` first, then each operator file in name order,
every key deep-merged over the one before. A site's parameters are the merged base, then its
site type's override, then its own override, validated as a whole, so a site override that
puts the clear level above the alarm level is an error located in the override that did it.

Every problem names ``file:line:column`` and the field (``leak.clear_lel_pct``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Final, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gateway.alarm_types import AlarmType
from gateway.errors import ConfigError
from gateway.events import Severity

__all__ = [
    "DEFAULT_RULES_FILE",
    "GasRisingRule",
    "IsolationRule",
    "LeakRule",
    "OfflineRule",
    "Params",
    "Problem",
    "RuleSet",
    "ServiceRule",
    "UnregisteredRule",
    "check_rules",
    "load_rules",
    "rule_files",
]

DEFAULT_RULES_FILE: Final = Path(__file__).with_name("default.yaml")
MAX_RULE_FILE_BYTES: Final = 1024 * 1024
SITE_TYPES: Final = ("restaurant", "household", "other")  # gateway.registry.model.SiteType

_Pct = Annotated[float, Field(ge=0, le=100)]
_Seconds = Annotated[float, Field(gt=0, le=7 * 86400)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LeakRule(_Section):
    """Threshold with a separate clear level and hold time (docs/rules.md)."""

    low_lel_pct: _Pct = 20.0
    high_lel_pct: _Pct = 50.0
    clear_lel_pct: _Pct = 10.0
    clear_hold_s: _Seconds = 30.0
    # An active leak_high is re-announced when its peak rises this much over the last one
    # (0: never), so the duty room sees 35 -> 80 %LEL; the alarms room records it as an update.
    reemit_step_lel_pct: _Pct = 10.0

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if not self.clear_lel_pct < self.low_lel_pct <= self.high_lel_pct:
            raise ValueError(
                f"needs clear_lel_pct < low_lel_pct <= high_lel_pct, got {self.clear_lel_pct}, "
                f"{self.low_lel_pct}, {self.high_lel_pct}"
            )
        return self


class GasRisingRule(_Section):
    """Rate of rise below the alarm level: an early warning."""

    enabled: bool = True
    rise_lel_pct_per_min: Annotated[float, Field(gt=0, le=100)] = 5.0
    window_s: _Seconds = 150.0  # the rate is measured against the oldest reading this recent
    min_span_s: _Seconds = 20.0  # readings closer than this give no rate (noise)
    clear_hold_s: _Seconds = 60.0  # rate below half the raise rate for this long clears it

    @model_validator(mode="after")
    def _span(self) -> Self:
        if self.min_span_s >= self.window_s:
            raise ValueError(f"needs min_span_s < window_s, got {self.min_span_s}, {self.window_s}")
        return self


class IsolationRule(_Section):
    """A leak and a linked valve not reported closed within this time: leak_not_isolated."""

    valve_closed_within_s: _Seconds = 30.0


class OfflineRule(_Section):
    missed_intervals: Annotated[int, Field(ge=2, le=100)] = 3


class UnregisteredRule(_Section):
    """Messages from a device id the registry does not know."""

    messages: Annotated[int, Field(ge=1, le=1000)] = 3  # this many ...
    window_s: _Seconds = 60.0  # ... within this window raise the condition
    quiet_s: _Seconds = 3600.0  # silence this long clears it


class ServiceRule(_Section):
    """Registry dates (service life, cylinder inspection): checked at start and then every."""

    check_every_s: Annotated[float, Field(ge=60, le=7 * 86400)] = 86400.0


class Params(_Section):
    """Everything the rules are set to for one site."""

    leak: LeakRule = LeakRule()
    gas_rising: GasRisingRule = GasRisingRule()
    isolation: IsolationRule = IsolationRule()
    offline: OfflineRule = OfflineRule()
    unregistered: UnregisteredRule = UnregisteredRule()
    service: ServiceRule = ServiceRule()
    severity: Mapping[AlarmType, Severity] = MappingProxyType({})

    def severity_of(self, alarm_type: AlarmType, default: Severity) -> Severity:
        return self.severity.get(alarm_type, default)


# Sections only the whole gateway has (one timer, one counter): not overridable per site.
_GATEWAY_ONLY: Final = frozenset({"offline", "unregistered", "service"})


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The merged rules: the base, and the overridden :class:`Params` per site type and site."""

    base: Params
    site_types: Mapping[str, Params]
    sites: Mapping[str, Mapping[str, Params]]  # site id -> site type ("" unknown) -> params

    def for_site(self, site_id: str | None, site_type: str | None) -> Params:
        by_type = self.sites.get(site_id) if site_id is not None else None
        if by_type is not None:
            return by_type.get(site_type or "", by_type[""])
        if site_type is not None:
            return self.site_types.get(site_type, self.base)
        return self.base

    @classmethod
    def defaults(cls) -> RuleSet:
        return load_rules(())


# --- located YAML ---------------------------------------------------------------------------

Path_ = tuple[str, ...]
_Mark = tuple[str, int, int]  # file, line, column (1-based)


def _mark(file: str, node: yaml.Node) -> _Mark:
    return file, node.start_mark.line + 1, node.start_mark.column + 1


class _Layer:
    """Deep-merged plain data plus where each value came from."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.marks: dict[Path_, _Mark] = {}

    def copy(self) -> _Layer:
        """A layer to merge an override into without touching this one."""
        other = _Layer()
        other.data = _deep_copy(self.data)
        other.marks = dict(self.marks)
        return other

    def merge(
        self, file: str, node: yaml.MappingNode, path: Path_, problems: list[Problem]
    ) -> None:
        self.marks[path] = _mark(file, node)
        target = self.data
        for key in path:
            target = target.setdefault(key, {})
        _merge_mapping(file, node, target, path, marks=self.marks, problems=problems)

    def located(self, loc: Sequence[str | int]) -> _Mark:
        path = tuple(str(p) for p in loc)
        while path not in self.marks and path:
            path = path[:-1]
        return self.marks.get(path, ("<rules>", 1, 1))


def _deep_copy(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in data.items()}


def _merge_mapping(
    file: str,
    node: yaml.MappingNode,
    target: dict[str, Any],
    path: Path_,
    *,
    marks: dict[Path_, _Mark],
    problems: list[Problem],
) -> None:
    seen: set[str] = set()
    for key_node, value_node in node.value:
        key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else ""
        where = _mark(file, key_node)
        if not key:
            problems.append(Problem(*where, f"{'.'.join(path) or 'file'}: keys must be names"))
            continue
        if key in seen:
            problems.append(Problem(*where, f"{'.'.join((*path, key))}: key appears twice"))
            continue
        seen.add(key)
        sub = (*path, key)
        marks[sub] = _mark(file, value_node)
        if isinstance(value_node, yaml.MappingNode):
            child = target.get(key)
            if not isinstance(child, dict):
                child = target[key] = {}
            _merge_mapping(file, value_node, child, sub, marks=marks, problems=problems)
        else:
            try:
                target[key] = _construct(value_node)
            except yaml.YAMLError as exc:
                problems.append(Problem(*marks[sub], f"{'.'.join(sub)}: {exc}"))


def _construct(node: yaml.Node) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def _read(path: Path, problems: list[Problem]) -> yaml.MappingNode | None:
    file = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        problems.append(Problem(file, 1, 1, f"cannot read: {exc.strerror}"))
        return None
    if len(data) > MAX_RULE_FILE_BYTES:
        problems.append(Problem(file, 1, 1, f"file is over {MAX_RULE_FILE_BYTES} bytes"))
        return None
    try:
        root = yaml.compose(data.decode("utf-8"), Loader=yaml.SafeLoader)
    except UnicodeDecodeError as exc:
        problems.append(Problem(file, 1, 1, f"not UTF-8 text (byte offset {exc.start})"))
        return None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problems.append(Problem(file, line, column, f"not valid YAML: {exc.problem}"))
        return None
    if root is None:
        return None  # an empty file changes nothing
    if not isinstance(root, yaml.MappingNode):
        problems.append(Problem(*_mark(file, root), "a rule file is a mapping of sections"))
        return None
    return root


# --- validation -----------------------------------------------------------------------------


def _validate(
    layer: _Layer, problems: list[Problem], seen: set[tuple[_Mark, str]], label: str = ""
) -> Params | None:
    """The layer's parameters; its problems otherwise, each place and field reported once
    (a site override resolved for every site type fails the same way for most of them)."""
    try:
        return Params.model_validate(layer.data)
    except ValidationError as exc:
        for error in exc.errors():
            loc = tuple(error["loc"])
            field = ".".join(str(p) for p in loc) or "file"
            mark = layer.located(loc)
            if (mark, field) not in seen:
                seen.add((mark, field))
                message = error["msg"].removeprefix("Value error, ")
                problems.append(Problem(*mark, f"{label}{field}: {message}"))
        return None


def _split_overrides(
    file: str, root: yaml.MappingNode, problems: list[Problem]
) -> tuple[yaml.MappingNode, list[tuple[str, str, yaml.MappingNode]]]:
    """The file without its ``overrides`` key, and each (scope, name, node) override."""
    overrides: list[tuple[str, str, yaml.MappingNode]] = []
    base = [(k, v) for k, v in root.value if getattr(k, "value", None) != "overrides"]
    for key, value in root.value:
        if getattr(key, "value", None) != "overrides":
            continue
        if not isinstance(value, yaml.MappingNode):
            problems.append(Problem(*_mark(file, value), "overrides: expected a mapping"))
            continue
        for scope_node, names in value.value:
            scope = str(getattr(scope_node, "value", ""))
            if scope not in ("site_type", "site"):
                message = f"overrides.{scope}: expected site_type or site"
                problems.append(Problem(*_mark(file, scope_node), message))
                continue
            if not isinstance(names, yaml.MappingNode):
                problems.append(Problem(*_mark(file, names), f"overrides.{scope}: expected a map"))
                continue
            for name_node, body in names.value:
                name = str(getattr(name_node, "value", ""))
                where = f"overrides.{scope}.{name}"
                if scope == "site_type" and name not in SITE_TYPES:
                    message = f"{where}: unknown site type (expected {', '.join(SITE_TYPES)})"
                    problems.append(Problem(*_mark(file, name_node), message))
                elif not isinstance(body, yaml.MappingNode):
                    problems.append(Problem(*_mark(file, body), f"{where}: expected a mapping"))
                else:
                    overrides.extend(_override_body(file, scope, name, body, problems))
    return yaml.MappingNode(root.tag, base, root.start_mark, root.end_mark), overrides


def _override_body(
    file: str, scope: str, name: str, body: yaml.MappingNode, problems: list[Problem]
) -> Iterable[tuple[str, str, yaml.MappingNode]]:
    for key, _ in body.value:
        section = str(getattr(key, "value", ""))
        if section in _GATEWAY_ONLY or section == "overrides":
            message = f"overrides.{scope}.{name}.{section}: set for the whole gateway only"
            problems.append(Problem(*_mark(file, key), message))
            return
    yield scope, name, body


def _load(paths: Iterable[Path]) -> tuple[RuleSet | None, list[Problem]]:
    problems: list[Problem] = []
    base = _Layer()
    overrides: list[tuple[str, str, str, yaml.MappingNode]] = []
    for path in (DEFAULT_RULES_FILE, *paths):
        root = _read(path, problems)
        if root is None:
            continue
        plain, found = _split_overrides(str(path), root, problems)
        base.merge(str(path), plain, (), problems)
        overrides.extend((str(path), scope, name, node) for scope, name, node in found)
    seen: set[tuple[_Mark, str]] = set()
    params = _validate(base, problems, seen)
    if params is None:
        return None, problems  # every override would repeat the base's problems
    type_layers = {t: base.copy() for t in SITE_TYPES}
    for file, scope, name, node in overrides:
        if scope == "site_type":
            type_layers[name].merge(file, node, (), problems)
    site_types = {
        t: _validate(layer, problems, seen, f"overrides.site_type.{t}: ")
        for t, layer in type_layers.items()
    }
    # A site's own override layers over its site type's; the type is the registry's, known
    # only at run time, so each site is resolved for every type (and for none) here.
    sites: dict[str, dict[str, Params | None]] = {}
    for kind, under in (("", base), *type_layers.items()):
        if kind and site_types[kind] is None:
            continue
        site_layers: dict[str, _Layer] = {}
        for file, scope, name, node in overrides:
            if scope == "site":
                site_layers.setdefault(name, under.copy()).merge(file, node, (), problems)
        for name, layer in site_layers.items():
            label = f"overrides.site.{name}{f' (site type {kind})' if kind else ''}: "
            sites.setdefault(name, {})[kind] = _validate(layer, problems, seen, label)
    problems = list(dict.fromkeys(problems))  # merge problems repeat once per site type
    if problems:
        return None, problems
    return RuleSet(params, _frozen(site_types), _frozen_sites(sites)), problems


def _frozen(params: Mapping[str, Params | None]) -> Mapping[str, Params]:
    return MappingProxyType({k: p for k, p in params.items() if p is not None})


def _frozen_sites(
    sites: Mapping[str, Mapping[str, Params | None]],
) -> Mapping[str, Mapping[str, Params]]:
    return MappingProxyType({site: _frozen(by_type) for site, by_type in sites.items()})


def rule_files(directory: Path) -> list[Path]:
    """The operator rule files in ``directory``: ``*.yaml`` / ``*.yml`` in name order."""
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def check_rules(paths: Iterable[Path]) -> list[Problem]:
    """Every problem in the built-in defaults layered with ``paths`` (empty: all good)."""
    return _load(paths)[1]


def load_rules(paths: Iterable[Path]) -> RuleSet:
    """The rules, or :class:`ConfigError` listing every problem, one per line."""
    ruleset, problems = _load(list(paths))
    if ruleset is None:
        raise ConfigError("invalid rules:\n" + "\n".join(str(p) for p in problems))
    return ruleset
