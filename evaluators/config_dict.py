"""Build the evaluators' frozen config dataclasses from plain mappings (parsed YAML), with errors
that name the offending field."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

T = TypeVar("T")

_SIMPLE = {"int": int, "float": float, "str": str, "bool": bool, "None": type(None)}


class ConfigError(ValueError):
    """A config field with a wrong name, type or value; `field` is its dotted path."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def config_from_dict(cls: type[T], data: Mapping[str, Any], where: str,
                     nested: Mapping[str, type] | None = None) -> T:
    """`cls(**data)` after checking every key is a field and every value has the field's type.
    `nested` maps field names to dataclasses given as mappings (parsed recursively)."""
    if not isinstance(data, Mapping):
        raise ConfigError(where, f"expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}", f"unknown field (allowed: {sorted(fields)})")
    values = {}
    for name, value in data.items():
        inner = (nested or {}).get(name)
        if inner is not None and isinstance(value, Mapping):
            values[name] = config_from_dict(inner, value, f"{where}.{name}")
            continue
        _check_type(value, str(fields[name].type), f"{where}.{name}")
        values[name] = float(value) if str(fields[name].type).startswith("float") \
            and isinstance(value, int) else value
    return cls(**values)


def _check_type(value: Any, annotation: str, field: str) -> None:
    wanted = [_SIMPLE.get(part.strip()) for part in annotation.split("|")]
    if any(w is None for w in wanted):
        return  # a type this checker does not know: the dataclass validates it
    for w in wanted:
        if w is bool and isinstance(value, bool):
            return
        if w is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return
        if w in (int, str, type(None)) and isinstance(value, w) and not isinstance(value, bool):
            return
    raise ConfigError(field, f"expected {annotation}, got {value!r}")
