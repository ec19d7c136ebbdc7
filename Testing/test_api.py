"""Public API: 2-D images (gray, colour, odd sizes) and volumes (geometry kept, axis choice, colour, grids)."""

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import blob_image, oblique_volume

from EdranFusionLib import fuse_images, fuse_volumes
from EdranFusionLib.errors import EdranFusionError
from EdranFusionLib.fusion.color import rgb_to_ycbcr
from EdranFusionLib.io.volumes import axial_axis


def test_gray_images_give_gray_uint8_of_same_odd_size(model):
    a, b = blob_image((37, 53), 0), blob_image((37, 53), 1)
    fused = fuse_images(a, b, model=model)
    assert fused.shape == (37, 53) and fused.dtype == np.uint8


def test_colour_input_gives_rgb_with_its_own_chroma(model):
    a = blob_image((32, 32), 2)
    b = np.stack([blob_image((32, 32), 3), np.zeros((32, 32), np.uint8), blob_image((32, 32), 4)], axis=-1)
    fused = fuse_images(a, b, model=model)
    assert fused.shape == (32, 32, 3) and fused.dtype == np.uint8
    chroma_err = np.abs(rgb_to_ycbcr(fused)[..., 1:] - rgb_to_ycbcr(b)[..., 1:])
    # Chroma survives except where the RGB gamut clips it.
    assert np.median(chroma_err) < 2.0


def test_images_of_different_size_are_rejected(model):
    with pytest.raises(EdranFusionError, match="differ in size"):
        fuse_images(blob_image((32, 32), 0), blob_image((32, 40), 1), model=model)


def test_constant_image_is_rejected(model):
    with pytest.raises(EdranFusionError, match="constant"):
        fuse_images(np.full((32, 32), 7, np.uint8), blob_image((32, 32), 1), model=model)


def test_volume_keeps_reference_geometry_exactly(model):
    a = oblique_volume(blob_image((6, 20, 24), 5, np.int16))
    b = oblique_volume(blob_image((6, 20, 24), 6, np.float32))
    fused = fuse_volumes(a, b, model=model, device="cpu")
    assert fused.GetSize() == a.GetSize()
    assert fused.GetOrigin() == a.GetOrigin()
    assert fused.GetSpacing() == a.GetSpacing()
    assert fused.GetDirection() == a.GetDirection()
    values = sitk.GetArrayFromImage(fused)
    assert values.dtype == np.float32 and np.isfinite(values).all()
    lo, hi = np.percentile(sitk.GetArrayFromImage(a), [0.5, 99.5])
    assert values.min() >= lo - 1e-3 and values.max() <= hi + 1e-3


def test_slicing_follows_the_head_foot_axis_for_sagittal_storage(model):
    array = blob_image((12, 16, 20), 7)
    sagittal = sitk.GetImageFromArray(array)
    # index axis i points superior: LPS z row is (1, 0, 0)
    sagittal.SetDirection((0, 1, 0, 0, 0, 1, 1, 0, 0))
    assert axial_axis(sagittal) == 2  # numpy axis of i
    seen = []
    fused = fuse_volumes(sagittal, sagittal, model=model, device="cpu", batch_size=1, progress=seen.append)
    assert fused.GetSize() == sagittal.GetSize()
    assert len(seen) == 20  # one batch per axial slice: 20 slices along i


def test_axial_slices_are_fused_independently(model):
    array = blob_image((4, 24, 24), 8)
    image = sitk.GetImageFromArray(array)
    whole = sitk.GetArrayFromImage(fuse_volumes(image, image, model=model, device="cpu", precision="fp32"))
    single = sitk.GetImageFromArray(array[2:3])
    alone = sitk.GetArrayFromImage(fuse_volumes(single, single, model=model, device="cpu", precision="fp32"))
    # Same slice fused alone (its own intensity window differs, so compare after normalising)
    normalise = lambda x: (x - x.min()) / (x.max() - x.min())  # noqa: E731
    np.testing.assert_allclose(normalise(whole[2]), normalise(alone[0]), atol=0.05)


def test_colour_volume_comes_back_as_colour(model):
    gray = oblique_volume(blob_image((3, 16, 16), 9))
    rgb = np.stack([blob_image((3, 16, 16), s) for s in (10, 11, 12)], axis=-1)
    colour = oblique_volume(rgb)
    fused = fuse_volumes(gray, colour, model=model, device="cpu")
    assert fused.GetNumberOfComponentsPerPixel() == 3
    assert fused.GetPixelID() == sitk.sitkVectorUInt8
    assert fused.GetDirection() == gray.GetDirection()


def test_different_grids_need_resample(model):
    a = oblique_volume(blob_image((4, 20, 20), 13))
    b = oblique_volume(blob_image((4, 20, 20), 14), spacing=(1.0, 1.0, 2.0))
    with pytest.raises(EdranFusionError, match="different grids.*--resample"):
        fuse_volumes(a, b, model=model)
    fused = fuse_volumes(a, b, model=model, resample=True, device="cpu")
    assert fused.GetSize() == a.GetSize() and fused.GetSpacing() == a.GetSpacing()


def test_resampling_happens_in_world_space():
    from EdranFusionLib.io.volumes import align_to

    array = blob_image((10, 12, 14), 15, np.float32)
    a = sitk.GetImageFromArray(array)
    mirrored = sitk.GetImageFromArray(array[:, :, ::-1].copy())
    # Same voxels stored left-right flipped: direction -x and origin at the far end.
    mirrored.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1))
    mirrored.SetOrigin((13.0, 0, 0))
    aligned = align_to(a, mirrored, resample=True)
    np.testing.assert_allclose(sitk.GetArrayFromImage(aligned), array, atol=1e-4)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: sitk.Image([8, 8, 4, 3], sitk.sitkFloat32), "4-D"),
        (lambda: sitk.Image([16, 16], sitk.sitkFloat32), "2-D"),
        (lambda: sitk.Image([16, 16, 4], sitk.sitkVectorFloat32, 4), "4 components"),
        (lambda: sitk.Image([16, 16, 4], sitk.sitkVectorFloat32, 2), "2 components"),
    ],
)
def test_unsupported_volumes_are_rejected(model, make, message):
    good = sitk.GetImageFromArray(blob_image((4, 16, 16), 16))
    with pytest.raises(EdranFusionError, match=message):
        fuse_volumes(make(), good, model=model)


API_BAD_INPUTS = [
    ("no finite voxel", lambda: np.full((3, 16, 16), np.nan, np.float32), {}, "no finite value"),
    ("NaN around a constant", lambda: np.where(np.arange(768).reshape(3, 16, 16) > 7, np.nan, 1.0), {},
     "only background"),
    ("all-zero volume", lambda: np.zeros((3, 16, 16), np.float32), {}, "constant"),
    ("slices under 8x8", lambda: blob_image((3, 16, 6), 19), {}, "too small"),
    ("mismatched shapes", lambda: blob_image((3, 16, 20), 20), {}, "different grids"),
    ("unknown strategy", lambda: blob_image((3, 16, 16), 21), {"strategy": "median"}, "unknown strategy"),
    ("unknown model", lambda: blob_image((3, 16, 16), 22), {"model": "mri-ultrasound"}, "unknown model"),
    ("unknown device", lambda: blob_image((3, 16, 16), 23), {"device": "tpu"}, "unknown device"),
]


@pytest.mark.parametrize(("case", "make_b", "options", "message"), API_BAD_INPUTS, ids=[c[0] for c in API_BAD_INPUTS])
def test_python_api_rejects_bad_volumes_with_one_line_errors(model, case, make_b, options, message):
    array_b = make_b()
    shape_a = (3, 16, 16) if case == "mismatched shapes" else array_b.shape
    a = sitk.GetImageFromArray(blob_image(shape_a, 24))
    settings = {"model": model, **options}
    with pytest.raises(EdranFusionError, match=message) as error:
        fuse_volumes(a, sitk.GetImageFromArray(array_b), **settings)
    assert "\n" not in str(error.value)


def test_constant_colour_image_is_rejected(model):
    flat_red = np.zeros((32, 32, 3), np.uint8)
    flat_red[..., 0] = 200
    with pytest.raises(EdranFusionError, match="constant"):
        fuse_images(blob_image((32, 32), 1), flat_red, model=model)
