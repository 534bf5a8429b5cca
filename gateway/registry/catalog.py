"""What the registry knows before any file is read: the built-in kits, service lives and
device models (docs/registry.md). Import files may add kits and models."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from gateway.registry.model import ComponentType, DeviceModel, KitDefinition, Power, SiteType

__all__ = [
    "BUILTIN_KITS",
    "DEFAULT_MODELS",
    "component_service_life_months",
]

C = ComponentType

BUILTIN_KITS: Final[Mapping[str, KitDefinition]] = MappingProxyType(
    {
        "four_piece": KitDefinition(
            "four_piece",
            (
                (C.LEAK_DETECTOR,),
                (C.SHUTOFF_VALVE,),
                (C.METAL_HOSE,),
                # "pressure regulator with over-flow protection": plain or electronic.
                (C.OVERFLOW_REGULATOR, C.SMART_REGULATOR),
            ),
            "restaurant / commercial four-piece kit",
        ),
        "two_piece": KitDefinition(
            "two_piece",
            ((C.SELF_CLOSING_REGULATOR,), (C.METAL_HOSE,)),
            "household two-piece kit",
        ),
    }
)

# Kit devices report every 60 s on mains and every 600 s on battery unless their model says
# otherwise. The defaults below are what an unregistered model of each kind is assumed to be
# (with a warning): kit detectors and valves are mains powered, smart regulators sit on the
# cylinder and run on battery. Real models are declared in the import's models.csv.
DEFAULT_MODELS: Final[Mapping[ComponentType, DeviceModel]] = MappingProxyType(
    {
        C.LEAK_DETECTOR: DeviceModel("default-detector", C.LEAK_DETECTOR, Power.MAINS, 60),
        C.SHUTOFF_VALVE: DeviceModel("default-valve", C.SHUTOFF_VALVE, Power.MAINS, 60),
        C.SMART_REGULATOR: DeviceModel("default-regulator", C.SMART_REGULATOR, Power.BATTERY, 600),
    }
)

# Service lives in months; None: no rule, not audited.
_SERVICE_LIFE_MONTHS: Final[Mapping[ComponentType, int]] = MappingProxyType(
    {
        C.SHUTOFF_VALVE: 10 * 12,
        # 8-10 years is quoted; the shorter is the safe side.
        C.METAL_HOSE: 8 * 12,
    }
)
_DETECTOR_LIFE_MONTHS: Final[Mapping[SiteType, int]] = MappingProxyType(
    {
        SiteType.HOUSEHOLD: 5 * 12,
        # Commercial: some cities treat an alarm older than 3 years as a violation. A site of
        # type "other" is audited like a commercial one (the shorter life).
        SiteType.RESTAURANT: 3 * 12,
        SiteType.OTHER: 3 * 12,
    }
)


def component_service_life_months(component: ComponentType, site_type: SiteType) -> int | None:
    """The audit's service life for a component at a type of site (docs/registry.md)."""
    if component is C.LEAK_DETECTOR:
        return _DETECTOR_LIFE_MONTHS[site_type]
    return _SERVICE_LIFE_MONTHS.get(component)
