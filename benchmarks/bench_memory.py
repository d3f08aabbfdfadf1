"""Priced against measured trial memory (`evaluators.memory`): a default-space (digits) network at
32 px and at 224 px, and CoAtNet-0 at 224 px (10 classes), batch 32, evaluation chunk as the
trial would choose it from `eval_batch_size` 512.

Priced: the fake-tensor trace (no arithmetic). Measured: `evaluators.memory.measure_memory`, each
term in its own fresh process with one torch thread: the peak resident memory (VmHWM) of real
training steps (or of one inference-mode evaluation chunk) above what the process held before,
with both regimes' models and AdamW states built and warmed. Writes
benchmarks/results/memory.csv and prints the table.

    python benchmarks/bench_memory.py [--out benchmarks/results/memory.csv]
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evaluators.memory import MiB, measure_in_fresh_process, price_memory  # noqa: E402
from search_spaces.architecture import Architecture, Stage, Stem  # noqa: E402
from search_spaces.presets import get_preset  # noqa: E402

BATCH, EVAL_BATCH = 32, 512


def default_space_net(resolution: int) -> Architecture:
    """A C-C-T-T network of the default (digits) space, the widest choice of each stage, at
    `resolution`, with 3 channels as for an image folder."""
    stages = (Stage("C", 2, 32, stride=1), Stage("C", 2, 48), Stage("T", 3, 96, head_size=32),
              Stage("T", 2, 128, head_size=32))
    return Architecture(Stem("conv", 24), stages, resolution=resolution, in_channels=3,
                        num_classes=10)


CASES = {
    "digits-space C-C-T-T, 32 px": lambda: default_space_net(32),
    "digits-space C-C-T-T, 224 px": lambda: default_space_net(224),
    "CoAtNet-0, 224 px": lambda: get_preset("coatnet-0", 224, num_classes=10),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "memory.csv"))
    args = parser.parse_args()
    rows = []
    for name, make in CASES.items():
        arch = make()
        started = time.perf_counter()
        price = price_memory(arch, BATCH, EVAL_BATCH, "cpu")
        pricing_s = time.perf_counter() - started
        steps = 1 if arch.resolution >= 224 and "CoAtNet" in name else 2
        real_train = measure_in_fresh_process(arch, BATCH, price.eval_chunk, "train_step_bytes", steps)
        real_eval = measure_in_fresh_process(arch, BATCH, price.eval_chunk, "eval_chunk_bytes", steps)
        row = {
            "network": name, "batch_size": BATCH, "eval_chunk": price.eval_chunk,
            "priced_train_step_mib": round(price.train_step_bytes / MiB, 1),
            "measured_train_step_mib": round(real_train / MiB, 1),
            "train_ratio": round(price.train_step_bytes / real_train, 3),
            "priced_eval_chunk_mib": round(price.eval_chunk_bytes / MiB, 1),
            "measured_eval_chunk_mib": round(real_eval / MiB, 1),
            "eval_ratio": round(price.eval_chunk_bytes / real_eval, 3),
            "state_mib": round(price.state_bytes / MiB, 1),
            "priced_trial_peak_mib": round(price.peak_bytes / MiB, 1),
            "pricing_s": round(pricing_s, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        f.write(f"# {platform.node()} {platform.processor() or platform.machine()}, "
                f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, torch 1 thread; "
                "measured = VmHWM delta in a fresh process\n")
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"\n{'network':32} {'train step MiB':>22} {'eval chunk MiB':>24} {'trial peak':>11}")
    for r in rows:
        print(f"{r['network']:32} {r['priced_train_step_mib']:9.0f} / {r['measured_train_step_mib']:<9.0f}"
              f"{r['priced_eval_chunk_mib']:10.0f} / {r['measured_eval_chunk_mib']:<6.0f}"
              f"(x{r['eval_chunk']:<3}) {r['priced_trial_peak_mib']:8.0f}")
    print(f"(priced / measured) -> {out}")


if __name__ == "__main__":
    main()
