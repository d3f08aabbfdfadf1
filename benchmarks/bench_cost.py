"""How fast candidates are priced (first count vs cached) and how fast each block type trains.

Run: python benchmarks/bench_cost.py [--threads 1] [--batch 32] [--steps 5]
Numbers on a shared machine are noisy; compare rows measured in the same run.
"""

from __future__ import annotations

import argparse
import time
import timeit

import torch
import torch.nn.functional as F

from evaluators.cost import count_cost, human
from search_spaces.architecture import Architecture, Stage, Stem
from search_spaces.model import build_model


def candidate() -> Architecture:
    """A typical small search candidate: ~1M parameters at 32x32, layout C-C-T-T."""
    return Architecture(stem=Stem("conv", 32), resolution=32, num_classes=10, stages=(
        Stage("C", 1, 32), Stage("C", 2, 64), Stage("T", 2, 128), Stage("T", 1, 192)))


def one_block_type(block: str, resolution: int) -> Architecture:
    """Conv stem, then two blocks of one type at width 64 (stride 2): the block dominates."""
    if block == "A":  # DeiT-like: patch stem 4, class token, no downsampling after it
        return Architecture(stem=Stem("patch", 64, 4), resolution=resolution, num_classes=10,
                            head="token", stages=(Stage("A", 2, 64, stride=1, pos_embed=True),))
    return Architecture(stem=Stem("conv", 32), resolution=resolution, num_classes=10, stages=(
        Stage(block, 2, 64, stride=2, head_size=32, pos_embed=block == "G"),))


def bench_pricing(repeats: int) -> None:
    print("## pricing one candidate (count_cost: build + fvcore trace, then the cache)")
    firsts = []
    for seed in range(repeats):  # distinct archs (num_classes differs) so each first count is cold
        arch = candidate().replace(num_classes=10 + seed)
        start = time.perf_counter()
        cost = count_cost(arch)
        firsts.append(time.perf_counter() - start)
    arch = candidate().replace(num_classes=10)
    start = time.perf_counter()
    build_model(arch)
    build = time.perf_counter() - start
    calls = 100_000
    cached = timeit.timeit(lambda: count_cost(arch), number=calls) / calls
    twin = Architecture.from_yaml(arch.to_yaml())  # equal, not identical: still a cache hit
    cached_twin = timeit.timeit(lambda: count_cost(twin), number=calls) / calls
    print(f"candidate {arch.layout} @32: {cost}")
    print(f"| first count (median of {repeats}) | of which build | cached (same object) | cached (equal copy) |")
    print("|---|---|---|---|")
    print(f"| {sorted(firsts)[len(firsts) // 2] * 1e3:.0f} ms | {build * 1e3:.0f} ms "
          f"| {cached * 1e6:.2f} us | {cached_twin * 1e6:.2f} us |")


def bench_throughput(resolution: int, batch: int, steps: int) -> None:
    print(f"\n## forward+backward throughput, batch {batch}, {resolution}x{resolution}")
    print("| block | params | FLOPs/image | images/s |")
    print("|---|---|---|---|")
    for block in "CTAG":
        arch = one_block_type(block, resolution)
        model = build_model(arch).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        x = torch.randn(batch, 3, resolution, resolution)
        y = torch.randint(0, 10, (batch,))

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()

        step()  # warm-up
        start = time.perf_counter()
        for _ in range(steps):
            step()
        rate = batch * steps / (time.perf_counter() - start)
        cost = count_cost(arch)
        print(f"| {block} | {human(cost.params)} | {human(cost.flops)} | {rate:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bench_pricing(args.repeats)
    bench_throughput(args.resolution, args.batch, args.steps)


if __name__ == "__main__":
    main()
