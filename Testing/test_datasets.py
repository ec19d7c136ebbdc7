"""Training data: Harvard-layout pair folders, volume slices, the split by series and deterministic batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from PIL import Image

from EdranFusionLib.errors import EdranFusionError
from EdranFusionLib.fusion.color import luminance
from EdranFusionLib.fusion.intensity import window_for
from EdranFusionLib.training.datasets import (
    Sample,
    TrainingImages,
    collect,
    modality_of,
    parse_repeats,
    split_by_series,
    validation_batches,
)


def write_pair_folder(root: Path, task: str = "SPECT-MRI", series: tuple[int, ...] = (3, 12),
                      slices: int = 2, size: int = 32) -> Path:
    """<task>/MRI/<series><slice>.png gray + <task>/SPECT/... RGB, random but seeded."""
    rng = np.random.default_rng(len(task))
    other = task.split("-", maxsplit=1)[0]
    for modality in ("MRI", other):
        (root / task / modality).mkdir(parents=True, exist_ok=True)
    for s in series:
        for k in range(slices):
            name = f"{s}{k:03d}.png"
            Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(root / task / "MRI" / name)
            colour = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(colour).save(root / task / other / name)
    return root / task


def test_pair_folder_pools_both_modalities_and_uses_y_of_colour(tmp_path: Path) -> None:
    folder = write_pair_folder(tmp_path)
    samples = collect([folder])
    assert len(samples) == 8 and {s.series for s in samples} == {"3", "12"}
    colour = np.asarray(Image.open(folder / "SPECT" / "12001.png"))
    sample = next(s for s in samples if s.name == "SPECT-MRI/SPECT/12001")
    assert sample.image.dtype == np.float32
    np.testing.assert_allclose(sample.image, luminance(colour) / 255.0, atol=1e-6)
    gray = next(s for s in samples if s.name == "SPECT-MRI/MRI/3000")
    np.testing.assert_allclose(gray.image, np.asarray(Image.open(folder / "MRI" / "3000.png")) / 255.0, atol=1e-7)


def test_a_root_of_task_folders_is_pooled(tmp_path: Path) -> None:
    write_pair_folder(tmp_path, "SPECT-MRI", (3,))
    write_pair_folder(tmp_path, "CT-MRI", (16,))
    assert {s.name.split("/")[0] for s in collect([tmp_path])} == {"SPECT-MRI", "CT-MRI"}


def test_bad_pair_folders_give_one_line_errors(tmp_path: Path) -> None:
    folder = write_pair_folder(tmp_path / "a")
    (folder / "MRI" / "3000.png").rename(folder / "MRI" / "3999.png")
    with pytest.raises(EdranFusionError, match="unpaired"):
        collect([folder])
    folder = write_pair_folder(tmp_path / "b")
    (folder / "SPECT" / "3001.png").write_bytes(b"not a png")
    with pytest.raises(EdranFusionError, match="cannot read image .*3001.png"):
        collect([folder])
    folder = write_pair_folder(tmp_path / "c")
    for name in ("3000.png",):
        for modality in ("MRI", "SPECT"):
            (folder / modality / name).rename(folder / modality / "scan.png")
    with pytest.raises(EdranFusionError, match="series"):
        collect([folder])
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdranFusionError, match="holds no training data"):
        collect([tmp_path / "empty"])
    with pytest.raises(EdranFusionError, match="does not exist"):
        collect([tmp_path / "missing"])


def test_volume_slices_keep_foreground_slices_normalised_like_the_fuser(tmp_path: Path) -> None:
    data = np.zeros((6, 20, 20), dtype=np.int16)
    data[1:5, 4:16, 4:16] = np.arange(4 * 12 * 12).reshape(4, 12, 12)  # 144/400 = 36% foreground
    data[5, 0, 0:10] = 50  # 10 pixels = 2.5% foreground: dropped
    patient = tmp_path / "patient07"
    patient.mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(data), str(patient / "t2.nii.gz"))
    samples = collect([tmp_path])
    assert [s.name for s in samples] == [f"t2.nii.gz:{k:03d}" for k in range(1, 5)]
    assert {s.series for s in samples} == {"patient07"}
    expected = window_for(data, "v").normalise(data)
    np.testing.assert_allclose(samples[2].image, expected[3], atol=1e-6)


def test_split_by_series_never_shares_a_series(tmp_path: Path) -> None:
    samples = collect([write_pair_folder(tmp_path, series=(1, 2, 3, 4, 5), slices=3, size=16)])
    train, val, record = split_by_series(samples, val_fraction=0.4, seed=7)
    assert len(record["val_series"]) == 2 and not set(record["val_series"]) & set(record["train_series"])
    assert {s.series for s in val} == set(record["val_series"]) and len(train) + len(val) == len(samples)
    assert split_by_series(samples, val_fraction=0.4, seed=7)[2] == record  # seeded: reproducible
    _, val, record = split_by_series(samples, val_series=["4"])
    assert record["val_series"] == ["4"] and len(val) == 6
    with pytest.raises(EdranFusionError, match="not in the data"):
        split_by_series(samples, val_series=["99"])
    with pytest.raises(EdranFusionError, match="too few"):
        split_by_series(samples[:3], val_fraction=0.5)


def test_batches_are_reproducible_resumable_and_sharded(tmp_path: Path) -> None:
    samples = collect([write_pair_folder(tmp_path, series=(1, 2), slices=4, size=24)])
    images = TrainingImages(samples, crop=16, flips=True)
    first = list(images.batches(seed=3, epoch=1, batch_size=2))
    assert len(first) == images.steps_per_epoch(2) == 8 and first[0].shape == (2, 1, 16, 16)
    again = list(images.batches(seed=3, epoch=1, batch_size=2, start=5))
    assert all(torch.equal(a, b) for a, b in zip(first[5:], again))
    assert not torch.equal(first[0], next(images.batches(seed=3, epoch=2, batch_size=2)))
    rank0 = list(images.batches(seed=3, epoch=1, batch_size=1, rank=0, world=2))
    rank1 = list(images.batches(seed=3, epoch=1, batch_size=1, rank=1, world=2))
    assert all(torch.equal(torch.cat([a, b]), whole) for a, b, whole in zip(rank0, rank1, first))


def test_mixed_sizes_need_a_crop_and_validation_batches_by_size(tmp_path: Path) -> None:
    samples = collect([write_pair_folder(tmp_path / "a", series=(1,), size=16),
                       write_pair_folder(tmp_path / "b", "CT-MRI", series=(2,), size=20)])
    with pytest.raises(EdranFusionError, match="--crop"):
        TrainingImages(samples)
    with pytest.raises(EdranFusionError, match="larger than"):
        TrainingImages(samples, crop=18)
    shapes = [tuple(batch.shape) for batch in validation_batches(samples, 3)]
    assert shapes == [(3, 1, 16, 16), (1, 1, 16, 16), (3, 1, 20, 20), (1, 1, 20, 20)]


def test_repeat_modality_weights_the_epoch_by_modality_folder(tmp_path: Path) -> None:
    samples = collect([write_pair_folder(tmp_path, task="CT-MRI", series=(1, 2), slices=2, size=24)])
    assert {modality_of(s) for s in samples} == {"CT", "MRI"}
    images = TrainingImages(samples, crop=16, repeats=parse_repeats("CT:3"))
    assert len(images) == 4 * 3 + 4
    with pytest.raises(EdranFusionError, match="MODALITY:N"):
        parse_repeats("CT:0")


def test_bright_crops_centre_on_bright_pixels_and_stay_resumable() -> None:
    image = np.zeros((64, 64), dtype=np.float32)
    image[50:54, 8:12] = 1.0  # a small bright "bone" patch far from the centre
    sample = Sample(image, "1", "CT-MRI/CT/1000")
    bright = TrainingImages([sample] * 8, crop=16, bright_crops=1.0)
    plain = TrainingImages([sample] * 8, crop=16)
    hits = [float(batch.amax()) for batch in bright.batches(seed=0, epoch=0, batch_size=1)]
    assert hits == [1.0] * 8
    assert sum(float(b.amax()) for b in plain.batches(seed=0, epoch=0, batch_size=1)) < 8
    again = list(bright.batches(seed=0, epoch=0, batch_size=1, start=3))
    assert all(torch.equal(a, b) for a, b in zip(list(bright.batches(seed=0, epoch=0, batch_size=1))[3:], again))
