"""The MRML bridge against Slicer's real MRML classes (PyPI wheel ``slicer-core``), without the application.

What works here: ``import slicer`` gives the wrapped MRML classes (``slicer.vtkMRMLScene``,
``slicer.vtkMRMLScalarVolumeNode``, transforms, display nodes) and ``slicer.util``'s array helpers
(``arrayFromVolume``, ``updateVolumeFromArray``, ``arrayFromVTKMatrix``). What does not: there is no application,
so ``slicer.mrmlScene``, ``slicer.app`` and the Qt-based ``slicer.ScriptedLoadableModule`` are absent. Each test
therefore makes its own ``vtkMRMLScene()``, which is what the bridge works on (it always uses the inputs' scene).
Fusion runs on the CPU with a randomly initialised EH-DRAN saved to a temporary file, so no trained weights
are needed; the tests check the scene handling and geometry, not image quality.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
import torch
import vtk

import EdranFusionLib
from EdranFusionLib.errors import EdranFusionError, FusionCancelled
from EdranFusionLib.io.weights import sha256_of
from EdranFusionLib.network.model import EHDRAN
from EdranFusionLib.slicer_bridge import (
    fuse_volume_nodes,
    ijk_to_ras_from_image,
    image_from_volume_node,
    volume_node_from_image,
)

SHAPE = (6, 16, 20)  # k, j, i


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


OBLIQUE = _rotation(0.3, -0.2, 0.5)
SPACING = (0.7, 1.3, 3.0)
ORIGIN = (12.5, -40.0, 7.25)


def _matrix_of(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def _volume(scene, array, name="A", *, spacing=SPACING, origin=ORIGIN, direction=OBLIQUE):
    node_class = "vtkMRMLVectorVolumeNode" if array.ndim == 4 else "vtkMRMLScalarVolumeNode"
    node = scene.AddNewNodeByClass(node_class, name)
    slicer.util.updateVolumeFromArray(node, array)
    node.SetSpacing(*spacing)
    node.SetOrigin(*origin)
    directions = vtk.vtkMatrix4x4()
    slicer.util.updateVTKMatrixFromArray(directions, np.block([[direction, np.zeros((3, 1))], [np.zeros((1, 3)), 1]]))
    node.SetIJKToRASDirectionMatrix(directions)
    node.CreateDefaultDisplayNodes()
    return node


def _brain_like(rng, shape=SHAPE, scale=1000.0) -> np.ndarray:
    k, j, i = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    blob = np.clip(1.2 - (k**2 + j**2 + i**2), 0, None)
    return (scale * blob + rng.normal(0, scale * 0.02, shape)).astype(np.float32)


def _snapshot(scene) -> list[tuple]:
    """Every node in the scene with what a run could change: class, name, geometry, parent and voxels."""
    state = []
    for index in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(index)
        entry = [node.GetID(), node.GetClassName(), node.GetName()]
        if node.IsA("vtkMRMLVolumeNode"):
            entry += [_matrix_of(node).tobytes(), node.GetTransformNodeID()]
            if node.GetImageData() is not None:
                entry.append(slicer.util.arrayFromVolume(node).tobytes())
        state.append(tuple(entry))
    return state


@pytest.fixture
def scene():
    return slicer.vtkMRMLScene()


@pytest.fixture
def rng():
    return np.random.default_rng(7)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "random_ehdran.pt"
    torch.save(EHDRAN().state_dict(), path)
    return str(path)


@pytest.fixture
def fuse(model_file):
    def run(node_a, node_b, output=None, **options):
        options = {"model": model_file, "device": "cpu", "precision": "fp32", **options}
        return fuse_volume_nodes(node_a, node_b, output, **options)

    return run


# --- node <-> image ---------------------------------------------------------------------------------------


def test_oblique_scalar_volume_keeps_every_voxel_in_place(scene, rng):
    array = _brain_like(rng)
    node = _volume(scene, array)
    image = image_from_volume_node(node)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), array)
    np.testing.assert_allclose(image.GetSpacing(), SPACING)
    ijk_to_ras = _matrix_of(node)
    for index in [(0, 0, 0), (19, 0, 5), (3, 15, 2), (19, 15, 5)]:
        lps = np.array(image.TransformIndexToPhysicalPoint(index))
        ras = ijk_to_ras @ np.array([*index, 1.0])
        np.testing.assert_allclose(lps * [-1, -1, 1], ras[:3], atol=1e-9)


def test_image_back_to_a_new_node_reproduces_the_geometry(scene, rng):
    array = _brain_like(rng)
    node = _volume(scene, array)
    copy = volume_node_from_image(image_from_volume_node(node), scene=scene, name="copy")
    assert copy is not node and copy.GetScene() is scene
    assert copy.IsA("vtkMRMLScalarVolumeNode") and not copy.IsA("vtkMRMLVectorVolumeNode")
    np.testing.assert_allclose(_matrix_of(copy), _matrix_of(node), atol=1e-12)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(copy), array)
    np.testing.assert_allclose(ijk_to_ras_from_image(image_from_volume_node(node)), _matrix_of(node), atol=1e-12)


def test_vector_volume_becomes_a_three_component_image_and_back(scene, rng):
    rgb = rng.integers(0, 256, (*SHAPE, 3), dtype=np.uint8)
    node = _volume(scene, rgb, name="rgb")
    image = image_from_volume_node(node)
    assert image.GetNumberOfComponentsPerPixel() == 3
    assert image.GetPixelID() == sitk.sitkVectorUInt8
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), rgb)
    back = volume_node_from_image(image, scene=scene, name="rgb copy")
    assert back.IsA("vtkMRMLVectorVolumeNode")
    assert back.GetDisplayNode().IsA("vtkMRMLVectorVolumeDisplayNode")
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(back), rgb)


def test_linear_parent_transform_is_included_in_the_image_geometry(scene, rng):
    node = _volume(scene, _brain_like(rng))
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    to_parent = np.eye(4)
    to_parent[:3, :3] = _rotation(0.1, 0.0, -0.3)
    to_parent[:3, 3] = (5.0, -2.0, 11.0)
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(to_parent))
    node.SetAndObserveTransformNodeID(transform.GetID())
    image = image_from_volume_node(node)
    np.testing.assert_allclose(ijk_to_ras_from_image(image), to_parent @ _matrix_of(node), atol=1e-9)


def test_non_linear_parent_transform_is_refused_with_the_fix(scene, rng):
    node = _volume(scene, _brain_like(rng))
    warp = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "warp")
    node.SetAndObserveTransformNodeID(warp.GetID())
    with pytest.raises(EdranFusionError, match="Harden transform"):
        image_from_volume_node(node)


def test_volume_without_voxels_is_refused(scene):
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(EdranFusionError, match="no voxels"):
        image_from_volume_node(empty)


def test_existing_node_is_overwritten_in_place(scene, rng):
    target = _volume(scene, np.zeros((2, 3, 4), np.int16), name="old", spacing=(1, 1, 1), origin=(0, 0, 0),
                     direction=np.eye(3))
    source = _volume(scene, _brain_like(rng), name="source")
    count = scene.GetNumberOfNodes()
    result = volume_node_from_image(image_from_volume_node(source), target)
    assert result is target and scene.GetNumberOfNodes() == count
    assert target.GetName() == "old"
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(target), slicer.util.arrayFromVolume(source))
    np.testing.assert_allclose(_matrix_of(target), _matrix_of(source), atol=1e-12)


def test_existing_node_of_the_wrong_kind_is_refused_unchanged(scene, rng):
    scalar_target = _volume(scene, np.zeros((2, 3, 4), np.float32), name="scalar target")
    rgb = _volume(scene, rng.integers(0, 256, (*SHAPE, 3), dtype=np.uint8), name="rgb")
    before = _snapshot(scene)
    with pytest.raises(EdranFusionError, match="vector volume"):
        volume_node_from_image(image_from_volume_node(rgb), scalar_target)
    assert _snapshot(scene) == before


# --- fusing nodes -----------------------------------------------------------------------------------------


def test_fusion_creates_a_named_output_on_a_exact_geometry(scene, rng, fuse, model_file):
    node_a = _volume(scene, _brain_like(rng), name="T2")
    node_b = _volume(scene, np.abs(_brain_like(rng, scale=300.0)) ** 1.5, name="FLAIR")
    count = scene.GetNumberOfNodes()
    output = fuse(node_a, node_b, strategy="sfnn-max")
    assert output.GetScene() is scene and scene.GetNumberOfNodes() > count
    assert output.GetName() == "T2+FLAIR fused"
    assert output.IsA("vtkMRMLScalarVolumeNode") and not output.IsA("vtkMRMLVectorVolumeNode")
    np.testing.assert_array_equal(_matrix_of(output), _matrix_of(node_a))
    fused = slicer.util.arrayFromVolume(output)
    assert fused.shape == SHAPE and fused.dtype == np.float32 and np.isfinite(fused).all()
    a = slicer.util.arrayFromVolume(node_a)
    assert a.min() - 1e-3 <= fused.min() and fused.max() <= a.max() + 1e-3  # A's units over A's window
    display = output.GetDisplayNode()
    assert display is not None and not display.GetAutoWindowLevel() and display.GetWindow() > 0
    assert output.GetAttribute("EdranFusion.InputA") == node_a.GetID()
    assert output.GetAttribute("EdranFusion.strategy") == "sfnn-max"
    provenance = {"version": EdranFusionLib.__version__, "model_sha256": sha256_of(model_file), "device": "cpu",
                  "precision": "fp32", "model": Path(model_file).stem}
    assert {key: output.GetAttribute(f"EdranFusion.{key}") for key in provenance} == provenance


def test_colour_input_gives_a_colour_vector_output(scene, rng, fuse):
    node_a = _volume(scene, _brain_like(rng), name="MRI")
    spect = np.zeros((*SHAPE, 3), np.uint8)
    spect[..., 0] = np.clip(_brain_like(rng, scale=255.0), 0, 255).astype(np.uint8)
    spect[..., 1] = spect[..., 0] // 3
    node_b = _volume(scene, spect, name="SPECT")
    output = fuse(node_a, node_b)
    assert output.IsA("vtkMRMLVectorVolumeNode")
    fused = slicer.util.arrayFromVolume(output)
    assert fused.shape == (*SHAPE, 3) and fused.dtype == np.uint8
    np.testing.assert_array_equal(_matrix_of(output), _matrix_of(node_a))


def test_existing_output_is_overwritten_and_keeps_its_identity(scene, rng, fuse):
    node_a = _volume(scene, _brain_like(rng), name="A")
    node_b = _volume(scene, _brain_like(rng, scale=50.0), name="B")
    existing = _volume(scene, np.ones((3, 3, 3), np.int16), name="my output", spacing=(2, 2, 2),
                       origin=(0, 0, 0), direction=np.eye(3))
    count = scene.GetNumberOfNodes()
    output = fuse(node_a, node_b, existing)
    assert output is existing and scene.GetNumberOfNodes() == count and output.GetName() == "my output"
    assert slicer.util.arrayFromVolume(output).shape == SHAPE
    np.testing.assert_array_equal(_matrix_of(output), _matrix_of(node_a))


@pytest.mark.parametrize("with_existing_output", [False, True])
def test_cancelled_run_leaves_the_scene_as_it_was(scene, rng, fuse, with_existing_output):
    node_a = _volume(scene, _brain_like(rng), name="A")
    node_b = _volume(scene, _brain_like(rng, scale=50.0), name="B")
    existing = _volume(scene, np.ones((3, 3, 3), np.int16), name="out") if with_existing_output else None
    before = _snapshot(scene)
    with pytest.raises(FusionCancelled):
        fuse(node_a, node_b, existing, cancel=lambda: True)
    assert _snapshot(scene) == before


def test_different_grids_are_refused_unless_resampling_is_asked(scene, rng, fuse):
    node_a = _volume(scene, _brain_like(rng), name="A")
    node_b = _volume(scene, _brain_like(rng, shape=(5, 12, 15)), name="B", spacing=(1.0, 1.7, 3.5))
    before = _snapshot(scene)
    with pytest.raises(EdranFusionError, match="different grids"):
        fuse(node_a, node_b)
    assert _snapshot(scene) == before
    output = fuse(node_a, node_b, resample=True)
    assert slicer.util.arrayFromVolume(output).shape == SHAPE
    np.testing.assert_array_equal(_matrix_of(output), _matrix_of(node_a))


def test_inputs_under_one_registration_transform_fuse_and_the_output_follows_a(scene, rng, fuse):
    node_a = _volume(scene, _brain_like(rng), name="A")
    node_b = _volume(scene, _brain_like(rng, scale=50.0), name="B")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "to atlas")
    to_parent = np.eye(4)
    to_parent[:3, 3] = (3.0, 4.0, -5.0)
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(to_parent))
    node_a.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(EdranFusionError, match="different grids"):
        fuse(node_a, node_b)  # A moved in the world, B did not: no longer the same grid
    node_b.SetAndObserveTransformNodeID(transform.GetID())
    output = fuse(node_a, node_b)
    assert output.GetTransformNodeID() == transform.GetID()
    np.testing.assert_array_equal(_matrix_of(output), _matrix_of(node_a))


def test_output_that_is_an_input_is_refused(scene, rng, fuse):
    node_a = _volume(scene, _brain_like(rng), name="A")
    node_b = _volume(scene, _brain_like(rng, scale=50.0), name="B")
    before = _snapshot(scene)
    with pytest.raises(EdranFusionError, match="one of the inputs"):
        fuse(node_a, node_b, node_b)
    assert _snapshot(scene) == before


BRIDGE_BAD_INPUTS = [
    ("no finite voxel", lambda rng: np.full(SHAPE, np.nan, np.float32), {}, "no finite value"),
    ("constant volume", lambda rng: np.full(SHAPE, 5.0, np.float32), {}, "constant"),
    ("all-zero volume", lambda rng: np.zeros(SHAPE, np.float32), {}, "constant"),
    ("4-component vector", lambda rng: np.ones((*SHAPE, 4), np.uint8), {}, "4 components"),
    ("slices under 8x8", lambda rng: _brain_like(rng, shape=(6, 5, 5)), {}, "too small"),
    ("unknown strategy", _brain_like, {"strategy": "median"}, "unknown strategy"),
    ("unknown model", _brain_like, {"model": "mri-ultrasound"}, "unknown model"),
]


@pytest.mark.parametrize("case", BRIDGE_BAD_INPUTS, ids=[c[0] for c in BRIDGE_BAD_INPUTS])
def test_bad_inputs_are_refused_and_the_scene_is_unchanged(scene, rng, fuse, case):
    _name, make_b, options, message = case
    array_b = make_b(rng)
    node_a = _volume(scene, _brain_like(rng, shape=array_b.shape[:3]), name="A")
    node_b = _volume(scene, array_b, name="B")
    before = _snapshot(scene)
    with pytest.raises(EdranFusionError, match=message):
        fuse(node_a, node_b, **options)
    assert _snapshot(scene) == before
