"""The on-disk data cache: built once, mapped after (no decoding), invalidated by a changed
folder, never read half-built, unreadable images named or skipped and counted, CIFAR-10 through
the same path, batches normalised per batch, and a trial's memory flat in the data set's size."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evaluators.batches import BatchLoader, ImageSplit
from evaluators.data import DataError, load_data, prepare_data
from evaluators.datasets.cache import open_entry
from evaluators.datasets.imagefolder import list_imagefolder
from evaluators.trainer import TrainConfig
from evaluators.trial import TrialConfig, prepare_trial_data, run_trial
from results.export import input_preprocessing
from search_spaces.architecture import Architecture, Stage, Stem
from search_spaces.fields import FieldError
from test_data import COLOURS, write_cifar, write_folder

REPO = Path(__file__).resolve().parents[1]


def entries(cache: Path) -> list[Path]:
    """Complete-looking entry folders (not temp folders, not lock files)."""
    return sorted(p for p in cache.iterdir() if p.is_dir() and ".tmp-" not in p.name)


def garble_keeping_stat(files: list[Path]) -> None:
    """Overwrite each file with garbage of the same size and restore its mtime: the cache key
    cannot tell, so only a reader that decodes again would notice."""
    for file in files:
        stat = file.stat()
        file.write_bytes(b"\0" * stat.st_size)
        os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def tiny_arch(resolution: int, classes: int, channels: int = 3) -> Architecture:
    return Architecture(Stem("conv", 8), (Stage("C", 1, 8, stride=1), Stage("C", 1, 16)),
                        resolution=resolution, in_channels=channels, num_classes=classes)


# ---- build, reuse, invalidation -------------------------------------------------------------
def test_first_load_decodes_into_the_cache_and_later_loads_map_it(tmp_path):
    write_folder(tmp_path / "tree", per_class=4)
    cache = tmp_path / "cache"
    first = prepare_data("imagefolder", 8, tmp_path / "tree", cache_dir=cache)
    assert first.built and [p.name for p in entries(cache)] == [first.path.name]
    meta = json.loads((first.path / "meta.json").read_text())
    assert meta["class_names"] == ["cat", "dog", "emu"] and meta["splits"]["train"]["count"] == 12
    assert len(meta["splits"]["train"]["mean"]) == 3
    files = first.files()
    assert files["rows"]["train"][0] == "cat/0.png" and len(files["sources"]) == 12
    images = first.splits["train"].images
    assert isinstance(images, np.memmap) and images.dtype == np.uint8 and images.shape == (12, 8, 8, 3)
    data = load_data("imagefolder", 8, path=tmp_path / "tree", val_fraction=0.25, cache_dir=cache)
    assert data.train.pixels.filename == images.filename  # batches read the mapped file

    # Every source image is now garbage, with its size and mtime kept: a load that decoded again
    # would fail; this one maps the cache and gives the same images.
    garble_keeping_stat(sorted((tmp_path / "tree").glob("*/*.*g")))
    again = prepare_data("imagefolder", 8, tmp_path / "tree", cache_dir=cache)
    assert not again.built and again.path == first.path
    reloaded = load_data("imagefolder", 8, path=tmp_path / "tree", val_fraction=0.25, cache_dir=cache)
    assert torch.equal(reloaded.train_x, data.train_x) and reloaded.mean == data.mean
    with pytest.raises(DataError, match=r"cannot read image .*cat/0\.png"):
        load_data("imagefolder", 8, path=tmp_path / "tree", cache_dir=tmp_path / "elsewhere")


def test_a_changed_folder_makes_a_new_entry_and_drops_the_stale_one(tmp_path):
    write_folder(tmp_path / "tree", per_class=3)
    cache = tmp_path / "cache"
    before = load_data("imagefolder", 8, path=tmp_path / "tree", val_fraction=0.34, cache_dir=cache)
    old_entry = entries(cache)[0]
    # replace one training image with a white one, then only touch another file
    changed = tmp_path / "tree" / "dog" / "0.png"
    Image.new("RGB", (12, 9), (255, 255, 255)).save(changed)
    os.utime(changed, ns=(0, changed.stat().st_mtime_ns + 10**9))
    after = prepare_data("imagefolder", 8, tmp_path / "tree", cache_dir=cache)
    assert after.built and after.path != old_entry and entries(cache) == [after.path]
    row = after.files()["rows"]["train"].index("dog/0.png")
    assert np.all(after.splits["train"].images[row] == 255)
    touched = tmp_path / "tree" / "emu" / "2.png"
    os.utime(touched, ns=(0, touched.stat().st_mtime_ns + 10**9))
    assert prepare_data("imagefolder", 8, tmp_path / "tree", cache_dir=cache).built
    reloaded = load_data("imagefolder", 8, path=tmp_path / "tree", val_fraction=0.34, cache_dir=cache)
    assert reloaded.mean != before.mean  # the white image moved the statistics
    # another resolution or channel count is another entry beside it
    prepare_data("imagefolder", 16, tmp_path / "tree", cache_dir=cache)
    prepare_data("imagefolder", 8, tmp_path / "tree", in_channels=1, cache_dir=cache)
    assert len(entries(cache)) == 3


def test_an_incomplete_entry_or_a_temp_folder_is_never_used(tmp_path):
    write_folder(tmp_path / "tree", per_class=2)
    cache = tmp_path / "cache"
    built = prepare_data("imagefolder", 8, tmp_path / "tree", cache_dir=cache)
    key = list_imagefolder(tmp_path / "tree", 8).key
    (built.path / "meta.json").unlink()  # as if killed before the metadata was written
    assert open_entry(built.path, key) is None
    leftover = cache / f"{key.entry_name}.tmp-999999"
    leftover.mkdir()
    (leftover / "train-images.npy").write_bytes(b"partial")
    rebuilt = prepare_data("imagefolder", 8, tmp_path / "tree", cache_dir=cache)
    assert rebuilt.built and rebuilt.path == built.path and not leftover.exists()
    # a truncated image array is refused too
    images = rebuilt.path / "train-images.npy"
    images.write_bytes(images.read_bytes()[:200])
    assert open_entry(rebuilt.path, key) is None
    assert prepare_data("imagefolder", 8, tmp_path / "tree", cache_dir=cache).built


KILLED_BUILD = """
import sys, time
import evaluators.datasets.imagefolder as folder
from evaluators.data import prepare_data
slow = folder.read_image
def read_slowly(*args, **kwargs):
    time.sleep(0.01)
    return slow(*args, **kwargs)
folder.read_image = read_slowly
prepare_data("imagefolder", 8, sys.argv[1], cache_dir=sys.argv[2], decode_workers=1)
"""


def test_a_build_killed_midway_leaves_nothing_that_is_used(tmp_path):
    write_folder(tmp_path / "tree", per_class=100)  # 300 images, ~10 ms each in the builder
    cache = tmp_path / "cache"
    builder = subprocess.Popen([sys.executable, "-c", KILLED_BUILD, str(tmp_path / "tree"), str(cache)],
                               cwd=REPO, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(cache.glob("*.tmp-*/train-images.npy")) and time.monotonic() < deadline:
        assert builder.poll() is None, "the builder ended before it was killed"
        time.sleep(0.05)
    time.sleep(0.5)  # some rows written, far from all
    builder.send_signal(signal.SIGKILL)
    builder.wait()
    assert list(cache.glob("*.tmp-*")) and not entries(cache)  # only the temp folder is left
    rebuilt = prepare_data("imagefolder", 8, tmp_path / "tree", cache_dir=cache)  # lock is free
    assert rebuilt.built and not list(cache.glob("*.tmp-*"))
    colours = np.array(list(COLOURS.values()))
    labels = np.asarray(rebuilt.splits["train"].labels)
    jpeg = np.array([name.endswith(".jpg") for name in rebuilt.files()["rows"]["train"]])
    pixels = rebuilt.splits["train"].images[:].reshape(300, -1, 3).mean(axis=1)
    assert np.abs(pixels[~jpeg] - colours[labels[~jpeg]]).max() < 1  # every row really decoded


# ---- unreadable images ----------------------------------------------------------------------
def test_an_unreadable_image_is_named_or_skipped_and_counted(tmp_path, capsys):
    write_folder(tmp_path / "tree", per_class=4)
    (tmp_path / "tree" / "dog" / "2.png").write_bytes(b"not a png")
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"cannot read image .*dog/2\.png.*trial\.skip_corrupt: true"):
        load_data("imagefolder", 8, path=tmp_path / "tree", cache_dir=cache)
    assert not entries(cache)
    data = load_data("imagefolder", 8, path=tmp_path / "tree", val_fraction=0.25, cache_dir=cache,
                     skip_corrupt=True)
    assert data.skipped == ("dog/2.png",) and len(data.train) + len(data.val) == 11
    assert "skipped 1 unreadable (first: dog/2.png)" in capsys.readouterr().err
    # the entry built with the option does not hide the bad file from a load without it
    with pytest.raises(DataError, match=r"cannot read image .*dog/2\.png.*left out of the cache"):
        load_data("imagefolder", 8, path=tmp_path / "tree", cache_dir=cache)
    config = TrialConfig(data="imagefolder", data_path=str(tmp_path / "tree"), val_fraction=0.25,
                         cache_dir=str(cache), skip_corrupt=True, small_per_class=2,
                         train=TrainConfig(epochs=1, steps_per_epoch=1, batch_size=4))
    outcome = run_trial(tiny_arch(8, 3), config)
    assert outcome.final["skipped_images"] == 1.0
    assert "1 unreadable image(s) left out" in capsys.readouterr().out
    plain = run_trial(tiny_arch(8, 10, channels=1), TrialConfig(small_per_class=2, train=config.train))
    assert "skipped_images" not in plain.final  # only reported when the option is on


# ---- CIFAR-10 and parallel decoding ---------------------------------------------------------
def test_cifar10_goes_through_the_same_cache(tmp_path):
    write_cifar(tmp_path / "cifar")
    cache = tmp_path / "cache"
    grey = prepare_data("cifar10", 16, tmp_path / "cifar", in_channels=1, cache_dir=cache)
    assert grey.built and grey.meta["kind"] == "cifar10"
    assert grey.splits["train"].images.shape == (20, 16, 16, 1)
    labels = np.asarray(grey.splits["train"].labels)
    luma = 0.299 * 20 * labels + 0.587 * 100 + 0.114 * 7  # the flat colours write_cifar draws
    assert np.abs(grey.splits["train"].images[:].reshape(20, -1) - luma[:, None]).max() <= 0.5
    data = load_data("cifar10", 16, path=tmp_path / "cifar", in_channels=1, cache_dir=cache)
    assert data.in_channels == 1 and data.class_names == tuple(f"class{i}" for i in range(10))
    assert not prepare_data("cifar10", 16, tmp_path / "cifar", in_channels=1, cache_dir=cache).built
    native = prepare_data("cifar10", 32, tmp_path / "cifar", cache_dir=cache)  # 32 px: bytes as stored
    assert np.all(native.splits["train"].images[:, :, :, 1] == 100)
    batch = tmp_path / "cifar" / "data_batch_4"
    os.utime(batch, ns=(0, batch.stat().st_mtime_ns + 10**9))
    assert prepare_data("cifar10", 32, tmp_path / "cifar", cache_dir=cache).built


def test_parallel_decoding_matches_decoding_in_process(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / "tree" / name).mkdir(parents=True)
        for k in range(150):  # 300 images: enough for the worker pool
            Image.fromarray(rng.integers(0, 256, (11, 13, 3), dtype=np.uint8)).save(
                tmp_path / "tree" / name / f"{k:03d}.png")
    pool = prepare_data("imagefolder", 8, tmp_path / "tree", cache_dir=tmp_path / "c1", decode_workers=2)
    alone = prepare_data("imagefolder", 8, tmp_path / "tree", cache_dir=tmp_path / "c2", decode_workers=1)
    assert "2 processes" not in str(alone.meta) and pool.meta["splits"] == alone.meta["splits"]
    assert np.array_equal(pool.splits["train"].images, alone.splits["train"].images)
    assert np.array_equal(pool.splits["train"].sums, alone.splits["train"].sums)
    assert pool.splits["train"].images[:].std() > 20  # the noise images really were decoded


# ---- batches --------------------------------------------------------------------------------
def test_batches_are_normalised_channels_last_and_follow_the_positions():
    pixels = np.random.default_rng(0).integers(0, 256, (10, 4, 4, 3), dtype=np.uint8)
    split = ImageSplit(pixels, np.array([9, 7, 5, 3, 1]), torch.arange(5))
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    x, y = BatchLoader(mean, std).load(split, torch.tensor([4, 0]))
    expected = (torch.from_numpy(pixels[[1, 9]]).float() / 255 - torch.tensor(mean)) / torch.tensor(std)
    assert torch.equal(y, torch.tensor([4, 0])) and x.shape == (2, 3, 4, 4)
    assert torch.allclose(x, expected.permute(0, 3, 1, 2))
    assert x.is_contiguous(memory_format=torch.channels_last)
    small = split.subset([1, 2])
    assert small.pixels is pixels and small.rows.tolist() == [7, 5] and small.labels.tolist() == [1, 2]
    floats = ImageSplit(pixels.astype(np.float32) / 255, np.arange(10), torch.zeros(10, dtype=torch.long))
    assert torch.allclose(BatchLoader(mean, std).load(floats, [1, 9])[0], x)


@pytest.mark.cuda
def test_cuda_batches_equal_cpu_batches():
    pixels = np.random.default_rng(0).integers(0, 256, (64, 8, 8, 3), dtype=np.uint8)
    split = ImageSplit(pixels, np.arange(64), torch.arange(64))
    cpu, gpu = BatchLoader((0.5,) * 3, (0.25,) * 3), BatchLoader((0.5,) * 3, (0.25,) * 3, "cuda")
    batches = (torch.arange(32), torch.arange(32, 64), torch.arange(5), torch.arange(64))
    for n, positions in enumerate(batches):
        with torch.inference_mode(n % 2 == 1):  # buffers made in evaluation are refilled in training
            (xc, yc), (xg, yg) = cpu.load(split, positions), gpu.load(split, positions)
        assert xg.device.type == "cuda" and xg.is_contiguous(memory_format=torch.channels_last)
        assert torch.allclose(xg.cpu(), xc) and torch.equal(yg.cpu(), yc)


# ---- config, driver, export -----------------------------------------------------------------
def test_trial_config_cache_fields(tmp_path):
    config = TrialConfig.from_dict({"cache_dir": "~/nas-cache", "skip_corrupt": True, "decode_workers": 3})
    assert config.cache_dir == str(Path.home() / "nas-cache") and config.skip_corrupt
    with pytest.raises(FieldError, match=r"trial\.decode_workers: must be >= 1"):
        TrialConfig.from_dict({"decode_workers": 0})
    with pytest.raises(FieldError, match=r"trial\.skip_corrupt: expected bool"):
        TrialConfig.from_dict({"skip_corrupt": "yes"})
    write_folder(tmp_path / "tree")
    prepare_trial_data(TrialConfig(cache_dir=str(tmp_path / "digits-cache")), 16, 1)
    assert not (tmp_path / "digits-cache").exists()  # digits live in memory
    prepare_trial_data(TrialConfig(data="imagefolder", data_path=str(tmp_path / "tree"),
                                   cache_dir=str(tmp_path / "cache")), 8, 1)
    assert [entry.name.split("-")[-3:-1] for entry in entries(tmp_path / "cache")] == [["8px", "1ch"]]


def test_exported_input_comes_from_the_cache_without_decoding(tmp_path):
    write_folder(tmp_path / "tree", per_class=4)
    trial = {"data": "imagefolder", "data_path": str(tmp_path / "tree"), "val_fraction": 0.25,
             "data_seed": 2, "cache_dir": str(tmp_path / "cache")}
    data = load_data("imagefolder", 8, path=tmp_path / "tree", val_fraction=0.25, seed=2,
                     cache_dir=tmp_path / "cache")
    garble_keeping_stat(sorted((tmp_path / "tree").glob("*/*.*g")))
    exported = input_preprocessing(trial, tiny_arch(8, 3))
    assert exported["mean"] == pytest.approx(list(data.mean))
    assert exported["std"] == pytest.approx(list(data.std))
    assert exported["class_names"] == ["cat", "dog", "emu"]
    # the statistics are those of the training split, as the trainer used
    pixels = data.train.pixels[data.train.rows].reshape(-1, 3) / 255.0
    assert np.allclose(pixels.mean(axis=0), data.mean, atol=1e-9)
    assert np.allclose(pixels.std(axis=0, ddof=1), data.std, atol=1e-9)


# ---- memory ---------------------------------------------------------------------------------
MEASURE_TRIAL = """
import json, sys, threading, time
import torch
torch.set_num_threads(1)
from evaluators.data import load_data
from evaluators.trainer import TrainConfig, Trainer
from search_spaces.architecture import Architecture, Stage, Stem
from search_spaces.model import build_model

def status():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {k: int(fields[k].split()[0]) for k in ("RssAnon", "RssFile")}

peak, running = {"RssAnon": 0, "RssFile": 0}, True
def sample():
    while running:
        peak.update({k: max(v, peak[k]) for k, v in status().items()})
        time.sleep(0.005)

def arch(classes):
    return Architecture(Stem("patch", 8, patch_size=8), (Stage("C", 1, 8, stride=1),), resolution=64,
                        in_channels=3, num_classes=classes)
trainer_config = TrainConfig(epochs=1, steps_per_epoch=2, batch_size=32, eval_batch_size=128, augment=False)
warm = build_model(arch(2)).to(memory_format=torch.channels_last)  # torch's lazy set-up, before measuring
for size in (32, 128):
    warm(torch.zeros(size, 3, 64, 64).contiguous(memory_format=torch.channels_last)).sum().backward()
before = status()
sampler = threading.Thread(target=sample)
sampler.start()
data = load_data("imagefolder", 64, path=sys.argv[1], cache_dir=sys.argv[2])
trainer = Trainer(arch(2), data, trainer_config)
trainer.run_epoch()  # evaluates every training and validation image
running = False
sampler.join()
print(json.dumps({k: peak[k] - before[k] for k in peak}))
"""


@pytest.mark.slow
def test_a_trials_memory_does_not_grow_with_the_data_set(tmp_path):
    """Two folders, 250 and 2,500 64x64 images: as float32 in memory the larger would take 110 MB
    more, as uint8 28 MB more; mapped from the cache the trial's peak anonymous memory grows by
    under 8 MB, while the file pages it maps grow with the data (the images really went through).
    glibc is told to return large blocks when they are freed (MALLOC_MMAP_THRESHOLD_), so that
    the readings are live memory, not what the allocator happens to keep."""
    rng = np.random.default_rng(0)
    originals = []
    for k in range(10):
        path = tmp_path / f"original{k}.png"
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
        originals.append(path)
    growth = {}
    for count in (250, 2500):
        root = tmp_path / f"folder{count}"
        for label in ("a", "b"):
            (root / label).mkdir(parents=True)
            for k in range(count // 2):  # hard links: many files, few distinct images
                os.link(originals[k % 10], root / label / f"{k:05d}.png")
        prepare_data("imagefolder", 64, root, cache_dir=tmp_path / "cache")  # built here, not measured
        out = subprocess.run([sys.executable, "-c", MEASURE_TRIAL, str(root), str(tmp_path / "cache")],
                             cwd=REPO, capture_output=True, text=True, check=True,
                             env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"})
        growth[count] = json.loads(out.stdout.splitlines()[-1])
    extra_anon_mb = (growth[2500]["RssAnon"] - growth[250]["RssAnon"]) / 1024
    extra_file_mb = (growth[2500]["RssFile"] - growth[250]["RssFile"]) / 1024
    assert extra_anon_mb < 8, growth
    assert extra_file_mb > 20, growth  # 2,250 more images of 12 KB read through the mapping
