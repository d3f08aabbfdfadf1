"""Why a trial failed, in a word a record keeps (`failure_reason`), and what its record says about
a trial that ran out of memory.

`out_of_memory`: the kernel's or a cgroup's OOM killer ended the trial's process (Ray says "killed
by the OOM killer", or the worker died of SIGKILL), or an allocation failed inside it (torch's
"CUDA out of memory" / "DefaultCPUAllocator: can't allocate memory", Python's MemoryError).
Such a record also holds `memory`: {priced_bytes, observed_bytes, settings}: what the trial was
priced at, the most it was seen to hold (the process's peak resident memory, or the GPU's
allocated peak, in its last report; null if it never reported), and the settings that lower it.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

OUT_OF_MEMORY = "out_of_memory"
FAILURE_REASONS = (OUT_OF_MEMORY,)

_OOM_TEXT = re.compile(
    r"OOM killer|out of memory|OutOfMemoryError|can't allocate memory|MemoryError"
    r"|Cannot allocate memory|SIGKILL|signal 9|exit code -9|killed by signal 9", re.IGNORECASE)

# The settings that lower a trial's memory, as the search config names them, and how.
LOWER_MEMORY = {
    "train.batch_size": "smaller batches: less memory per training step",
    "train.eval_batch_size": "smaller evaluation chunks",
    "trial.resolution": "smaller images: memory grows with the square of the resolution",
    "resources.max_concurrent_trials": "fewer trials at a time: more memory each",
}


def failure_reason(error_text: str | None) -> str | None:
    """`out_of_memory` when the error says the trial ran out of memory; None otherwise."""
    if error_text and _OOM_TEXT.search(error_text):
        return OUT_OF_MEMORY
    return None


def memory_failure(priced_bytes: int | None, observed_bytes: float | None,
                   settings: Mapping[str, Any]) -> dict[str, Any]:
    """The `memory` field of an out-of-memory record; `settings`: the current value of each
    setting of LOWER_MEMORY (the names as keys)."""
    return {
        "priced_bytes": None if priced_bytes is None else int(priced_bytes),
        "observed_bytes": None if observed_bytes is None else int(observed_bytes),
        "settings": {name: settings.get(name) for name in LOWER_MEMORY},
        "advice": "lower one of " + ", ".join(
            f"{name} (now {settings.get(name)}: {why})" for name, why in LOWER_MEMORY.items()),
    }
