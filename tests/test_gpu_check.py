"""benchmarks/gpu_check.py: its CPU dry run (every section, finite numbers), a section that fails
recorded as failed while the others run, the time budget, and the GPU utilisation sampler's
nvidia-smi path (a stand-in nvidia-smi on PATH)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from gpu_utilisation import GpuSampler, parse_query_line  # noqa: E402

SCRIPT = REPO / "benchmarks" / "gpu_check.py"
SECTIONS = ("environment", "cuda_tests", "throughput", "search", "study")


def run_check(tmp_path: Path, *args: str, timeout: float = 300) -> tuple[int, dict, str]:
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--work",
                           str(tmp_path / "work"), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)
    report = json.loads((out / "gpu_check.json").read_text())
    assert set(report["sections"]) == set(SECTIONS)
    assert (out / "gpu_check.md").read_text().startswith("# GPU check")
    return done.returncode, report, done.stdout + done.stderr


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_cpu_dry_run_measures_every_section(tmp_path):
    started = time.time()
    code, report, output = run_check(tmp_path, "--cpu-dry-run")
    seconds = time.time() - started
    assert code == 0, output
    sections = report["sections"]
    assert {name: s["status"] for name, s in sections.items()} == dict.fromkeys(SECTIONS, "done")
    assert report["dry_run"] and sections["environment"]["torch"]

    tests = sections["cuda_tests"]  # on the CPU every CUDA test is collected and skipped
    assert tests["tests"] >= 11 and tests["skipped"] == tests["tests"]
    assert tests["passed"] == tests["failed"] == tests["errors"] == 0

    cases = sections["throughput"]["cases"]
    assert len(cases) == 4 and not sections["throughput"]["skipped_cases"]
    for case in cases:
        assert positive(case["trainer_images_per_s"]) and positive(case["bare_loop_images_per_s"])
        assert positive(case["trainer_vs_bare_loop"]) and not case["bf16_autocast"]
    assert {c["model"] for c in cases} == {"default-space", "coatnet-0"}
    assert {c["channels_last"] for c in cases} == {True, False}
    aims = sections["throughput"]["aims"]
    assert len(aims["trainer_vs_bare_loop"]) == 4 and aims["bf16_ahead_on_coatnet0"] is None
    assert "compile_not_measured" in sections["throughput"]

    search = sections["search"]
    assert search["exit_code"] == 0 and search["counts"]["completed"] == 2
    assert search["trials_timed"] == 2
    for name in ("wall_s", "search_wall_s", "time_in_trials_s", "time_of_trials_s"):
        assert positive(search[name]), name
    assert search["time_of_trials_s"] >= search["time_in_trials_s"]
    assert math.isfinite(search["per_trial_overhead_s"]) and search["per_trial_overhead_s"] >= 0
    assert search["gpu_utilisation"]["samples"] == 0 and search["gpu_utilisation"]["unavailable"]

    study = sections["study"]
    assert study["cells"] == {"completed": study["cells_planned"]} and study["cells_planned"] == 2
    assert set(study["rankings"]) == {"generalization", "capacity"}
    assert (tmp_path / "out" / "study" / "rankings.json").is_file()
    print(f"dry run: {seconds:.0f} s")  # CI's budget: well under 90 s on two busy cores


@pytest.mark.slow
def test_failing_sections_are_recorded_and_the_others_still_run(tmp_path):
    """The GPU check on a machine without CUDA, with a GPU share no search accepts: the
    environment and the throughput fail, the CUDA tests run (skipped) between them, the search
    fails on its own config (the field named), and each failure is written down."""
    code, report, output = run_check(tmp_path, "--minutes", "3", "--gpus-per-trial", "1.5",
                                     "--sections", "cuda_tests,throughput,search", timeout=180)
    assert code == 1, output
    sections = report["sections"]
    statuses = {name: s["status"] for name, s in sections.items()}
    assert statuses == {"environment": "failed", "cuda_tests": "done", "throughput": "failed",
                        "search": "failed", "study": "skipped"}
    assert "no CUDA device" in sections["environment"]["error"]
    assert sections["cuda_tests"]["skipped"] == sections["cuda_tests"]["tests"] > 0
    assert "no CUDA device" in sections["throughput"]["error"]
    assert "resources.gpus_per_trial" in sections["search"]["error"]
    assert sections["study"]["reason"] == "not in --sections"
    assert "## search: failed" in (tmp_path / "out" / "gpu_check.md").read_text()


def test_sections_past_the_budget_are_skipped(tmp_path):
    code, report, output = run_check(tmp_path, "--cpu-dry-run", "--minutes", "0.05", timeout=120)
    assert code == 0, output
    sections = report["sections"]
    assert sections["environment"]["status"] == "done"
    for name in SECTIONS[1:]:
        assert sections[name]["status"] == "skipped" and "out of time" in sections[name]["reason"]


def test_unknown_section_is_refused(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--sections",
                           "throughput,serach"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "unknown section 'serach'" in done.stderr


def test_the_bare_loop_trains_the_trainers_model_on_the_trainers_batches():
    """Same initial weights, and the same normalised channels-last batch from the same uint8
    pixels (what the throughput comparison relies on); fp32 NCHW when asked."""
    import numpy as np
    import torch

    from bench_trainer import BareLoop
    from evaluators.batches import BatchLoader
    from evaluators.trainer import TrainConfig, Trainer
    from gpu_check import default_space_network, synthetic_data

    arch = default_space_network()
    data = synthetic_data(16, arch.resolution, arch.in_channels, arch.num_classes)
    trainer = Trainer(arch, data, TrainConfig(batch_size=4, device="cpu", augment=False))
    pixels = torch.from_numpy(np.asarray(data.train.pixels[:16]))
    bare = BareLoop(arch, pixels, data.train_y, 4, 1e-3, mean=data.mean, std=data.std)
    for (name, a), b in zip(trainer.model.state_dict().items(), bare.model.state_dict().values()):
        assert torch.equal(a, b), name
    idx = torch.tensor([3, 0, 7, 12])
    x, y = bare.batch(idx)
    want_x, want_y = BatchLoader(data.mean, data.std).load(data.train, idx)
    torch.testing.assert_close(x, want_x, rtol=1e-6, atol=1e-6)
    assert torch.equal(y, want_y) and x.is_contiguous(memory_format=torch.channels_last)
    nchw = BareLoop(arch, pixels, data.train_y, 4, 1e-3, memory_format=torch.contiguous_format,
                    mean=data.mean, std=data.std)
    assert nchw.batch(idx)[0].is_contiguous() and nchw.train_steps(1) > 0


FAKE_NVIDIA_SMI = """#!/bin/sh
# stands in for nvidia-smi --query-gpu=utilization.gpu,memory.used ... -l 1
echo "$@" > "$(dirname "$0")/args"
n=0
while true; do
  echo "$((n * 10)), $((1000 + n))"
  n=$((n + 1))
  sleep 0.05
done
"""


def test_the_sampler_reads_nvidia_smi_and_stops_it(tmp_path, monkeypatch):
    fake = tmp_path / "nvidia-smi"
    fake.write_text(FAKE_NVIDIA_SMI)
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with GpuSampler(source="nvidia-smi") as sampler:
        deadline = time.time() + 20
        while len(sampler.samples) < 4 and time.time() < deadline:
            time.sleep(0.05)
    assert sampler._process.returncode is not None  # stopped (by its pid) and reaped
    summary = sampler.summary()
    assert summary["source"] == "nvidia-smi" and summary["samples"] >= 4
    busy = [s[1] for s in sampler.samples]
    assert busy[:4] == [0.0, 10.0, 20.0, 30.0] and summary["utilization_max_pct"] == max(busy)
    assert summary["busy_share"] == round(sum(b > 0 for b in busy) / len(busy), 3)
    assert summary["memory_used_max_mib"] == max(s[2] for s in sampler.samples)
    assert "--query-gpu=utilization.gpu,memory.used" in (tmp_path / "args").read_text()


def test_no_sampler_without_a_driver_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi here
    with GpuSampler(source="nvidia-smi") as sampler:
        pass
    assert sampler.summary() == {"source": None, "samples": 0,
                                 "unavailable": "nvidia-smi is not on PATH"}


def test_query_lines_with_and_without_units():
    assert parse_query_line("37, 1234\n") == (37.0, 1234.0)
    assert parse_query_line("37 %, 1234 MiB") == (37.0, 1234.0)
    assert parse_query_line("utilization.gpu [%], memory.used [MiB]") is None
    assert parse_query_line("[N/A], 12") is None
