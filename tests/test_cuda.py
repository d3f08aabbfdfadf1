"""The GPU path: bf16 autocast against fp32 for every block type, channels-last against contiguous
models, the trainer's switches on a CUDA device, a trial trained on the GPU. Every test here is
marked `cuda` and skipped where no CUDA device is (tests/conftest.py); `pytest -m cuda` runs them,
and so does benchmarks/gpu_check.py (with test_data_cache's GPU batches test).

The bf16 tolerances: the forward/backward of each block type's tiny network in bf16 autocast on
the GPU against fp32 on the CPU (same weights, same batch), as relative L2 errors of the logits
(<= 3%) and of all parameter gradients together (<= 6%), and the loss within 0.01. bf16 keeps 8
bits of mantissa (a relative rounding of 0.4% per operation); the same comparison with the CPU's
bf16 autocast, 3 seeds per block type, measured at most 0.93% (logits) and 1.9% (gradients)
(2026-12-03): the bounds are three times that.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from evaluators.data import load_data
from evaluators.trainer import TrainConfig, Trainer
from evaluators.trial import TrialConfig, run_trial
from search_spaces.model import build_model
from test_blocks import tiny
from test_trainer import arch_of

pytestmark = pytest.mark.cuda

LOGITS_REL_TOL = 0.03
GRAD_REL_TOL = 0.06
LOSS_ABS_TOL = 0.01


@pytest.fixture
def exact_fp32():
    """fp32 without TF32 in matmuls and convolutions (cuDNN allows TF32 by default), restored after."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def forward_backward(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, bf16: bool
                     ) -> tuple[torch.Tensor, float, torch.Tensor]:
    """(logits as fp32 on the CPU, loss, every parameter's gradient concatenated on the CPU)."""
    model.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = model(x)
    loss = F.cross_entropy(logits.float(), y)
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return logits.detach().float().cpu(), loss.item(), grads.float().cpu()


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).norm() / want.norm())


@pytest.mark.parametrize("block", ["C", "T", "A", "G"])
def test_bf16_autocast_forward_backward_agrees_with_fp32(block):
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    torch.manual_seed(0)
    reference = build_model(tiny(block)).train()
    on_gpu = copy.deepcopy(reference).cuda().to(memory_format=torch.channels_last)
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.arange(16) % 10
    want_logits, want_loss, want_grads = forward_backward(reference, x, y, bf16=False)
    got_logits, got_loss, got_grads = forward_backward(
        on_gpu, x.cuda().contiguous(memory_format=torch.channels_last), y.cuda(), bf16=True)
    assert relative_error(got_logits, want_logits) <= LOGITS_REL_TOL
    assert abs(got_loss - want_loss) <= LOSS_ABS_TOL
    assert got_grads.shape == want_grads.shape
    assert relative_error(got_grads, want_grads) <= GRAD_REL_TOL


@pytest.mark.parametrize("block", ["C", "T", "A", "G"])
def test_channels_last_model_gives_the_logits_of_a_contiguous_one(block, exact_fp32):
    torch.manual_seed(0)
    contiguous = build_model(tiny(block)).cuda().eval()
    last = copy.deepcopy(contiguous).to(memory_format=torch.channels_last)
    assert any(p.dim() == 4 and not p.is_contiguous() for p in last.parameters())  # re-laid out
    x = torch.randn(8, 3, 32, 32, device="cuda")
    with torch.no_grad():
        want = contiguous(x)
        got = last(x.contiguous(memory_format=torch.channels_last))
    # fp32 both ways; only the kernels' summation order differs
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4)


def test_the_trainer_switches_on_a_cuda_device():
    data = load_data("digits", 16)
    arch = arch_of("C-T")
    on = Trainer(arch, data, TrainConfig(device="cuda", augment=False))
    assert next(on.model.parameters()).device.type == "cuda"
    assert on.autocast_dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else None)
    kernels = [p for p in on.model.parameters() if p.dim() == 4]
    assert kernels and all(p.is_contiguous(memory_format=torch.channels_last) for p in kernels)
    off = Trainer(arch, data, TrainConfig(device="cuda", augment=False, bf16_autocast=False,
                                          channels_last=False))
    assert off.autocast_dtype is None
    assert all(p.is_contiguous() for p in off.model.parameters())
    # both train: fp32 NCHW and bf16 channels-last start from the same weights and stay close
    loss_on, _ = on.train_steps(3)
    loss_off, _ = off.train_steps(3)
    assert math.isfinite(loss_on) and math.isfinite(loss_off)
    assert abs(loss_on - loss_off) < 0.05


def test_a_trial_trains_on_the_gpu_with_finite_metrics():
    reports = []
    config = TrialConfig(small_per_class=10, train=TrainConfig(
        epochs=2, steps_per_epoch=4, batch_size=32, device="cuda", train_eval_images=128,
        matched_loss=2.5))
    outcome = run_trial(arch_of("C-C-T-T"), config, report=reports.append)
    assert outcome.status == "completed" and outcome.error is None and len(reports) == 2
    for metrics in reports:
        for name in ("gap", "fit_full", "train_loss_small", "train_loss_full", "val_loss",
                     "val_acc", "val_acc_small", "latency_ms", "wall_time_s"):
            assert math.isfinite(metrics[name]), name
        assert metrics["images_per_s"] > 0 and 0 < metrics["fit_full"] <= 1
    assert all(t.device.type == "cpu" and bool(torch.isfinite(t.float()).all())
               for t in outcome.model_state.values())
