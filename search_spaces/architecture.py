"""The architecture type: one frozen, hashable description of one network.

Everything downstream (model builder, cost counter, trainer, search, results) takes an
`Architecture`. It has one canonical serialized form (`to_dict`, YAML/JSON of that dict) and one
identity (`arch_id`, a hash of the canonical form).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from search_spaces.fields import FieldError, check_keys, positive_int, typed

# Block types. C: MBConv + squeeze-excitation (CoAtNet). T: Transformer with 2-D relative
# attention (CoAtNet). A: Transformer with plain attention (ViT/DeiT). G: gated positional
# self-attention (ConViT).
BLOCK_TYPES = ("C", "T", "A", "G")
ATTENTION_BLOCKS = ("T", "A", "G")
QKV_BIAS_BLOCKS = ("T", "A")  # blocks whose qkv projection may drop its bias (Stage.qkv_bias)
STEM_KINDS = ("conv", "patch")
HEAD_KINDS = ("pool", "token")
CONV_HEAD_SIZE = 32  # the head_size recorded for convolution stages
DEFAULT_PATCH_SIZE = 16  # the patch_size recorded for conv stems
FORMAT_VERSION = 1
# Fields a serialized architecture must name (the canonical form writes them all): a missing input
# size or class count is an error, never a silent default. `head` may be left out (pool).
REQUIRED_FIELDS = frozenset({"resolution", "in_channels", "num_classes", "stem", "stages"})
# Fields added after format 1 was fixed: written only when they differ from these defaults, so
# every architecture described before keeps its canonical form and its arch_id.
LATE_STAGE_DEFAULTS = {"qkv_bias": True}
LATE_ARCHITECTURE_DEFAULTS = {"distill_token": False}


class ArchitectureError(FieldError):
    """A malformed or inconsistent architecture; `field` names the offending field."""


@dataclass(frozen=True)
class Stem:
    """S0. `conv`: two 3x3 convs, the first with stride 2 (CoAtNet). `patch`: a PxP conv with
    stride P (ViT/DeiT/ConViT)."""

    kind: str = "conv"
    width: int = 64
    patch_size: int = 16  # only read when kind == "patch"

    def __post_init__(self) -> None:
        # A conv stem has no patch size: normalise it so one network has one arch_id.
        if self.kind == "conv":
            object.__setattr__(self, "patch_size", DEFAULT_PATCH_SIZE)

    @property
    def stride(self) -> int:
        return 2 if self.kind == "conv" else self.patch_size


@dataclass(frozen=True)
class Stage:
    """One stage S1..Sn: `depth` blocks of one type. The first block applies `stride` and changes
    the width; the rest keep both.

    head_size: channels per attention head (attention blocks only; heads = width // head_size).
    expansion: MBConv inverted-bottleneck ratio for C, FFN hidden ratio for T/A/G.
    pos_embed: add a learned absolute position embedding to this stage's input tokens
      (attention stages only; DeiT and ConViT put it on their first stage).
    qkv_bias: biases on the query/key/value projection of `T` and `A` blocks (DeiT and CoAtNet
      have them, ConViT's plain-attention blocks do not; ConViT's `G` never has them). Written in
      the canonical form only when false, so adding it changed no existing arch_id.
    """

    block: str
    depth: int
    width: int
    stride: int = 2
    head_size: int = 32
    expansion: int = 4
    pos_embed: bool = False
    qkv_bias: bool = True

    def __post_init__(self) -> None:
        # Fields that mean nothing to a block type are normalised, so that one network has one
        # canonical form and one arch_id: head_size for convolutions, qkv_bias outside T and A.
        if self.block not in ATTENTION_BLOCKS:
            object.__setattr__(self, "head_size", CONV_HEAD_SIZE)
        if self.block not in QKV_BIAS_BLOCKS:
            object.__setattr__(self, "qkv_bias", True)

    def to_dict(self) -> dict[str, Any]:
        """The canonical form; fields added after format 1 appear only when not at their default."""
        data = dataclasses.asdict(self)
        for name, default in LATE_STAGE_DEFAULTS.items():
            if data[name] == default:
                del data[name]
        return data

    @property
    def heads(self) -> int:
        return self.width // self.head_size


@dataclass(frozen=True)
class Architecture:
    """A network: stem, stages, head, and the input it is built for.

    head: `pool` = global average pooling + linear (CoAtNet); `token` = a class token that joins
    at the first `A` stage, read out by LayerNorm + linear (DeiT, ConViT).
    distill_token: a `token` head with DeiT's distillation token beside the class token, read
      out by a second linear head (trained against a teacher; at inference the two heads are
      averaged). Written in the canonical form only when true, so adding it changed no arch_id.
    """

    stem: Stem
    stages: tuple[Stage, ...]
    resolution: int = 224
    in_channels: int = 3
    num_classes: int = 1000
    head: str = "pool"
    distill_token: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        validate(self)

    # ---- identity -------------------------------------------------------------------------
    @property
    def layout(self) -> str:
        """Block types of S1..Sn joined by '-', e.g. `C-C-T-T`."""
        return "-".join(s.block for s in self.stages)

    @property
    def arch_id(self) -> str:
        """Stable identity: 16 hex digits of the SHA-256 of the canonical JSON form."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    @property
    def total_stride(self) -> int:
        stride = self.stem.stride
        for stage in self.stages:
            stride *= stage.stride
        return stride

    def stage_resolutions(self) -> list[int]:
        """Side length of each stage's output feature map."""
        side, sides = self.resolution // self.stem.stride, []
        for stage in self.stages:
            side //= stage.stride
            sides.append(side)
        return sides

    def replace(self, **changes: Any) -> "Architecture":
        """A copy with top-level fields changed (validated), e.g. `arch.replace(resolution=64)`."""
        return dataclasses.replace(self, **changes)

    # ---- canonical serialization -----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The canonical form: every field written, in a fixed order (those added after format 1
        only when not at their default)."""
        data = {
            "format": FORMAT_VERSION,
            "resolution": self.resolution,
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "head": self.head,
            "stem": dataclasses.asdict(self.stem),
            "stages": [s.to_dict() for s in self.stages],
        }
        for name, default in LATE_ARCHITECTURE_DEFAULTS.items():
            if getattr(self, name) != default:
                data[name] = getattr(self, name)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Architecture":
        """Parse the canonical form; raises ArchitectureError naming the field on bad input
        (`resolution: missing required field`)."""
        if not isinstance(data, Mapping):
            raise ArchitectureError("architecture", f"expected a mapping, got {type(data).__name__}")
        fmt = data.get("format", FORMAT_VERSION)
        if fmt != FORMAT_VERSION:
            raise ArchitectureError("format", f"unsupported format version {fmt!r}")
        top = check_keys(data, "", _field_names(cls) | {"format"}, REQUIRED_FIELDS, ArchitectureError)
        stem = Stem(**_pick(top.pop("stem"), "stem", Stem))
        stages_data = top.pop("stages")
        if not isinstance(stages_data, (list, tuple)):
            raise ArchitectureError("stages", "expected a list of stages")
        stages = []
        for i, s in enumerate(stages_data):
            stages.append(Stage(**_pick(s, f"stages[{i}]", Stage, {"block", "depth", "width"})))
        top.pop("format", None)
        top = _pick(top, "", cls)
        return cls(stem=stem, stages=tuple(stages), **top)

    @classmethod
    def from_yaml(cls, text: str) -> "Architecture":
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ArchitectureError("architecture", f"not valid YAML: {exc}") from None
        if isinstance(data, Mapping) and "architecture" in data:
            data = data["architecture"]  # an exported config: metrics beside the architecture
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> "Architecture":
        """Read a YAML or JSON file (JSON is YAML): a bare architecture or an exported config."""
        return cls.from_yaml(Path(path).read_text())

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() if str(path).endswith(".json") else self.to_yaml())


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _pick(data: Mapping[str, Any], where: str, cls: type, required: set[str] = frozenset()) -> dict:
    """The fields of `cls` from `data`, each checked against its annotation."""
    values = check_keys(data, where, _field_names(cls), required, ArchitectureError)
    types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    return {name: typed(value, types[name], f"{where}.{name}" if where else name, ArchitectureError)
            for name, value in values.items()}


def validate(arch: Architecture) -> None:
    """Raise ArchitectureError (naming the field) unless `arch` describes a buildable network."""
    _positive(arch.resolution, "resolution")
    _positive(arch.in_channels, "in_channels")
    _positive(arch.num_classes, "num_classes")
    if arch.head not in HEAD_KINDS:
        raise ArchitectureError("head", f"unknown head {arch.head!r} (known: {list(HEAD_KINDS)})")
    if not isinstance(arch.distill_token, bool):
        raise ArchitectureError("distill_token", f"expected true/false, got {arch.distill_token!r}")
    if arch.distill_token and arch.head != "token":
        raise ArchitectureError("distill_token", "a distillation token sits beside the class token: "
                                                 "it needs head 'token' (a pool head distils through "
                                                 "its single output)")
    stem = arch.stem
    if stem.kind not in STEM_KINDS:
        raise ArchitectureError("stem.kind", f"unknown stem {stem.kind!r} (known: {list(STEM_KINDS)})")
    _positive(stem.width, "stem.width")
    _positive(stem.patch_size, "stem.patch_size")
    if not arch.stages:
        raise ArchitectureError("stages", "at least one stage is required")
    for i, stage in enumerate(arch.stages):
        where = f"stages[{i}]"
        if stage.block not in BLOCK_TYPES:
            raise ArchitectureError(f"{where}.block",
                                    f"unknown block type {stage.block!r} (known: {list(BLOCK_TYPES)})")
        _positive(stage.depth, f"{where}.depth")
        _positive(stage.width, f"{where}.width")
        _positive(stage.expansion, f"{where}.expansion")
        if stage.stride not in (1, 2):
            raise ArchitectureError(f"{where}.stride", f"must be 1 or 2, got {stage.stride}")
        if stage.block in ATTENTION_BLOCKS:
            _positive(stage.head_size, f"{where}.head_size")
            if stage.width % stage.head_size:
                raise ArchitectureError(
                    f"{where}.width",
                    f"width {stage.width} is not divisible by head_size {stage.head_size}")
        elif stage.pos_embed:
            raise ArchitectureError(f"{where}.pos_embed", "only attention stages take a position embedding")
        if not isinstance(stage.qkv_bias, bool):
            raise ArchitectureError(f"{where}.qkv_bias", f"expected true/false, got {stage.qkv_bias!r}")
    if arch.resolution % arch.total_stride:
        raise ArchitectureError(
            "resolution",
            f"{arch.resolution} is not divisible by the total stride {arch.total_stride} "
            f"(stem {stem.stride} x stages {[s.stride for s in arch.stages]})")
    if arch.head == "token":
        first = next((i for i, s in enumerate(arch.stages) if s.block == "A"), None)
        if first is None:
            raise ArchitectureError("head", "a 'token' head needs an 'A' stage for the class token to join")
        for i in range(first, len(arch.stages)):
            stage = arch.stages[i]
            if stage.block != "A" or stage.stride != 1:
                raise ArchitectureError(
                    f"stages[{i}]",
                    "after the class token joins, stages must be 'A' with stride 1")


def _positive(value: int, field: str) -> None:
    positive_int(value, field, ArchitectureError)
