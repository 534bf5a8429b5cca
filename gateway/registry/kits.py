"""``kits.yaml``: custom kit definitions beside the built-in four_piece and two_piece.

```yaml
kits:
  city_restaurant:                 # the name sites.csv's kit column uses
    description: restaurant kit, flame-failure cooker instead of the regulator
    components:
      - leak_detector
      - shutoff_valve
      - metal_hose
      - [flame_failure_cooker, overflow_regulator]   # any one of these
```
Pure: text in, (kits, problems) out.
"""

from __future__ import annotations

import re
from typing import Final

import yaml

from gateway.registry.files import yaml_root
from gateway.registry.model import ComponentType, KitDefinition, Problem, Severity

__all__ = ["read_kits"]

KIT_NAME_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,39}")
_KIT_KEYS: Final = ("description", "components")
_COMPONENT_NAMES: Final = frozenset(c.value for c in ComponentType)


def _at(file: str, node: yaml.Node, message: str, code: str, warning: bool = False) -> Problem:
    severity = Severity.WARNING if warning else Severity.ERROR
    mark = node.start_mark
    return Problem(file, mark.line + 1, mark.column + 1, message, code, severity)


def read_kits(
    file: str, text: str, builtin: frozenset[str]
) -> tuple[tuple[KitDefinition, ...], list[Problem]]:
    root, problems = yaml_root(file, text)
    if root is None:
        return (), problems
    if (
        not isinstance(root, yaml.MappingNode)
        or len(root.value) != 1
        or root.value[0][0].value != "kits"
        or not isinstance(root.value[0][1], yaml.MappingNode)
    ):
        return (), [
            _at(file, root, "expected 'kits:' holding a mapping of kit name: kit", "bad_kit")
        ]
    kits: dict[str, KitDefinition] = {}
    for key, node in root.value[0][1].value:
        name = str(key.value)
        if not isinstance(key, yaml.ScalarNode) or not KIT_NAME_RE.fullmatch(name):
            problems.append(
                _at(file, key, f"kit name {name!r} is not [a-z][a-z0-9_]{{0,39}}", "bad_kit")
            )
        elif name in builtin:
            problems.append(
                _at(file, key, f"kit {name!r} is built in and cannot be redefined", "builtin_kit")
            )
        elif name in kits:
            problems.append(_at(file, key, f"kit {name!r} defined twice", "duplicate_kit"))
        else:
            kit = _kit(file, name, node, problems)
            if kit is not None:
                kits[name] = kit
    return tuple(kits.values()), problems


def _kit(file: str, name: str, node: yaml.Node, problems: list[Problem]) -> KitDefinition | None:
    if not isinstance(node, yaml.MappingNode):
        problems.append(_at(file, node, f"kit {name!r}: expected a mapping", "bad_kit"))
        return None
    fields = {str(k.value): (k, v) for k, v in node.value}
    for key_text, (key, _) in fields.items():
        if key_text not in _KIT_KEYS:
            problems.append(
                _at(file, key, f"unknown key {key_text!r} ignored", "extra_column", True)
            )
    description = fields.get("description")
    text = ""
    if description is not None:
        if not isinstance(description[1], yaml.ScalarNode):
            problems.append(_at(file, description[1], "description: expected text", "bad_kit"))
        else:
            text = str(description[1].value)
    components = fields.get("components")
    if (
        components is None
        or not isinstance(components[1], yaml.SequenceNode)
        or not components[1].value
    ):
        where = node if components is None else components[1]
        problems.append(
            _at(
                file,
                where,
                f"kit {name!r}: 'components' must list at least one component",
                "bad_kit",
            )
        )
        return None
    requirements = [_requirement(file, item, problems) for item in components[1].value]
    if any(r is None for r in requirements):
        return None
    return KitDefinition(name, tuple(r for r in requirements if r is not None), text)


def _requirement(
    file: str, node: yaml.Node, problems: list[Problem]
) -> tuple[ComponentType, ...] | None:
    """One component, or a list of alternatives any one of which satisfies the requirement."""
    items = node.value if isinstance(node, yaml.SequenceNode) else [node]
    if not items:
        problems.append(_at(file, node, "an empty list of alternatives", "bad_kit"))
        return None
    alternatives: list[ComponentType] = []
    for item in items:
        text = item.value if isinstance(item, yaml.ScalarNode) else ""
        if text in _COMPONENT_NAMES:
            alternatives.append(ComponentType(text))
        else:
            allowed = ", ".join(ComponentType)
            message = f"unknown component {item.value!r} (one of {allowed})"
            problems.append(_at(file, item, message, "unknown_component"))
    return tuple(dict.fromkeys(alternatives)) if len(alternatives) == len(items) else None
