"""The configuration reference, generated from the config dataclasses at build time.

A page holds a marker such as `<!-- config-reference: nas.config:SearchConfig as search -->`;
this MkDocs hook replaces it with one table per config section (headed `search.trial.train`, the
prefix errors name fields with): every field's dotted path, its type as the
code writes it, its default, and what it does, taken from the attribute docstring under the field
(a string literal right after `name: type = default`, the convention griffe and mkdocstrings read
too). A field without one is an error that names it, so `mkdocs build` fails rather than publish
a reference that has drifted from the code. `tests/test_docs.py` calls `sections` directly.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
import textwrap
import typing
from dataclasses import dataclass
from typing import Any

import yaml

MARKER = re.compile(r"<!--\s*config-reference:\s*([\w.]+):(\w+)\s+as\s+(\w+)\s*-->")


class UndocumentedField(ValueError):
    """A config field with no attribute docstring under it."""


@dataclass(frozen=True)
class Row:
    path: str       # dotted path as a config file writes it: `trial.train.epochs`
    type: str       # the annotation as written in the code
    default: str    # YAML form, "required", or "section" for a nested config
    doc: str


@dataclass(frozen=True)
class Section:
    path: str       # "" for the top level
    cls: type
    rows: tuple[Row, ...]


def field_docs(cls: type) -> dict[str, str]:
    """{field name: its attribute docstring} for the fields `cls` itself declares."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, after in zip(body, body[1:] + [None]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _config_class(hint: Any) -> tuple[type | None, bool]:
    """The dataclass a field holds (also inside `X | None` and `tuple[X, ...]`), and whether it is
    a list of them."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return hint, False
    if origin in (tuple, list) and args and dataclasses.is_dataclass(args[0]):
        return args[0], True
    if args and origin is not None and type(None) in args:  # Optional / X | None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _config_class(inner[0])
    return None, False


def _yaml(value: Any) -> str:
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, tuple):
        value = [dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for v in value]
    if isinstance(value, typing.Mapping):
        value = dict(value)
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000)
    return text.strip().removesuffix("\n...")


def _default(f: dataclasses.Field, instance: Any) -> tuple[str, Any]:
    """(what the reference shows, the value) for field `f`, from `instance` when there is one."""
    if instance is not None:
        value = getattr(instance, f.name)
    elif f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required", dataclasses.MISSING
    return _yaml(value), value


def sections(cls: type, path: str = "", instance: Any = None) -> list[Section]:
    """Every section of config `cls`, depth first in field order: its own fields, then each
    nested config's (for a list of them, under `path[i]`)."""
    hints = typing.get_type_hints(cls)
    docs = {}
    for base in reversed(cls.__mro__):
        if dataclasses.is_dataclass(base):
            docs.update(field_docs(base))
    raw = {}
    for base in reversed(cls.__mro__):
        raw.update(getattr(base, "__annotations__", {}))
    rows, nested = [], []
    for f in dataclasses.fields(cls):
        dotted = f"{path}.{f.name}" if path else f.name
        if f.name not in docs:
            raise UndocumentedField(f"{cls.__module__}.{cls.__qualname__}.{f.name} ({dotted}) has "
                                    "no attribute docstring: add one under the field")
        shown, value = _default(f, instance)
        inner, many = _config_class(hints[f.name])
        if inner is not None:
            if many:
                nested.append((f"{dotted}[i]", inner, None))
            else:
                child = value if dataclasses.is_dataclass(value) else None
                nested.append((dotted, inner, child))
                if child is not None:
                    shown = "section"
        annotation = raw[f.name] if isinstance(raw[f.name], str) else getattr(
            raw[f.name], "__name__", str(raw[f.name]))
        rows.append(Row(dotted, annotation, shown, docs[f.name]))
    out = [Section(path, cls, tuple(rows))]
    for dotted, inner, child in nested:
        out.extend(sections(inner, dotted, child))
    return out


def _cell(text: str) -> str:
    """`text` as one table cell: pipes escaped outside code spans (inside them the table
    extension leaves them alone, and an escape would show)."""
    parts = text.replace("\n", " ").split("`")
    return "`".join(part if i % 2 else part.replace("|", "\\|") for i, part in enumerate(parts))


def render(cls: type, top: str) -> str:
    """Markdown: one heading and table per section of `cls`; `top` names the top level, as the
    config's errors do (`search`, `study`)."""
    parts = []
    for section in sections(cls):
        title = f"{top}.{section.path}" if section.path else top
        summary = (inspect.getdoc(section.cls) or "").split("\n\n")[0].replace("\n", " ")
        parts.append(f"### `{title}`\n\n{_cell(summary)}\n\n"
                     f"*`{section.cls.__module__}.{section.cls.__qualname__}`*\n\n"
                     "| field | type | default | what it does |\n|---|---|---|---|")
        for row in section.rows:
            default = row.default if row.default in ("required", "section") else f"`{row.default}`"
            cells = (f"`{row.path}`", f"`{row.type}`", default, row.doc)
            parts.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        parts.append("")
    return "\n".join(parts)


def resolve(spec: str) -> type:
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def expand(markdown: str) -> str:
    """`markdown` with every config-reference marker replaced by its tables."""
    def one(match: re.Match) -> str:
        return render(resolve(f"{match.group(1)}:{match.group(2)}"), match.group(3))
    return MARKER.sub(one, markdown)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:  # the MkDocs hook
    return expand(markdown)
