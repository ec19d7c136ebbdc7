"""MRML volume nodes <-> SimpleITK images, and "fuse these two nodes into that node" for the Slicer module.

The only library file that imports ``slicer``/``vtk``; nothing else imports it, so the library works without
Slicer. Geometry rules:

- A node's IJK-to-RAS matrix (times its parent transform, if linear) becomes the image's origin, spacing and
  direction, converted from RAS (Slicer) to LPS (ITK). A non-linear parent transform is refused with the fix
  in the message, never ignored.
- The fused output takes input A's own IJK-to-RAS matrix, unchanged, and A's parent transform, so it lies
  exactly on A in every view.
- The scene is touched only after the fusion has succeeded: a new output node is created then, an existing
  one receives fully built voxels in one modification. A cancelled or failed run leaves the scene as it was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from vtk.util import numpy_support

from .errors import EdranFusionError
from .fusion.intensity import window_for

_RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0])
_ORTHOGONALITY_TOLERANCE = 1e-4
SCALAR_NODE_CLASS = "vtkMRMLScalarVolumeNode"
VECTOR_NODE_CLASS = "vtkMRMLVectorVolumeNode"


def _describe(node: Any) -> str:
    return f"volume '{node.GetName()}'"


def _matrix(vtk_matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return slicer.util.arrayFromVTKMatrix(vtk_matrix)


def ijk_to_world(node: Any) -> np.ndarray:
    """The 4x4 IJK-to-RAS matrix of ``node`` in world space: its own matrix times a linear parent transform."""
    own = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(own)
    parent = node.GetParentTransformNode()
    if parent is None:
        return _matrix(own)
    if not parent.IsTransformToWorldLinear():
        raise EdranFusionError(
            f"{_describe(node)} is under the non-linear transform '{parent.GetName()}'; harden it first "
            "(Data module: right-click the volume, 'Harden transform') so its voxels are resampled"
        )
    to_world = vtk.vtkMatrix4x4()
    parent.GetMatrixTransformToWorld(to_world)
    return _matrix(to_world) @ _matrix(own)


def image_from_volume_node(node: Any) -> sitk.Image:
    """A copy of the node's voxels as a SimpleITK image with its world geometry (LPS), scalar or vector."""
    if node is None or node.GetImageData() is None:
        name = "a volume" if node is None else _describe(node)
        raise EdranFusionError(f"{name} has no voxels; load a volume or choose another one")
    matrix = ijk_to_world(node)
    linear = matrix[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    direction = linear / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=_ORTHOGONALITY_TOLERANCE):
        raise EdranFusionError(
            f"{_describe(node)} has a sheared geometry (from a shearing transform); resample it onto a regular "
            "grid first (Resample Scalar/Vector/DWI Volume module)"
        )
    array = np.array(slicer.util.arrayFromVolume(node), copy=True)
    components = node.GetImageData().GetNumberOfScalarComponents()
    image = sitk.GetImageFromArray(array, isVector=components > 1)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((_RAS_FROM_LPS @ direction).ravel().tolist())
    image.SetOrigin((_RAS_FROM_LPS @ matrix[:3, 3]).tolist())
    return image


def ijk_to_ras_from_image(image: sitk.Image) -> np.ndarray:
    """The 4x4 IJK-to-RAS matrix equivalent to the image's LPS origin, spacing and direction."""
    matrix = np.eye(4)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    matrix[:3, :3] = _RAS_FROM_LPS @ direction @ np.diag(image.GetSpacing())
    matrix[:3, 3] = _RAS_FROM_LPS @ np.array(image.GetOrigin())
    return matrix


def _image_data(array: np.ndarray, components: int) -> vtk.vtkImageData:
    """A new vtkImageData holding a deep copy of ``array`` ([k, j, i] or [k, j, i, c])."""
    image_data = vtk.vtkImageData()
    image_data.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    flat = np.ascontiguousarray(array).reshape(-1, components)
    scalars = numpy_support.numpy_to_vtk(flat, deep=True)
    scalars.SetName("ImageScalars")
    image_data.GetPointData().SetScalars(scalars)
    return image_data


def _check_output_class(node: Any, vector: bool) -> None:
    if node is None:
        return
    if vector and not node.IsA(VECTOR_NODE_CLASS):
        raise EdranFusionError(
            f"the output {_describe(node)} is a scalar volume but the result is colour; choose a vector volume "
            "or 'Create new volume'"
        )
    if not vector and node.IsA(VECTOR_NODE_CLASS):
        raise EdranFusionError(
            f"the output {_describe(node)} is a vector volume but the result is scalar; choose a scalar volume "
            "or 'Create new volume'"
        )


def _show_well(node: Any, array: np.ndarray, vector: bool) -> None:
    """Give the node a display node; scalar results get a window over their robust intensity range."""
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    if display is None or vector or array.min() == array.max():
        return  # colour shows as RGB; a constant result keeps automatic window/level
    window = window_for(array, _describe(node))
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(window.low, window.high)


@contextlib.contextmanager
def _new_node_removed_on_failure(scene: Any, node: Any, node_class: str, name: str) -> Iterator[Any]:
    """Yield ``node``, or a new node of ``node_class`` that is removed again if the block fails."""
    if node is not None:
        yield node
        return
    created = scene.AddNewNodeByClass(node_class, scene.GenerateUniqueName(name))
    try:
        yield created
    except BaseException:
        scene.RemoveNode(created)
        raise


def _store(
    scene: Any,
    node: Any,
    array: np.ndarray,
    ijk_to_ras: np.ndarray,
    *,
    name: str,
    parent_transform_id: str | None = None,
) -> Any:
    """Write ``array`` with ``ijk_to_ras`` into ``node`` (or a new node): built first, swapped in one step."""
    vector = array.ndim == 4
    _check_output_class(node, vector)
    image_data = _image_data(array, array.shape[3] if vector else 1)
    matrix = vtk.vtkMatrix4x4()
    slicer.util.updateVTKMatrixFromArray(matrix, ijk_to_ras)
    node_class = VECTOR_NODE_CLASS if vector else SCALAR_NODE_CLASS
    with _new_node_removed_on_failure(scene, node, node_class, name) as target:
        was_modifying = target.StartModify()
        try:
            target.SetIJKToRASMatrix(matrix)
            target.SetAndObserveImageData(image_data)
            target.SetAndObserveTransformNodeID(parent_transform_id)
        finally:
            target.EndModify(was_modifying)
        _show_well(target, array, vector)
    return target


def volume_node_from_image(image: sitk.Image, node: Any = None, *, scene: Any = None, name: str = "Volume") -> Any:
    """Put ``image`` (world geometry) into ``node``, or into a new node of ``scene``; returns the node.

    Scalar images give a scalar volume node, 3-component images a vector volume node; an existing node of
    the other kind is refused before anything changes.
    """
    if node is None and scene is None:
        raise ValueError("give an existing node or the scene to create one in")
    array = sitk.GetArrayFromImage(image)
    return _store(scene if node is None else node.GetScene(), node, array, ijk_to_ras_from_image(image), name=name)


def _is_colour(image: sitk.Image) -> bool:
    return image.GetNumberOfComponentsPerPixel() == 3


def _check_nodes(node_a: Any, node_b: Any, output: Any) -> None:
    for role, node in (("A", node_a), ("B", node_b)):
        if node is None:
            raise EdranFusionError(f"no input volume {role} was given; choose two volumes")
    if output is not None and output in (node_a, node_b):
        raise EdranFusionError(f"the output {_describe(output)} is one of the inputs; choose another output volume")
    if output is not None and output.GetScene() is not node_a.GetScene():
        raise EdranFusionError(f"the output {_describe(output)} is not in the inputs' scene")


def _check_still_in_scene(scene: Any, nodes: dict[str, Any]) -> None:
    """The user may delete a node or close the scene while a fusion runs; then nothing is stored."""
    for role, node in nodes.items():
        if node is not None and (node.GetScene() is not scene or not scene.IsNodePresent(node)):
            raise EdranFusionError(
                f"{role} was removed from the scene while the fusion ran; nothing was stored, run it again"
            )


class NodeFusion:
    """One fusion of two volume nodes in three steps, so that the slow middle one can leave the GUI thread.

    Construction (caller's thread) checks the nodes and copies their voxels; :meth:`compute` (any thread)
    fuses the copies without touching MRML; :meth:`store` (caller's thread) checks that A, B and the output
    are still in the scene and only then writes the result. ``options`` go to
    :func:`EdranFusionLib.fuse_volumes` (model, strategy, device, precision, batch_size, resample).
    """

    def __init__(self, node_a: Any, node_b: Any, output: Any = None, **options: Any) -> None:
        _check_nodes(node_a, node_b, output)
        self.node_a, self.node_b, self.output, self.options = node_a, node_b, output, options
        self.scene = node_a.GetScene()
        self.image_a, self.image_b = image_from_volume_node(node_a), image_from_volume_node(node_b)
        _check_output_class(output, _is_colour(self.image_a) or _is_colour(self.image_b))
        self.fused: sitk.Image | None = None

    def compute(self, progress: Callable[[float], None] | None = None,
                cancel: Callable[[], bool] | None = None) -> sitk.Image:
        """Fuse the copied images (raises FusionCancelled on cancel); safe off the GUI thread."""
        from .fusion.pipeline import fuse_volumes  # torch is imported only when a fusion actually runs

        self.fused = fuse_volumes(self.image_a, self.image_b, progress=progress, cancel=cancel, **self.options)
        return self.fused

    def store(self) -> Any:
        """Write the computed result into the output (or a new node named "A+B fused"); returns that node."""
        if self.fused is None:
            raise RuntimeError("NodeFusion.store() called before compute() finished")
        from .fusion.provenance import as_text_fields, read_back  # torch is loaded already: compute() ran
        node_a, node_b, output = self.node_a, self.node_b, self.output
        _check_still_in_scene(self.scene, {"volume A": node_a, "volume B": node_b, "the output volume": output})
        own_matrix = vtk.vtkMatrix4x4()
        node_a.GetIJKToRASMatrix(own_matrix)
        result = _store(
            self.scene,
            output,
            sitk.GetArrayFromImage(self.fused),
            _matrix(own_matrix),
            name=f"{node_a.GetName()}+{node_b.GetName()} fused",
            parent_transform_id=node_a.GetTransformNodeID(),
        )
        result.SetAttribute("EdranFusion.InputA", node_a.GetID())
        result.SetAttribute("EdranFusion.InputB", node_b.GetID())
        for key, value in as_text_fields(read_back(self.fused)).items():  # what made it: version, model + sha256
            result.SetAttribute(key, value)
        return result


def fuse_volume_nodes(
    node_a: Any,
    node_b: Any,
    output: Any = None,
    *,
    progress: Callable[[float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    **options: Any,
) -> Any:
    """Fuse two volume nodes into ``output`` (or a new node named "A+B fused") on this thread; returns it.

    ``options`` go to :func:`EdranFusionLib.fuse_volumes` (model, strategy, device, precision, batch_size,
    resample). Raises EdranFusionError for bad input and FusionCancelled on cancel, before the scene changes.
    """
    fusion = NodeFusion(node_a, node_b, output, **options)
    fusion.compute(progress, cancel)
    return fusion.store()
