"""GPU utilisation and memory sampled while something runs (`benchmarks/gpu_check.py` wraps the
fractional-GPU search in it).

Two sources: NVML through `pynvml` (the `nvidia-ml-py` package) when it imports and finds a GPU,
sampled by a thread every `interval_s`; else `nvidia-smi --query-gpu=utilization.gpu,memory.used
--format=csv,noheader,nounits -l 1` in a subprocess, read line by line and stopped by its pid.
Without either (no NVIDIA driver) nothing is sampled and the summary says why. Utilisation is
NVML's: the share of the last sample period in which a kernel ran, not how busy the SMs were.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import threading
import time
from typing import Any


class GpuSampler:
    """Context manager: samples GPU `index` from enter to exit; `summary()` after.
    source: "auto" (NVML, else nvidia-smi), "nvml" or "nvidia-smi"."""

    def __init__(self, index: int = 0, interval_s: float = 0.5, source: str = "auto"):
        if source not in ("auto", "nvml", "nvidia-smi"):
            raise ValueError(f"source must be auto, nvml or nvidia-smi, got {source!r}")
        self.index, self.interval_s, self.wanted = index, interval_s, source
        self.source: str | None = None
        self.unavailable: str | None = None
        self.samples: list[tuple[float, float, float]] = []  # (seconds since start, %, MiB)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process: subprocess.Popen | None = None
        self._t0 = 0.0

    def __enter__(self) -> "GpuSampler":
        self._t0 = time.time()
        reasons = []
        if self.wanted in ("auto", "nvml"):
            reason = self._start_nvml()
            if reason is None:
                return self
            reasons.append(reason)
        if self.wanted in ("auto", "nvidia-smi"):
            reason = self._start_nvidia_smi()
            if reason is None:
                return self
            reasons.append(reason)
        self.unavailable = "; ".join(reasons)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._process is not None:
            self._process.terminate()  # our own nvidia-smi, by its pid
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _start_nvml(self) -> str | None:
        try:
            import pynvml
        except ImportError:
            return "pynvml is not installed"
        try:
            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(self.index)
        except Exception as exc:  # noqa: BLE001 - pynvml.NVMLError and kin: no driver, no GPU
            return f"NVML: {exc}"
        self.source = "nvml"

        def sample() -> None:
            try:
                while not self._stop.is_set():
                    busy = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
                    used = pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2 ** 20
                    self.samples.append((time.time() - self._t0, float(busy), float(used)))
                    self._stop.wait(self.interval_s)
            finally:
                pynvml.nvmlShutdown()

        self._thread = threading.Thread(target=sample, name="nvml-sampler", daemon=True)
        self._thread.start()
        return None

    def _start_nvidia_smi(self) -> str | None:
        command = shutil.which("nvidia-smi")
        if command is None:
            return "nvidia-smi is not on PATH"
        self._process = subprocess.Popen(
            [command, f"--id={self.index}", "--query-gpu=utilization.gpu,memory.used",
             "--format=csv,noheader,nounits", "-l", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.source = "nvidia-smi"

        def read() -> None:
            for line in self._process.stdout:
                parsed = parse_query_line(line)
                if parsed is not None:
                    self.samples.append((time.time() - self._t0, *parsed))

        self._thread = threading.Thread(target=read, name="nvidia-smi-reader", daemon=True)
        self._thread.start()
        return None

    def summary(self) -> dict[str, Any]:
        """Utilisation (mean, median, max, the share of samples with any kernel running) and the
        most memory used, over the samples taken; `samples` 0 and `unavailable` when none."""
        out: dict[str, Any] = {"source": self.source, "samples": len(self.samples),
                               "unavailable": self.unavailable}
        if self.samples:
            busy = [s[1] for s in self.samples]
            out.update(
                utilization_mean_pct=round(statistics.fmean(busy), 1),
                utilization_median_pct=round(statistics.median(busy), 1),
                utilization_max_pct=max(busy),
                busy_share=round(sum(b > 0 for b in busy) / len(busy), 3),
                memory_used_max_mib=round(max(s[2] for s in self.samples), 1),
                seconds_sampled=round(self.samples[-1][0] - self.samples[0][0], 1))
        elif self.unavailable is None:
            out["unavailable"] = f"{self.source} gave no sample"
        return out


def parse_query_line(line: str) -> tuple[float, float] | None:
    """(utilisation %, memory MiB) from one line of nvidia-smi's CSV query, with or without
    units ("37, 1234" or "37 %, 1234 MiB"); None for a header or anything else."""
    parts = [p.strip().split()[0] for p in line.split(",") if p.strip()]
    if len(parts) != 2:
        return None
    try:
        return float(parts[0]), float(parts[1])
    except ValueError:
        return None
