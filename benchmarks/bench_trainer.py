"""Trainer throughput against a bare PyTorch loop on the same model, data and batches, and what
DeiT's recipe costs on top: distillation (the teacher's forward pass on every batch, or its logits
of the training images computed once) and each regularizer.

All train the same architecture (same init) on digits in memory with AdamW, batches of the same
size. The machine is shared and noisy, so they run interleaved in short chunks of a few steps, in
a shuffled order each round, and the medians of the chunk times are compared. All use the
channels_last layout (a plain NCHW bare loop is timed too, to show what that layout buys). The
trainer's per-epoch evaluation (an eval-mode pass over the training and validation sets) is
measurement, not training, and is timed separately, as is the one-time teacher pass of
`teacher_pass: once`. The teacher is a convnet of the student's own size (the C-C-C-C bench
network, its own weights).

    python benchmarks/bench_trainer.py [--rounds 40] [--chunk 4] [--resolution 16] [--threads 1]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
import yaml

from evaluators.data import load_data
from evaluators.distillation import DistillConfig, load_teacher
from evaluators.rand_augment import RandAugmentConfig
from evaluators.trainer import TrainConfig, Trainer, channels_last
from search_spaces.architecture import Architecture, Stage, Stem
from search_spaces.model import build_model


def bench_arch(resolution: int) -> Architecture:
    widths = (24, 32, 64, 96)
    return Architecture(Stem("conv", 16),
                        tuple(Stage("C", 1, w, stride=1 if i == 0 else 2) for i, w in enumerate(widths)),
                        resolution=resolution, in_channels=1, num_classes=10)


class BareLoop:
    """The plainest loop that trains the same thing: shuffle, slice, forward, backward, step
    (in `memory_format`, channels_last like the trainer unless asked otherwise).

    `train_x`: (N, C, H, W) float images, normalised; or (N, H, W, C) uint8 pixels as a data set
    keeps them, normalised per batch with `mean`/`std` on `device` (on CUDA each batch is pinned
    and copied with non_blocking=True, as a plain loop with pin_memory does). `bf16`: the forward
    pass under bf16 autocast (on CUDA only, as the trainer). `compile`: through torch.compile.
    The optimiser is the trainer's: AdamW, fused on CUDA."""

    def __init__(self, arch: Architecture, train_x: torch.Tensor, train_y: torch.Tensor,
                 batch_size: int, lr: float, memory_format=torch.channels_last,
                 device: str | torch.device = "cpu", bf16: bool = False, compile: bool = False,
                 mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None):
        torch.manual_seed(0)
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.memory_format = memory_format
        self.pixels = train_x.dtype == torch.uint8
        if self.pixels:
            if mean is None or std is None:
                raise ValueError("uint8 pixels need the mean and std to normalise them with")
            self.mean = torch.tensor(mean, device=self.device)
            self.std = torch.tensor(std, device=self.device)
        elif memory_format == torch.channels_last:
            train_x = channels_last(train_x)
        self.model = build_model(arch).train().to(self.device, memory_format=memory_format)
        self.forward = torch.compile(self.model) if compile else self.model
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=0.05,
                                           fused=self.cuda or None)
        self.autocast = bf16 and self.cuda
        self.x, self.y, self.batch_size = train_x, train_y, batch_size
        self.generator = torch.Generator().manual_seed(0)
        self.order, self.cursor = torch.empty(0, dtype=torch.long), 0

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.x[idx], self.y[idx]
        if self.cuda:
            x, y = x.pin_memory(), y.pin_memory()
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if self.pixels:  # (B, H, W, C) uint8 -> (B, C, H, W) normalised, channels-last strides
            x = ((x.float() / 255.0 - self.mean) / self.std).permute(0, 3, 1, 2)
        if self.memory_format == torch.channels_last:
            return channels_last(x), y
        return x.contiguous(), y

    def train_steps(self, steps: int) -> float:
        """Take `steps` steps; returns the seconds they took (on CUDA, until the GPU is done)."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
        started = time.perf_counter()
        for _ in range(steps):
            if self.cursor + self.batch_size > len(self.order):
                self.order = torch.randperm(len(self.y), generator=self.generator)
                self.cursor = 0
            idx = self.order[self.cursor:self.cursor + self.batch_size]
            self.cursor += self.batch_size
            x, y = self.batch(idx)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                logits = self.forward(x)
            loss = F.cross_entropy(logits.float(), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        if self.cuda:
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - started


def interleaved_medians(runners: dict[str, Callable[[], float]], rounds: int,
                        seed: int = 0) -> dict[str, float]:
    """Each runner times one chunk of steps per round, in a shuffled order each round (a shared,
    noisy machine slows them alike); the median chunk time of each. Warm up before."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    order = random.Random(seed)
    for _ in range(rounds):
        names = list(runners)
        order.shuffle(names)
        for name in names:
            times[name].append(runners[name]())
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--chunk", type=int, default=4, help="steps per timed chunk")
    parser.add_argument("--resolution", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_data("digits", args.resolution)
    arch = bench_arch(args.resolution)
    config = TrainConfig(epochs=100, batch_size=args.batch_size, threads=args.threads,
                         device="cpu", augment=False)
    trainer = Trainer(arch, data, config)
    augmenting = Trainer(arch, data, config.replace(augment=True))
    bare = BareLoop(arch, data.train_x, data.train_y, trainer.batch_size, config.lr)
    bare_nchw = BareLoop(arch, data.train_x, data.train_y, trainer.batch_size, config.lr,
                         memory_format=torch.contiguous_format)
    folder = Path(tempfile.mkdtemp(prefix="bench-trainer-"))
    teacher_config = write_teacher(folder, arch)
    per_batch = config.replace(distill=DistillConfig(teacher_config))
    once = config.replace(distill=DistillConfig(teacher_config, teacher_pass="once"))
    recipes = {
        "trainer + distillation, teacher per batch": per_batch,
        "trainer + distillation, teacher once": once,
        "trainer + mixup/cutmix": config.replace(mixup=0.8, cutmix=1.0),
        "trainer + drop path 0.1": config.replace(drop_path=0.1),
        "trainer + random erasing 0.25": config.replace(random_erasing=0.25),
        "trainer + RandAugment m9": config.replace(rand_augment=RandAugmentConfig()),
        "trainer + repeated augmentation 3": config.replace(repeated_augment=3),
        "trainer + DeiT recipe (all, teacher per batch)": per_batch.replace(
            augment=True, mixup=0.8, cutmix=1.0, drop_path=0.1, random_erasing=0.25,
            rand_augment=RandAugmentConfig(), repeated_augment=3),
    }
    runners = {"bare loop": lambda: bare.train_steps(args.chunk),
               "bare loop, NCHW layout": lambda: bare_nchw.train_steps(args.chunk),
               "trainer": lambda: trainer.train_steps(args.chunk)[1],
               "trainer + augmentation": lambda: augmenting.train_steps(args.chunk)[1]}
    for name, recipe in recipes.items():
        trainer_with = Trainer(arch, data, recipe)
        runners[name] = (lambda t: lambda: t.train_steps(args.chunk)[1])(trainer_with)
    for run in runners.values():
        run()  # warm-up
    medians = interleaved_medians(runners, args.rounds)
    images = args.chunk * trainer.batch_size
    print(f"arch {arch.layout} at {args.resolution}px, batch {trainer.batch_size}, {args.threads} "
          f"thread(s), {args.rounds} shuffled rounds of {args.chunk} steps each")
    for name, median in medians.items():
        overhead = 100 * (median / medians["bare loop"] - 1)
        versus = "" if name in ("bare loop", "trainer") else \
            f", {100 * (median / medians['trainer'] - 1):+5.1f} % vs trainer"
        print(f"{name:47} {images / median:8.0f} images/s  "
              f"({overhead:+5.1f} % time vs bare loop{versus})")
    teacher = load_teacher(once.distill, data, torch.device("cpu"))
    started = time.perf_counter()
    teacher.split_logits(data.train)
    once_s = time.perf_counter() - started
    per_step = (medians["trainer + distillation, teacher per batch"] - medians["trainer"]) / args.chunk
    print(f"teacher once: its pass over the {len(data.train_y)} training images takes "
          f"{once_s:.2f} s, paid once per training set (the per-batch teacher's overhead of "
          f"about {once_s / per_step:.0f} steps)")
    evaluation = [time.perf_counter()]
    trainer.evaluate(trainer.train_set)
    trainer.evaluate(trainer.val_set)
    evaluation.append(time.perf_counter())
    epoch = trainer.steps_per_epoch * medians["trainer"] / args.chunk
    print(f"per-epoch evaluation (train + val sets, eval mode): {evaluation[1] - evaluation[0]:.2f} s "
          f"next to {epoch:.2f} s of training ({trainer.steps_per_epoch} steps)")


def write_teacher(folder: Path, arch: Architecture) -> str:
    """An exported config of `arch` with its own (initial) weights: its speed is a trained one's."""
    torch.manual_seed(1)
    torch.save(build_model(arch).state_dict(), folder / "teacher.pt")
    path = folder / "teacher.yaml"
    path.write_text(yaml.safe_dump({"architecture": arch.to_dict(), "arch_id": arch.arch_id,
                                    "weights": "teacher.pt"}))
    return str(path)


if __name__ == "__main__":
    main()
