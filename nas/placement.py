"""Where trials' memory comes from and how many fit at once.

Every candidate is priced (`evaluators.memory`) before it may train, and its trial asks Ray for
that much of Ray's `memory` resource beside its CPUs and GPUs: Ray starts a trial on a node only
while the node's memory not yet promised to running trials covers it, so a node never runs more
trials than fit, whatever `max_concurrent_trials` says.

The memory trials may share on this machine (`trial_memory`) is its memory (the host's, or the
cgroup's limit when the search runs inside a smaller one; a GPU's for GPU trials) less what the
driver and Ray's own processes hold (`DRIVER_RESERVE_BYTES`). A local Ray is started with exactly
that as its `memory` resource. The per-trial budget `budget.max_memory` defaults to that shared
among the trials that run at once: `max_concurrent_trials` of them if the space's cheapest
candidate fits that share, else as many as it allows (`plan_memory`), which is said in one line.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from evaluators.memory import GiB, RUNTIME_BYTES, MemorySettings, format_bytes
from nas.config import SearchConfig, SearchConfigError
from search_spaces.space import SearchSpace

# The search driver (Python, torch, Optuna, Ray's client) and Ray's GCS and raylet on this node:
# measured 0.6-0.9 GiB resident together during a 2-trial search here (2026-12-03).
DRIVER_RESERVE_BYTES = 1 * GiB
UNLIMITED = 2 ** 62  # cgroup v1 writes "no limit" as a number near 2**63


def memory_settings(config: SearchConfig) -> MemorySettings:
    """How the search's trials train, as far as their memory goes."""
    train = config.trial.train
    on_gpu = config.resources.gpus_per_trial > 0 and train.device != "cpu"
    return MemorySettings(batch_size=train.batch_size, eval_batch_size=train.eval_batch_size,
                          device="cuda" if on_gpu else "cpu")


def host_memory() -> tuple[int, str]:
    """This machine's memory for processes started here, and where the number comes from: the
    smallest of the physical memory and the memory limits of this process's cgroups (v2
    memory.max, v1 memory.limit_in_bytes, up to the root)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit, where = total, "host memory"
    for path in _cgroup_limit_files():
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < limit and int(text) < UNLIMITED:
            limit, where = int(text), "memory cgroup limit"
    return limit, where


def _cgroup_limit_files() -> list[str]:
    files = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return files
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2
            root, name = Path("/sys/fs/cgroup"), "memory.max"
            if not (root / "cgroup.controllers").exists():
                root = Path("/sys/fs/cgroup/unified")
        elif "memory" in controllers.split(","):
            root, name = Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes"
        else:
            continue
        here = Path(path)
        while True:
            files.append(str(root / str(here).lstrip("/") / name))
            if here == here.parent:
                break
            here = here.parent
    return files


def gpu_memory() -> int:
    """Device memory of this machine's first GPU (0 without one)."""
    import torch

    return torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else 0


@dataclass(frozen=True)
class MemoryPlan:
    """What the trials may hold: `trial_memory` in all on this node (`source` says whence),
    `max_memory` each, and `fit`: how many trials of `max_memory` fit at once."""

    trial_memory: int
    source: str
    max_memory: int | None  # None: nothing to size a default from (GPU trials, no GPU here)
    fit: int
    device: str
    default: bool  # max_memory came from the machine, not the config

    def describe(self, wanted: int) -> list[str]:
        """The lines printed at the start of a search."""
        kind = "device memory per GPU share" if self.device == "cuda" else "memory"
        how = "default: shared among the trials at once" if self.default else "budget.max_memory"
        if self.max_memory is None:
            return ["memory: no GPU on this machine to size a default budget from: trials are "
                    "priced, not limited (set budget.max_memory)"]
        lines = [f"memory: {format_bytes(self.trial_memory)} {kind} for trials ({self.source}); "
                 f"at most {format_bytes(self.max_memory)} per trial ({how})"]
        if self.fit < wanted:
            lines.append(f"memory: {wanted} trials at a time do not fit in "
                         f"{format_bytes(self.trial_memory)}: running fewer at a time, as many as "
                         f"their priced memory fits (at least {self.fit})")
        return lines


def plan_memory(config: SearchConfig, space: SearchSpace, settings: MemorySettings) -> MemoryPlan:
    """The memory for trials on this machine and the per-trial budget; raises SearchConfigError
    (`budget.max_memory`) when not even the space's cheapest candidate fits."""
    wanted = config.resources.max_concurrent_trials
    given = config.budget.max_memory
    if settings.device == "cuda" and gpu_memory() == 0:  # e.g. a driver on a CPU-only head node
        return MemoryPlan(0, "no GPU on this machine", None if given is None else int(given),
                          wanted, settings.device, default=given is None)
    if settings.device == "cuda":
        share = config.resources.gpus_per_trial
        total = int(gpu_memory() * min(1.0, share) / share) if share < 1 else gpu_memory()
        source = "the GPU's memory"
        # trials sharing a GPU (gpus_per_trial < 1) run 1/gpus_per_trial at a time on it
        per_gpu = max(1, math.floor(1 / share)) if share < 1 else 1
        wanted = min(wanted, per_gpu)
    else:
        host, source = host_memory()
        total = host - DRIVER_RESERVE_BYTES
        source = f"{source} {format_bytes(host)} less {format_bytes(DRIVER_RESERVE_BYTES)} " \
                 "for the driver and Ray"
    cheapest = min(settings.price(arch).peak_bytes for arch in space.smallest())
    if given is not None:
        if cheapest > given:
            raise SearchConfigError("budget.max_memory", f"{format_bytes(given)} per trial, but "
                                    f"the space's cheapest candidate needs {format_bytes(cheapest)} "
                                    f"at batch {settings.batch_size}: lower train.batch_size or "
                                    "trial.resolution, or raise budget.max_memory")
        fit = max(1, min(wanted, total // given))
        return MemoryPlan(total, source, int(given), int(fit), settings.device, default=False)
    if cheapest > total:
        raise SearchConfigError("budget.max_memory", f"the space's cheapest candidate needs "
                                f"{format_bytes(cheapest)} at batch {settings.batch_size}, more "
                                f"than the {format_bytes(total)} this machine has for trials: "
                                "lower train.batch_size or trial.resolution")
    fit = next(n for n in range(wanted, 0, -1) if cheapest <= total // n)
    return MemoryPlan(total, source, int(total // fit), fit, settings.device, default=True)


def trial_resources(cpus: float, gpus: float, device: str):
    """Ray resources of one trial as a function of its config: its CPUs and GPUs, and the host
    memory it was priced at (`config["cost"]["memory"]`; a GPU trial asks for its runtime only:
    its priced memory is the GPU's)."""
    from ray.tune.execution.placement_groups import resource_dict_to_pg_factory

    def resources(config: dict):
        memory = (config.get("cost") or {}).get("memory") or {}
        host = RUNTIME_BYTES["cpu"] if device == "cuda" else memory.get("peak_bytes", 0)
        return resource_dict_to_pg_factory({"cpu": cpus, "gpu": gpus, "memory": float(host)})
    return resources
