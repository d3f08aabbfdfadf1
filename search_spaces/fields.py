"""Typed fields from plain mappings: the one parser behind every YAML/JSON file we read
(architectures, search spaces, trial and search configs), with errors that name the field."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

T = TypeVar("T")

_SIMPLE = {"int": int, "float": float, "str": str, "bool": bool, "None": type(None)}


class FieldError(ValueError):
    """Bad input; `field` is the dotted path of the offending field (`stages[2].width`)."""

    prefix = ""  # what kind of file, e.g. "search space: "

    def __init__(self, field: str, message: str):
        super().__init__(f"{self.prefix}{field}: {message}")
        self.field = field
        self.message = message


def check_keys(data: Any, where: str, allowed: set[str], required: set[str] = frozenset(),
               error: type[FieldError] = FieldError) -> dict[str, Any]:
    """A dict copy of `data` after checking it is a mapping with only `allowed` keys and every
    `required` one."""
    if not isinstance(data, Mapping):
        raise error(where, f"expected a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - allowed, key=str)
    if unknown:
        raise error(_join(where, str(unknown[0])), f"unknown field (allowed: {sorted(allowed)})")
    missing = sorted(set(required) - set(data))
    if missing:
        raise error(_join(where, missing[0]), "missing required field")
    return dict(data)


def from_mapping(cls: type[T], data: Any, where: str, nested: Mapping[str, type] | None = None,
                 required: set[str] = frozenset(), error: type[FieldError] = FieldError) -> T:
    """`cls(**data)` for a dataclass, after checking every key is a field and every value has the
    field's type (int/float/str/bool/None annotations; a whole float such as 5.0e6 passes as int).
    `nested` maps field names to dataclasses given as mappings, parsed recursively."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = check_keys(data, where, set(fields), required, error)
    for name, value in values.items():
        inner = (nested or {}).get(name)
        if inner is not None:
            values[name] = inner() if value is None else \
                from_mapping(inner, value, _join(where, name), error=error)
        else:
            values[name] = typed(value, str(fields[name].type), _join(where, name), error)
    return cls(**values)


def typed(value: Any, annotation: str, field: str, error: type[FieldError] = FieldError) -> Any:
    """`value` checked against a simple annotation such as `int | None` (bool is not an int)."""
    wanted = [_SIMPLE.get(part.strip()) for part in annotation.split("|")]
    if any(w is None for w in wanted):
        return value  # a type this checker does not know: the dataclass validates it
    for w in wanted:
        if w is bool and isinstance(value, bool):
            return value
        if isinstance(value, bool):
            continue
        if w is float and isinstance(value, (int, float)):
            return float(value)
        if w is int and isinstance(value, float) and value.is_integer():
            return int(value)  # YAML reads 5.0e6 as a float
        if w in (int, str, type(None)) and isinstance(value, w):
            return value
    raise error(field, f"expected {annotation}, got {value!r}")


def positive_int(value: Any, field: str, error: type[FieldError] = FieldError) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise error(field, f"must be a positive integer, got {value!r}")
    return value


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name
