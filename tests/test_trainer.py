"""Trainer and trial on the real digits data: accuracy, the two regimes, seeding, divergence."""

from __future__ import annotations

import math

import pytest
import torch

from search_spaces.fields import FieldError
from evaluators.data import load_data, small_data
from evaluators.trainer import TrainConfig, Trainer, train
from evaluators.trial import TrialConfig, run_trial
from search_spaces.architecture import Architecture, Stage, Stem
from search_spaces.model import build_model

CONTRACT_KEYS = {"epoch", "gap", "gap_acc", "fit_full", "train_loss_small", "val_loss_small",
                 "train_loss_full", "train_acc_full", "val_loss", "val_acc", "val_acc_at_matched_loss",
                 "gap_at_matched_loss", "images_per_s", "wall_time_s", "val_acc_small",
                 "train_acc_small", "latency_ms"}
TIMING_KEYS = {"images_per_s", "wall_time_s", "latency_ms"}


def arch_of(layout: str, widths=(16, 32, 64, 64), stem: int = 16, resolution: int = 16,
            num_classes: int = 10) -> Architecture:
    """A small network for 16x16 digits; S1 keeps the stem's 8x8 map."""
    stages = tuple(Stage(block, 1, width, stride=1 if i == 0 else 2, head_size=16)
                   for i, (block, width) in enumerate(zip(layout.split("-"), widths)))
    return Architecture(Stem("conv", stem), stages, resolution=resolution, in_channels=1,
                        num_classes=num_classes)


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", 16)


@pytest.fixture(scope="module")
def cccc_trial():
    """C-C-C-C on real digits, 3 epochs, both regimes; the reports it sent."""
    reports = []
    config = TrialConfig(small_per_class=20, train=TrainConfig(epochs=3, lr=3e-3, matched_loss=0.5))
    outcome = run_trial(arch_of("C-C-C-C"), config, report=reports.append)
    return outcome, reports


def without_timing(history):
    """The metrics that must repeat exactly (NaN as None: NaN never equals itself)."""
    return [{k: None if isinstance(v, float) and math.isnan(v) else v
             for k, v in m.items() if k not in TIMING_KEYS} for m in history]


def test_cccc_reaches_90_percent_on_digits(cccc_trial):
    outcome, reports = cccc_trial
    assert outcome.status == "completed" and outcome.error is None
    assert outcome.final["val_acc"] >= 0.90
    assert reports == outcome.history and len(reports) == 3
    for epoch, metrics in enumerate(reports, start=1):
        assert CONTRACT_KEYS <= set(metrics) and metrics["epoch"] == epoch
        assert all(isinstance(v, float) for v in metrics.values())
        assert math.isclose(metrics["fit_full"], math.exp(-metrics["train_loss_full"]))
        assert math.isclose(metrics["gap"], metrics["val_loss_small"] - metrics["train_loss_small"])


def test_small_data_regime_has_the_larger_gap(cccc_trial):
    final = cccc_trial[0].final
    gap_full = final["val_loss"] - final["train_loss_full"]
    assert final["gap"] > gap_full + 0.02
    assert final["train_images_small"] == 200 and final["train_images_full"] > 1400


def test_matched_loss_accuracy_is_read_where_the_curve_first_reaches_the_level(cccc_trial):
    history = cccc_trial[0].history
    level = 0.5
    i = next(k for k, m in enumerate(history) if m["train_loss_small"] <= level)  # in the budget
    first = history[i]
    if i == 0:
        expected = first["val_acc_small"]
    else:  # interpolated in training loss between the epoch above the level and the first below
        before = history[i - 1]
        weight = (before["train_loss_small"] - level) / (before["train_loss_small"] - first["train_loss_small"])
        expected = before["val_acc_small"] + weight * (first["val_acc_small"] - before["val_acc_small"])
    for m in history:
        if m["epoch"] < first["epoch"]:
            assert math.isnan(m["val_acc_at_matched_loss"])
        else:
            assert m["val_acc_at_matched_loss"] == pytest.approx(expected)
            assert m["gap_at_matched_loss"] == pytest.approx(
                history[i - 1]["val_loss_small"] + weight * (first["val_loss_small"] - history[i - 1]["val_loss_small"]) - level
                if i else first["val_loss_small"] - level)


def test_model_state_is_the_full_regime_model(cccc_trial, digits):
    outcome = cccc_trial[0]
    model = build_model(arch_of("C-C-C-C"))
    model.load_state_dict(outcome.model_state)
    model.eval()
    with torch.no_grad():
        accuracy = float((model(digits.val_x).argmax(1) == digits.val_y).float().mean())
    assert abs(accuracy - outcome.final["val_acc"]) < 1e-6


def test_same_seed_repeats_metrics_exactly():
    def run(seed: int):
        config = TrialConfig(small_per_class=5, train=TrainConfig(
            epochs=2, steps_per_epoch=4, batch_size=32, seed=seed, lr=3e-3))
        return run_trial(arch_of("C-C-T", widths=(8, 16, 32), stem=8), config).history

    first, again, other = run(0), run(0), run(1)
    assert without_timing(first) == without_timing(again)
    assert without_timing(first) != without_timing(other)


def test_diverging_learning_rate_ends_diverged_without_raising(digits):
    tiny = small_data(digits, per_class=5)
    seen = []
    result = train(arch_of("C-C", widths=(8, 16), stem=8), tiny,
                   TrainConfig(epochs=3, lr=1e4, warmup_epochs=0), on_epoch=seen.append)
    assert result.status == "diverged" and "non-finite" in result.error
    assert result.history == seen and all(math.isfinite(m["train_loss"]) for m in seen)
    outcome = run_trial(arch_of("C-C", widths=(8, 16), stem=8), TrialConfig(
        small_per_class=5, train=TrainConfig(epochs=3, lr=1e4, steps_per_epoch=3)))
    assert outcome.status == "diverged" and outcome.model_state is None
    assert "regime" in outcome.error and len(outcome.history) < 3


def test_gate_values_are_reported_for_g_blocks():
    arch = Architecture(Stem("conv", 8), (Stage("C", 1, 16, stride=1), Stage("G", 2, 32, head_size=16)),
                        resolution=16, in_channels=1, num_classes=10)
    outcome = run_trial(arch, TrialConfig(small_per_class=3, train=TrainConfig(
        epochs=1, steps_per_epoch=2, batch_size=16)))
    gates = outcome.gate_values
    assert len(gates) == 2 and all(0 < g < 1 for g in gates)
    assert [outcome.final["gate_0"], outcome.final["gate_1"]] == gates
    assert "gate_0" not in run_trial(arch_of("C-T", widths=(8, 16), stem=8), TrialConfig(
        small_per_class=3, train=TrainConfig(epochs=1, steps_per_epoch=1))).final


def test_schedule_warms_up_then_decays_to_zero(digits):
    trainer = Trainer(arch_of("C-C", widths=(8, 16), stem=8), small_data(digits, per_class=10),
                      TrainConfig(epochs=4, batch_size=20, lr=1e-3, warmup_epochs=1))
    assert trainer.steps_per_epoch == 5 and trainer.warmup_steps == 5
    lrs = [trainer.lr_at(step) for step in range(trainer.total_steps)]
    assert lrs[:5] == sorted(lrs[:5]) and math.isclose(lrs[4], 1e-3)
    assert lrs[5:] == sorted(lrs[5:], reverse=True) and lrs[-1] < 0.02 * lrs[5]


def test_training_metrics_on_a_subset_when_asked(digits):
    tiny = small_data(digits, per_class=10)
    trainer = Trainer(arch_of("C-C", widths=(8, 16), stem=8), tiny,
                      TrainConfig(epochs=1, steps_per_epoch=1, train_eval_images=30))
    assert len(trainer.measured_set) == 30
    assert set(trainer.measured_set.rows.tolist()) <= set(tiny.train.rows.tolist())
    assert trainer.run_epoch()["train_loss"] != trainer.evaluate(trainer.train_set)[0]


def test_architecture_must_fit_the_data(digits):
    with pytest.raises(FieldError, match="architecture.num_classes: is 7"):
        Trainer(arch_of("C-C", num_classes=7), digits, TrainConfig())


def test_configs_from_dicts_name_bad_fields():
    config = TrialConfig.from_dict({"data": "digits", "small_fraction": 0.1,
                                    "train": {"epochs": 4, "lr": 1, "augment": False}})
    assert config.small_per_class is None and config.small_fraction == 0.1
    assert config.train == TrainConfig(epochs=4, lr=1.0, augment=False)
    with pytest.raises(FieldError, match=r"train\.epochz: unknown field"):
        TrialConfig.from_dict({"train": {"epochz": 3}})
    with pytest.raises(FieldError, match=r"train\.lr: expected float"):
        TrainConfig.from_dict({"lr": "fast"})
    with pytest.raises(FieldError, match=r"train\.batch_size: must be >= 1"):
        TrainConfig(batch_size=0)
    with pytest.raises(FieldError, match="exactly one"):
        TrialConfig(small_per_class=5, small_fraction=0.5)


def test_nchw_layout_and_the_bf16_switch_train_as_the_default_does_on_the_cpu(digits):
    """channels_last: false trains contiguous NCHW (same numbers up to summation order);
    bf16_autocast changes nothing on the CPU, which always runs fp32."""
    arch = arch_of("C-T", widths=(8, 16), stem=8)
    config = TrainConfig(epochs=1, steps_per_epoch=3, batch_size=32, augment=False)
    default, nchw = Trainer(arch, digits, config), Trainer(arch, digits, config.replace(
        channels_last=False, bf16_autocast=False))
    assert default.autocast_dtype is None and nchw.autocast_dtype is None
    kernels = [p for p in nchw.model.parameters() if p.dim() == 4]
    assert kernels and all(p.is_contiguous() for p in kernels)
    assert all(p.is_contiguous(memory_format=torch.channels_last)
               for p in default.model.parameters() if p.dim() == 4)
    assert math.isclose(default.train_steps(3)[0], nchw.train_steps(3)[0], rel_tol=1e-4)
    assert math.isclose(default.evaluate(default.val_set)[0], nchw.evaluate(nchw.val_set)[0],
                        rel_tol=1e-4)
    with pytest.raises(FieldError, match=r"train\.compile: expected bool"):
        TrainConfig.from_dict({"compile": "yes"})


@pytest.mark.slow
def test_compiled_training_follows_eager_training(digits):
    """`compile: true` trains through TorchInductor (about 70 s to compile on 2 busy cores) and
    takes the eager steps; evaluation runs the eager model, which holds the same weights."""
    arch = arch_of("C-T", widths=(8, 16), stem=8)
    config = TrainConfig(epochs=1, steps_per_epoch=3, batch_size=32, augment=False)
    eager, compiled = Trainer(arch, digits, config), Trainer(arch, digits, config.replace(compile=True))
    assert compiled.train_forward is not compiled.model
    assert math.isclose(eager.train_steps(3)[0], compiled.train_steps(3)[0], rel_tol=1e-4)
    # Inductor sums in another order; AdamW turns tiny gradient differences of near-zero
    # gradients into steps of up to lr: compare the whole state, not each scalar.
    flat = [torch.cat([t.float().flatten() for t in trainer.model.state_dict().values()])
            for trainer in (eager, compiled)]
    assert float((flat[0] - flat[1]).norm() / flat[0].norm()) < 1e-3
    assert math.isclose(eager.evaluate(eager.val_set)[0], compiled.evaluate(compiled.val_set)[0],
                        rel_tol=1e-4)
