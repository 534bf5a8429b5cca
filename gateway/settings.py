"""Settings layering shared by every gasgate process: defaults < config file < env < flags.

Each process (bridge, gateway, simulator) declares one :class:`GasgateSettings` subclass; its
fields, with their descriptions, are the documentation (``gasgate config show``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from gateway.errors import ConfigError

__all__ = ["GasgateSettings", "read_config_file"]

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
    def load(cls: type[S], config_file: Path | None, flags: Mapping[str, Any]) -> S:
        """Layer the settings; flags that are ``None`` were not given and do not count."""
        file_values = read_config_file(config_file) if config_file else {}
        layered = type(cls.__name__, (cls,), {"_file_values": file_values})
        given = {k: v for k, v in flags.items() if v is not None}
        try:
            settings: S = layered(**given)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
            )
            source = f"{config_file}: " if config_file else ""
            raise ConfigError(f"{source}invalid settings: {problems}") from None
        return settings
