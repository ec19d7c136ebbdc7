"""Training data for the stage-1 autoencoder: single images in [0,1], each tagged with its series.

Sources (``collect``):
- pair folders in the Harvard layout ``<task>/<modality>/<name>.png`` (or a root holding several task folders):
  both modalities are pooled as independent images, colour images contribute their BT.601 Y channel;
- volumes (NIfTI, NRRD, MHA, ...): axial slices with at least 10% of pixels above the volume's background,
  normalised with the fuser's own ``window_for`` so training sees what fusion will see.

Adjacent slices of one series are near-duplicates, so ``split_by_series`` keeps every series (patient) whole on
one side of the train/validation split. Pair names are ``<series><3-digit slice>`` (``16003`` = series 16); a
volume's series is the patient folder it sits in, or its file name when given directly.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import EdranFusionError
from ..fusion.intensity import luminance_window, window_for
from ..io.images import IMAGE_SUFFIXES, read_image
from ..io.volumes import VOLUME_SUFFIXES

MIN_FOREGROUND = 0.10
_PAIR_NAME = re.compile(r"^(\d+)(\d{3})$")


@dataclass(frozen=True)
class Sample:
    """One training image: float32 HxW in [0,1] (or 2xHxW: a pair), the series it belongs to and a readable id."""

    image: np.ndarray
    series: str
    name: str


def series_of(stem: str, where: Path) -> str:
    """Series id of a pair name ``<series><3-digit slice>``."""
    match = _PAIR_NAME.match(stem)
    if not match:
        raise EdranFusionError(
            f"image name '{stem}' in {where} is not <series><3-digit slice> (e.g. 16003); "
            "rename the pairs so train/validation can be split by series"
        )
    return match.group(1)


class SeriesSelection:
    """Pairs chosen by series: whole series (``16``) or a slab of one series' slices (``41:59-81``, both ends
    included), comma-separated. A task with a single training series (PET-MRI) can hold a slab of it out."""

    def __init__(self, spec: str) -> None:
        self.whole: set[str] = set()
        self.slabs: list[tuple[str, int, int]] = []
        for item in (part.strip() for part in spec.split(",")):
            if not item:
                continue
            match = re.fullmatch(r"(\d+)(?::(\d+)-(\d+))?", item)
            if not match:
                raise EdranFusionError(f"series '{item}' is neither a series id (e.g. 16) nor a slab of slices "
                                       "(e.g. 41:59-81)")
            series, first, last = match.groups()
            if first is None:
                self.whole.add(series)
            elif int(first) > int(last):
                raise EdranFusionError(f"slab '{item}' ends before it starts; give first-last slices in order")
            else:
                self.slabs.append((series, int(first), int(last)))

    def holds(self, stem: str, where: Path) -> bool:
        """Whether pair ``<series><3-digit slice>`` named ``stem`` (in ``where``, for the error) is selected."""
        series = series_of(stem, where)
        return series in self.whole or any(series == s and first <= int(stem[-3:]) <= last
                                           for s, first, last in self.slabs)

    def items(self) -> list[str]:
        """The selection as sorted spec items (for split records and messages)."""
        return sorted(self.whole) + [f"{s}:{first}-{last}" for s, first, last in self.slabs]


def recorded_val_series(record: object) -> set[str] | None:
    """The validation series a run's split.json or a model card records (at the top, or under "split" or "data")."""
    nested = [record.get(key) for key in ("split", "data")] if isinstance(record, dict) else []
    for candidate in (record, *nested):
        if isinstance(candidate, dict) and isinstance(candidate.get("val_series"), list):
            return {str(s) for s in candidate["val_series"]}
    return None


def load_gray(path: Path) -> np.ndarray:
    """An image file as float32 [0,1], normalised exactly as the fuser normalises it (colour: the Y channel)."""
    gray, window = luminance_window(read_image(path), f"image {path}")
    return window.normalise(gray)


def _files(folder: Path, suffixes: Sequence[str]) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(tuple(suffixes)))


def _is_pair_folder(folder: Path) -> bool:
    subfolders = [p for p in folder.iterdir() if p.is_dir()]
    return len(subfolders) == 2 and all(_files(p, IMAGE_SUFFIXES) for p in subfolders)


def pair_folder_samples(folder: Path) -> list[Sample]:
    """Both modalities of one ``<task>`` folder, pooled; names must pair one to one."""
    modalities = sorted(p for p in folder.iterdir() if p.is_dir())
    if len(modalities) != 2:
        raise EdranFusionError(f"pair folder {folder} must hold exactly two modality folders, found {len(modalities)}")
    stems = [{p.stem: p for p in _files(m, IMAGE_SUFFIXES)} for m in modalities]
    if not stems[0] or not stems[1]:
        empty = modalities[0] if not stems[0] else modalities[1]
        raise EdranFusionError(f"modality folder {empty} holds no images; add the images or remove the folder")
    unpaired = sorted(set(stems[0]) ^ set(stems[1]))
    if unpaired:
        raise EdranFusionError(
            f"{len(unpaired)} unpaired image name(s) in {folder} (e.g. '{unpaired[0]}'); "
            f"every name in {modalities[0].name}/ needs the same name in {modalities[1].name}/"
        )
    samples = []
    for modality, files in zip(modalities, stems):
        for stem, path in sorted(files.items()):
            name = f"{folder.name}/{modality.name}/{stem}"
            samples.append(Sample(load_gray(path), series_of(stem, folder), name))
    return samples


def read_volume(path: Path) -> np.ndarray:
    """A volume as a (z, y, x) array."""
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise EdranFusionError(f"cannot read volume {path}; check that it is a valid NIfTI/NRRD/MHA file") from error
    if image.GetNumberOfComponentsPerPixel() != 1 or image.GetDimension() != 3:
        raise EdranFusionError(f"volume {path} is not a scalar 3-D volume; give one scalar volume per file")
    return sitk.GetArrayFromImage(image)


def volume_samples(path: Path, series: str) -> list[Sample]:
    """Axial slices with at least 10% foreground, normalised over the whole volume as the fuser does."""
    data = read_volume(path)
    unit = window_for(data, f"volume {path}").normalise(data)
    samples = []
    for index, plane in enumerate(unit):
        if np.count_nonzero(plane > 0) >= MIN_FOREGROUND * plane.size:
            samples.append(Sample(np.ascontiguousarray(plane), series, f"{path.name}:{index:03d}"))
    return samples


def _volume_files(folder: Path) -> list[tuple[Path, str]]:
    """Volume files below ``folder`` with their series: the patient sub-folder, else the file name."""
    found = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name.lower().endswith(VOLUME_SUFFIXES):
            parent = path.parent.relative_to(folder)
            series = str(parent) if str(parent) != "." else path.name.split(".")[0]
            found.append((path, series))
    return found


def collect(paths: Sequence[str | Path]) -> list[Sample]:
    """All training images from pair folders, roots of pair folders, volume files and folders of volumes."""
    if not paths:
        raise EdranFusionError("no training data given; pass --data with a pair folder or volumes")
    samples: list[Sample] = []
    for given in paths:
        path = Path(given).expanduser()
        if path.is_file() and path.name.lower().endswith(VOLUME_SUFFIXES):
            samples += volume_samples(path, path.name.split(".")[0])
        elif not path.is_dir():
            raise EdranFusionError(f"data path {path} does not exist or is not a folder or volume file")
        elif _is_pair_folder(path):
            samples += pair_folder_samples(path)
        elif any(p.is_dir() and _is_pair_folder(p) for p in path.iterdir()):
            for task in sorted(p for p in path.iterdir() if p.is_dir()):
                samples += pair_folder_samples(task)
        elif volumes := _volume_files(path):
            for file, series in volumes:
                samples += volume_samples(file, series)
        else:
            raise EdranFusionError(
                f"data folder {path} holds no training data: expected <task>/<modality>/<name>.png pair folders "
                "or volume files (.nii, .nii.gz, .nrrd, .mha)"
            )
    if not samples:
        raise EdranFusionError("the data holds no usable images (no slice has 10% foreground); check --data")
    return samples


def split_by_series(samples: Sequence[Sample], val_series: Sequence[str] | None = None,
                    val_fraction: float = 0.2, seed: int = 0) -> tuple[list[Sample], list[Sample], dict]:
    """Train and validation samples with no series on both sides, and the split as a JSON-able record."""
    all_series = sorted({s.series for s in samples}, key=lambda text: (len(text), text))
    if val_series is None:
        count = max(1, round(val_fraction * len(all_series))) if val_fraction > 0 else 0
        chosen = set(random.Random(seed).sample(all_series, count)) if count < len(all_series) else set()
        if count >= len(all_series):
            raise EdranFusionError(
                f"only {len(all_series)} series in the data: too few to hold one out for validation; "
                "add series or lower --val-fraction"
            )
    else:
        chosen = {str(s) for s in val_series}
        unknown = sorted(chosen - set(all_series))
        if unknown:
            raise EdranFusionError(f"validation series {unknown} are not in the data (series: {all_series})")
        if chosen == set(all_series):
            raise EdranFusionError("every series is held out for validation; leave some for training")
    train = [s for s in samples if s.series not in chosen]
    val = [s for s in samples if s.series in chosen]
    record = {
        "train_series": [s for s in all_series if s not in chosen],
        "val_series": [s for s in all_series if s in chosen],
        "train_images": [s.name for s in train],
        "val_images": [s.name for s in val],
    }
    return train, val, record


class TrainingImages:
    """Deterministic, resumable batches: the order and augmentation depend only on (seed, epoch, position)."""

    def __init__(self, samples: Sequence[Sample], crop: int | None = None, flips: bool = False,
                 bright_crops: float = 0.0, repeats: dict[str, int] | None = None) -> None:
        samples = [s for s in samples for _ in range(repeat_count(s, repeats or {}))]
        # [1, H, W] per image; a [2, H, W] sample (a co-registered pair, stage 2) is cropped and flipped as one.
        self.images = [torch.from_numpy(s.image if s.image.ndim == 3 else s.image[None]) for s in samples]
        self._check_and_keep(crop, flips, bright_crops)
        # Bright pixels (bone in CT, the brightest tenth elsewhere) that a bright-centred crop may be centred on.
        self.bright = [_bright_pixels(s.image) for s in samples] if crop is not None and bright_crops > 0 else []

    @classmethod
    def of_tensors(cls, tensors: Sequence[torch.Tensor], crop: int | None = None, flips: bool = False
                   ) -> TrainingImages:
        """Batches of given [C, H, W] tensors (any dtype). Two sets of the same count and sizes with the same
        seed are cut and flipped identically, so tensors of one pair kept in two dtypes stay aligned."""
        images = cls.__new__(cls)
        images.images = list(tensors)
        images._check_and_keep(crop, flips, 0.0)
        images.bright = []
        return images

    def _check_and_keep(self, crop: int | None, flips: bool, bright_crops: float) -> None:
        self.crop = crop
        self.flips = flips
        self.bright_crops = bright_crops
        sizes = {tuple(image.shape[-2:]) for image in self.images}
        if crop is None and len(sizes) > 1:
            raise EdranFusionError(
                f"training images have {len(sizes)} different sizes; pass --crop N to train on crops"
            )
        if crop is not None and min(min(size) for size in sizes) < crop:
            raise EdranFusionError(f"--crop {crop} is larger than the smallest training image {min(sizes)}")

    def __len__(self) -> int:
        return len(self.images)

    def order(self, seed: int, epoch: int) -> list[int]:
        """The epoch's permutation of image indices."""
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
        return torch.randperm(len(self.images), generator=generator).tolist()

    def item(self, index: int, seed: int, epoch: int, position: int) -> torch.Tensor:
        """Image ``index`` augmented with randomness fixed by its place in the epoch."""
        image = self.images[index]
        generator = torch.Generator().manual_seed((seed * 100_003 + epoch) * 1_000_003 + position)
        if self.crop is not None:
            height, width = image.shape[-2:]
            top = int(torch.randint(height - self.crop + 1, (1,), generator=generator))
            left = int(torch.randint(width - self.crop + 1, (1,), generator=generator))
            if self.bright and float(torch.rand(1, generator=generator)) < self.bright_crops:
                candidates = self.bright[index]
                centre = int(candidates[int(torch.randint(len(candidates), (1,), generator=generator))])
                row, column = divmod(centre, width)
                top = min(max(row - self.crop // 2, 0), height - self.crop)
                left = min(max(column - self.crop // 2, 0), width - self.crop)
            image = image[:, top:top + self.crop, left:left + self.crop]
        if self.flips:
            flip = torch.rand(2, generator=generator)
            if flip[0] < 0.5:
                image = image.flip(-1)
            if flip[1] < 0.5:
                image = image.flip(-2)
        return image

    def batches(self, seed: int, epoch: int, batch_size: int, *, rank: int = 0, world: int = 1,
                start: int = 0) -> Iterator[torch.Tensor]:
        """This rank's batches of the epoch from batch number ``start``; every rank gets the same count."""
        order = self.order(seed, epoch)
        per_step = batch_size * world
        for step in range(start, len(order) // per_step):
            positions = range(step * per_step + rank * batch_size, step * per_step + (rank + 1) * batch_size)
            yield torch.stack([self.item(order[p], seed, epoch, p) for p in positions])

    def steps_per_epoch(self, batch_size: int, world: int = 1) -> int:
        return len(self.images) // (batch_size * world)


def modality_of(sample: Sample) -> str:
    """The modality folder of a pair-folder sample (``CT-MRI/CT/16003`` -> ``CT``); volumes give ``volume``."""
    parts = sample.name.split("/")
    return parts[1] if len(parts) == 3 else "volume"


def repeat_count(sample: Sample, repeats: dict[str, int]) -> int:
    """How many times ``sample`` appears in an epoch under ``--repeat-modality`` weighting."""
    return repeats.get(modality_of(sample), 1)


def parse_repeats(text: str | None) -> dict[str, int]:
    """``"CT:3,PET:2"`` -> ``{"CT": 3, "PET": 2}`` (modality weighting of the training epoch)."""
    repeats: dict[str, int] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, _, count = item.partition(":")
        if not count.strip().isdigit() or int(count) < 1:
            raise EdranFusionError(f"--repeat-modality item '{item}' is not MODALITY:N with N >= 1 (e.g. CT:3)")
        repeats[name.strip()] = int(count)
    return repeats


def _bright_pixels(image: np.ndarray) -> np.ndarray:
    """Flat indices of pixels at or above the image's 90th foreground percentile (at least 0.5 of the range)."""
    foreground = image[image > 0.02]
    threshold = max(float(np.percentile(foreground, 90)) if foreground.size else 1.0, 0.5)
    indices = np.flatnonzero(image >= threshold)
    return indices if indices.size else np.arange(image.size)


def validation_batches(samples: Sequence[Sample], batch_size: int) -> Iterator[torch.Tensor]:
    """Whole validation images in fixed order, batched by runs of equal size."""
    run: list[torch.Tensor] = []
    for sample in samples:
        image = torch.from_numpy(sample.image).unsqueeze(0)
        if run and (len(run) == batch_size or run[0].shape != image.shape):
            yield torch.stack(run)
            run = []
        run.append(image)
    if run:
        yield torch.stack(run)
