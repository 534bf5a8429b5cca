"""The site/kit registry: which sites exist, what kit each has, which device is where and which
valve closes for which detector. See docs/registry.md."""

from __future__ import annotations

from gateway.registry.importer import ImportResult, RegistryImportError, import_dir, save
from gateway.registry.model import (
    Component,
    ComponentType,
    Contact,
    Cylinder,
    DeviceInfo,
    DeviceModel,
    KitDefinition,
    KitStatus,
    Lang,
    Power,
    Problem,
    RegistryData,
    ServiceFinding,
    Severity,
    Site,
    SiteType,
)
from gateway.registry.registry import Registry
from gateway.registry.tables import current_generation, history
from gateway.registry.watch import RegistryWatch

__all__ = [
    "Component",
    "ComponentType",
    "Contact",
    "Cylinder",
    "DeviceInfo",
    "DeviceModel",
    "ImportResult",
    "KitDefinition",
    "KitStatus",
    "Lang",
    "Power",
    "Problem",
    "Registry",
    "RegistryData",
    "RegistryImportError",
    "RegistryWatch",
    "ServiceFinding",
    "Severity",
    "Site",
    "SiteType",
    "current_generation",
    "history",
    "import_dir",
    "save",
]
