"""Shared fixtures: a seeded, untrained EH-DRAN saved as a weights file, and small synthetic data.

Untrained weights are enough to test plumbing (shapes, geometry, errors, determinism); trained-weight quality
is covered by the model cards and the evaluation report.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from EdranFusionLib.io.user_data import ENVIRONMENT_VARIABLE
from EdranFusionLib.network.model import EHDRAN

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO / "EdranFusionLib" / "sample_data" / "stroke"


@pytest.fixture(scope="session", autouse=True)
def user_data_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tests (and the CLI processes they start) never read or write the real user data folder."""
    folder = tmp_path_factory.mktemp("user-data")
    os.environ[ENVIRONMENT_VARIABLE] = str(folder)
    return folder


@pytest.fixture(scope="session")
def model() -> EHDRAN:
    torch.manual_seed(0)
    return EHDRAN().eval()


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory, model: EHDRAN) -> Path:
    path = tmp_path_factory.mktemp("weights") / "seeded.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A temporary folder with an empty out/ for outputs (so a test can check that nothing was left there)."""
    (tmp_path / "out").mkdir()
    return tmp_path


def blob_image(shape: tuple[int, ...], seed: int, dtype: type = np.uint8) -> np.ndarray:
    """A smooth, non-constant test pattern (a few Gaussian blobs) scaled to ``dtype``'s range."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    field = np.zeros(shape)
    for _ in range(4):
        centre = rng.uniform(-0.6, 0.6, len(shape))
        field += np.exp(-sum((g - c) ** 2 for g, c in zip(grids, centre)) / 0.1)
    field /= field.max()
    if dtype == np.uint8:
        return np.rint(field * 255).astype(np.uint8)
    if np.issubdtype(dtype, np.integer):
        return (field * 2000 - 1000).astype(dtype)
    return (field * 1000).astype(dtype)


def oblique_volume(array: np.ndarray, spacing: tuple[float, float, float] = (0.9, 1.1, 2.5)) -> sitk.Image:
    """Wrap a [k, j, i] array with non-unit spacing, a non-zero origin and an oblique direction."""
    image = sitk.GetImageFromArray(array, isVector=array.ndim == 4)
    image.SetSpacing(spacing)
    image.SetOrigin((12.5, -30.25, 7.0))
    angle = np.deg2rad(17.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    tilt = np.array([[1, 0, 0], [0, np.cos(0.2), -np.sin(0.2)], [0, np.sin(0.2), np.cos(0.2)]])
    image.SetDirection(tuple((rotation @ tilt).ravel()))
    return image
