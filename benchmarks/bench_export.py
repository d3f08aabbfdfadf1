"""Standalone export: latency of one image through the exported ONNX graph in onnxruntime, the
torch.export program (.pt2) and PyTorch eager, side by side, for default-search-sized models.

    python benchmarks/bench_export.py [--models 6] [--threads 1] [--rounds 7]

Architectures are sampled from the default `digits` space and kept if they fit the default
search's budget; each is exported with results/standalone.py (checked against eager as at export).
The three runners are timed in interleaved rounds (each round: 50 calls per runner, in turn), so
a busy machine slows them alike; the printed figure is the median per call over the rounds, and
the ratios are eager time over the artifact's time (above 1: the artifact is faster).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from evaluators.cost import Budget  # noqa: E402
from nas.config import load_config  # noqa: E402
from results.standalone import artifact_metadata, write_artifacts  # noqa: E402
from run_factory import sample_architectures  # noqa: E402
from search_spaces.model import build_model  # noqa: E402

CALLS_PER_ROUND = 50


def default_budget() -> Budget:
    budget = load_config(None).budget
    return Budget(max_flops=budget.max_flops, max_params=budget.max_params)


def per_call_ms(run, image, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        run(image)
    return 1000 * (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=6, help="architectures to export and time")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of both runtimes")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    import onnxruntime

    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    budget = default_budget()
    archs = [a for a in sample_architectures(8 * args.models, seed=7) if budget.check(a)]
    archs = list({a.arch_id: a for a in archs}.values())[:args.models]
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {args.threads} "
          f"thread(s), batch 1, median ms per image over {args.rounds} rounds of {CALLS_PER_ROUND}")
    print(f"{'layout':<9} {'arch_id':<16} {'params':>7} {'eager':>7} {'ort':>7} {'pt2':>7} "
          f"{'eager/ort':>9} {'eager/pt2':>9} {'max diff ort':>12}")
    ratios_ort, ratios_pt2 = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i, arch in enumerate(archs):
            torch.manual_seed(i)
            model = build_model(arch).eval()
            written, failed = write_artifacts(model, arch, Path(tmp) / f"{i:02d}", ("onnx", "pt2"),
                                              artifact_metadata(arch, None))
            if failed:
                print(f"{arch.layout:<9} {arch.arch_id} not exported: {failed[0]}")
                continue
            found = {a.fmt: a for a in written}
            session = onnxruntime.InferenceSession(str(found["onnx"].path), options,
                                                   providers=["CPUExecutionProvider"])
            program = torch.export.load(found["pt2"].path).module()
            image = torch.randn(1, arch.in_channels, arch.resolution, arch.resolution)
            feed = {"images": image.numpy()}
            runners = {"eager": model, "ort": lambda _: session.run(None, feed), "pt2": program}
            times: dict[str, list[float]] = {name: [] for name in runners}
            with torch.no_grad():
                for name, run in runners.items():  # warm-up
                    per_call_ms(run, image, 10)
                for _ in range(args.rounds):
                    for name, run in runners.items():
                        times[name].append(per_call_ms(run, image, CALLS_PER_ROUND))
            ms = {name: statistics.median(values) for name, values in times.items()}
            ratios_ort.append(ms["eager"] / ms["ort"])
            ratios_pt2.append(ms["eager"] / ms["pt2"])
            params = sum(p.numel() for p in model.parameters())
            print(f"{arch.layout:<9} {arch.arch_id:<16} {params / 1e3:>6.0f}k {ms['eager']:>7.3f} "
                  f"{ms['ort']:>7.3f} {ms['pt2']:>7.3f} {ratios_ort[-1]:>8.2f}x {ratios_pt2[-1]:>8.2f}x "
                  f"{found['onnx'].max_abs_diff:>12.1e}")
    if ratios_ort:
        print(f"median eager/ort {statistics.median(ratios_ort):.2f}x, "
              f"eager/pt2 {statistics.median(ratios_pt2):.2f}x over {len(ratios_ort)} models")


if __name__ == "__main__":
    main()
