"""Distillation (DeiT): the distillation token and its second head, the hard and soft losses on
hand-made logits, the teacher (loaded from an exported config, checked against the data,
re-normalised), the trial's agreement readings, config errors naming the field, and export ->
build of a distilled model."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import yaml

from evaluators.data import load_data, small_data
from evaluators.batches import ImageSplit
from evaluators.distillation import (DistillationLoss, DistillConfig, Teacher, dominant_labels,
                                     load_teacher, student_architecture, teacher_classes,
                                     teacher_targets)
from evaluators.trainer import TrainConfig, Trainer, train
from evaluators.trial import TrialConfig, run_trial
from nas.config import SearchConfig
from results.export import build, export_architectures
from results.run_directory import RunDirectory
from run_factory import OBJECTIVES, make_record, write_record
from search_spaces.architecture import Architecture, ArchitectureError, Stage, Stem
from search_spaces.fields import FieldError
from search_spaces.model import build_model

RESOLUTION = 16


def conv_teacher_arch(num_classes: int = 10, resolution: int = RESOLUTION, in_channels: int = 1) -> Architecture:
    return Architecture(Stem("conv", 8), (Stage("C", 1, 16, stride=1), Stage("C", 1, 32)),
                        resolution=resolution, in_channels=in_channels, num_classes=num_classes)


def token_student_arch(distill_token: bool = False) -> Architecture:
    """A small DeiT: 4x4 patches, two A blocks, class token (no BatchNorm, no dropout)."""
    return Architecture(Stem("patch", 32, 4), (Stage("A", 2, 32, stride=1, head_size=16, pos_embed=True),),
                        resolution=RESOLUTION, in_channels=1, num_classes=10, head="token",
                        distill_token=distill_token)


def pool_student_arch() -> Architecture:
    return Architecture(Stem("conv", 8), (Stage("C", 1, 16, stride=1), Stage("T", 1, 32, head_size=16)),
                        resolution=RESOLUTION, in_channels=1, num_classes=10)


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", RESOLUTION)


def write_teacher(folder, arch: Architecture, seed: int = 0, preprocessing: dict | None = None,
                  state: dict | None = None) -> str:
    """An exported config (architecture, arch_id, weights relative to it, input) as export writes it."""
    if state is None:
        torch.manual_seed(seed)
        state = build_model(arch).state_dict()
    torch.save(state, folder / f"teacher-{seed}.pt")
    config = {"architecture": arch.to_dict(), "arch_id": arch.arch_id, "weights": f"teacher-{seed}.pt"}
    if preprocessing is not None:
        config["input"] = preprocessing
    path = folder / f"teacher-{seed}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


@pytest.fixture(scope="module")
def trained_teacher(tmp_path_factory, digits):
    """A C-C teacher trained on all real digits (3 epochs), exported with its input normalisation."""
    folder = tmp_path_factory.mktemp("teacher")
    result = train(conv_teacher_arch(), digits, TrainConfig(epochs=3, lr=3e-3))
    assert result.history[-1]["val_acc"] > 0.8
    pre = {"data": "digits", "mean": list(digits.mean), "std": list(digits.std),
           "class_names": list(digits.class_names)}
    return write_teacher(folder, conv_teacher_arch(), preprocessing=pre,
                         state=result.model.state_dict())


# ---- the distillation token and its head ------------------------------------------------------------

def test_distillation_token_is_a_late_field_that_changes_no_existing_arch_id():
    plain = token_student_arch()
    assert "distill_token" not in plain.to_dict()
    distilled = plain.replace(distill_token=True)
    assert distilled.to_dict()["distill_token"] is True and distilled.arch_id != plain.arch_id
    assert Architecture.from_dict(distilled.to_dict()) == distilled
    assert student_architecture(plain) == distilled  # DeiT's design for a class-token head
    assert student_architecture(pool_student_arch()) == pool_student_arch()  # one head: unchanged
    with pytest.raises(ArchitectureError, match="distill_token: .*needs head 'token'"):
        pool_student_arch().replace(distill_token=True)
    with pytest.raises(ArchitectureError, match="distill_token: expected bool"):
        Architecture.from_dict({**plain.to_dict(), "distill_token": "yes"})


def test_two_heads_in_distilled_training_and_their_mean_in_eval():
    torch.manual_seed(0)
    model = build_model(token_student_arch(distill_token=True))
    stage = model.stages[0]
    assert stage.class_token.shape == stage.distill_token.shape == (1, 1, 32)
    x = torch.randn(5, 1, RESOLUTION, RESOLUTION)
    model.train()
    assert model(x).shape == (5, 10)  # without distilled training: one output, the mean
    model.set_distilled_training(True)
    logits, logits_dist = model(x)
    assert logits.shape == logits_dist.shape == (5, 10)
    assert not torch.allclose(logits, logits_dist)  # two different heads on two different tokens
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(x), (logits + logits_dist) / 2, atol=1e-6)
    # the distillation head reads token 1: moving only the distillation token moves only it
    with torch.no_grad():
        stage.distill_token.add_(1.0)
        model.train()
        moved, moved_dist = model(x)
    assert not torch.allclose(moved_dist, logits_dist)
    # (the class token attends to the distillation token, so its head moves too, but less)
    assert (moved - logits).abs().max() < (moved_dist - logits_dist).abs().max()


# ---- the losses on hand-made logits ------------------------------------------------------------------

def log_softmax(row: list[float]) -> list[float]:
    top = max(row)
    total = math.log(sum(math.exp(v - top) for v in row)) + top
    return [v - total for v in row]


STUDENT = [[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]]
STUDENT_DIST = [[-0.5, 1.5, 0.0], [1.0, -1.0, 0.5]]
TEACHER = [[0.0, 3.0, 1.0], [2.0, 0.0, 1.0]]  # argmax 1, 0
LABELS = [0, 2]


def distill_config(folder, **options) -> DistillConfig:
    """A DistillConfig for the loss alone (the teacher file exists but is never read)."""
    (folder / "teacher.yaml").touch()
    return DistillConfig(str(folder / "teacher.yaml"), **options)


def test_hard_distillation_loss_is_half_labels_half_teacher_argmax(tmp_path):
    loss = DistillationLoss(distill_config(tmp_path, mode="hard"), 0.0)
    teacher = torch.tensor(TEACHER)
    targets = teacher_targets(teacher, loss.config)
    assert targets.tolist() == [1, 0]
    expected = 0.0
    for i in range(2):
        expected += 0.5 * -log_softmax(STUDENT[i])[LABELS[i]] / 2
        expected += 0.5 * -log_softmax(STUDENT_DIST[i])[targets[i]] / 2
    got = loss((torch.tensor(STUDENT), torch.tensor(STUDENT_DIST)), torch.tensor(LABELS), targets)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    # a single-head model distils through its one output: both terms on it
    single = 0.0
    for i in range(2):
        single += 0.5 * (-log_softmax(STUDENT[i])[LABELS[i]] - log_softmax(STUDENT[i])[targets[i]]) / 2
    assert float(loss(torch.tensor(STUDENT), torch.tensor(LABELS), targets)) == pytest.approx(single, rel=1e-6)


@pytest.mark.parametrize("temperature, alpha", [(1.0, 0.5), (3.0, 0.1)])
def test_soft_distillation_loss_is_kl_at_the_temperature_times_its_square(tmp_path, temperature, alpha):
    config = distill_config(tmp_path, mode="soft", alpha=alpha, temperature=temperature)
    loss = DistillationLoss(config, 0.0)
    targets = teacher_targets(torch.tensor(TEACHER), config)
    assert torch.allclose(targets.sum(1), torch.ones(2))
    expected = 0.0
    for i in range(2):
        teacher = [math.exp(v) for v in log_softmax([t / temperature for t in TEACHER[i]])]
        student = log_softmax([s / temperature for s in STUDENT_DIST[i]])
        kl = sum(p * (math.log(p) - q) for p, q in zip(teacher, student))
        expected += ((1 - alpha) * -log_softmax(STUDENT[i])[LABELS[i]]
                     + alpha * temperature ** 2 * kl) / 2
    got = loss((torch.tensor(STUDENT), torch.tensor(STUDENT_DIST)), torch.tensor(LABELS), targets)
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_each_head_learns_from_its_own_target(trained_teacher, digits):
    """alpha = 1: only the teacher's term counts, so only the distillation head gets gradients."""
    config = TrainConfig(epochs=1, steps_per_epoch=1, batch_size=16, augment=False,
                         distill=DistillConfig(trained_teacher, alpha=1.0))
    trainer = Trainer(token_student_arch(), small_data(digits, per_class=5), config)
    assert trainer.architecture.distill_token
    trainer.optimizer.zero_grad()
    original = trainer.optimizer.step
    grads = {}

    def record_then_step():
        grads.update({name: p.grad for name, p in trainer.model.head.named_parameters()})
        original()
    trainer.optimizer.step = record_then_step
    trainer.train_steps(1)
    assert grads["fc.weight"] is None or float(grads["fc.weight"].abs().max()) == 0.0
    assert float(grads["fc_dist.weight"].abs().max()) > 0.0


# ---- the teacher --------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, arch", [
    ("num_classes 7", conv_teacher_arch(num_classes=7)),
    ("resolution 32", conv_teacher_arch(resolution=32)),
    ("in_channels 3", conv_teacher_arch(in_channels=3)),
])
def test_a_teacher_for_other_classes_or_inputs_is_a_clear_error(tmp_path, digits, field, arch):
    config = TrainConfig(distill=DistillConfig(write_teacher(tmp_path, arch)))
    with pytest.raises(FieldError, match=rf"^train\.distill\.teacher: the teacher has {field}, "
                                         rf"the data set 'digits' \d+"):
        Trainer(pool_student_arch(), digits, config)


def test_a_teacher_of_other_class_names_or_without_weights_is_refused(tmp_path, digits):
    names = {"mean": list(digits.mean), "std": list(digits.std),
             "class_names": list(reversed(digits.class_names))}
    path = write_teacher(tmp_path, conv_teacher_arch(), preprocessing=names)
    with pytest.raises(FieldError, match=r"train\.distill\.teacher: the teacher's classes"):
        load_teacher(DistillConfig(path), digits, torch.device("cpu"))
    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump({"architecture": conv_teacher_arch().to_dict()}))
    with pytest.raises(FieldError, match=r"train\.distill\.teacher: .*records no trained weights"):
        load_teacher(DistillConfig(str(bare)), digits, torch.device("cpu"))
    (tmp_path / "pickled.pt").write_bytes(b"\x80\x04\x95")  # not a state_dict of tensors
    with pytest.raises(FieldError, match=r"train\.distill\.teacher: .*pickled\.pt: refused to load"):
        load_teacher(DistillConfig(str(bare), weights=str(tmp_path / "pickled.pt")), digits,
                     torch.device("cpu"))


def test_teacher_sees_images_normalised_as_its_weights_expect(tmp_path, digits):
    arch = conv_teacher_arch()
    mean, std = [0.3], [0.2]  # what the teacher was trained with; the student's data differ
    path = write_teacher(tmp_path, arch, preprocessing={"mean": mean, "std": std})
    teacher = load_teacher(DistillConfig(path), digits, torch.device("cpu"))
    x = digits.val_x[:6]
    pixels = x * torch.tensor(digits.std).view(1, -1, 1, 1) + torch.tensor(digits.mean).view(1, -1, 1, 1)
    model = build_model(arch)
    model.load_state_dict(torch.load(tmp_path / "teacher-0.pt", weights_only=True))
    with torch.no_grad():
        expected = model.eval()((pixels - mean[0]) / std[0])
    assert torch.allclose(teacher.logits(x), expected, atol=1e-5)
    logits = teacher.split_logits(digits.val)
    assert logits.shape == (len(digits.val_y), 10) and teacher.split_logits(digits.val) is logits


def test_a_preset_teacher_is_built_for_the_data(tmp_path, digits):
    from search_spaces.presets import get_preset

    arch = get_preset("deit-ti", resolution=RESOLUTION, num_classes=10, in_channels=1)
    torch.manual_seed(1)
    torch.save(build_model(arch).state_dict(), tmp_path / "deit.pt")
    teacher = load_teacher(DistillConfig("preset:deit-ti", weights=str(tmp_path / "deit.pt")),
                           digits, torch.device("cpu"))
    assert isinstance(teacher, Teacher) and teacher.architecture == arch
    assert teacher.logits(digits.val_x[:2]).shape == (2, 10)


# ---- config errors name the field ---------------------------------------------------------------------

def test_distill_options_are_checked_and_errors_name_the_field(tmp_path, trained_teacher):
    parsed = TrainConfig.from_dict({"distill": {"teacher": trained_teacher, "mode": "soft",
                                                "temperature": 3, "alpha": 0.1}})
    assert parsed.distill == DistillConfig(trained_teacher, mode="soft", temperature=3.0, alpha=0.1)
    assert TrainConfig.from_dict({"distill": None}) == TrainConfig()
    cases = [
        ({"distill": {"teacher": str(tmp_path / "missing.yaml")}}, r"train\.distill\.teacher: no such file"),
        ({"distill": {"teacher": trained_teacher, "mode": "warm"}}, r"train\.distill\.mode: must be one of"),
        ({"distill": {"teacher": trained_teacher, "temperature": 0}}, r"train\.distill\.temperature: must be > 0"),
        ({"distill": {"teacher": trained_teacher, "alpha": 1.5}}, r"train\.distill\.alpha: must be in \[0, 1\]"),
        ({"distill": {"teacher": trained_teacher, "teacher_pass": "twice"}}, r"train\.distill\.teacher_pass"),
        ({"distill": {"teacher": trained_teacher, "tempreature": 2}}, r"train\.distill\.tempreature: unknown field"),
        ({"distill": {"mode": "hard"}}, r"train\.distill\.teacher: missing required field"),
        ({"distill": "teacher.yaml"}, r"train\.distill: expected a mapping"),
        ({"distill": {"teacher": "preset:deit-ti"}}, r"train\.distill\.weights: a preset teacher needs"),
        ({"distill": {"teacher": "preset:nope", "weights": trained_teacher}}, r"unknown preset 'nope'"),
        ({"mixup": -1}, r"train\.mixup: must be >= 0"),
        ({"mix_switch_prob": 2}, r"train\.mix_switch_prob: must be in \[0, 1\]"),
        ({"drop_path": 1.0}, r"train\.drop_path: must be in \[0, 1\)"),
        ({"random_erasing": -0.1}, r"train\.random_erasing: must be in \[0, 1\]"),
    ]
    for options, message in cases:
        with pytest.raises(FieldError, match=message):
            TrainConfig.from_dict(options)
    with pytest.raises(FieldError, match=r"^trial\.train\.distill\.mode: must be one of"):
        TrialConfig.from_dict({"train": {"distill": {"teacher": trained_teacher, "mode": "x"}}})
    with pytest.raises(FieldError, match=r"^search\.trial\.train\.distill\.teacher: no such file"):
        SearchConfig.from_dict({"trial": {"train": {"distill": {"teacher": "nowhere.yaml"}}}})


def test_relative_teacher_paths_are_made_absolute(tmp_path, monkeypatch, trained_teacher):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.yaml").write_text("{}")
    config = DistillConfig("t.yaml")
    assert config.teacher == str(tmp_path / "t.yaml")


# ---- a distilling trial --------------------------------------------------------------------------------

@pytest.mark.parametrize("teacher_pass", ["batch", "once"])
def test_a_distilling_trial_reports_agreement_with_the_teacher(trained_teacher, digits, teacher_pass):
    config = TrialConfig(small_per_class=5, train=TrainConfig(
        epochs=2, steps_per_epoch=4, batch_size=32, lr=3e-3,
        distill=DistillConfig(trained_teacher, teacher_pass=teacher_pass)))
    outcome = run_trial(pool_student_arch(), config)
    assert outcome.status == "completed", outcome.error
    for metrics in outcome.history:
        assert 0 <= metrics["teacher_agreement"] <= 1 and 0 <= metrics["teacher_agreement_small"] <= 1
    # the full regime's reading, recomputed from the weights the trial returns
    student = build_model(outcome.architecture)
    student.load_state_dict(outcome.model_state)
    teacher = build(trained_teacher).eval()
    with torch.no_grad():
        same = (student.eval()(digits.val_x).argmax(1) == teacher(digits.val_x).argmax(1)).float().mean()
    assert outcome.final["teacher_agreement"] == pytest.approx(float(same))
    plain = run_trial(pool_student_arch(), config.replace(train=config.train.replace(distill=None)))
    assert "teacher_agreement" not in plain.final and "teacher_agreement_small" not in plain.final


def test_teacher_once_computes_its_logits_of_the_training_images_once(trained_teacher, digits):
    tiny = small_data(digits, per_class=3)
    teacher = load_teacher(DistillConfig(trained_teacher), digits, torch.device("cpu"))
    calls = []
    original = teacher.model.forward
    teacher.model.forward = lambda x: calls.append(len(x)) or original(x)
    trainer = Trainer(pool_student_arch(), tiny, TrainConfig(
        epochs=1, steps_per_epoch=3, batch_size=8,
        distill=DistillConfig(trained_teacher, teacher_pass="once")), teacher=teacher)
    assert calls == [len(tiny.train_y)]  # the training images, once, at the start
    trainer.train_steps(3)
    assert calls == [len(tiny.train_y)]  # no teacher pass per step


def test_teacher_relabelled_is_the_share_of_training_images_the_teacher_labels_otherwise(
        trained_teacher, digits):
    tiny = small_data(digits, per_class=3)  # 30 images: 3 batches of 10 are one pass over them
    labels = tiny.train.labels.clone()
    labels[:10] = (labels[:10] + 1) % 10  # a third of the labels made wrong
    relabelled = dataclasses.replace(tiny, train=ImageSplit(tiny.train.pixels, tiny.train.rows, labels))
    teacher = load_teacher(DistillConfig(trained_teacher), relabelled, torch.device("cpu"))
    expected = float((teacher.predictions(relabelled.train) != labels).float().mean())
    assert expected >= 0.3  # the teacher names the digit, not the wrong label
    trainer = Trainer(pool_student_arch(), relabelled, TrainConfig(
        epochs=1, steps_per_epoch=3, batch_size=10, augment=False,
        distill=DistillConfig(trained_teacher, teacher_pass="once")), teacher=teacher)
    metrics = trainer.run_epoch()
    assert metrics["teacher_relabelled"] == pytest.approx(expected)


def test_teacher_classes_and_the_label_a_mixed_image_is_weighed_by():
    labels = torch.tensor([0, 1, 2, 3])
    assert torch.equal(dominant_labels(labels, None), labels)
    assert torch.equal(dominant_labels(labels, 0.7), labels)  # its own label weighs 0.7
    assert torch.equal(dominant_labels(labels, 0.3), torch.tensor([3, 2, 1, 0]))  # the partner's
    assert torch.equal(teacher_classes(torch.tensor([4, 5])), torch.tensor([4, 5]))
    probabilities = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    assert torch.equal(teacher_classes(probabilities), torch.tensor([1, 0]))


# ---- export -> build of a distilled model -------------------------------------------------------------

def test_a_distilled_model_exports_and_builds_with_identical_logits(tmp_path, trained_teacher, digits):
    config = TrialConfig(small_per_class=5, train=TrainConfig(
        epochs=1, steps_per_epoch=3, batch_size=32, distill=DistillConfig(trained_teacher)))
    outcome = run_trial(token_student_arch(), config)
    arch = outcome.architecture
    assert arch.distill_token and outcome.status == "completed"
    run = tmp_path / "run"
    store = RunDirectory(run)
    store.write_config({"name": "distilled", "space": "digits", "objectives": OBJECTIVES,
                        "trial": {"data": "digits", "resolution": RESOLUTION}})
    record = make_record(arch, 0, "completed", np.random.default_rng(0), epochs=1)
    (run / "weights").mkdir()
    torch.save(outcome.model_state, run / "weights" / "trial_00000.pt")
    record["weights"] = "weights/trial_00000.pt"
    write_record(run, record)
    store.write_summary({"counts": {"completed": 1}})
    (path,) = export_architectures(run, pareto=True)
    rebuilt = build(path).eval()
    trained = build_model(arch)
    trained.load_state_dict(outcome.model_state)
    with torch.no_grad():
        assert torch.equal(rebuilt(digits.val_x), trained.eval()(digits.val_x))
    assert yaml.safe_load(path.read_text())["architecture"]["distill_token"] is True
