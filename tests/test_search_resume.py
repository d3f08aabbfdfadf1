"""Interrupt real searches and resume them. `hybrid-nas search` runs as a subprocess in its own
process group and is stopped by Ctrl-C (SIGINT), SIGTERM, a second signal, or SIGKILL of its whole
process group at random moments; a copied or moved run directory is resumed where it lies. At every
step: no finished trial is lost or changed, no architecture is trained twice, the end result has
exactly the requested trials, and nothing outside the resumed directory is touched."""

from __future__ import annotations

import hashlib
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from results import run_directory as records
from results.run_directory import RunDirectory
from servers import stop

NUM_TRIALS = 6
EPOCHS = 2
TIMEOUT_S = 240


def config(tmp: Path, **changes) -> dict:
    return {
        "name": "resume",
        "space": "digits",
        "trial": {"data": "digits", "resolution": 16, "small_per_class": 10,
                  "train": {"epochs": EPOCHS, "batch_size": 32, "steps_per_epoch": 4}},
        "num_trials": NUM_TRIALS,
        # readings every run has: these runs are too short to reach train.matched_loss
        "objectives": [{"name": "val_acc", "direction": "max"},
                       {"name": "fit_full", "direction": "max"}],
        "budget": {"max_flops": 2_500_000},
        "scheduler": {"name": "none"},  # every trial trains its full budget: easy to count
        "resources": {"cpus_per_trial": 1, "max_concurrent_trials": 2, "num_cpus": 2},
        "keep_weights": True,
        "out_dir": str(tmp),
        **changes,
    }


def write_config(tmp: Path, **changes) -> Path:
    path = tmp / "search.yaml"
    path.write_text(yaml.safe_dump(config(tmp, **changes)))
    return path


def cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nas.cli", "search", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own process group: ours to signal


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the driver's process group, and by pid every process it started (Ray workers
    move to process groups of their own)."""
    stop(proc)
    proc.communicate(timeout=60)


def trial_records(run_dir: Path) -> list[dict]:
    """The run's readable records, read as the package reads them (one a kill cut off mid-write
    is left out)."""
    return RunDirectory(run_dir).scan_records()[0]


def finished(run_dir: Path) -> dict[str, dict]:
    """trial_id -> record of every trained trial that ended."""
    return {r["trial_id"]: r for r in trial_records(run_dir) if r["status"] in records.FINISHED}


def wait_for(proc: subprocess.Popen, run_dir: Path, count: int) -> None:
    deadline = time.time() + TIMEOUT_S
    while len(finished(run_dir)) < count:
        if proc.poll() is not None:
            raise AssertionError(f"search ended early:\n{proc.stdout.read()}")
        assert time.time() < deadline, "timed out waiting for trials to finish"
        time.sleep(0.3)


def assert_kept(before: dict[str, dict], after: dict[str, dict]) -> None:
    """Every trial finished before is still there, unchanged (not trained again)."""
    for trial_id, record in before.items():
        now = after[trial_id]
        for key in ("status", "started", "ended", "history", "arch_id", "number", "weights"):
            assert now[key] == record[key], (trial_id, key)


def assert_complete(run_dir: Path) -> None:
    """Exactly the requested trials trained, each architecture once, every record readable."""
    run = records.read_run(run_dir)
    assert not run.unreadable
    trained = [r for r in run.records if r["status"] != "rejected"]
    assert run.summary is not None and run.summary["trained"] == NUM_TRIALS
    assert len(trained) == NUM_TRIALS and all(r["status"] == "completed" for r in trained)
    assert len({r["arch_id"] for r in trained}) == NUM_TRIALS
    assert all(r["epochs_done"] == EPOCHS and r["optuna_state"] == "COMPLETE" for r in trained)
    assert all((run_dir / r["weights"]).is_file() for r in trained)
    numbers = [r["number"] for r in run.records]
    assert len(numbers) == len(set(numbers))


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_ctrl_c_then_resume_a_copy_and_a_moved_run_where_they_lie(tmp_path):
    run_dir = tmp_path / "run"
    # 1. Ctrl-C after two trials finished: exit 130, one line says how to resume.
    proc = cli(str(write_config(tmp_path)), "--out", str(run_dir))
    wait_for(proc, run_dir, 2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 130, out
    assert f"resume with `hybrid-nas search --resume {run_dir}`" in out
    assert "Tuner.restore" not in out  # no advice that contradicts ours
    interrupted = finished(run_dir)
    assert 2 <= len(interrupted) < NUM_TRIALS

    # 2. A copy resumes to the end; not one byte of the original changes.
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(run_dir, copy)
    original = digests(run_dir)
    proc = cli("--resume", str(copy))
    out, _ = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 0, out
    assert digests(run_dir) == original
    assert_kept(interrupted, finished(copy))
    assert_complete(copy)

    # 3. The original, moved (its old path gone), without Ray's folder, with one finished record
    # cut off mid-write: a warning names it, that trial trains again, the rest stand.
    moved = tmp_path / "moved"
    run_dir.rename(moved)
    shutil.rmtree(moved / records.RAY_DIR)
    damaged_id = sorted(interrupted)[0]
    damaged = moved / records.TRIALS_DIR / f"{damaged_id}.json"
    damaged.write_text(damaged.read_text()[:40])
    proc = cli("--resume", str(moved))
    out, _ = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 0, out
    assert f"{damaged_id}.json is unreadable" in out and damaged_id in out.split("train again")[-1]
    assert not run_dir.exists()
    after = finished(moved)
    assert_kept({k: v for k, v in interrupted.items() if k != damaged_id}, after)
    assert after[damaged_id]["status"] == "completed"
    assert after[damaged_id]["arch_id"] == interrupted[damaged_id]["arch_id"]
    assert_complete(moved)


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_a_second_signal_ends_at_once(tmp_path):
    run_dir = tmp_path / "run"
    proc = cli(str(write_config(tmp_path)), "--out", str(run_dir))
    wait_for(proc, run_dir, 1)
    sent = time.time()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 143, out
    assert time.time() - sent < 30
    assert f"resume with `hybrid-nas search --resume {run_dir}`" in out
    assert "SIGTERM received" not in out and "Tuner.restore" not in out  # no Ray dump
    first = finished(run_dir)
    assert 1 <= len(first) < NUM_TRIALS

    # Resume, then two signals in a row once a trial of this session runs: it ends at once.
    def started() -> set[tuple[str, str]]:
        return {(r["trial_id"], r["started"]) for r in trial_records(run_dir)
                if r["status"] == "running"}
    earlier = started()
    proc = cli("--resume", str(run_dir))
    deadline = time.time() + TIMEOUT_S
    while not started() - earlier:
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    sent = time.time()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143, out
    assert time.time() - sent < 10
    assert RunDirectory(run_dir).scan_records()[1] == []  # every record whole
    assert_kept(first, finished(run_dir))

    proc = cli("--resume", str(run_dir))
    out, _ = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 0, out
    assert_kept(first, finished(run_dir))
    assert_complete(run_dir)


@pytest.mark.slow
def test_chaos_sigkill_of_the_process_group_at_random_moments(tmp_path):
    rng = random.Random(1234)  # seeded: a failure reproduces with the same kill moments
    run_dir = tmp_path / "run"
    before: dict[str, dict] = {}
    args = [str(write_config(tmp_path)), "--out", str(run_dir)]
    for kill in range(3):
        proc = cli(*args)
        delay = rng.uniform(3.0, 14.0)
        deadline = time.time() + delay
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        kill_group(proc)
        now = finished(run_dir)
        assert_kept(before, now)
        before = now
        args = ["--resume", str(run_dir)]
        if not (run_dir / records.CONFIG_FILE).exists():  # killed before the run was made
            args = [str(write_config(tmp_path)), "--out", str(run_dir)]
    proc = cli(*args)
    out, _ = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 0, out
    assert_kept(before, finished(run_dir))
    assert_complete(run_dir)
