"""Settings layering shared by every gasgate process: defaults < config file < env < flags.

Each process (bridge, gateway, simulator) declares one :class:`GasgateSettings` subclass; its
fields, with their descriptions, are the documentation (``gasgate config show``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import unquote, urlsplit

import yaml
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from gateway.errors import ConfigError

__all__ = [
    "PLACEHOLDER",
    "PLACEHOLDER_SECRETS",
    "GasgateSettings",
    "InvalidSettings",
    "is_placeholder",
    "placeholder_secrets",
    "read_config_file",
    "refuse_placeholder_secrets",
    "yaml_where",
]

S = TypeVar("S", bound="GasgateSettings")


def read_config_file(path: Path) -> dict[str, Any]:
    """A YAML mapping of setting name → value; ``ConfigError`` naming file and line otherwise."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file holds a mapping of setting: value")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def yaml_where(path: Path, root: yaml.Node | None, loc: Sequence[Any]) -> str:
    """``file:line:column`` of the deepest YAML node on ``loc`` that exists."""
    node = root
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            child = node.value[part] if part < len(node.value) else None
        if child is None:
            break
        node = child
    if node is None:
        return str(path)
    return f"{path}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"


class InvalidSettings(ConfigError):
    """Settings that do not validate: ``problems`` has every one, located where it can be
    (``file:line:column`` in the config file); ``fields`` names the top-level settings at fault."""

    def __init__(self, source: str, problems: list[str], fields: frozenset[str]) -> None:
        super().__init__(f"{source}invalid settings: {'; '.join(problems)}")
        self.problems = problems
        self.fields = fields


# Values the example files ship with (and "..." of the docs' examples): never a real secret.
PLACEHOLDER_SECRETS = frozenset({"change-me", "changeme", "change_me", "..."})
PLACEHOLDER = "a placeholder or empty secret: set a real one (openssl rand -hex 24)"


def placeholder_secrets(settings: BaseModel) -> list[str]:
    """The settings whose password, token or secret is a placeholder or empty (dotted names,
    ``mqtt`` for the password in its URL): a gateway must not start on them."""
    return [name for name, secret in _secrets(settings, "") if is_placeholder(secret)]


def is_placeholder(secret: str) -> bool:
    """Empty, or a value the example files ship with."""
    return not secret.strip() or secret.strip().lower() in PLACEHOLDER_SECRETS


def refuse_placeholder_secrets(settings: BaseModel) -> None:
    """``ConfigError`` naming every setting whose secret is a placeholder (``change-me``)."""
    names = placeholder_secrets(settings)
    if names:
        raise ConfigError(f"refusing to start: {', '.join(names)}: {PLACEHOLDER}")


def _secrets(value: Any, name: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, SecretStr):
        yield name, value.get_secret_value()
    elif isinstance(value, BaseModel):
        for field in type(value).model_fields:
            yield from _secrets(getattr(value, field), f"{name}.{field}".lstrip("."))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _secrets(item, f"{name}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _secrets(item, f"{name}.{i}")
    elif isinstance(value, str) and "://" in value:
        password = urlsplit(value).password
        if password is not None:
            yield name, unquote(password)


class _FileSource(PydanticBaseSettingsSource):
    """The config file's values, below env and flags."""

    def __init__(self, settings_cls: type[BaseSettings], values: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._values = values

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)


class GasgateSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GASGATE_", extra="forbid")
    _file_values: ClassVar[dict[str, Any]] = {}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _FileSource(settings_cls, cls._file_values)

    @classmethod
    def load(
        cls: type[S],
        config_file: Path | None,
        flags: Mapping[str, Any],
        *,
        defaults_for: frozenset[str] = frozenset(),
    ) -> S:
        """Layer the settings; flags that are ``None`` were not given and do not count.
        ``defaults_for``: settings taken at their defaults whatever is given (``config check``
        uses it to go on past the invalid ones)."""
        file_values = read_config_file(config_file) if config_file else {}
        layered = type(cls.__name__, (cls,), {"_file_values": file_values})
        given = {k: v for k, v in flags.items() if v is not None}
        for name in defaults_for & cls.model_fields.keys():
            given[name] = cls.model_fields[name].get_default(call_default_factory=True)
        try:
            settings: S = layered(**given)
        except ValidationError as exc:
            raise _invalid(exc, config_file, file_values) from None
        return settings


def _invalid(
    exc: ValidationError, config_file: Path | None, file_values: Mapping[str, Any]
) -> InvalidSettings:
    root = None
    if config_file is not None:
        root = yaml.compose(config_file.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    problems = []
    for error in exc.errors():
        loc = error["loc"]
        field = ".".join(map(str, loc)) or "settings"
        # A value from the file is located in it; one from the env or a flag is named only.
        from_file = config_file is not None and bool(loc) and loc[0] in file_values
        where = f"{yaml_where(config_file, root, loc)}: " if from_file and config_file else ""
        problems.append(f"{where}{field}: {error['msg']}")
    source = f"{config_file}: " if config_file else ""
    fields = frozenset(str(e["loc"][0]) for e in exc.errors() if e["loc"])
    return InvalidSettings(source, problems, fields)
