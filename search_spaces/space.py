"""Search spaces: per-stage choices from which architectures are sampled.

A `SearchSpace` is loaded from YAML (see `spaces/*.yaml`), validated on load, and offers three
things: sample an architecture define-by-run from an Optuna trial (`sample_architecture`), say
whether an architecture belongs to it (`contains` / `explain`), and count its size (`size`).

The block types of all stages are sampled together as one `layout` choice (e.g. "C-C-T-T"), so the
"convolution before attention" rule shapes the choice list itself and every sampled layout is legal.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from search_spaces.architecture import (
    ATTENTION_BLOCKS,
    BLOCK_TYPES,
    STEM_KINDS,
    Architecture,
    ArchitectureError,
    Stage,
    Stem,
)
from search_spaces.fields import FieldError, check_keys, positive_int

SPACES_DIR = Path(__file__).parent / "spaces"
DEFAULT_SPACE = "digits"


class SearchSpaceError(FieldError):
    """A malformed or inconsistent search-space spec; `field` names the offending field."""

    prefix = "search space: "


@dataclass(frozen=True)
class StemChoices:
    kind: tuple[str, ...] = ("conv",)
    width: tuple[int, ...] = (64,)
    patch_size: tuple[int, ...] = (16,)  # read for patch stems only


@dataclass(frozen=True)
class StageChoices:
    """Choices for one stage. `depth` is an inclusive (min, max) range; the rest are lists."""

    block: tuple[str, ...] = ("C",)
    depth: tuple[int, int] = (1, 2)
    width: tuple[int, ...] = (64,)
    head_size: tuple[int, ...] = (32,)
    expansion: tuple[int, ...] = (4,)
    stride: int = 2

    def has_attention(self) -> bool:
        return any(b in ATTENTION_BLOCKS for b in self.block)


@dataclass(frozen=True)
class SearchSpace:
    """Per-stage choices plus the fixed input/output of every architecture in the space."""

    stem: StemChoices
    stages: tuple[StageChoices, ...]
    resolution: int = 32
    in_channels: int = 3
    num_classes: int = 10
    conv_before_attention: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        _validate(self)

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SearchSpace":
        if not isinstance(data, Mapping):
            raise SearchSpaceError("space", f"expected a mapping, got {type(data).__name__}")
        top = _check_keys(data, "space", {"resolution", "in_channels", "num_classes", "stem",
                                          "stages", "rules"}, required={"stages"})
        rules = _check_keys(top.pop("rules", {}) or {}, "rules", {"conv_before_attention"})
        stem = _parse_choices(top.pop("stem", {}) or {}, StemChoices, "stem")
        stages_data = top.pop("stages")
        if not isinstance(stages_data, list) or not stages_data:
            raise SearchSpaceError("stages", "expected a non-empty list of stage choices")
        stages = tuple(_parse_choices(s, StageChoices, f"stages[{i}] (S{i + 1})")
                       for i, s in enumerate(stages_data))
        for key in top:
            _require_int(top[key], key)
        conv_first = rules.get("conv_before_attention", True)
        if not isinstance(conv_first, bool):
            raise SearchSpaceError("rules.conv_before_attention",
                                   f"expected true/false, got {conv_first!r}")
        return cls(stem=stem, stages=stages, conv_before_attention=conv_first, **top)

    @classmethod
    def load(cls, path: str | Path) -> "SearchSpace":
        """Load a YAML spec from a file path, or a built-in space by name (e.g. "digits")."""
        path = Path(path)
        if not path.suffix and (SPACES_DIR / f"{path}.yaml").exists():
            path = SPACES_DIR / f"{path}.yaml"
        if not path.exists():
            builtin = sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))
            raise FileNotFoundError(f"search space {str(path)!r}: no such file or built-in space "
                                    f"(built-in: {builtin})")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise SearchSpaceError("space", f"{path} is not valid YAML: {exc}") from None
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """The canonical form (what `from_dict` reads)."""
        def plain(choices: Any) -> dict[str, Any]:
            return {k: list(v) if isinstance(v, tuple) else v
                    for k, v in dataclasses.asdict(choices).items()}
        return {
            "resolution": self.resolution,
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "rules": {"conv_before_attention": self.conv_before_attention},
            "stem": plain(self.stem),
            "stages": [plain(s) for s in self.stages],
        }

    def replace(self, **changes: Any) -> "SearchSpace":
        """A copy with fields changed and validated, e.g. to match a data set's input."""
        return dataclasses.replace(self, **changes)

    # ---- the three verbs -------------------------------------------------------------------
    def layouts(self) -> tuple[str, ...]:
        """Every legal layout string, in a fixed order."""
        combos = itertools.product(*(s.block for s in self.stages))
        return tuple("-".join(c) for c in combos if self._layout_allowed(c))

    def _layout_allowed(self, blocks: tuple[str, ...]) -> bool:
        if not self.conv_before_attention:
            return True
        seen_attention = False
        for block in blocks:
            if block in ATTENTION_BLOCKS:
                seen_attention = True
            elif seen_attention:
                return False
        return True

    def explain(self, arch: Architecture) -> str | None:
        """Why `arch` is not in this space, or None when it is."""
        for name in ("resolution", "in_channels", "num_classes"):
            if getattr(arch, name) != getattr(self, name):
                return f"{name} is {getattr(arch, name)}, the space has {getattr(self, name)}"
        if arch.head != "pool":
            return f"head is {arch.head!r}; searched architectures use the 'pool' head"
        stem = arch.stem
        if stem.kind not in self.stem.kind:
            return f"stem.kind {stem.kind!r} not in {list(self.stem.kind)}"
        if stem.width not in self.stem.width:
            return f"stem.width {stem.width} not in {list(self.stem.width)}"
        if stem.kind == "patch" and stem.patch_size not in self.stem.patch_size:
            return f"stem.patch_size {stem.patch_size} not in {list(self.stem.patch_size)}"
        if len(arch.stages) != len(self.stages):
            return f"{len(arch.stages)} stages, the space has {len(self.stages)}"
        if arch.layout not in self.layouts():
            return f"layout {arch.layout} is not one of the space's layouts"
        for i, (stage, choices) in enumerate(zip(arch.stages, self.stages)):
            where = f"stages[{i}] (S{i + 1})"
            lo, hi = choices.depth
            if not lo <= stage.depth <= hi:
                return f"{where}.depth {stage.depth} not in [{lo}, {hi}]"
            for name in ("width", "expansion") + (("head_size",) if stage.block in ATTENTION_BLOCKS else ()):
                if getattr(stage, name) not in getattr(choices, name):
                    return f"{where}.{name} {getattr(stage, name)} not in {list(getattr(choices, name))}"
            if stage.stride != choices.stride:
                return f"{where}.stride {stage.stride}, the space has {choices.stride}"
            if stage.pos_embed != _pos_embed(stage.block):
                return f"{where}.pos_embed must be {_pos_embed(stage.block)} for block {stage.block}"
        return None

    def contains(self, arch: Architecture) -> bool:
        return self.explain(arch) is None

    def size(self) -> int:
        """How many distinct architectures the space holds."""
        stems = sum(len(self.stem.width) * (len(self.stem.patch_size) if kind == "patch" else 1)
                    for kind in self.stem.kind)
        total = 0
        for layout in self.layouts():
            count = stems
            for block, choices in zip(layout.split("-"), self.stages):
                lo, hi = choices.depth
                heads = len(choices.head_size) if block in ATTENTION_BLOCKS else 1
                count *= (hi - lo + 1) * len(choices.width) * len(choices.expansion) * heads
            total += count
        return total

    def smallest(self) -> list[Architecture]:
        """The cheapest candidates of each layout, stem kind and patch size (least depth, width,
        expansion; largest head size). Any budget some architecture meets is met by one of these
        (a larger patch means fewer FLOPs but more stem parameters, so every patch size is kept)."""
        out = []
        stems = [("conv", 16)] * ("conv" in self.stem.kind) + \
            [("patch", p) for p in self.stem.patch_size] * ("patch" in self.stem.kind)
        for layout, (kind, patch) in itertools.product(self.layouts(), stems):
            stem = Stem(kind, min(self.stem.width), patch)
            stages = [Stage(block, c.depth[0], min(c.width), c.stride,
                            max(c.head_size) if block in ATTENTION_BLOCKS else c.head_size[0],
                            min(c.expansion), _pos_embed(block))
                      for block, c in zip(layout.split("-"), self.stages)]
            out.append(self._architecture(stem, stages))
        return out

    def _architecture(self, stem: Stem, stages: list[Stage]) -> Architecture:
        return Architecture(stem=stem, stages=tuple(stages), resolution=self.resolution,
                            in_channels=self.in_channels, num_classes=self.num_classes)


def sample_architecture(trial: Any, space: SearchSpace) -> Architecture:
    """Sample one architecture define-by-run from an Optuna trial.

    Parameter names: `layout`, `stem_kind`, `stem_width`, `stem_patch_size`, and `s{i}_depth`,
    `s{i}_width`, `s{i}_head_size` (attention stages), `s{i}_expansion` for stage S{i}.
    Choice lists are fixed per name, so TPE and NSGA-II see a static space.
    """
    layout = trial.suggest_categorical("layout", list(space.layouts()))
    kind = trial.suggest_categorical("stem_kind", list(space.stem.kind))
    patch = space.stem.patch_size[0]
    if kind == "patch":
        patch = trial.suggest_categorical("stem_patch_size", list(space.stem.patch_size))
    stem = Stem(kind, trial.suggest_categorical("stem_width", list(space.stem.width)), patch)
    stages = []
    for i, (block, c) in enumerate(zip(layout.split("-"), space.stages), start=1):
        head_size = c.head_size[0]
        if block in ATTENTION_BLOCKS:
            head_size = trial.suggest_categorical(f"s{i}_head_size", list(c.head_size))
        stages.append(Stage(
            block=block,
            depth=trial.suggest_int(f"s{i}_depth", c.depth[0], c.depth[1]),
            width=trial.suggest_categorical(f"s{i}_width", list(c.width)),
            stride=c.stride,
            head_size=head_size,
            expansion=trial.suggest_categorical(f"s{i}_expansion", list(c.expansion)),
            pos_embed=_pos_embed(block),
        ))
    return space._architecture(stem, stages)


def default_space() -> SearchSpace:
    """The built-in space: CoAtNet-style S1..S4 layouts sized for small images (digits)."""
    return SearchSpace.load(DEFAULT_SPACE)


def _pos_embed(block: str) -> bool:
    # Plain and gated attention have no notion of position without an absolute embedding
    # (ViT/DeiT, ConViT); relative attention (T) carries its own.
    return block in ("A", "G")


# ---- parsing and validation --------------------------------------------------------------------

def _check_keys(data: Any, where: str, allowed: set[str], required: set[str] = frozenset()) -> dict:
    return check_keys(data, where, allowed, required, SearchSpaceError)


def _parse_choices(data: Any, cls: type, where: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = _check_keys(data, where, set(fields))
    parsed = {}
    for name, value in values.items():
        field_where = f"{where}.{name}"
        if name == "stride":
            parsed[name] = _require_int(value, field_where)
            continue
        items = value if isinstance(value, list) else [value]
        if not items:
            raise SearchSpaceError(field_where, "needs at least one choice")
        if name in ("block", "kind"):
            for item in items:
                if not isinstance(item, str):
                    raise SearchSpaceError(field_where, f"expected names, got {item!r}")
        else:
            for item in items:
                _require_int(item, field_where)
        if name != "depth" and len(set(items)) != len(items):
            raise SearchSpaceError(field_where, f"duplicate choices in {items!r}")
        if name == "depth":
            if len(items) == 1:
                items = items * 2
            if len(items) != 2 or items[0] > items[1]:
                raise SearchSpaceError(field_where, f"expected a range [min, max], got {value!r}")
        parsed[name] = tuple(items)
    return cls(**parsed)


def _require_int(value: Any, where: str) -> int:
    return positive_int(value, where, SearchSpaceError)


def _validate(space: SearchSpace) -> None:
    for kind in space.stem.kind:
        if kind not in STEM_KINDS:
            raise SearchSpaceError("stem.kind", f"unknown stem {kind!r} (known: {list(STEM_KINDS)})")
    for i, c in enumerate(space.stages):
        where = f"stages[{i}] (S{i + 1})"
        for block in c.block:
            if block not in BLOCK_TYPES:
                raise SearchSpaceError(f"{where}.block",
                                       f"unknown block type {block!r} (known: {list(BLOCK_TYPES)})")
        if c.stride not in (1, 2):
            raise SearchSpaceError(f"{where}.stride", f"must be 1 or 2, got {c.stride}")
        if c.has_attention():
            for width in c.width:
                for head in c.head_size:
                    if width % head:
                        raise SearchSpaceError(
                            f"{where}.width",
                            f"width {width} is not divisible by head_size {head}")
    if not space.layouts():
        raise SearchSpaceError("stages", "no layout satisfies the rules (convolution before attention)")
    try:
        space.smallest()
    except ArchitectureError as exc:  # e.g. a resolution the strides cannot divide
        raise SearchSpaceError(exc.field, exc.message) from None


__all__ = ["SearchSpace", "SearchSpaceError", "StageChoices", "StemChoices", "default_space",
           "sample_architecture"]
