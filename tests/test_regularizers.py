"""DeiT's regularizers: Mixup/CutMix with their mixed labels, random erasing, stochastic depth
(drop path), each seeded; and a trainer that uses them all."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluators.data import load_data, small_data
from evaluators.regularizers import BatchMixer, cutmix, mix_targets, random_erasing
from evaluators.trainer import TrainConfig, Trainer
from search_spaces.architecture import Architecture, Stage, Stem
from search_spaces.blocks.drop_path import DropPath, drop_path_rates
from search_spaces.model import build_model


def images(seed: int = 0, batch: int = 8) -> torch.Tensor:
    return torch.randn(batch, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def hybrid_arch() -> Architecture:
    return Architecture(Stem("conv", 8), (Stage("C", 2, 16, stride=1), Stage("T", 2, 32, head_size=16),
                                          Stage("A", 1, 32, stride=1, head_size=16)),
                        resolution=16, in_channels=1, num_classes=10)


# ---- Mixup and CutMix -----------------------------------------------------------------------------

def test_mixup_mixes_each_image_with_the_reversed_batch_and_the_labels_alike():
    x = images()
    mixed = BatchMixer(0.8, 0.0, 0.5, torch.Generator().manual_seed(0))(x)
    lam = mixed.lam
    assert 0 < lam < 1
    assert torch.allclose(mixed.images, lam * x + (1 - lam) * x.flip(0))
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    targets = mix_targets(labels, lam, 10)
    assert torch.allclose(targets.sum(1), torch.ones(8))  # weights sum to 1
    assert targets[0, 0] == pytest.approx(lam) and targets[0, 7] == pytest.approx(1 - lam)
    assert targets[0].count_nonzero() == 2


def test_cutmix_pastes_a_box_and_its_lambda_is_the_share_of_pixels_kept():
    x = images()
    mixed = cutmix(x, 0.6, np.random.default_rng(3))
    from_other = (mixed.images == x.flip(0)) & (mixed.images != x)
    own = (mixed.images == x).all(dim=1)[0]  # (H, W): where image 0 kept its own pixels
    assert mixed.lam == pytest.approx(float(own.float().mean()))
    assert 0 < mixed.lam < 1 and from_other.any()
    rows, cols = torch.nonzero(~own, as_tuple=True)  # the pasted pixels form one rectangle
    box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert int(box) == int((~own).sum())
    targets = mix_targets(torch.arange(8), mixed.lam, 8)
    assert torch.allclose(targets.sum(1), torch.ones(8))


def test_mixing_is_seeded_and_switches_between_mixup_and_cutmix():
    x = images()

    def draws(seed, switch_prob=0.5, count=20):
        mixer = BatchMixer(0.8, 1.0, switch_prob, torch.Generator().manual_seed(seed))
        return [mixer(x) for _ in range(count)]

    first, again, other = draws(0), draws(0), draws(1)
    assert [m.lam for m in first] == [m.lam for m in again]
    assert all(torch.equal(a.images, b.images) for a, b in zip(first, again))
    assert [m.lam for m in first] != [m.lam for m in other]

    def is_cutmix(m):  # CutMix keeps some pixels exactly; Mixup changes every pixel
        return bool((m.images == x).any())

    kinds = [is_cutmix(m) for m in first]
    assert any(kinds) and not all(kinds)
    assert all(is_cutmix(m) for m in draws(0, switch_prob=1.0))
    assert not any(is_cutmix(m) for m in draws(0, switch_prob=0.0))
    # a mixed teacher distribution (probabilities) is mixed the same way and still sums to 1
    probs = torch.softmax(torch.randn(8, 10), dim=1)
    assert torch.allclose(mix_targets(probs, 0.3, 10).sum(1), torch.ones(8))


# ---- random erasing --------------------------------------------------------------------------------

def test_random_erasing_replaces_one_rectangle_per_chosen_image():
    x = images(batch=64)
    unchanged = random_erasing(x, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(unchanged, x)
    erased = random_erasing(x, 1.0, torch.Generator().manual_seed(0))
    changed = (erased != x).any(dim=1)  # (B, H, W)
    counts = changed.flatten(1).sum(1)
    assert (counts > 0).float().mean() > 0.9  # nearly every draw fits a 16x16 image
    for mask in changed[counts > 0]:
        rows, cols = torch.nonzero(mask, as_tuple=True)
        height, width = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert height * width == int(mask.sum())  # one rectangle
        assert 0.02 * 256 * 0.5 <= height * width <= 256 / 3 * 1.6  # area, up to rounding
    again = random_erasing(x, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(again, erased)
    half = random_erasing(x, 0.5, torch.Generator().manual_seed(1))
    share = float((half != x).flatten(1).any(1).float().mean())
    assert 0.25 < share < 0.75


# ---- stochastic depth ------------------------------------------------------------------------------

def test_drop_path_rates_grow_linearly_over_every_block_of_the_network():
    assert drop_path_rates(0.2, 5) == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])
    model = build_model(hybrid_arch(), drop_path=0.2)
    rates = [m.rate for m in model.modules() if isinstance(m, DropPath)]
    # 5 blocks: the first (rate 0) gets no module, the other four one each (shared by a
    # Transformer block's two branches)
    assert rates == pytest.approx([0.05, 0.1, 0.15, 0.2])
    assert not any(isinstance(m, DropPath) for m in build_model(hybrid_arch()).modules())


def test_drop_path_is_the_identity_in_eval_and_keeps_the_architecture():
    torch.manual_seed(0)
    plain = build_model(hybrid_arch())
    torch.manual_seed(0)
    dropping = build_model(hybrid_arch(), drop_path=0.5)
    assert plain.state_dict().keys() == dropping.state_dict().keys()
    for name, value in plain.state_dict().items():
        assert torch.equal(value, dropping.state_dict()[name]), name
    x = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(plain.eval()(x), dropping.eval()(x))
        dropping.train()
        assert not torch.allclose(dropping(x), plain.train()(x))


def test_drop_path_drops_whole_samples_and_scales_the_kept_ones():
    module = DropPath(0.25).train()
    module.generator = torch.Generator().manual_seed(0)
    out = module(torch.ones(4000, 3, 5, 5))
    per_sample = out.flatten(1)
    assert torch.equal(per_sample.min(1).values, per_sample.max(1).values)  # all or nothing
    values = sorted(set(per_sample[:, 0].tolist()))
    assert values == [0.0, pytest.approx(1 / 0.75)]
    assert float((per_sample[:, 0] == 0).float().mean()) == pytest.approx(0.25, abs=0.03)
    module.generator = torch.Generator().manual_seed(0)
    assert torch.equal(module(torch.ones(4000, 3, 5, 5)), out)  # seeded
    assert torch.equal(module.eval()(torch.ones(7, 2)), torch.ones(7, 2))


# ---- a trainer with all of them ---------------------------------------------------------------------

def test_a_trainer_with_every_regularizer_is_seeded_and_learns():
    data = small_data(load_data("digits", 16), per_class=20)
    config = TrainConfig(epochs=2, steps_per_epoch=6, batch_size=32, lr=3e-3, mixup=0.8, cutmix=1.0,
                         drop_path=0.1, random_erasing=0.25, label_smoothing=0.1)

    def losses(seed):
        trainer = Trainer(hybrid_arch(), data, config.replace(seed=seed))
        return [trainer.run_epoch()["train_loss"] for _ in range(2)]

    first = losses(0)
    assert first == losses(0) and first != losses(1)
    assert first[1] < first[0]
