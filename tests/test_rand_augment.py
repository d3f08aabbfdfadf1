"""RandAugment on tensors (each operation against PIL's own, the per-image draws, seeding) and
repeated augmentation (batches of repeated images), in a trainer and in a study's config."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from PIL import Image, ImageEnhance, ImageOps

from evaluators import rand_augment
from evaluators.data import load_data, small_data
from evaluators.rand_augment import OPERATIONS, PIXEL_OPERATIONS, RandAugment, RandAugmentConfig
from evaluators.trainer import TrainConfig, Trainer
from nas.layout_study.config import StudyConfig, load_study_config
from search_spaces.fields import FieldError
from test_regularizers import hybrid_arch


def uint8_images(channels: int, seed: int = 0, low: int = 0, high: int = 256) -> np.ndarray:
    """(6, C, 12, 12) random uint8 images; image 1 has a narrow range (AutoContrast has work)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(low, high, (6, channels, 12, 12)).astype(np.uint8)
    pixels[1] = pixels[1] // 4 + 60
    return pixels


def to_pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))


def from_pil(image: Image.Image) -> torch.Tensor:
    pixels = np.asarray(image, dtype=np.float32)
    return torch.from_numpy(pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1))


def enhance(kind):
    return lambda image, strength, level: kind(image).enhance(max(0.1, 1 + 0.9 * level))


PIL_OPERATIONS = {  # timm's "increasing" arguments at a strength in [0, 1] and a signed level
    "AutoContrast": lambda image, strength, level: ImageOps.autocontrast(image),
    "Equalize": lambda image, strength, level: ImageOps.equalize(image),
    "Invert": lambda image, strength, level: ImageOps.invert(image),
    "Posterize": lambda image, strength, level: ImageOps.posterize(image, 4 - int(4 * strength)),
    "Solarize": lambda image, strength, level: ImageOps.solarize(image, 256 - int(256 * strength)),
    "SolarizeAdd": lambda image, strength, level: image.point(
        [min(255, i + int(110 * strength)) if i < 128 else i for i in range(256)] * len(image.getbands())),
    "Color": enhance(ImageEnhance.Color),
    "Contrast": enhance(ImageEnhance.Contrast),
    "Brightness": enhance(ImageEnhance.Brightness),
    "Sharpness": enhance(ImageEnhance.Sharpness),
}


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", sorted(PIL_OPERATIONS))
def test_each_pixel_operation_matches_pil_to_within_its_rounding(name, channels):
    pixels = uint8_images(channels)
    for strength in (0.3, 0.9):
        level = torch.full((6,), strength) * torch.tensor([-1.0, 1.0] * 3)
        ours = PIXEL_OPERATIONS[name](torch.from_numpy(pixels).float(), level.abs(), level)
        wanted = torch.stack([from_pil(PIL_OPERATIONS[name](to_pil(image), strength, float(lv)))
                              for image, lv in zip(pixels, level)])
        assert ours.shape == wanted.shape
        assert float((ours - wanted).abs().max()) <= 1.5  # PIL rounds its grey and truncates its output
        assert float((ours.round() - wanted).abs().mean()) < 0.5


def one_layer(pixels: np.ndarray, name: str, level: float, fill: float = 100.0) -> torch.Tensor:
    choice = torch.full((len(pixels),), OPERATIONS.index(name))
    return rand_augment.apply_layer(torch.from_numpy(pixels).float(), choice,
                                    torch.full((len(pixels),), level), torch.full((1, 1, 1, 1), fill))


def test_translation_moves_by_whole_pixels_and_fills_with_the_mean_as_pil_does():
    pixels = uint8_images(1)
    moved = one_layer(pixels, "TranslateX", 1 / 3)  # 0.45 x 12 px x 1/3 = 1.8 px: not whole
    assert not torch.allclose(moved, torch.from_numpy(pixels).float())
    shift = one_layer(pixels, "TranslateY", 5 / 0.45 / 12)  # 5 px
    for image, ours in zip(pixels, shift):
        wanted = to_pil(image).transform((12, 12), Image.AFFINE, (1, 0, 0, 0, 1, 5), fillcolor=100)
        assert torch.allclose(ours, from_pil(wanted), atol=1e-3)


@pytest.mark.parametrize("name, pil_transform", [
    ("Rotate", lambda image: image.rotate(15, resample=Image.BILINEAR, fillcolor=100)),
    ("ShearX", lambda image: image.transform(image.size, Image.AFFINE, (1, 0.15, 0, 0, 1, 0),
                                             resample=Image.BILINEAR, fillcolor=100)),
    ("ShearY", lambda image: image.transform(image.size, Image.AFFINE, (1, 0, 0, 0.15, 1, 0),
                                             resample=Image.BILINEAR, fillcolor=100)),
])
def test_rotation_and_shear_turn_the_way_pil_turns(name, pil_transform):
    pixels = uint8_images(1, low=0, high=256)
    ours = one_layer(pixels, name, 0.5)  # 15 degrees / 0.15 shear
    other_way = one_layer(pixels, name, -0.5)
    wanted = torch.stack([from_pil(pil_transform(to_pil(image))) for image in pixels])
    inside = (slice(None), slice(None), slice(3, -3), slice(3, -3))  # PIL fills edges differently
    error = float((ours - wanted)[inside].abs().mean())
    assert error < 3.0  # levels out of 255; the image's own spread is ~70
    assert float((other_way - wanted)[inside].abs().mean()) > 10 * error


def digits_batch(count: int = 64) -> tuple[torch.Tensor, RandAugment]:
    data = load_data("digits", 16)
    pixels = torch.from_numpy(data.train.gather(np.arange(count))).permute(0, 3, 1, 2).float()
    mean, std = torch.tensor(data.mean).view(1, -1, 1, 1), torch.tensor(data.std).view(1, -1, 1, 1)
    return (pixels - mean) / std, RandAugment(RandAugmentConfig(), data.mean, data.std)


def test_rand_augment_is_seeded_keeps_shapes_and_with_probability_0_changes_nothing():
    images, augment = digits_batch()
    first = augment(images, torch.Generator().manual_seed(0))
    assert first.shape == images.shape and first.dtype == images.dtype
    assert torch.equal(first, augment(images, torch.Generator().manual_seed(0)))
    assert not torch.equal(first, augment(images, torch.Generator().manual_seed(1)))
    never = RandAugment(RandAugmentConfig(probability=0.0), augment.mean.flatten().tolist(),
                        augment.std.flatten().tolist())
    assert torch.allclose(never(images, torch.Generator().manual_seed(0)), images, atol=1e-5)


def test_each_layer_picks_one_operation_per_image_with_its_probability():
    """Grey images, 2 layers at probability 0.5: an image stays as it was only where each layer
    skipped it or drew Color (the identity on one channel): (0.5 + 0.5 / 15)^2 of them. (24x24:
    PIL's Equalize leaves images of under ~256 pixels alone.)"""
    rng = np.random.default_rng(0)
    pixels = torch.from_numpy(rng.integers(20, 200, (4000, 1, 24, 24))).float()
    mean, std = [100 / 255], [50 / 255]
    images = (pixels / 255 - mean[0]) / std[0]
    out = RandAugment(RandAugmentConfig(), mean, std)(images, torch.Generator().manual_seed(0))
    unchanged = float(((out - images).abs().flatten(1).amax(1) < 1e-4).float().mean())
    assert unchanged == pytest.approx((0.5 + 0.5 / 15) ** 2, abs=0.03)
    choice, level = RandAugment(RandAugmentConfig(magnitude=9, magnitude_std=0.5), mean, std).draw(
        4000, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert float((choice == -1).float().mean()) == pytest.approx(0.5, abs=0.03)
    assert set(choice[choice >= 0].tolist()) == set(range(len(OPERATIONS)))
    assert float(level.abs().mean()) == pytest.approx(0.9, abs=0.01)
    assert float((level < 0).float().mean()) == pytest.approx(0.5, abs=0.03)
    assert float(level.abs().max()) <= 1.0


def test_config_errors_name_the_field():
    with pytest.raises(FieldError, match=r"train\.rand_augment\.magnitude"):
        TrainConfig.from_dict({"rand_augment": {"magnitude": 12}})
    with pytest.raises(FieldError, match=r"train\.rand_augment\.level"):
        TrainConfig.from_dict({"rand_augment": {"level": 3}})
    with pytest.raises(FieldError, match=r"train\.rand_augment\.ops"):
        TrainConfig.from_dict({"rand_augment": {"ops": 0}})
    with pytest.raises(FieldError, match=r"train\.repeated_augment"):
        TrainConfig.from_dict({"repeated_augment": 0})
    parsed = TrainConfig.from_dict({"rand_augment": {"ops": 3}, "repeated_augment": 3})
    assert parsed.rand_augment == RandAugmentConfig(ops=3) and parsed.repeated_augment == 3
    assert TrainConfig.from_dict({}).rand_augment is None


# ---- repeated augmentation and a trainer with both ------------------------------------------------

def test_repeated_augmentation_repeats_each_drawn_image_in_a_row_and_covers_the_set():
    data = small_data(load_data("digits", 16), per_class=10)  # 100 images
    config = TrainConfig(epochs=1, batch_size=32, device="cpu")
    plain = Trainer(hybrid_arch(), data, config)
    stream = torch.cat([plain._next_indices() for _ in range(3)])
    assert torch.equal(stream[:96], torch.randperm(100, generator=torch.Generator().manual_seed(0))[:96])
    repeating = Trainer(hybrid_arch(), data, config.replace(repeated_augment=3))
    batches = [repeating._next_indices() for _ in range(10)]
    assert all(len(b) == 32 for b in batches)
    first = batches[0]
    assert torch.equal(first, first[::3].repeat_interleave(3)[:32])  # 11 images, 3 times each
    drawn = torch.cat([b[::3] for b in batches[:9]])  # 99 distinct draws: nearly one pass
    assert len(set(drawn.tolist())) == 99


def test_a_trainer_with_rand_augment_and_repeats_is_seeded_and_learns():
    data = small_data(load_data("digits", 16), per_class=20)
    config = TrainConfig(epochs=2, steps_per_epoch=12, batch_size=32, lr=3e-3,
                         rand_augment=RandAugmentConfig(), repeated_augment=3)

    def losses(config):
        trainer = Trainer(hybrid_arch(), data, config)
        return [trainer.run_epoch()["train_loss"] for _ in range(2)]

    first = losses(config)
    assert first == losses(config)
    assert first != losses(config.replace(seed=1))
    assert first != losses(config.replace(rand_augment=None))
    assert first[1] < first[0]


def test_a_study_comparison_takes_rand_augment_and_writes_it_back(tmp_path):
    quick = load_study_config(quick=True).to_dict()
    quick["distillation"]["train"] = {**quick["distillation"]["train"],
                                      "rand_augment": {"magnitude": 7}, "repeated_augment": 3}
    study = StudyConfig.from_dict(quick)
    changes = study.distillation.train
    assert changes["rand_augment"] == RandAugmentConfig(magnitude=7)
    assert study.comparison_train(changes).repeated_augment == 3
    written = tmp_path / "study.yaml"
    written.write_text(yaml.safe_dump(study.to_dict()))
    again = StudyConfig.from_dict(yaml.safe_load(written.read_text()))
    assert again.distillation.train == changes
