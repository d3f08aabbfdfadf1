"""How well do zero-cost proxies rank architectures? Spearman rank correlation of each proxy
(computed at initialisation on one batch) with the validation accuracy the same architecture
reaches after a short training, over architectures sampled from the default search space on
digits. The parameter count is scored alongside as the baseline a proxy has to beat.
To keep it to a few minutes on a CPU the architectures are built at `--resolution` (default 16
instead of the space's 32: same blocks and widths, a quarter of the pixels).

    python benchmarks/bench_proxies.py [--archs 24] [--epochs 3] [--resolution 16] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import time

import optuna
import torch
from scipy.stats import spearmanr

from evaluators.data import load_data
from evaluators.proxies import PROXIES, compute_proxies
from evaluators.trainer import TrainConfig, train
from search_spaces.model import build_model
from search_spaces.space import default_space, sample_architecture


def sample_architectures(count: int, seed: int) -> list:
    """`count` distinct architectures from the default space (random sampler, seeded)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    space, archs, seen = default_space(), [], set()
    while len(archs) < count:
        arch = sample_architecture(study.ask(), space)
        if arch.arch_id not in seen:
            seen.add(arch.arch_id)
            archs.append(arch)
    return archs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--resolution", type=int, default=16)
    parser.add_argument("--batch", type=int, default=64, help="images in the proxies' batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    archs = [a.replace(resolution=args.resolution) for a in sample_architectures(args.archs, args.seed)]
    data = load_data("digits", archs[0].resolution, in_channels=archs[0].in_channels)
    batch = (data.train_x[:args.batch], data.train_y[:args.batch])
    config = TrainConfig(epochs=args.epochs, lr=3e-3, threads=args.threads, seed=args.seed)
    rows = []
    print(f"{'layout':10} {'params':>8} " + " ".join(f"{n:>10}" for n in PROXIES)
          + f" {'proxy_s':>8} {'val_acc':>8} {'train_s':>8}")
    for arch in archs:
        torch.manual_seed(args.seed)
        model = build_model(arch)
        params = sum(p.numel() for p in model.parameters())
        started = time.perf_counter()
        scores = compute_proxies(model, batch)
        proxy_s = time.perf_counter() - started
        result = train(arch, data, config)
        val_acc = result.history[-1]["val_acc"] if result.history else math.nan
        train_s = result.history[-1]["wall_time_s"] if result.history else math.nan
        rows.append({"params": float(params), **scores, "val_acc": val_acc})
        print(f"{arch.layout:10} {params:8d} " + " ".join(f"{scores[n]:10.3f}" for n in PROXIES)
              + f" {proxy_s:8.2f} {val_acc:8.3f} {train_s:8.1f}", flush=True)
    accuracy = [r["val_acc"] for r in rows]
    print(f"\nSpearman rank correlation with validation accuracy after {args.epochs} epoch(s) at "
          f"{args.resolution}px, {len(rows)} architectures:")
    for name in ("params", *PROXIES):
        rho, p_value = spearmanr([r[name] for r in rows], accuracy, nan_policy="omit")
        print(f"  {name:10} rho = {rho:+.3f}  (p = {p_value:.3f})")


if __name__ == "__main__":
    main()
