"""NaN/infinite voxels are background (SPM, FSL and PET pipelines write NaN outside the brain): fused with one
warning naming the input and the count, output finite. Also the streamed normalisation equals the whole-array one."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import blob_image, oblique_volume
from test_cli import cli

from EdranFusionLib import fuse_volumes
from EdranFusionLib.errors import InputWarning
from EdranFusionLib.fusion import intensity

SHAPE = (5, 20, 24)


def _with_background(value: float, seed: int = 1) -> tuple[np.ndarray, int]:
    """A blob volume whose voxels below 10% of its maximum are replaced by ``value`` (a masked brain)."""
    array = blob_image(SHAPE, seed, np.float32)
    outside = array < 0.1 * array.max()
    array[outside] = value
    return array, int(outside.sum())


def _fuse(a: np.ndarray, b: np.ndarray, model) -> tuple[np.ndarray, list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        fused = fuse_volumes(oblique_volume(a), oblique_volume(b), model=model, device="cpu")
    return sitk.GetArrayFromImage(fused), [w for w in seen if issubclass(w.category, InputWarning)]


def test_nan_background_fuses_with_one_warning(model):
    b, outside = _with_background(np.nan)
    fused, seen = _fuse(blob_image(SHAPE, 0, np.float32), b, model)
    assert np.isfinite(fused).all()
    assert len(seen) == 1
    assert str(seen[0].message).startswith(f"volume B: {outside} of {b.size} voxels are NaN or infinite")


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_infinite_background_is_the_same_background_as_nan(model, value):
    nan_b, _ = _with_background(np.nan)
    inf_b, _ = _with_background(value)
    a = blob_image(SHAPE, 0, np.float32)
    np.testing.assert_array_equal(_fuse(a, inf_b, model)[0], _fuse(a, nan_b, model)[0])


def test_nan_voxels_are_left_out_of_the_window_and_normalise_to_zero():
    nan_b, _ = _with_background(np.nan)
    finite = nan_b[np.isfinite(nan_b)]
    window = intensity.window_for(nan_b, "b")
    assert (window.low, window.high) == tuple(np.percentile(finite, [intensity.LOW_PERCENTILE,
                                                                      intensity.HIGH_PERCENTILE]))
    unit = window.normalise(nan_b)
    assert np.isfinite(unit).all() and not unit[np.isnan(nan_b)].any()


def test_nan_in_reference_a_gives_a_finite_result_in_a_units(model):
    a, _ = _with_background(np.nan, seed=2)
    fused, seen = _fuse(a, blob_image(SHAPE, 3, np.float32), model)
    window = intensity.window_for(a, "a")
    assert np.isfinite(fused).all() and len(seen) == 1 and "volume A" in str(seen[0].message)
    assert window.low - 1e-3 <= fused.min() and fused.max() <= window.high + 1e-3


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_cli_prints_one_warning_line_for_nan_files(workdir, model_path, suffix):
    """NRRD and MetaImage keep NaN as written; the CLI fuses and warns on one line."""
    b, outside = _with_background(np.nan)
    sitk.WriteImage(oblique_volume(blob_image(SHAPE, 0, np.float32)), str(workdir / f"a{suffix}"))
    sitk.WriteImage(oblique_volume(b), str(workdir / f"b{suffix}"))
    output = workdir / "out" / f"f{suffix}"
    result = cli("fuse", workdir / f"a{suffix}", workdir / f"b{suffix}", "-o", output, "--model", model_path,
                 "--quiet")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [f"warning: volume B: {outside} of {b.size} voxels are NaN or infinite; fused as background "
                     "(0 after normalisation)"]
    assert np.isfinite(sitk.GetArrayFromImage(sitk.ReadImage(str(output)))).all()


def test_nifti_stores_what_itk_reads_back(tmp_path):
    """What docs/INPUTS.md says of NIfTI: ITK's reader replaces NaN by 0 (so there is nothing to warn about),
    while NRRD and MetaImage give NaN back."""
    b, outside = _with_background(np.nan)
    for suffix, nan_kept in ((".nii.gz", False), (".nrrd", True), (".mha", True)):
        path = tmp_path / f"b{suffix}"
        sitk.WriteImage(sitk.GetImageFromArray(b), str(path))
        values = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        assert int(np.isnan(values).sum()) == (outside if nan_kept else 0), suffix


def test_streamed_percentiles_equal_numpy(monkeypatch):
    """The chunked exact order statistics used for large volumes give np.percentile's answer, ties and NaN too."""
    monkeypatch.setattr(intensity, "CHUNK_VOXELS", 997)
    monkeypatch.setattr(intensity, "_GATHER_LIMIT", 50)
    rng = np.random.default_rng(4)
    for data in (rng.normal(size=(30, 20, 20)).astype(np.float32),
                 np.rint(rng.normal(size=(30, 20, 20)) * 2).astype(np.int16),
                 np.where(rng.random((30, 20, 20)) < 0.6, np.nan, rng.gamma(2, size=(30, 20, 20))).astype(np.float32)):
        summary = intensity.value_summary(data, "x")
        finite = data[np.isfinite(data)] if data.dtype.kind == "f" else data
        expected = np.percentile(finite, [intensity.LOW_PERCENTILE, intensity.HIGH_PERCENTILE])
        got = intensity.finite_percentiles(data, (intensity.LOW_PERCENTILE, intensity.HIGH_PERCENTILE), summary)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
