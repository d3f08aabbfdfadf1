"""Data: digits, CIFAR-10 batches and image folders read into normalised tensors; the
small-data regime; batch augmentation."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evaluators.augment import Augment, random_crop
from evaluators.data import DataError, DataNotFoundError, describe_data, load_data, small_data

CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", 16)


# ---- digits ---------------------------------------------------------------------------------
def test_digits_split_shapes_and_normalisation(digits):
    assert digits.train_x.shape[1:] == (1, 16, 16) and digits.val_x.shape[1:] == (1, 16, 16)
    assert len(digits.train_y) + len(digits.val_y) == 1797
    assert abs(len(digits.val_y) / 1797 - 0.2) < 0.01
    assert digits.num_classes == 10 and digits.in_channels == 1 and not digits.flip_invariant
    assert digits.train_x.dtype == torch.float32 and digits.train_y.dtype == torch.int64
    assert abs(float(digits.train_x.mean())) < 1e-4 and abs(float(digits.train_x.std()) - 1) < 1e-3
    # stratified: every class has ~20% of its images in validation
    counts = torch.bincount(digits.val_y, minlength=10).float()
    totals = counts + torch.bincount(digits.train_y, minlength=10).float()
    assert torch.all((counts / totals - 0.2).abs() < 0.02)


def test_digits_split_is_fixed_by_seed(digits):
    again = load_data("digits", 16, seed=0)
    other = load_data("digits", 16, seed=1)
    assert torch.equal(again.train_x, digits.train_x) and torch.equal(again.val_y, digits.val_y)
    assert not torch.equal(other.val_x, digits.val_x)
    # no image is both in training and in validation
    train_rows = {tuple(r.tolist()) for r in digits.train_x.flatten(1)[:, ::7]}
    assert not any(tuple(r.tolist()) in train_rows for r in digits.val_x.flatten(1)[:, ::7])


def test_digits_resized_and_converted_to_rgb():
    rgb = load_data("digits", 32, in_channels=3)
    assert rgb.train_x.shape[1:] == (3, 32, 32) and rgb.in_channels == 3
    assert torch.allclose(rgb.train_x[:, 0], rgb.train_x[:, 2], atol=1e-5)  # grey copied to RGB


def test_small_data_keeps_validation_and_picks_per_class(digits):
    small = small_data(digits, per_class=7, seed=3)
    assert torch.equal(torch.bincount(small.train_y), torch.full((10,), 7))
    assert small.val is digits.val and small.mean == digits.mean  # the same validation images
    assert torch.equal(small_data(digits, per_class=7, seed=3).train_x, small.train_x)
    assert not torch.equal(small_data(digits, per_class=7, seed=4).train_x, small.train_x)
    part = small_data(digits, fraction=0.25)
    assert abs(len(part.train_y) - 0.25 * len(digits.train_y)) <= 10
    with pytest.raises(DataError, match="exactly one"):
        small_data(digits, per_class=5, fraction=0.5)
    with pytest.raises(DataError, match="per_class"):
        small_data(digits, per_class=0)


def test_unknown_data_set_and_missing_path():
    with pytest.raises(DataError, match="unknown data set 'mnist'"):
        load_data("mnist", 16)
    with pytest.raises(DataError, match="path"):
        load_data("cifar10", 16)
    with pytest.raises(DataError, match="val_fraction"):
        load_data("digits", 16, val_fraction=1.5)


# ---- CIFAR-10 -------------------------------------------------------------------------------
def write_cifar(folder: Path, per_batch: int = 4, bytes_keys: bool = True) -> None:
    """Five tiny batches in the official format: image k of batch b is a flat colour whose red
    value encodes its label."""
    folder.mkdir(parents=True, exist_ok=True)
    key = (lambda k: k.encode()) if bytes_keys else (lambda k: k)
    for b, name in enumerate(CIFAR_BATCHES):
        labels = [(b * per_batch + k) % 10 for k in range(per_batch)]
        data = np.zeros((per_batch, 3, 32, 32), np.uint8)
        for k, label in enumerate(labels):
            data[k, 0], data[k, 1], data[k, 2] = 20 * label, 100, 7
        batch = {key("batch_label"): key(name), key("labels"): labels,
                 key("data"): data.reshape(per_batch, -1), key("filenames"): [key("x.png")] * per_batch}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {key("label_names"): [key(f"class{i}") for i in range(10)], key("num_vis"): 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


@pytest.mark.parametrize("bytes_keys", [True, False])
def test_cifar10_reads_batches(tmp_path, bytes_keys):
    write_cifar(tmp_path / "cifar-10-batches-py", bytes_keys=bytes_keys)
    data = load_data("cifar10", 16, path=tmp_path)  # the parent of cifar-10-batches-py works too
    assert len(data.train_y) + len(data.val_y) == 20
    assert data.train_x.shape[1:] == (3, 16, 16) and data.num_classes == 10 and data.flip_invariant
    assert data.class_names == tuple(f"class{i}" for i in range(10))
    std, mean = torch.tensor(data.std).view(1, 3, 1, 1), torch.tensor(data.mean).view(1, 3, 1, 1)
    for x, y in ((data.train_x, data.train_y), (data.val_x, data.val_y)):
        pixels = (x * std + mean) * 255  # undo the normalisation
        assert torch.allclose(pixels[:, 0].mean(dim=(1, 2)), 20 * y.float(), atol=0.05)
        assert torch.allclose(pixels[:, 1], torch.full_like(pixels[:, 1], 100), atol=0.05)


def test_cifar10_missing_directory_or_batch(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist") as info:
        load_data("cifar10", 32, path=tmp_path / "nowhere")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)
    write_cifar(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(DataNotFoundError, match="data_batch_3"):
        load_data("cifar10", 32, path=tmp_path)


def test_cifar10_corrupt_batches(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "data_batch_2").write_bytes(b"\x80\x02not a pickle at all")
    with pytest.raises(DataError, match="data_batch_2 is not a CIFAR-10 python batch"):
        load_data("cifar10", 32, path=tmp_path)
    bad = {b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 1, 2]}
    (tmp_path / "data_batch_2").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_2 'data' is uint8\[3, 100\]"):
        load_data("cifar10", 32, path=tmp_path)


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_cifar10_never_runs_code_from_a_batch_file(tmp_path):
    write_cifar(tmp_path)
    marker = tmp_path / "pwned"
    payload = {b"data": _Exploit(marker), b"labels": [0]}
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(DataError, match="refusing to load global"):
        load_data("cifar10", 32, path=tmp_path)
    assert not marker.exists()


# ---- ImageFolder ----------------------------------------------------------------------------
COLOURS = {"cat": (200, 10, 10), "dog": (10, 200, 10), "emu": (10, 10, 200)}


def write_folder(root: Path, per_class: int = 3) -> None:
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for k in range(per_class):
            size = (12 + 5 * k, 9 + 3 * k)  # images of different sizes
            suffix = ".jpg" if k == 1 else ".png"
            Image.new("RGB", size, colour).save(root / name / f"{k}{suffix}")
    (root / "cat" / "notes.txt").write_text("not an image, ignored")


def _pixels(x: torch.Tensor, data) -> torch.Tensor:
    return (x * torch.tensor(data.std).view(1, -1, 1, 1) + torch.tensor(data.mean).view(1, -1, 1, 1)) * 255


def test_imagefolder_reads_classes_and_pixels(tmp_path):
    write_folder(tmp_path)
    data = load_data("imagefolder", 8, path=tmp_path, val_fraction=0.34)
    assert data.class_names == ("cat", "dog", "emu") and data.num_classes == 3
    assert len(data.train_y) == 6 and len(data.val_y) == 3 and data.train_x.shape[1:] == (3, 8, 8)
    colours = torch.tensor(list(COLOURS.values()), dtype=torch.float32)
    mean_colour = _pixels(data.train_x, data).mean(dim=(2, 3))
    assert torch.allclose(mean_colour, colours[data.train_y], atol=4)  # jpg is lossy
    grey = load_data("imagefolder", 8, path=tmp_path, val_fraction=0.34, in_channels=1)
    assert grey.train_x.shape[1:] == (1, 8, 8)


def test_imagefolder_with_its_own_validation_split(tmp_path):
    write_folder(tmp_path / "train", per_class=2)
    write_folder(tmp_path / "val", per_class=1)
    data = load_data("imagefolder", 8, path=tmp_path)
    assert len(data.train_y) == 6 and len(data.val_y) == 3
    assert torch.equal(data.val_y, torch.tensor([0, 1, 2]))


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="nowhere does not exist"):
        load_data("imagefolder", 8, path=tmp_path / "nowhere")
    with pytest.raises(DataError, match="no class folders"):
        load_data("imagefolder", 8, path=tmp_path)
    write_folder(tmp_path / "tree")
    (tmp_path / "tree" / "dog" / "1.jpg").write_bytes(b"garbage, not a jpeg")
    with pytest.raises(DataError, match=r"cannot read image .*dog/1\.jpg"):
        load_data("imagefolder", 8, path=tmp_path / "tree")
    (tmp_path / "tree" / "dog" / "1.jpg").unlink()
    (tmp_path / "tree" / "fox").mkdir()
    with pytest.raises(DataError, match="fox holds no"):
        load_data("imagefolder", 8, path=tmp_path / "tree")


def test_describe_reads_listings_and_metadata_without_decoding(tmp_path):
    write_folder(tmp_path / "tree")
    # corrupt every image: describing must not open one, loading must name the first bad file
    for image in sorted((tmp_path / "tree").glob("*/*.*g")):
        image.write_bytes(b"not an image")
    info = describe_data("imagefolder", tmp_path / "tree")
    assert info.class_names == ("cat", "dog", "emu") and info.num_classes == 3
    with pytest.raises(DataError, match=r"cannot read image .*cat/0\.png"):
        load_data("imagefolder", 8, path=tmp_path / "tree")
    write_cifar(tmp_path / "cifar")
    assert describe_data("cifar10", tmp_path / "cifar").class_names == \
        load_data("cifar10", 8, path=tmp_path / "cifar").class_names
    digits = describe_data("digits")
    assert digits.class_names == load_data("digits", 8).class_names and digits.in_channels == 1
    with pytest.raises(DataNotFoundError, match="nowhere"):
        describe_data("cifar10", tmp_path / "nowhere")


def test_a_single_class_is_refused_by_describe_and_load(tmp_path):
    (tmp_path / "only").mkdir()
    for k in range(3):
        Image.new("RGB", (8, 8), (k, k, k)).save(tmp_path / "only" / f"{k}.png")
    for read in (lambda: describe_data("imagefolder", tmp_path),
                 lambda: load_data("imagefolder", 8, path=tmp_path)):
        with pytest.raises(DataError, match=r"found 1 class .*\(only\); a classifier needs at least 2"):
            read()


# ---- augmentation ---------------------------------------------------------------------------
def test_augment_is_seeded_shifts_and_flips():
    images = torch.randn(16, 2, 8, 8)
    out = Augment(padding=2, flip=True)(images, torch.Generator().manual_seed(1))
    again = Augment(padding=2, flip=True)(images, torch.Generator().manual_seed(1))
    assert out.shape == images.shape and torch.equal(out, again)
    assert not torch.equal(out, images)
    assert torch.equal(Augment(padding=0, flip=False)(images, torch.Generator()), images)
    # every crop is the original shifted by at most 2 pixels (zeros where it left the image)
    cropped = random_crop(images, 2, torch.Generator().manual_seed(0))
    for original, crop in zip(images, cropped):
        padded = torch.nn.functional.pad(original, (2, 2, 2, 2))
        assert any(torch.equal(crop, padded[:, dy:dy + 8, dx:dx + 8])
                   for dy in range(5) for dx in range(5))
    # flips: each image is either itself or its mirror, and both happen
    flipped = Augment(padding=0, flip=True)(images, torch.Generator().manual_seed(0))
    mirrored = [torch.equal(f, i.flip(2)) for f, i in zip(flipped, images)]
    same = [torch.equal(f, i) for f, i in zip(flipped, images)]
    assert all(m or s for m, s in zip(mirrored, same)) and any(mirrored) and any(same)


# ---- deformed large set ---------------------------------------------------------------------
def test_deformed_training_set_is_deformed_pixels_normalised_like_the_rest(digits):
    from evaluators.deformed_data import deform, deformed_data

    large = deformed_data(digits, per_class=30, seed=4)
    assert len(large.train) == 300 and torch.equal(torch.bincount(large.train_y), torch.full((10,), 30))
    assert large.val is digits.val and large.mean == digits.mean
    assert large.train.pixels.dtype == np.float32 and large.train.images().min() >= -1e-6
    # deforming [0, 1] pixels with black margins, then normalising, is deforming the normalised
    # images with the normalised black: the maps are affine and bilinear sampling is linear
    images = digits.train.images()[:8]
    mean, std = torch.tensor(digits.mean).view(1, -1, 1, 1), torch.tensor(digits.std).view(1, -1, 1, 1)
    in_pixels = (deform(images, torch.Generator().manual_seed(0)) - mean) / std
    normalised = deform((images - mean) / std, torch.Generator().manual_seed(0), fill=-mean.flatten() / std.flatten())
    assert torch.allclose(in_pixels, normalised, atol=1e-5)
