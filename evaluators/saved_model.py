"""A trained model as a run leaves it: a config (YAML: the architecture, the path of its trained
weights relative to the file, the input normalisation they expect) and a state_dict of tensors.

Read here, one floor below `results`, so that a trainer can rebuild a distillation teacher from any
earlier run's exported config; `results.export` writes these configs and rebuilds them through the
same functions. Configs are read with `yaml.safe_load`, weights with
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from search_spaces.architecture import Architecture, ArchitectureError
from search_spaces.model import build_model


class SavedModelError(ValueError):
    """A bad saved-model config or weights file; `path` names the file when there is one."""

    def __init__(self, message: str, path: Path | str | None = None):
        super().__init__(f"{path}: {message}" if path is not None else message)
        self.path = Path(path) if path is not None else None


@dataclass(frozen=True)
class SavedModel:
    """A config as read back: the architecture, the arch_id it recorded (None for a bare
    architecture), its weights file (resolved against the config's folder; None if none) and the
    input the weights expect (`{data, mean, std, class_names, ...}`; None if not recorded)."""

    path: Path
    architecture: Architecture
    recorded_arch_id: str | None
    weights: Path | None
    input: dict[str, Any] | None


def read_config_mapping(path: str | Path) -> dict:
    """The YAML mapping of a config file; SavedModelError (naming the file) when it is missing,
    not YAML or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise SavedModelError("no such config file", path)
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SavedModelError(f"not valid YAML: {exc}", path) from None
    if not isinstance(data, dict):
        raise SavedModelError("expected a mapping (an exported config or an architecture)", path)
    return data


def saved_model_from_mapping(path: str | Path, data: dict) -> SavedModel:
    """A `SavedModel` from a config's mapping: an exported config (`architecture` beside
    `weights`, `input`, ...) or a bare architecture."""
    path = Path(path)
    exported = "architecture" in data
    try:
        arch = Architecture.from_dict(data["architecture"] if exported else data)
    except ArchitectureError as exc:
        raise SavedModelError(str(exc), path) from None
    weights = data.get("weights") if exported else None
    if weights is not None:
        if not isinstance(weights, str):
            raise SavedModelError(f"weights: expected a file path, got {weights!r}", path)
        weights = Path(weights)
        weights = weights if weights.is_absolute() else (path.parent / weights).resolve()
    preprocessing = data.get("input") if exported else None
    if preprocessing is not None and not isinstance(preprocessing, dict):
        raise SavedModelError("input: expected a mapping (data, mean, std, class_names), got "
                              f"{preprocessing!r}", path)
    return SavedModel(path, arch, data.get("arch_id") if exported else None, weights, preprocessing)


def read_saved_model(path: str | Path) -> SavedModel:
    """Read a config (exported, or a bare architecture); errors name the file and the field."""
    return saved_model_from_mapping(path, read_config_mapping(path))


def rebuild(saved: SavedModel, weights: str | Path | None = None, load_recorded: bool = True,
            device: str | torch.device | None = None) -> tuple[nn.Module, Path | None]:
    """The model `saved` describes, with `weights` loaded if given, else its recorded weights
    (unless `load_recorded` is False, or the architecture was edited since it was recorded: then
    with a warning). Returns the model and the weights file loaded (None: freshly initialised)."""
    arch = saved.architecture
    recorded = saved.weights if load_recorded else None
    if saved.recorded_arch_id and saved.recorded_arch_id != arch.arch_id:
        warnings.warn(f"{saved.path}: the architecture was edited (arch_id {arch.arch_id} != "
                      f"recorded {saved.recorded_arch_id}); not loading the recorded weights",
                      stacklevel=2)
        recorded = None
    model = build_model(arch, device=device)
    source = Path(weights) if weights is not None else recorded
    if source is not None:
        load_weights(model, source, device)
    return model, source


def load_weights(model: nn.Module, path: Path, device: str | torch.device | None = None) -> None:
    """Load a state_dict saved by a run into `model` (tensors only: weights_only=True; every
    tensor must fit)."""
    path = Path(path)
    if not path.is_file():
        raise SavedModelError("weights file not found (pass --no-weights to build without it)", path)
    try:
        with warnings.catch_warnings():  # torch's notes on the pickle protocol: our error says it
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=device or "cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, non-tensor payloads
        raise SavedModelError(_unreadable_weights(exc), path) from None
    if not isinstance(state, dict):
        raise SavedModelError(f"expected a state_dict, got {type(state).__name__}", path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = str(exc).splitlines()
        detail = "; ".join(line.strip() for line in lines[1:3])[:400]
        more = f" (and {len(lines) - 3} more lines)" if len(lines) > 3 else ""
        raise SavedModelError(f"weights do not fit this architecture: {detail}{more}", path) from None


def _unreadable_weights(error: Exception) -> str:
    """Our words for a weights file torch.load(weights_only=True) refuses or cannot read (torch's
    own message advises turning the check off, which would run code from the file)."""
    message = str(error)
    if isinstance(error, pickle.UnpicklingError) or "weights_only" in message:
        found = re.search(r"GLOBAL ([\w.]+)", message)
        what = f" ({found.group(1)})" if found else ""
        return (f"refused to load the weights: the file holds objects other than tensors{what}, "
                "which loading would have to execute as code from the file; weights must be a "
                "state_dict of tensors, as the search saves them")
    first = next((line.strip() for line in message.splitlines() if line.strip()), "")
    return f"cannot read weights (not a file written by torch.save, or damaged): " \
           f"{type(error).__name__}: {first[:200]}"
