"""EdranFusion: fuse two co-registered volumes with the EH-DRAN autoencoder and the SFNN fusion rule.

A thin Slicer module: parameter node, Widget, Logic and self-test. All computation lives in EdranFusionLib,
which is imported only when a fusion runs, after its Python dependencies are installed (with the user's
consent), so the module loads in any Slicer even before PyTorch is there.
"""

import importlib.util
import logging
import pathlib
import sys
import time
from typing import Annotated, Callable, Optional, Union

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLVectorVolumeNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

# Python packages the fusion imports: EdranFusionLib/requirements.txt (the core install; a test keeps them equal).
REQUIREMENTS = {
    "torch": "torch>=2.13",
    "numpy": "numpy>=1.26.4",
    "SimpleITK": "SimpleITK>=2.4.1",  # 2.4 writes the NIfTI descrip (provenance)
    "PIL": "pillow>=10.1.0",
    "tqdm": "tqdm>=4.60.0",
    "platformdirs": "platformdirs>=3.0.0",
}
# Entry of the model list that means "use the weights file chosen below".
WEIGHTS_FILE_CHOICE = "Weights file"
VolumeNode = Union[vtkMRMLScalarVolumeNode, vtkMRMLVectorVolumeNode]


def _extensionRoot() -> pathlib.Path:
    """The folder holding EdranFusionLib and Resources.

    An extension build installs both beside this file; a source checkout (module path <repo>/EdranFusion)
    has them in the repository root, the parent folder.
    """
    here = pathlib.Path(__file__).resolve().parent
    for candidate in (here, here.parent):
        if (candidate / "EdranFusionLib").is_dir() and (candidate / "Resources").is_dir():
            return candidate
    raise ImportError(f"EdranFusionLib and Resources were not found beside {here} or in its parent folder")


EXTENSION_ROOT = _extensionRoot()
if str(EXTENSION_ROOT) not in sys.path:
    sys.path.insert(0, str(EXTENSION_ROOT))  # makes `import EdranFusionLib` work from a source checkout


def resourcePath(relativePath: str) -> str:
    """Absolute path of a file in Resources/, wherever the module was loaded from."""
    return str(EXTENSION_ROOT / "Resources" / relativePath)


def missingRequirements() -> list:
    """Requirements (pip specifiers) whose Python package cannot be imported."""
    return [requirement for module, requirement in REQUIREMENTS.items() if importlib.util.find_spec(module) is None]


#
# EdranFusion
#


class EdranFusion(ScriptedLoadableModule):
    """Module description shown in Slicer's module list and help panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("EdranFusion")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Filtering")]
        self.parent.dependencies = []
        self.parent.contributors = ["EdranFusion developers"]
        self.parent.helpText = _(
            "Fuses two co-registered volumes (MRI+CT, MRI+SPECT/PET, T2+FLAIR) slice by slice with the EH-DRAN "
            "autoencoder and the parameter-free SFNN fusion rule. The fused volume is made on volume A's grid; "
            "a colour input (SPECT/PET) gives a colour output. PyTorch is installed on first use after asking. "
            "Try it on the 'EdranFusion stroke T2 + FLAIR' set in the Sample Data module. "
            "See the extension's README for console use and training."
        )
        self.parent.acknowledgementText = _(
            "Implements 'EH-DRAN' (edge-enhanced dilated residual attention network) with SFNN fusion. "
            "Sample data: stroke T2 and FLAIR volumes by Chris Rorden (neurolabusc/VolumeRenderingData, MIT)."
        )
        self.parent.icon = qt.QIcon(resourcePath("Icons/EdranFusion.png"))
        slicer.app.connect("startupCompleted()", registerSampleData)


#
# Sample data: the bundled stroke T2 + FLAIR, loaded from the extension itself (no download)
#


STROKE_NODE_NAMES = ["StrokeT2", "StrokeFLAIR"]


def _strokeFiles() -> list:
    folder = EXTENSION_ROOT / "EdranFusionLib" / "sample_data" / "stroke"
    return [folder / "T2.nii.gz", folder / "FLAIR.nii.gz"]


def registerSampleData() -> None:
    """Add the stroke T2 + FLAIR pair to the Sample Data module."""
    import SampleData

    files = _strokeFiles()
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="EdranFusion",
        sampleName="EdranFusion stroke T2 + FLAIR",
        thumbnailFileName=resourcePath("Icons/EdranFusionStroke.png"),
        uris=[path.as_uri() for path in files],
        fileNames=[path.name for path in files],
        nodeNames=STROKE_NODE_NAMES,
        customDownloader=loadStrokeSample,
    )


def loadStrokeSample(source=None) -> list:
    """Load the stroke pair and select it as volumes A and B, so Apply is the next click.

    ``source`` is the SampleDataSource the Sample Data module passes to custom downloaders (unused: the
    files are local).
    """
    nodes = [slicer.util.loadVolume(str(path), {"name": name}) for path, name in zip(_strokeFiles(), STROKE_NODE_NAMES)]
    parameterNode = EdranFusionLogic().getParameterNode()
    parameterNode.inputVolumeA, parameterNode.inputVolumeB = nodes
    slicer.util.setSliceViewerLayers(background=nodes[0], foreground=nodes[1], foregroundOpacity=0.0, fit=True)
    return nodes


#
# EdranFusionParameterNode
#


@parameterNodeWrapper
class EdranFusionParameterNode:
    """What the user chose; saved with the scene.

    inputVolumeA - reference volume: the output takes its grid, geometry and intensity units.
    inputVolumeB - the other modality, co-registered with A.
    outputVolume - volume overwritten with the result; none means "create a new one".
    model - a bundled model name, or WEIGHTS_FILE_CHOICE to use weightsFile.
    strategy, device - as in EdranFusionLib (fusion rule; auto/cpu/cuda/mps).
    batchSize - slices per network call; 0 means automatic.
    resampleB - resample B onto A's grid when the grids differ (otherwise that is an error).
    """

    inputVolumeA: VolumeNode
    inputVolumeB: VolumeNode
    outputVolume: VolumeNode
    model: str = "general"
    weightsFile: pathlib.Path
    strategy: str = "sfnn-max"
    device: str = "auto"
    batchSize: Annotated[int, WithinRange(0, 256)] = 0
    resampleB: bool = False


#
# EdranFusionWidget
#


class EdranFusionWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel, bound to the parameter node; runs the Logic with progress and Cancel."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._choicesLoaded = False
        self._updatingChoices = False
        self._running = False
        self._cancelRequested = False
        self._deviceDescriptions = {}

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(resourcePath("UI/EdranFusion.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = EdranFusionLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        # The three lists come from EdranFusionLib, so they are filled in code rather than bound in the .ui.
        for combo in self._choiceCombos().values():
            combo.connect("currentIndexChanged(int)", self._storeChoices)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)

        self._loadChoices()
        self._setRunning(False)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        """Observe the module's parameter node; preselect the first two volumes to save clicks."""
        self.setParameterNode(self.logic.getParameterNode())
        volumes = [
            node for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
            if node.GetClassName() in ("vtkMRMLScalarVolumeNode", "vtkMRMLVectorVolumeNode")
        ]
        if not self._parameterNode.inputVolumeA and volumes:
            self._parameterNode.inputVolumeA = volumes[0]
        if not self._parameterNode.inputVolumeB and len(volumes) > 1:
            self._parameterNode.inputVolumeB = volumes[1]

    def setParameterNode(self, inputParameterNode: Optional[EdranFusionParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)
            self._updateGui()

    # --- choices filled from the library ---------------------------------------------------------------

    def _choiceCombos(self) -> dict:
        return {"model": self.ui.modelComboBox, "strategy": self.ui.strategyComboBox, "device": self.ui.deviceComboBox}

    def _loadChoices(self) -> None:
        """Fill the model/strategy/device lists from EdranFusionLib once its dependencies are installed."""
        if self._choicesLoaded or missingRequirements():
            return
        choices = self.logic.choices()
        choices["model"] = [*choices["model"], WEIGHTS_FILE_CHOICE]
        self._updatingChoices = True
        try:
            for parameter, combo in self._choiceCombos().items():
                combo.clear()
                combo.addItems(choices[parameter])
        finally:
            self._updatingChoices = False
        self._choicesLoaded = True
        self._updateGui()

    def _showChoices(self) -> None:
        self._updatingChoices = True
        try:
            for parameter, combo in self._choiceCombos().items():
                value = getattr(self._parameterNode, parameter)
                if combo.findText(value) < 0:
                    combo.addItem(value)  # e.g. before PyTorch is installed, or a model not installed here
                combo.setCurrentText(value)
        finally:
            self._updatingChoices = False

    def _storeChoices(self) -> None:
        if self._parameterNode is None or self._updatingChoices:
            return
        for parameter, combo in self._choiceCombos().items():
            if combo.currentText and combo.currentText != getattr(self._parameterNode, parameter):
                setattr(self._parameterNode, parameter, combo.currentText)

    # --- state shown in the panel ----------------------------------------------------------------------

    def _updateGui(self, caller=None, event=None) -> None:
        if self._parameterNode is None:
            return
        self._showChoices()
        self.ui.weightsPathLineEdit.enabled = self._parameterNode.model == WEIGHTS_FILE_CHOICE
        self.ui.deviceInUseLabel.text = self._deviceInUse(self._parameterNode.device)
        problem = self._whyNotReady()
        self.ui.applyButton.enabled = problem is None and not self._running
        self.ui.applyButton.toolTip = problem or _("Fuse volume B into volume A")

    def _deviceInUse(self, device: str) -> str:
        if missingRequirements():
            return _("PyTorch is not installed yet; it is installed when you press Apply")
        if device not in self._deviceDescriptions:
            self._deviceDescriptions[device] = self.logic.describeDevice(device)
        return self._deviceDescriptions[device]

    def _whyNotReady(self) -> Optional[str]:
        """Why Apply is disabled, or None when the inputs are valid."""
        parameters = self._parameterNode
        if not parameters.inputVolumeA or not parameters.inputVolumeB:
            return _("Select volumes A and B")
        if parameters.inputVolumeA == parameters.inputVolumeB:
            return _("Volumes A and B are the same volume; select two different volumes")
        if parameters.outputVolume in (parameters.inputVolumeA, parameters.inputVolumeB):
            return _("The fused volume must not overwrite an input; select another output or create a new one")
        if parameters.model == WEIGHTS_FILE_CHOICE and not parameters.weightsFile.is_file():
            return _("Select an existing weights file (.pt)")
        return None

    def _setRunning(self, running: bool) -> None:
        self._running = running
        self._cancelRequested = False
        for section in (self.ui.inputsCollapsibleButton, self.ui.outputsCollapsibleButton,
                        self.ui.fusionCollapsibleButton, self.ui.advancedCollapsibleButton):
            section.enabled = not running
        self.ui.progressBar.value = 0
        self.ui.progressBar.visible = running
        self.ui.cancelButton.visible = running
        self.ui.cancelButton.enabled = running
        self._updateGui()

    # --- running ---------------------------------------------------------------------------------------

    def onApplyButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Installing EdranFusion's Python packages failed."), waitCursor=True):
            if not self.logic.installDependencies(slicer.util.confirmOkCancelDisplay):
                slicer.util.showStatusMessage(_("EdranFusion needs PyTorch; nothing was done."), 5000)
                return
        self._loadChoices()
        self._deviceDescriptions.clear()
        parameters = self._parameterNode
        model = str(parameters.weightsFile) if parameters.model == WEIGHTS_FILE_CHOICE else parameters.model
        with slicer.util.tryWithErrorDisplay(_("Fusion failed."), waitCursor=True):
            from EdranFusionLib.errors import FusionCancelled

            self._setRunning(True)
            try:
                output = self.logic.process(
                    parameters.inputVolumeA, parameters.inputVolumeB, parameters.outputVolume,
                    model=model, strategy=parameters.strategy, device=parameters.device,
                    batch_size=parameters.batchSize or None, resample=parameters.resampleB,
                    progress=self._onProgress, cancel=lambda: self._cancelRequested,
                )
            except FusionCancelled:
                slicer.util.showStatusMessage(_("Fusion cancelled; the scene is unchanged."), 5000)
                return
            finally:
                self._setRunning(False)
            parameters.outputVolume = output
            slicer.util.setSliceViewerLayers(background=output, foreground=None, fit=True)

    def onCancelButton(self) -> None:
        self._cancelRequested = True
        self.ui.cancelButton.enabled = False

    def _onProgress(self, fraction: float) -> None:
        self.ui.progressBar.value = int(round(100 * fraction))
        slicer.app.processEvents()  # repaints the bar and lets the Cancel click through


#
# EdranFusionLogic
#


class EdranFusionLogic(ScriptedLoadableModuleLogic):
    """Blocking, GUI-free entry points; usable from the Python console. All work is done by EdranFusionLib."""

    def getParameterNode(self) -> EdranFusionParameterNode:
        return EdranFusionParameterNode(super().getParameterNode())

    @staticmethod
    def installDependencies(confirm: Callable[[str], bool] = slicer.util.confirmOkCancelDisplay) -> bool:
        """Install missing Python packages after ``confirm(question)`` agrees; True when all are importable.

        PyTorch comes from the PyTorch extension's installer when that extension is present (it picks a build
        matching the GPU driver), otherwise from pip.
        """
        missing = missingRequirements()
        if not missing:
            return True
        question = _(
            "EdranFusion needs these Python packages, which are not installed yet:\n\n{packages}\n\n"
            "Install them now? This downloads several hundred megabytes and can take a few minutes."
        ).format(packages="\n".join(missing))
        if not confirm(question):
            return False
        torchRequirement = REQUIREMENTS["torch"]
        if torchRequirement in missing:
            missing.remove(torchRequirement)
            EdranFusionLogic._installTorch(torchRequirement)
        if missing:
            slicer.util.pip_install(" ".join(missing))
        importlib.invalidate_caches()
        return not missingRequirements()

    @staticmethod
    def _installTorch(requirement: str) -> None:
        try:
            import PyTorchUtils
        except ImportError:
            slicer.util.pip_install(requirement)
            return
        PyTorchUtils.PyTorchUtilsLogic().installTorch(
            askConfirmation=False, torchVersionRequirement=requirement[len("torch"):]
        )

    @staticmethod
    def choices() -> dict:
        """Names offered in the panel: installed bundled models, fusion strategies and devices."""
        from EdranFusionLib.choices import DEVICE_CHOICES, STRATEGY_NAMES
        from EdranFusionLib.io.weights import bundled_models

        return {"model": list(bundled_models()), "strategy": list(STRATEGY_NAMES), "device": list(DEVICE_CHOICES)}

    @staticmethod
    def describeDevice(device: str) -> str:
        """Where ``device`` (auto/cpu/cuda/mps) runs here, e.g. "cuda (NVIDIA RTX A4000)", or why it cannot."""
        from EdranFusionLib.errors import EdranFusionError
        from EdranFusionLib.network.devices import resolve_device

        try:
            resolved = resolve_device(device)
        except EdranFusionError as error:
            return str(error)
        if resolved.type == "cuda":
            import torch

            return f"cuda ({torch.cuda.get_device_name(resolved)})"
        return resolved.type

    def process(
        self,
        inputVolumeA,
        inputVolumeB,
        outputVolume=None,
        *,
        model: Optional[str] = None,
        strategy: Optional[str] = None,
        device: str = "auto",
        batch_size: Optional[int] = None,
        resample: bool = False,
        progress: Optional[Callable[[float], None]] = None,
        cancel: Optional[Callable[[], bool]] = None,
    ):
        """Fuse two volume nodes into ``outputVolume`` (or a new "A+B fused" node) and return the output node.

        ``model`` is a bundled model name or a weights file and ``strategy`` a fusion rule (None: the library's
        defaults, "general" and "sfnn-max"). ``progress(fraction)`` is called after every batch of slices;
        ``cancel()`` returning True stops the run with FusionCancelled. A failed or cancelled run leaves the
        scene exactly as it was.
        """
        missing = missingRequirements()
        if missing:
            raise RuntimeError(
                f"missing Python packages: {', '.join(missing)}; "
                "run EdranFusionLogic.installDependencies() or press Apply in the EdranFusion module"
            )
        from EdranFusionLib.slicer_bridge import fuse_volume_nodes

        named = {key: value for key, value in (("model", model), ("strategy", strategy)) if value is not None}
        startTime = time.time()
        output = fuse_volume_nodes(
            inputVolumeA, inputVolumeB, outputVolume, device=device, batch_size=batch_size, resample=resample,
            progress=progress, cancel=cancel, **named,
        )
        logging.info(f"EdranFusion: fused '{output.GetName()}' in {time.time() - startTime:.1f} s")
        return output


#
# EdranFusionTest
#


class EdranFusionTest(ScriptedLoadableModuleTest):
    """In-Slicer self-test: two small synthetic volumes, fused on the CPU with a randomly initialised model."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_fusion_keeps_geometry_and_units()
        self.setUp()
        self.test_cancelled_fusion_leaves_scene_unchanged()

    def _requireDependencies(self) -> None:
        if missingRequirements():
            self.skipTest(f"missing Python packages: {', '.join(missingRequirements())}")

    def _randomModelFile(self) -> str:
        import torch

        from EdranFusionLib.network.model import EHDRAN

        torch.manual_seed(0)
        path = pathlib.Path(slicer.app.temporaryPath) / "EdranFusionTest_random_model.pt"
        torch.save(EHDRAN().state_dict(), path)
        return str(path)

    def _volume(self, name: str, shift: float):
        import numpy as np

        k, j, i = np.meshgrid(np.linspace(-1, 1, 6), np.linspace(-1, 1, 24), np.linspace(-1, 1, 32), indexing="ij")
        array = (1000.0 * np.clip(1.0 - (k**2 + (j - shift) ** 2 + i**2), 0, None)).astype(np.float32)
        node = slicer.util.addVolumeFromArray(array, name=name)
        node.SetSpacing(0.8, 1.2, 3.0)
        node.SetOrigin(-12.0, 30.0, 5.5)
        node.SetIJKToRASDirections(0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # rotated in-plane
        return node

    def test_fusion_keeps_geometry_and_units(self) -> None:
        import numpy as np

        self.delayDisplay("Fusing two synthetic volumes on the CPU")
        self._requireDependencies()
        volumeA, volumeB = self._volume("A", 0.0), self._volume("B", 0.3)
        output = EdranFusionLogic().process(volumeA, volumeB, model=self._randomModelFile(), device="cpu")

        self.assertEqual(output.GetName(), "A+B fused")
        matrixA, matrixOutput = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        volumeA.GetIJKToRASMatrix(matrixA)
        output.GetIJKToRASMatrix(matrixOutput)
        np.testing.assert_array_equal(slicer.util.arrayFromVTKMatrix(matrixOutput),
                                      slicer.util.arrayFromVTKMatrix(matrixA))
        fused, inputA = slicer.util.arrayFromVolume(output), slicer.util.arrayFromVolume(volumeA)
        self.assertEqual(fused.shape, inputA.shape)
        self.assertTrue(np.isfinite(fused).all())
        self.assertGreaterEqual(fused.min(), inputA.min() - 1e-3)
        self.assertLessEqual(fused.max(), inputA.max() + 1e-3)
        self.delayDisplay("Test passed")

    def test_cancelled_fusion_leaves_scene_unchanged(self) -> None:
        self.delayDisplay("Cancelling a fusion")
        self._requireDependencies()
        from EdranFusionLib.errors import FusionCancelled

        volumeA, volumeB = self._volume("A", 0.0), self._volume("B", 0.3)
        nodesBefore = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(FusionCancelled):
            EdranFusionLogic().process(volumeA, volumeB, model=self._randomModelFile(), device="cpu",
                                       cancel=lambda: True)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodesBefore)
        self.delayDisplay("Test passed")
