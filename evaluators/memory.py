"""What a trial's memory costs, priced before it trains: the peak of one training step and of one
evaluation chunk, with both regimes' models held as `evaluators.trial` holds them.

A trial keeps two models (small-data and full regime) with their gradients and AdamW moments for
its whole life, and runs one of them at a time: a training step at `batch_size`, or an
evaluation chunk in inference mode. Its peak is therefore

    runtime + 2 x state + max(training step, evaluation chunk)

- state: one model's parameters, buffers, gradients and AdamW's two moments;
- training step: what one forward/backward/optimizer step holds above the state (the input
  batch, activations saved for backward, gradients of activations, AdamW's temporaries);
- evaluation chunk: what one inference-mode forward of `eval_chunk` images holds above it;
- runtime: the trial process itself (Python, torch, a Ray worker), a constant per device kind.

The three middle terms are traced, not guessed: the network runs once under torch's
FakeTensorMode (tensors with shapes and no data: no arithmetic, no real memory) inside a dispatch
mode that adds each new tensor storage's bytes when an op creates it and takes them off when it
is freed; the trace's peak is what the real allocator would hold, since torch's CPU allocator
keeps no cache. It costs about a second per candidate and is cached per (architecture, batch
sizes, device kind), like the FLOP count. Checked against the peak resident memory of a real
step in a fresh process (tests/test_memory.py, benchmarks/bench_memory.py).

Not priced: the data set (memory-mapped uint8 pages of the data cache: page cache that every
trial shares and the kernel can drop), a distillation teacher, and allocator slack beyond what
the test's tolerance covers. For CUDA trials the trace runs on the CPU under bfloat16 autocast as
the trainer does on the GPU, and the runtime adds the CUDA context; kernel workspaces (cuDNN,
cuBLAS) are not seen by the trace.

The evaluation chunk follows memory (`eval_chunk_for`): at most `eval_batch_size` images, and no
more than keep an evaluation chunk's memory under the training step's (or `EVAL_FLOOR_BYTES`,
whichever is larger), so that evaluating never raises a trial's peak at large resolutions.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

from search_spaces.architecture import Architecture
from search_spaces.fields import FieldError
from search_spaces.model import build_model

MiB = 2 ** 20
GiB = 2 ** 30
# The trial process before it builds a model: Python, torch, numpy, Ray's core worker, the data
# set's labels and indices. Measured (2026-12-03, this repo's venv): 372 MiB resident for a
# Python with ray, torch, fvcore, optuna and nas.trainable imported; 680-730 MiB peak resident
# for a whole 16 px digits trial in a Ray worker, priced ~70 MiB above the runtime.
# A CUDA trial's device memory starts with the CUDA context (~300-500 MiB on recent GPUs).
RUNTIME_BYTES = {"cpu": 640 * MiB, "cuda": 512 * MiB}
EVAL_FLOOR_BYTES = 256 * MiB  # an evaluation chunk may always use this much (512 images at 32 px)
DEVICE_KINDS = ("cpu", "cuda")


@dataclass(frozen=True)
class MemoryPrice:
    """Bytes a trial holds, priced before training (see the module docstring for the terms).
    device: "cpu" (host memory) or "cuda" (device memory); eval_chunk: the evaluation chunk the
    trial will use (`eval_chunk_for`)."""

    device: str
    batch_size: int
    eval_chunk: int
    runtime_bytes: int
    state_bytes: int        # both regimes' models: parameters, buffers, gradients, AdamW moments
    train_step_bytes: int   # one training step above the state
    eval_chunk_bytes: int   # one evaluation chunk above the state

    @property
    def peak_bytes(self) -> int:
        """The trial's priced peak: runtime + both models' state + the larger transient."""
        return (self.runtime_bytes + self.state_bytes
                + max(self.train_step_bytes, self.eval_chunk_bytes))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "peak_bytes": self.peak_bytes}

    def __str__(self) -> str:
        return (f"memory {format_bytes(self.peak_bytes)} ({self.device}: training step "
                f"{format_bytes(self.train_step_bytes)} at batch {self.batch_size}, evaluation "
                f"chunk {format_bytes(self.eval_chunk_bytes)} of {self.eval_chunk}, models "
                f"{format_bytes(self.state_bytes)}, runtime {format_bytes(self.runtime_bytes)})")


@dataclass(frozen=True)
class MemorySettings:
    """How a trial trains, as far as its memory goes: the training batch, the configured
    evaluation chunk (`train.eval_batch_size`, an upper limit) and the device kind."""

    batch_size: int = 64
    eval_batch_size: int = 512
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.device not in DEVICE_KINDS:
            raise ValueError(f"device: expected one of {DEVICE_KINDS}, got {self.device!r}")

    def price(self, arch: Architecture) -> MemoryPrice:
        return price_memory(arch, self.batch_size, self.eval_batch_size, self.device)


@lru_cache(maxsize=None)
def price_memory(arch: Architecture, batch_size: int, eval_batch_size: int,
                 device: str = "cpu") -> MemoryPrice:
    """The memory a trial of `arch` (at its own resolution) needs, cached per arguments."""
    if device not in DEVICE_KINDS:
        raise ValueError(f"device: expected one of {DEVICE_KINDS}, got {device!r}")
    trace = _Trace(arch, device)
    state, train_step = trace.train_step(batch_size)
    chunk = eval_chunk_for(trace, batch_size, eval_batch_size, train_step)
    return MemoryPrice(device=device, batch_size=batch_size, eval_chunk=chunk,
                       runtime_bytes=RUNTIME_BYTES[device], state_bytes=2 * state,
                       train_step_bytes=train_step, eval_chunk_bytes=trace.eval_chunk(chunk))


def eval_chunk_for(trace: "_Trace", batch_size: int, eval_batch_size: int,
                   train_step_bytes: int) -> int:
    """The largest evaluation chunk (<= eval_batch_size) whose memory stays under the training
    step's or EVAL_FLOOR_BYTES, whichever is larger; never below min(batch_size,
    eval_batch_size). Inference memory grows linearly with the chunk: read from two traces."""
    allowed = max(train_step_bytes, EVAL_FLOOR_BYTES)
    if trace.eval_chunk(eval_batch_size) <= allowed:
        return eval_batch_size
    one, two = trace.eval_chunk(1), trace.eval_chunk(2)
    per_image = max(1, two - one)
    chunk = 1 + (allowed - one) // per_image
    return int(max(min(batch_size, eval_batch_size), min(eval_batch_size, chunk)))


class _LiveBytes(TorchDispatchMode):
    """Adds the bytes of every storage an op creates, takes them off when it is freed, and keeps
    the peak. Views share their base's storage and are counted once."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._seen: WeakIdKeyDictionary = WeakIdKeyDictionary()

    def track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        if storage in self._seen:
            return
        size = storage.nbytes()
        self._seen[storage] = size
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, size)

    def _free(self, size: int) -> None:
        self.live -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor):
                self.track(value)
        return out


class _Trace:
    """One network as the trainer holds it (channels_last, AdamW as `evaluators.trainer` groups
    it), with fake tensors: its steps cost shapes, not arithmetic."""

    def __init__(self, arch: Architecture, device: str):
        from evaluators.trainer import _param_groups  # the trainer's own AdamW groups

        self.arch = arch
        self.autocast = torch.bfloat16 if device == "cuda" else None
        # Real constants that blocks cache per grid (relative positions, index tables) enter the
        # trace as they are and become fake there: allow_non_fake_inputs.
        self.mode = FakeTensorMode(allow_non_fake_inputs=True)
        with torch.random.fork_rng():  # pricing must not move the caller's random stream
            model = build_model(arch).to(memory_format=torch.channels_last)
            # One real forward first: whatever a block builds lazily and caches per grid is then
            # built from real tensors, never inside the fake mode (a fake tensor left in such a
            # cache would break the next trace and any real training of that grid).
            with torch.no_grad():
                model.eval()(self._input(1).zero_())
        for module in model.modules():  # real weights -> fake ones (same shapes and strides)
            for name, param in list(module._parameters.items()):
                if param is not None:
                    module._parameters[name] = torch.nn.Parameter(
                        self.mode.from_tensor(param.detach()), requires_grad=param.requires_grad)
            for name, buffer in list(module._buffers.items()):
                if buffer is not None:
                    module._buffers[name] = self.mode.from_tensor(buffer)
        self.model = model
        self.groups = _param_groups
        self._eval: dict[int, int] = {}

    def _input(self, batch: int) -> torch.Tensor:
        r = self.arch.resolution
        return torch.empty(batch, self.arch.in_channels, r, r).to(memory_format=torch.channels_last)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=self.autocast or torch.float32,
                            enabled=self.autocast is not None):
            return self.model(x).float()

    def _counter(self) -> _LiveBytes:
        counter = _LiveBytes()
        for tensor in (*self.model.parameters(), *self.model.buffers()):
            counter.track(tensor)
        return counter

    def train_step(self, batch_size: int) -> tuple[int, int]:
        """(state, step): one model's parameters, buffers, gradients and AdamW moments, and what a
        training step holds above them (the second of two steps: the first creates the state)."""
        with self.mode:
            self.model.train()
            optimizer = torch.optim.AdamW(self.groups(self.model, 0.05), lr=1e-3)
            counter = self._counter()
            with counter:
                targets = torch.zeros(batch_size, dtype=torch.long)
                step_peak = 0
                for _ in range(2):
                    counter.peak = before = counter.live
                    x = self._input(batch_size)
                    augmented = x.clone()  # the loader's batch and its augmented copy
                    loss = F.cross_entropy(self._forward(augmented), targets)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    del x, augmented, loss
                    step_peak = counter.peak - before
                del targets
                state = counter.live
            optimizer.zero_grad(set_to_none=True)
        return state, step_peak

    def eval_chunk(self, chunk: int) -> int:
        """What one inference-mode forward of `chunk` images holds above the model."""
        if chunk not in self._eval:
            with self.mode:
                self.model.eval()
                counter = self._counter()
                before = counter.live
                with counter, torch.inference_mode():
                    logits = self._forward(self._input(chunk))
                    del logits
                self._eval[chunk] = counter.peak - before
        return self._eval[chunk]


def release_freed_memory() -> None:
    """Give the C heap's free pages back to the kernel (glibc's malloc_trim; a no-op elsewhere).
    glibc keeps freed blocks under its mmap threshold (which grows to 32 MiB) for reuse: after a
    224 px training step about 0.5 GiB of them stayed resident, and an evaluation chunk that came
    next added its own memory on top (measured: 2.92 GiB peak for a step priced at 2.43 GiB;
    2.53 GiB with this call between them). The trainer calls it between training and evaluation."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes

            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim = None


# ---- the real thing, to check the price against --------------------------------------------------

def measure_memory(arch: Architecture, batch_size: int, eval_chunk: int, term: str,
                   steps: int = 2) -> int:
    """Peak resident memory (Linux VmHWM) of real CPU work in this process above what it held
    before it: `term` "train_step_bytes" (`steps` training steps at `batch_size`) or
    "eval_chunk_bytes" (one inference-mode chunk of `eval_chunk` images). Both regimes' models and
    AdamW states are built and warmed first (a step at batch 2 each: gradients, moments and the
    kernels' caches exist), as in a trial after its first step. Run each term in a fresh process:
    memory the C allocator kept from earlier work would be reused without raising the peak."""
    from evaluators.trainer import _param_groups, channels_last

    def step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: int) -> None:
        x = channels_last(torch.randn(batch, arch.in_channels, arch.resolution, arch.resolution))
        loss = F.cross_entropy(model(x.clone()).float(), torch.zeros(batch, dtype=torch.long))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    @torch.inference_mode()
    def evaluate(model: torch.nn.Module, chunk: int) -> None:
        model.eval()
        model(channels_last(torch.randn(chunk, arch.in_channels, arch.resolution,
                                        arch.resolution))).float()
        model.train()

    regimes = []
    for _ in range(2):
        model = build_model(arch).to(memory_format=torch.channels_last).train()
        optimizer = torch.optim.AdamW(_param_groups(model, 0.05), lr=1e-3)
        step(model, optimizer, 2)
        evaluate(model, 2)
        regimes.append((model, optimizer))
    model, optimizer = regimes[0]
    before = _reset_peak()
    if term == "train_step_bytes":
        for _ in range(steps):
            step(model, optimizer, batch_size)
    elif term == "eval_chunk_bytes":
        evaluate(model, eval_chunk)
    else:
        raise ValueError(f"term: expected train_step_bytes or eval_chunk_bytes, got {term!r}")
    return _peak() - before


def measure_in_fresh_process(arch: Architecture, batch_size: int, eval_chunk: int, term: str,
                             steps: int = 2) -> int:
    """`measure_memory` in a new Python process with one torch thread (as a trial with 1 CPU):
    what the C allocator kept from this process's earlier work cannot hide the peak there."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = ("import json, sys, torch; torch.set_num_threads(1)\n"
              "from evaluators.memory import measure_memory\n"
              "from search_spaces.architecture import Architecture\n"
              "arch = Architecture.from_dict(json.loads(sys.argv[1]))\n"
              f"print(measure_memory(arch, {batch_size}, {eval_chunk}, {term!r}, steps={steps}))\n")
    package_root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [package_root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    out = subprocess.run([sys.executable, "-c", script, json.dumps(arch.to_dict())], check=True,
                         capture_output=True, text=True, env=env).stdout
    return int(out.strip().splitlines()[-1])


def _status(key: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"/proc/self/status has no {key}")


def _reset_peak() -> int:
    """Set VmHWM back to the current resident size (Linux clear_refs 5); returns that size."""
    import gc

    gc.collect()
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    return _status("VmRSS")


def _peak() -> int:
    return _status("VmHWM")


# ---- sizes in words ------------------------------------------------------------------------------

_UNITS = {"": 1, "b": 1, "k": 10 ** 3, "kb": 10 ** 3, "m": 10 ** 6, "mb": 10 ** 6, "g": 10 ** 9,
          "gb": 10 ** 9, "t": 10 ** 12, "tb": 10 ** 12, "kib": 2 ** 10, "mib": 2 ** 20,
          "gib": 2 ** 30, "tib": 2 ** 40}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_bytes(value: Any, field: str = "max_memory") -> int:
    """A size in bytes from a whole number or text such as "4GiB", "512 MiB", "8G" (decimal
    units: k, M, G, T; binary: KiB, MiB, GiB, TiB). Raises FieldError naming `field`."""
    if isinstance(value, bool):
        raise FieldError(field, f"expected a size such as 4GiB or a number of bytes, got {value!r}")
    if isinstance(value, (int, float)):
        if value != value or value <= 0 or value != int(value):
            raise FieldError(field, f"expected a positive whole number of bytes, got {value!r}")
        return int(value)
    match = _SIZE.match(value) if isinstance(value, str) else None
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise FieldError(field, f"expected a size such as 4GiB, 512MiB, 8G or a number of bytes, "
                                f"got {value!r}")
    size = int(float(match.group(1)) * _UNITS[unit])
    if size <= 0:
        raise FieldError(field, f"must be positive, got {value!r}")
    return size


def format_bytes(size: float) -> str:
    """3_435_973_836 -> '3.2 GiB'."""
    for unit, scale in (("TiB", 2 ** 40), ("GiB", GiB), ("MiB", MiB), ("KiB", 2 ** 10)):
        if abs(size) >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size:.0f} B"
