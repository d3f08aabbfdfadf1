"""GPU check: one command that measures hybrid-nas's GPU path within a time budget, for a machine
with a GPU that is lent for a few minutes (docs/user-guide/gpu-check.md says what it measures).

    python benchmarks/gpu_check.py --out OUT/gpu_check --minutes 8
    python benchmarks/gpu_check.py --out /tmp/gpu_check --cpu-dry-run     # tiny, on the CPU

Sections, each guarded (one that fails is recorded with its error and the rest still run), and
the results written to OUT/gpu_check.json and OUT/gpu_check.md after every step:
- cuda_tests: `pytest -m cuda` (tests/test_cuda.py and the GPU batches test), pass/fail counts;
- throughput: the trainer against a bare PyTorch loop (benchmarks/bench_trainer.BareLoop: same
  model, batch, optimiser, synthetic uint8 images on the host), images/s and their ratio, with
  bf16 autocast + channels-last on and off, for a default-space network at 32 px and CoAtNet-0
  at 224 px, and torch.compile on for the first (the trainer's `compile` option);
- search: a real search (`hybrid-nas search`, i.e. `nas.search.search`) with fractional GPUs:
  wall time, time inside trials, per-trial overhead, GPU utilisation sampled while it runs;
- study: the layout study's quick protocol (its five layouts; as many seeds as the minutes left
  allow, stopped at the deadline), cells and minutes stated.
Nothing is downloaded: the data are synthetic pixels and scikit-learn's bundled digits.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ElementTree
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from bench_trainer import BareLoop, interleaved_medians  # noqa: E402
from evaluators.batches import ImageSplit  # noqa: E402
from evaluators.data import ImageData  # noqa: E402
from evaluators.trainer import TrainConfig, Trainer  # noqa: E402
from gpu_utilisation import GpuSampler  # noqa: E402
from search_spaces.architecture import Architecture, Stage, Stem  # noqa: E402
from search_spaces.presets import get_preset  # noqa: E402
from search_spaces.space import default_space  # noqa: E402

SECTIONS = ("environment", "cuda_tests", "throughput", "search", "study")
# Share of the whole budget each timed section may take at most (the study takes what is left).
SHARES = {"cuda_tests": 0.2, "throughput": 0.35, "search": 0.25}
MIN_SECTION_S = 30  # kept back for each later section
STOP_GRACE_S = 45  # after SIGTERM, a search or study ends its trials; then its processes are killed
TRAINER_AIM = 0.95  # the trainer's images/s at least 95% of the bare loop's


@dataclass(frozen=True)
class Sizes:
    """Everything that differs between the GPU check and its CPU dry run."""

    device: str
    cuda_test_paths: tuple[str, ...]  # where `pytest -m cuda` looks
    small_batch: int            # the default-space network at 32 px
    small_images: int
    small_chunk: int            # steps per timed chunk
    coatnet_resolution: int     # CoAtNet-0
    coatnet_batch: int
    coatnet_images: int
    coatnet_chunk: int
    warmup_chunks: int
    rounds: int
    compile: bool               # measure torch.compile (TorchInductor)
    search_trials: int
    search_concurrent: int
    search_gpus_per_trial: float
    search_trial: dict[str, Any]  # changes to the default search's trial
    search_train: dict[str, Any]  # changes to the default search's trial.train
    search_scheduler: str | None  # None: the default search's
    num_cpus: int | None         # of the local Ray (None: every CPU)
    study: dict[str, Any]        # changes to the quick protocol (seeds are chosen by time left)


GPU_SIZES = Sizes(
    device="cuda", cuda_test_paths=("tests",), small_batch=64, small_images=4096, small_chunk=10,
    coatnet_resolution=224, coatnet_batch=128, coatnet_images=1024, coatnet_chunk=5,
    warmup_chunks=2, rounds=8, compile=True,
    search_trials=12, search_concurrent=4, search_gpus_per_trial=0.25, search_trial={},
    search_train={},
    search_scheduler=None, num_cpus=None, study={})

DRY_RUN_SIZES = Sizes(  # the two test files that hold CUDA tests: collecting all takes ~10 s
    device="cpu", cuda_test_paths=("tests/test_cuda.py", "tests/test_data_cache.py"), small_batch=8, small_images=64, small_chunk=1,
    coatnet_resolution=64, coatnet_batch=2, coatnet_images=8, coatnet_chunk=1,
    warmup_chunks=1, rounds=2, compile=False,
    search_trials=2, search_concurrent=2, search_gpus_per_trial=0.0,
    search_trial={"resolution": 16, "small_per_class": 5, "val_fraction": 0.1},
    search_train={"epochs": 2, "steps_per_epoch": 2, "batch_size": 16, "warmup_epochs": 1.0,
                  "train_eval_images": 64},
    search_scheduler="none", num_cpus=2,
    study={"resolution": 16, "seeds": [0], "evaluations": 2, "heldout_per_class": 5,
           "architectures": {"width_scale": 0.0625, "head_size": 4, "s1_stride": 1,
                             "layouts": ["C-C-C-C", "C-T-T-T"]},
           "sizes": [{"per_class": 5, "steps": 2}],
           "train": {"train_eval_images": 50}, "cheap": {"matched_losses": [2.0], "steps": 2},
           "bootstrap": 50})


# ---- the report: written after every step ---------------------------------------------------------
class Report:
    """gpu_check.json and gpu_check.md in `out`, rewritten whenever a section changes, so that a
    check killed at any moment leaves what it measured so far."""

    def __init__(self, out: Path, header: dict[str, Any]):
        self.out = out
        self.data: dict[str, Any] = {**header, "sections": {
            name: {"status": "pending"} for name in SECTIONS}}
        out.mkdir(parents=True, exist_ok=True)
        self.save()

    @contextmanager
    def section(self, name: str) -> Iterator[dict[str, Any]]:
        """The section's record, to fill as it goes; an exception marks it failed with the error
        (and what it had recorded stays); it never propagates."""
        record: dict[str, Any] = {"status": "running", "started": now_iso()}
        self.data["sections"][name] = record
        self.save()
        started = time.time()
        try:
            yield record
            if record["status"] == "running":
                record["status"] = "done"
        except Exception as exc:  # noqa: BLE001 - one failing section must not end the check
            record["status"] = "failed"
            record["error"] = f"{type(exc).__name__}: {exc}"
            record["traceback"] = traceback.format_exc(limit=-6)
            print(f"gpu_check: {name} failed: {record['error']}", file=sys.stderr, flush=True)
        finally:
            record["seconds"] = round(time.time() - started, 1)
            self.save()

    def skip(self, name: str, reason: str) -> None:
        self.data["sections"][name] = {"status": "skipped", "reason": reason}
        self.save()

    def save(self) -> None:
        self.data["updated"] = now_iso()
        write_atomic(self.out / "gpu_check.json", json.dumps(plain(self.data), indent=1) + "\n")
        write_atomic(self.out / "gpu_check.md", markdown(self.data))


class Budget:
    """The check's deadline and each section's share of it."""

    def __init__(self, minutes: float):
        self.total_s = minutes * 60
        self.end = time.time() + self.total_s

    def left(self) -> float:
        return self.end - time.time()

    def deadline(self, share: float | None, later_sections: int) -> float:
        """Now + `share` of the whole budget, never past the point that leaves MIN_SECTION_S
        for each later section; None: all that is left but MIN_SECTION_S, in which a section
        stopped at its deadline ends."""
        until = self.end - max(later_sections, 1 if share is None else 0) * MIN_SECTION_S
        return until if share is None else min(time.time() + share * self.total_s, until)


# ---- environment ------------------------------------------------------------------------------------
def environment(record: dict[str, Any], sizes: Sizes) -> None:
    record.update(python=platform.python_version(), torch=torch.__version__,
                  torch_cuda=torch.version.cuda, platform=platform.platform(),
                  cpus=os.cpu_count(), cuda_available=torch.cuda.is_available(),
                  git_commit=git_commit())
    if sizes.device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("no CUDA device (torch.cuda.is_available() is False): install "
                               "torch's CUDA build, or run with --cpu-dry-run")
        props = torch.cuda.get_device_properties(0)
        record.update(gpu=props.name, gpu_count=torch.cuda.device_count(),
                      gpu_memory_gib=round(props.total_memory / 2 ** 30, 1),
                      capability=f"{props.major}.{props.minor}",
                      bf16_supported=torch.cuda.is_bf16_supported(),
                      cudnn=torch.backends.cudnn.version(), driver=nvidia_driver(),
                      # what "fp32" means in the throughput cases: torch's defaults, untouched
                      fp32_matmul_tf32=torch.backends.cuda.matmul.allow_tf32,
                      fp32_cudnn_tf32=torch.backends.cudnn.allow_tf32)


def git_commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def nvidia_driver() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                          capture_output=True, text=True, timeout=20)
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else None


# ---- 1. the CUDA tests -------------------------------------------------------------------------------
def cuda_tests(record: dict[str, Any], sizes: Sizes, out: Path, deadline: float) -> None:
    """`pytest -m cuda` over tests/, counted from its JUnit XML."""
    junit = out / "cuda_tests.xml"
    command = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-rfEs", "-p", "no:cacheprovider",
               f"--junitxml={junit}", *sizes.cuda_test_paths]
    record["command"] = " ".join(command[1:])
    code, seconds, stopped = run_until(command, deadline, out / "cuda_tests.log")
    record.update(exit_code=code, wall_s=round(seconds, 1), stopped_at_deadline=stopped)
    if stopped or not junit.is_file():
        raise RuntimeError(f"pytest {'ran out of time' if stopped else 'wrote no report'} "
                           f"(exit code {code}): see cuda_tests.log")
    record.update(junit_counts(junit))
    record["log_tail"] = tail(out / "cuda_tests.log", 1500)
    bad = record["failed"] + record["errors"]
    if bad or code not in (0, 5):  # 5: no test collected
        raise RuntimeError(f"{bad} of {record['tests']} CUDA tests failed (exit code {code})")


def junit_counts(path: Path) -> dict[str, Any]:
    """Counts of passed/failed/errors/skipped tests and each non-passing one's message."""
    counts = {"tests": 0, "passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    problems = []
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        counts["tests"] += 1
        outcome = next((child for child in case if child.tag in ("failure", "error", "skipped")),
                       None)
        kind = {"failure": "failed", "error": "errors", "skipped": "skipped"}.get(
            getattr(outcome, "tag", None), "passed")
        counts[kind] += 1
        if kind in ("failed", "errors"):
            problems.append({"test": f"{case.get('classname')}::{case.get('name')}",
                             "outcome": kind, "message": (outcome.get("message") or "")[:500]})
    return {**counts, "not_passed": problems}


# ---- 2. trainer throughput against a bare loop ------------------------------------------------------
def default_space_network() -> Architecture:
    """The largest network of the default (digits) search space at 32 px: C-C-T-T, both block
    kinds a search trains."""
    arch = Architecture(Stem("conv", 24),
                        (Stage("C", 2, 32, stride=1), Stage("C", 2, 48, stride=2),
                         Stage("T", 3, 96, stride=2, head_size=32),
                         Stage("T", 2, 128, stride=2, head_size=32)),
                        resolution=32, in_channels=1, num_classes=10)
    reason = default_space().explain(arch)
    if reason is not None:
        raise ValueError(f"the check's default-space network is not in the default space: {reason}")
    return arch


def synthetic_data(images: int, resolution: int, channels: int, classes: int) -> ImageData:
    """Random uint8 pixels (N, R, R, C) on the host, as a data set's cache holds them."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (images + 2, resolution, resolution, channels), dtype=np.uint8)
    labels = torch.from_numpy(rng.integers(0, classes, images + 2)).long()
    train = ImageSplit(pixels, np.arange(images), labels[:images])
    val = ImageSplit(pixels, np.arange(images, images + 2), labels[images:])  # never evaluated
    return ImageData(train=train, val=val, num_classes=classes, in_channels=channels,
                     class_names=tuple(map(str, range(classes))), name="synthetic",
                     mean=(0.5,) * channels, std=(0.29,) * channels)


@dataclass(frozen=True)
class ThroughputCase:
    name: str
    model: str
    arch: Architecture
    batch: int
    images: int
    chunk: int
    fast: bool      # bf16 autocast + channels-last
    compile: bool = False
    min_seconds: float = 10.0  # started only with this much of the section's time left


def throughput_cases(sizes: Sizes) -> list[ThroughputCase]:
    small = default_space_network()
    coatnet = get_preset("coatnet-0", resolution=sizes.coatnet_resolution)
    at = f"{sizes.coatnet_resolution} px"
    fast, slow = "bf16 + channels-last", "fp32, NCHW"

    def small_case(mode: str, **extra: Any) -> ThroughputCase:
        return ThroughputCase(f"default-space C-C-T-T, 32 px, {mode}", "default-space", small,
                              sizes.small_batch, sizes.small_images, sizes.small_chunk,
                              mode != slow, **extra)

    def coatnet_case(mode: str) -> ThroughputCase:
        return ThroughputCase(f"CoAtNet-0, {at}, {mode}", "coatnet-0", coatnet,
                              sizes.coatnet_batch, sizes.coatnet_images, sizes.coatnet_chunk,
                              mode != slow)

    # In the order of the aims, should time run out: the trainer against the bare loop, bf16
    # against fp32 on CoAtNet-0, compile (two compilations: kept for when 2 minutes are left)
    cases = [small_case(fast), coatnet_case(fast), coatnet_case(slow)]
    if sizes.compile:
        cases.append(small_case(f"{fast}, torch.compile", compile=True, min_seconds=120.0))
    return cases + [small_case(slow)]


def measure_case(case: ThroughputCase, sizes: Sizes) -> dict[str, Any]:
    """Trainer and bare loop side by side: warm-up chunks (their time, compilation included,
    is reported), then `rounds` interleaved chunks each; images/s from the median chunk."""
    data = synthetic_data(case.images, case.arch.resolution, case.arch.in_channels,
                          case.arch.num_classes)
    config = TrainConfig(epochs=1000, batch_size=case.batch, device=sizes.device, augment=False,
                         bf16_autocast=case.fast, channels_last=case.fast, compile=case.compile,
                         threads=None)
    cuda = sizes.device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer = Trainer(case.arch, data, config)
    bare = BareLoop(case.arch, torch.from_numpy(np.asarray(data.train.pixels[:case.images])),
                    data.train_y, trainer.batch_size, config.lr,
                    memory_format=torch.channels_last if case.fast else torch.contiguous_format,
                    device=sizes.device, bf16=case.fast, compile=case.compile,
                    mean=data.mean, std=data.std)
    runners: dict[str, Callable[[], float]] = {
        "trainer": lambda: trainer.train_steps(case.chunk)[1],
        "bare_loop": lambda: bare.train_steps(case.chunk)}
    warmup = {name: round(sum(run() for _ in range(sizes.warmup_chunks)), 2)
              for name, run in runners.items()}
    medians = interleaved_medians(runners, sizes.rounds)
    images = case.chunk * trainer.batch_size
    result = {
        "case": case.name, "model": case.model, "resolution": case.arch.resolution,
        "batch": trainer.batch_size, "bf16_autocast": trainer.autocast_dtype is not None,
        "channels_last": case.fast, "compile": case.compile,
        "params": sum(p.numel() for p in trainer.model.parameters()),
        "trainer_images_per_s": round(images / medians["trainer"], 1),
        "bare_loop_images_per_s": round(images / medians["bare_loop"], 1),
        "trainer_vs_bare_loop": round(medians["bare_loop"] / medians["trainer"], 4),
        "warmup_s": warmup, "rounds": sizes.rounds, "steps_per_chunk": case.chunk}
    if cuda:
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
    return result


def throughput(record: dict[str, Any], sizes: Sizes, deadline: float, report: Report) -> None:
    if sizes.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("no CUDA device to measure (torch.cuda.is_available() is False)")
    cases = throughput_cases(sizes)
    record.update(cases=[], skipped_cases=[], device=sizes.device,
                  how=("interleaved chunks of steps in a shuffled order each round, median chunk "
                       "time; the trainer without augmentation; synthetic uint8 images on the "
                       "host; every chunk ends with torch.cuda.synchronize(), so each starts "
                       "on an idle GPU and is timed until the GPU is done"))
    if not sizes.compile:
        record["compile_not_measured"] = (
            "the CPU dry run does not measure torch.compile: TorchInductor took ~70 s to compile "
            "the smallest network on 2 busy cores (2026-12-03); tests/test_trainer.py's slow "
            "test_compiled_training_follows_eager_training covers the option")
    failures = 0
    for case in cases:
        if deadline - time.time() < case.min_seconds:
            record["skipped_cases"].append({"case": case.name, "reason": "out of time"})
            continue
        try:
            record["cases"].append(measure_case(case, sizes))
        except Exception as exc:  # noqa: BLE001 - one case failing leaves the others
            failures += 1
            record["cases"].append({"case": case.name, "error": f"{type(exc).__name__}: {exc}",
                                    "traceback": traceback.format_exc(limit=-4)})
        finally:  # a failed case's models die with its traceback: free their memory now
            gc.collect()
            if sizes.device == "cuda":
                torch.cuda.empty_cache()
        report.save()
    record["aims"] = throughput_aims(record["cases"])
    if failures:
        raise RuntimeError(f"{failures} of {len(cases)} throughput cases failed")


def throughput_aims(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """The trainer >= 95% of the bare loop's images/s (each case); bf16 + channels-last ahead
    of fp32 NCHW on CoAtNet-0 (images/s ratio, trainer and bare loop)."""
    measured = [c for c in cases if "error" not in c]
    ratios = {c["case"]: c["trainer_vs_bare_loop"] for c in measured}
    aims: dict[str, Any] = {"trainer_vs_bare_loop": ratios,
                            "trainer_at_least_95pct": bool(ratios) and
                            all(r >= TRAINER_AIM for r in ratios.values())}
    for model in ("coatnet-0", "default-space"):
        on = next((c for c in measured if c["model"] == model and c["channels_last"]
                   and not c["compile"]), None)
        off = next((c for c in measured if c["model"] == model and not c["channels_last"]), None)
        if on and off:
            aims[f"{model}_fast_vs_fp32"] = {
                who: round(on[f"{who}_images_per_s"] / off[f"{who}_images_per_s"], 3)
                for who in ("trainer", "bare_loop")}
    compiled = next((c for c in measured if c["compile"]), None)
    eager = next((c for c in measured if c["model"] == "default-space" and c["channels_last"]
                  and not c["compile"]), None)
    if compiled and eager:
        aims["compile_vs_eager"] = {who: round(compiled[f"{who}_images_per_s"]
                                               / eager[f"{who}_images_per_s"], 3)
                                    for who in ("trainer", "bare_loop")}
    coatnet = aims.get("coatnet-0_fast_vs_fp32")
    bf16 = any(c["bf16_autocast"] for c in measured if c["model"] == "coatnet-0")
    # None where it was not measured, or where nothing ran in bf16 (the CPU runs fp32)
    aims["bf16_ahead_on_coatnet0"] = coatnet["trainer"] > 1.0 if coatnet and bf16 else None
    return aims


# ---- 3. a search with fractional GPUs --------------------------------------------------------------
def search_check(record: dict[str, Any], sizes: Sizes, work: Path, deadline: float,
                 gpus_per_trial: float) -> None:
    from nas.config import ResourcesConfig, SchedulerConfig, default_config
    from results.run_directory import RunDirectory

    config = default_config()
    trial = config.trial.replace(**sizes.search_trial,
                                 train=config.trial.train.replace(**sizes.search_train))
    config = config.replace(
        name="gpu-check", trial=trial, num_trials=sizes.search_trials, keep_weights=True,
        resources=ResourcesConfig(cpus_per_trial=1, gpus_per_trial=gpus_per_trial,
                                  max_concurrent_trials=sizes.search_concurrent,
                                  num_cpus=sizes.num_cpus),
        **({} if sizes.search_scheduler is None else
           {"scheduler": SchedulerConfig(name=sizes.search_scheduler)}))
    path, run = work / "search.yaml", work / "search_run"
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    command = [sys.executable, "-m", "nas.cli", "search", str(path), "--out", str(run)]
    record.update(command=" ".join(command[1:]), trials=sizes.search_trials,
                  gpus_per_trial=gpus_per_trial, concurrent=sizes.search_concurrent,
                  epochs=config.epochs, steps_per_epoch=config.trial.train.steps_per_epoch)
    with GpuSampler() as sampler:
        code, seconds, stopped = run_until(command, deadline, work / "search.log")
    record.update(exit_code=code, wall_s=round(seconds, 1), stopped_at_deadline=stopped,
                  gpu_utilisation=sampler.summary(), log_tail=tail(work / "search.log", 1500))
    store = RunDirectory(run)
    if not store.is_run():
        raise RuntimeError(f"the search left no run directory (exit code {code}): "
                           f"{tail(work / 'search.log', 300)}")
    records = [r for r in store.read_records() if r["status"] != "rejected"]
    summary = store.read_summary() or {}
    inside = [r["metrics"].get("wall_time_s") for r in records]
    outside = [r.get("wall_time_s") for r in records]
    paired = [(o, i) for o, i in zip(outside, inside) if is_number(o) and is_number(i)]
    record.update(
        search_wall_s=summary.get("wall_time_s"), ray_startup_s=summary.get("ray_startup_s"),
        counts=summary.get("counts") or {s: sum(r["status"] == s for r in records)
                                        for s in {r["status"] for r in records}},
        trials_timed=len(paired),
        time_in_trials_s=round(sum(i for _, i in paired), 1),
        time_of_trials_s=round(sum(o for o, _ in paired), 1),
        per_trial_overhead_s=round(sum(o - i for o, i in paired) / len(paired), 2) if paired else None,
        trial_images_per_s_mean=mean([r["metrics"].get("images_per_s") for r in records]),
        how=("time in trials: each trial's own clock (run_trial, from building its trainers to its "
             "last epoch); time of trials: the driver's, from the trial's start to its end; "
             "per-trial overhead: their difference (scheduling, the worker, loading data, CUDA "
             "set-up), averaged"))
    if summary.get("wall_time_s") and record["time_of_trials_s"]:
        busy = summary["wall_time_s"] - (summary.get("ray_startup_s") or 0.0)
        record["trials_running_on_average"] = round(record["time_of_trials_s"] / busy, 2)
    if code != 0:
        raise RuntimeError(f"the search ended with exit code {code}"
                           + (" (stopped at the section's deadline)" if stopped else ""))


# ---- 4. the layout study ----------------------------------------------------------------------------
def study_check(record: dict[str, Any], sizes: Sizes, work: Path, out: Path, deadline: float,
                gpus_per_trial: float) -> None:
    from nas.layout_study import StudyConfig, load_study_config
    from results.layout_study.study_directory import StudyDirectory

    base = load_study_config(quick=True).to_dict()
    left_min = (deadline - time.time()) / 60
    # one seed (20 cells of the quick protocol) per two minutes left, at most its three
    seeds = sizes.study.get("seeds") or list(range(max(1, min(3, int(left_min // 2)))))
    base.update(sizes.study, name="gpu-check-study", seeds=seeds, distillation=None, convit=None,
                resources={"cpus_per_trial": 1, "gpus_per_trial": gpus_per_trial,
                           "max_concurrent_trials": sizes.search_concurrent,
                           "num_cpus": sizes.num_cpus})
    config = StudyConfig.from_dict(base)
    cells = len(config.architectures.layouts) * len(config.sizes) * len(config.seeds)
    path, folder = work / "study.yaml", work / "study"
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    command = [sys.executable, "-m", "nas.cli", "study", str(path), "--out", str(folder)]
    record.update(command=" ".join(command[1:]), protocol="quick, layouts only (no comparisons)",
                  seeds=list(config.seeds), sizes=[s.label for s in config.sizes],
                  layouts=list(config.architectures.layouts),
                  cells_planned=cells, minutes_allowed=round(left_min, 1))
    code, seconds, stopped = run_until(command, deadline, work / "study.log")
    record.update(exit_code=code, wall_min=round(seconds / 60, 2), stopped_at_deadline=stopped,
                  log_tail=tail(work / "study.log", 1500))
    if folder.is_dir():
        done, _ = StudyDirectory(folder).read_cells()
        record["cells"] = {status: sum(c["status"] == status for c in done)
                           for status in sorted({c["status"] for c in done})}
        times = [c.get("wall_time_s") for c in done if c["status"] == "completed"]
        record["cell_wall_s_mean"] = mean(times)
        for name in ("rankings.json", "study.csv"):
            if (folder / name).is_file():
                (out / "study").mkdir(exist_ok=True)
                shutil.copy(folder / name, out / "study" / name)
        rankings = folder / "rankings.json"
        if rankings.is_file():
            ranks = json.loads(rankings.read_text())
            record["rankings"] = {reading: {k: ranks[reading].get(k) for k in
                                            ("order", "paper", "tau_b", "interval_95")}
                                  for reading in ("generalization", "capacity") if reading in ranks}
    if code != 0 and not stopped:
        raise RuntimeError(f"the study ended with exit code {code}: {tail(work / 'study.log', 300)}")


# ---- running things until a deadline ---------------------------------------------------------------
def run_until(command: list[str], deadline: float, log: Path) -> tuple[int | None, float, bool]:
    """Run `command` from the repository root, its output to `log`, until it ends or `deadline`
    passes; then SIGTERM (a search or a study stops its trials and keeps its records) and, after
    STOP_GRACE_S, SIGKILL to what is left of its process tree, by pid. Returns (exit code,
    seconds, whether it was stopped at the deadline)."""
    started = time.time()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as sink:
        process = subprocess.Popen(command, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT,
                                   env=env)
        try:
            return process.wait(timeout=max(1.0, deadline - time.time())), \
                time.time() - started, False
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                kill_tree(process.pid)
                process.wait()
            return process.returncode, time.time() - started, True


def kill_tree(pid: int) -> None:
    import psutil

    try:
        parent = psutil.Process(pid)
        for process in parent.children(recursive=True) + [parent]:
            process.kill()
    except psutil.Error:
        pass


# ---- small helpers -----------------------------------------------------------------------------------
def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def mean(values: list[Any]) -> float | None:
    numbers = [v for v in values if is_number(v)]
    return round(sum(numbers) / len(numbers), 2) if numbers else None


def tail(path: Path, chars: int) -> str:
    return path.read_text(errors="replace")[-chars:] if path.is_file() else ""


def write_atomic(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def plain(value: Any) -> Any:
    """JSON-safe: NaN and inf as null."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def markdown(data: dict[str, Any]) -> str:
    """The short summary: machine, date, each section's status and its headline numbers."""
    env = data["sections"]["environment"]
    lines = [f"# GPU check ({'CPU dry run' if data['dry_run'] else 'GPU'})", "",
             f"{env.get('gpu') or 'no GPU'}; torch {env.get('torch', '?')} (CUDA "
             f"{env.get('torch_cuda')}); {env.get('cpus', '?')} CPUs; started {data['started']}, "
             f"updated {data['updated']}; budget {data['minutes']} min; commit "
             f"{env.get('git_commit') or 'unknown'}.", ""]
    for name in SECTIONS[1:]:
        s = data["sections"][name]
        status = s["status"] + (f" ({s['seconds']} s)" if "seconds" in s else "")
        lines.append(f"## {name}: {status}")
        if s.get("error"):
            lines.append(f"error: `{s['error'].splitlines()[0][:300]}`")
        if s.get("reason"):
            lines.append(s["reason"])
        if name == "cuda_tests" and "tests" in s:
            lines.append(f"{s['passed']} passed, {s['failed']} failed, {s['errors']} errors, "
                         f"{s['skipped']} skipped of {s['tests']}")
            lines += [f"- {p['test']}: {p['outcome']}: {p['message'][:200]}"
                      for p in s.get("not_passed", [])]
        if name == "throughput" and s.get("cases"):
            lines += ["", "| case | trainer img/s | bare loop img/s | trainer / bare | warm-up s "
                      "(trainer, bare) |", "|---|---|---|---|---|"]
            for c in s["cases"]:
                if "error" in c:
                    lines.append(f"| {c['case']} | failed: {c['error'][:120]} | | | |")
                else:
                    lines.append(f"| {c['case']} | {c['trainer_images_per_s']:,.0f} | "
                                 f"{c['bare_loop_images_per_s']:,.0f} | "
                                 f"{c['trainer_vs_bare_loop']:.3f} | {c['warmup_s']['trainer']}, "
                                 f"{c['warmup_s']['bare_loop']} |")
            aims = s.get("aims") or {}
            lines.append("")
            lines.append(f"trainer >= {TRAINER_AIM:.0%} of the bare loop in every case: "
                         f"{aims.get('trainer_at_least_95pct')}; bf16 + channels-last over fp32 "
                         f"NCHW on CoAtNet-0: {aims.get('coatnet-0_fast_vs_fp32')}; compile over "
                         f"eager: {aims.get('compile_vs_eager', 'not measured')}")
        if name == "search" and "wall_s" in s:
            gpu = s.get("gpu_utilisation") or {}
            utilisation = (f"GPU utilisation mean {gpu.get('utilization_mean_pct')}%, max "
                           f"{gpu.get('utilization_max_pct')}%, busy in {gpu.get('busy_share')} "
                           f"of {gpu.get('samples')} samples ({gpu.get('source')}); memory up to "
                           f"{gpu.get('memory_used_max_mib')} MiB" if gpu.get("samples") else
                           f"GPU utilisation not sampled: {gpu.get('unavailable')}")
            lines.append(f"{s.get('counts')}; {s['trials']} trials, {s['concurrent']} at a time, "
                         f"{s['gpus_per_trial']} GPU each; wall {s['wall_s']} s (search "
                         f"{s.get('search_wall_s')} s, Ray start-up {s.get('ray_startup_s')} s); "
                         f"time in trials {s.get('time_in_trials_s')} s, of trials "
                         f"{s.get('time_of_trials_s')} s, per-trial overhead "
                         f"{s.get('per_trial_overhead_s')} s; {utilisation}")
        if name == "study" and "cells_planned" in s:
            lines.append(f"{s.get('cells')} of {s['cells_planned']} cells ({len(s['seeds'])} "
                         f"seed(s) x {len(s['sizes'])} sizes x {len(s['layouts'])} layouts) in "
                         f"{s.get('wall_min')} "
                         f"min" + (" (stopped at the deadline)" if s.get("stopped_at_deadline") else ""))
            for reading, r in (s.get("rankings") or {}).items():
                tau = f"{r['tau_b']:.2f}" if is_number(r["tau_b"]) else str(r["tau_b"])
                lines.append(f"- {reading}: {' > '.join(r['order'])}, tau-b {tau}")
        lines.append("")
    return "\n".join(lines)


# ---- the command -------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True,
                        help="folder for gpu_check.json, gpu_check.md and the test log")
    parser.add_argument("--minutes", type=float, default=8.0, help="time budget (default 8)")
    parser.add_argument("--cpu-dry-run", action="store_true",
                        help="the same check on the CPU with tiny sizes (CI runs it)")
    parser.add_argument("--sections", default=",".join(SECTIONS[1:]),
                        help=f"comma-separated, of {', '.join(SECTIONS[1:])} (default: all); "
                             "e.g. to rerun one that failed")
    parser.add_argument("--gpus-per-trial", type=float,
                        help="GPUs per trial of the search and the study (default 0.25; 0 in "
                             "the dry run)")
    parser.add_argument("--work", type=Path,
                        help="folder for the search's run and the study (default: a new "
                             "temporary folder)")
    args = parser.parse_args(argv)
    asked = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(asked) - set(SECTIONS[1:]))
    if unknown:
        parser.error(f"--sections: unknown section {unknown[0]!r} (known: {', '.join(SECTIONS[1:])})")
    sizes = DRY_RUN_SIZES if args.cpu_dry_run else GPU_SIZES
    gpus_per_trial = sizes.search_gpus_per_trial if args.gpus_per_trial is None else args.gpus_per_trial
    if args.cpu_dry_run:
        torch.set_num_threads(1)
    budget = Budget(args.minutes)
    out = args.out.resolve()
    work = (args.work or Path(tempfile.mkdtemp(prefix="gpu-check-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    report = Report(out, {"dry_run": args.cpu_dry_run, "minutes": args.minutes,
                          "started": now_iso(), "sizes": dataclasses.asdict(sizes),
                          "gpus_per_trial": gpus_per_trial, "work": str(work)})
    with report.section("environment") as record:
        environment(record, sizes)

    timed = [s for s in SECTIONS[1:] if s in asked]
    for name in SECTIONS[1:]:
        if name not in asked:
            report.skip(name, "not in --sections")
            continue
        later = len(timed) - timed.index(name) - 1
        deadline = budget.deadline(SHARES.get(name), later)
        if deadline - time.time() < 5:
            report.skip(name, f"out of time ({budget.left():.0f} s of the budget left)")
            continue
        with report.section(name) as record:
            record["seconds_allowed"] = round(deadline - time.time())
            if name == "cuda_tests":
                cuda_tests(record, sizes, out, deadline)
            elif name == "throughput":
                throughput(record, sizes, deadline, report)
            elif name == "search":
                search_check(record, sizes, work, deadline, gpus_per_trial)
            else:
                study_check(record, sizes, work, out, deadline, gpus_per_trial)
    report.data["ended"] = now_iso()
    report.save()
    failed = [n for n, s in report.data["sections"].items() if s["status"] == "failed"]
    print((report.out / "gpu_check.md").read_text(), flush=True)
    print(f"gpu_check: {len(failed)} section(s) failed{': ' + ', '.join(failed) if failed else ''}; "
          f"results in {out}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
