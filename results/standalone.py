"""Standalone artifacts of a trained model: an ONNX graph (runs with onnxruntime alone) and a
torch.export program (runs with torch alone), neither needing hybrid-nas.

Each artifact is serialised in memory, run on a fixed batch and compared with the PyTorch model;
only one whose logits agree within `TOLERANCE` is written, under a temporary name renamed at the
end, so a file with an artifact's name is always one that passed its check. The check runs the
serialised bytes themselves: nothing is loaded back from the output folder.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import os
import warnings
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from search_spaces.architecture import Architecture

ARTIFACT_FORMATS = ("onnx", "pt2")
INPUT_NAME, OUTPUT_NAME, BATCH_DIM = "images", "logits", "batch"
ONNX_OPSET = 18
PT2_METADATA_FILE = "metadata.json"  # the extra file of a .pt2 that holds the metadata
TOLERANCE = 1e-4  # max abs logit difference an artifact may show against the PyTorch model
TRACE_BATCH, CHECK_BATCH = 2, 3  # checked at another batch size than traced: the batch is dynamic
_PACKAGES = {"onnx": ("onnx", "onnxscript", "onnxruntime")}


class ArtifactError(ValueError):
    """An artifact that was not written: its format and why (naming the part of the model that
    failed to export, when one did)."""

    def __init__(self, fmt: str, reason: str):
        super().__init__(f"{fmt}: {reason}")
        self.fmt = fmt
        self.reason = reason


@dataclass(frozen=True)
class Artifact:
    """A written artifact and its check: max |logits - PyTorch logits| on the fixed batch."""

    fmt: str
    path: Path
    max_abs_diff: float


def require_packages(formats: tuple[str, ...]) -> None:
    """Raise ArtifactError (one line) when a requested format needs packages not installed here."""
    for fmt in formats:
        missing = [name for name in _PACKAGES.get(fmt, ()) if importlib.util.find_spec(name) is None]
        if missing:
            raise ArtifactError(fmt, f"needs {', '.join(_PACKAGES[fmt])} (missing: {', '.join(missing)}); "
                                     "install them with: pip install 'hybrid-nas[export]'")


def artifact_metadata(arch: Architecture, preprocessing: dict[str, Any] | None) -> dict[str, Any]:
    """What a user of an artifact needs beside it: which network, the input's name and shape, how
    images are normalised (pixels in [0, 1], then (x - mean[c]) / std[c]) and the class names."""
    pre = preprocessing or {}
    return {
        "producer": "hybrid-nas",
        "arch_id": arch.arch_id,
        "layout": arch.layout,
        "input_name": INPUT_NAME,
        "input_shape": [BATCH_DIM, arch.in_channels, arch.resolution, arch.resolution],
        "output_name": OUTPUT_NAME,
        "num_classes": arch.num_classes,
        "resolution": arch.resolution,
        "in_channels": arch.in_channels,
        "data": pre.get("data"),
        "mean": pre.get("mean"),
        "std": pre.get("std"),
        "class_names": pre.get("class_names"),
    }


def write_artifacts(model: nn.Module, arch: Architecture, stem: Path, formats: tuple[str, ...],
                    metadata: dict[str, Any]) -> tuple[list[Artifact], list[ArtifactError]]:
    """Write `stem`.onnx / `stem`.pt2 for each requested format from `model` (put in eval mode);
    return what was written and, for each format that was not, the error."""
    model.eval()
    example, batch = fixed_batches(arch)
    with torch.no_grad():
        expected = model(batch)
    try:
        program = export_program(model, example)
    except Exception as exc:  # torch.export's errors come in many types; each becomes one reason
        reason = "torch.export failed: " + locate_failure(model, arch, example, export_program, exc)
        return [], [ArtifactError(fmt, reason) for fmt in formats]
    written, failed = [], []
    for fmt in formats:
        try:
            data = _serialise(fmt, program, model, arch, example, metadata)
            difference = _checked_difference(fmt, data, batch, expected)
        except ArtifactError as exc:
            failed.append(exc)
            continue
        path = stem.parent / f"{stem.name}.{fmt}"
        _write_atomically(path, data)
        written.append(Artifact(fmt, path, difference))
    return written, failed


def fixed_batches(arch: Architecture) -> tuple[torch.Tensor, torch.Tensor]:
    """The example batch exports trace with and the batch artifacts are checked on: seeded normal
    images (inputs are normalised to about zero mean, unit variance), of two different sizes."""
    generator = torch.Generator().manual_seed(0)
    shape = (arch.in_channels, arch.resolution, arch.resolution)
    return (torch.randn(TRACE_BATCH, *shape, generator=generator),
            torch.randn(CHECK_BATCH, *shape, generator=generator))


def export_program(module: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """torch.export of `module` called on one image batch, the batch dimension dynamic."""
    batch = torch.export.Dim(BATCH_DIM, min=1)
    return torch.export.export(module, (example,), dynamic_shapes=({0: batch},))


def onnx_bytes(program: torch.export.ExportedProgram, metadata: dict[str, Any]) -> bytes:
    """The ONNX model of an exported program: input `images`, output `logits`, a dynamic `batch`
    dimension, and `metadata` in its metadata_props (each value as JSON text)."""
    import onnx

    # One attention kernel for every decomposition pass: torch.onnx decomposes SDPA more than
    # once, and when two passes pick kernels whose outputs have different layouts, the reshape
    # after attention, recorded as a view on one layout, fails on the other ("Cannot view a tensor
    # with shape ..." on T blocks). The math kernel is what ONNX computes anyway.
    with _quiet_onnx_exporter(), sdpa_kernel(SDPBackend.MATH):
        onnx_program = torch.onnx.export(program, dynamo=True, input_names=[INPUT_NAME],
                                         output_names=[OUTPUT_NAME], opset_version=ONNX_OPSET,
                                         verbose=False)
    proto = onnx_program.model_proto
    _name_batch_dimension(proto)
    onnx.helper.set_model_props(proto, {key: json.dumps(value) for key, value in metadata.items()})
    return proto.SerializeToString()


def pt2_bytes(program: torch.export.ExportedProgram, metadata: dict[str, Any]) -> bytes:
    """The program as `torch.export.save` writes it, `metadata` as JSON in the extra file
    `metadata.json`."""
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={PT2_METADATA_FILE: json.dumps(metadata)})
    return buffer.getvalue()


def _serialise(fmt: str, program: torch.export.ExportedProgram, model: nn.Module,
               arch: Architecture, example: torch.Tensor, metadata: dict[str, Any]) -> bytes:
    if fmt == "pt2":
        try:
            return pt2_bytes(program, metadata)
        except Exception as exc:
            raise ArtifactError(fmt, f"torch.export.save failed: {_reason(exc)}") from None
    try:
        return onnx_bytes(program, metadata)
    except Exception as exc:  # a conversion error of torch.onnx: find the part that causes it
        def to_onnx(module: nn.Module, images: torch.Tensor) -> bytes:
            return onnx_bytes(export_program(module, images), {})

        raise ArtifactError(fmt, "torch.onnx failed: "
                                 + locate_failure(model, arch, example, to_onnx, exc)) from None


def _checked_difference(fmt: str, data: bytes, batch: torch.Tensor, expected: torch.Tensor) -> float:
    """Max abs difference between the artifact's logits and the PyTorch model's on `batch`;
    ArtifactError unless the artifact runs and the difference is below TOLERANCE."""
    try:
        logits = _run(fmt, data, batch)
    except Exception as exc:
        raise ArtifactError(fmt, f"the exported file does not run: {_reason(exc)}") from None
    if logits.shape != expected.shape:
        raise ArtifactError(fmt, f"the exported file gives logits of shape {tuple(logits.shape)}, "
                                 f"the PyTorch model {tuple(expected.shape)}")
    difference = float((logits - expected).abs().max())
    if not difference < TOLERANCE:  # NaN fails too
        raise ArtifactError(fmt, f"max abs logit difference {difference:.3g} against the PyTorch "
                                 f"model is not below {TOLERANCE:g}")
    return difference


def _run(fmt: str, data: bytes, batch: torch.Tensor) -> torch.Tensor:
    """Logits of the serialised artifact `data` (bytes made in this process) on `batch`."""
    if fmt == "pt2":
        program = torch.export.load(io.BytesIO(data))
        with torch.no_grad():
            return program.module()(batch)
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # a check on a few images: no thread pool to spin up
    session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: batch.numpy()})[0])


def locate_failure(model: nn.Module, arch: Architecture, example: torch.Tensor,
                   export: Callable[[nn.Module, torch.Tensor], Any], error: Exception) -> str:
    """`error`'s reason, prefixed with the first part of `model` (stem, one block of a stage, head)
    that `export` also fails on alone, e.g. `stages[1].blocks[0] (a T block, RelTransformerBlock)`."""
    parts = list(_parts(model, arch))
    inputs: dict[str, tuple] = {}
    hooks = [module.register_forward_pre_hook(_capture(inputs, name)) for name, _, module in parts]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    for name, label, module in parts:
        if name not in inputs:
            continue
        try:
            export(_Part(module, inputs[name][1:]), inputs[name][0])
        except Exception as part_error:
            return f"{name} ({label}): {_reason(part_error)}"
    return f"the model as a whole: {_reason(error)}"


def _parts(model: nn.Module, arch: Architecture) -> Iterator[tuple[str, str, nn.Module]]:
    """(name, label, module) of the stem, every block of every stage, and the head, in order."""
    yield "stem", f"the {arch.stem.kind} stem", model.stem
    for i, (stage, spec) in enumerate(zip(model.stages, arch.stages)):
        for j, block in enumerate(stage.blocks):
            yield f"stages[{i}].blocks[{j}]", f"a {spec.block} block, {type(block).__name__}", block
    yield "head", f"the {arch.head} head", model.head


def _capture(inputs: dict[str, tuple], name: str) -> Callable:
    def hook(module: nn.Module, args: tuple) -> None:
        inputs.setdefault(name, args)
    return hook


class _Part(nn.Module):
    """One part of a model called as in the model (tensor first, then e.g. the grid), giving its
    tensor output alone: what an exporter can take on its own."""

    def __init__(self, module: nn.Module, rest: tuple):
        super().__init__()
        self.module, self.rest = module, rest

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module(x, *self.rest)
        return out[0] if isinstance(out, tuple) else out


def _reason(error: BaseException) -> str:
    """The innermost cause of an exporter's error, as `Type: first line` (exporters wrap the
    informative error in pages of advice)."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = [" ".join(line.split()) for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else "(no message)"
    return f"{type(error).__name__}: {text[:300]}"


@contextmanager
def _quiet_onnx_exporter() -> Iterator[None]:
    """torch.onnx prints progress and warns about every optional package it does not find."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _name_batch_dimension(proto: Any) -> None:
    """Call the dynamic first dimension `batch` everywhere (the exporter names it after a symbol)."""
    symbol = proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    if not symbol:
        return
    for value in (*proto.graph.input, *proto.graph.output, *proto.graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param == symbol:
                dim.dim_param = BATCH_DIM


def _write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
