"""EdranFusion: fuse two co-registered volumes with the EH-DRAN autoencoder and the SFNN fusion rule.

A thin Slicer module: parameter node, Widget, Logic and self-test. All computation lives in EdranFusionLib,
which is imported only when a fusion runs, after its Python dependencies are installed (with the user's
consent), so the module loads in any Slicer even before PyTorch is there.
"""

import importlib.metadata
import importlib.util
import logging
import pathlib
import re
import sys
import time
import unittest
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

# Python packages the fusion imports. Floors no higher than the wheel's, lower where Slicer 5.8's Python 3.9 needs
# it (torch 2.13 needs 3.10) or Slicer bundles its own (numpy, SimpleITK: never replaced); torch 2.4 and Pillow
# 10.1 are the oldest the library's tests pass with on 3.9 (docs/SLICER.md).
REQUIREMENTS = {
    "torch": "torch>=2.4",
    "numpy": "numpy>=1.23",
    "SimpleITK": "SimpleITK>=2.2",
    "PIL": "pillow>=10.1",
    "tqdm": "tqdm>=4.60",
}
# Entry of the model list that means "use the weights file chosen below".
WEIGHTS_FILE_CHOICE = "Weights file"
# PyTorch's own package index, one folder per computation backend (cpu, cu121, ...).
PYTORCH_INDEX = "https://download.pytorch.org/whl/"
POLL_INTERVAL_MS = 100
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


def _versionTuple(version: str) -> tuple:
    """(2, 13, 0) from "2.13.0+cpu" or "2.13.0rc1": the leading numbers, enough to compare with a floor."""
    numbers = []
    for part in version.split("+", maxsplit=1)[0].split("."):
        digits = re.match(r"\d+", part)
        if digits is None:
            break
        numbers.append(int(digits.group()))
    return tuple(numbers)


def installedVersion(distribution: str) -> Optional[str]:
    """Version of an installed distribution from its metadata (nothing is imported), or None."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        wanted = distribution.lower()
        for found in importlib.metadata.distributions():  # older Pythons match names case-sensitively
            if (found.metadata["Name"] or "").lower() == wanted:
                return found.version
        return None


def missingRequirements() -> list:
    """Requirements (pip specifiers) whose package cannot be imported or is older than the floor.

    Reads only import specs and package metadata, so it is cheap and never loads PyTorch.
    """
    missing = []
    for module, requirement in REQUIREMENTS.items():
        distribution, floor = requirement.split(">=")
        if importlib.util.find_spec(module) is None:
            missing.append(requirement)
            continue
        version = installedVersion(distribution)
        if version is not None and _versionTuple(version) < _versionTuple(floor):
            missing.append(requirement)
    return missing


def describeMissing(missing: list) -> str:
    """One line per requirement, saying which version is there now, if any."""
    lines = []
    for requirement in missing:
        distribution = requirement.split(">=")[0]
        version = installedVersion(distribution)
        lines.append(f"{requirement} (installed: {version})" if version else requirement)
    return "\n".join(lines)


class TorchNotLoadable(RuntimeError):
    """PyTorch is installed but importing it fails (e.g. a broken or half-finished installation)."""


def importTorch():
    """Import PyTorch, turning the many ways a broken installation fails into one clear error."""
    try:
        import torch
    except Exception as error:  # ImportError, OSError (a DLL or .so that does not load), ...
        raise TorchNotLoadable(_(
            "PyTorch is installed but cannot be loaded ({error}). Press 'Install PyTorch' to reinstall it, "
            "then restart Slicer."
        ).format(error=error)) from error
    return torch


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
    """What the user chose; saved with the scene. Volumes may be None (not chosen yet).

    inputVolumeA - reference volume: the output takes its grid, geometry and intensity units.
    inputVolumeB - the other modality, co-registered with A.
    outputVolume - volume overwritten with the result; None means "create a new one".
    model - a bundled model name, or WEIGHTS_FILE_CHOICE to use weightsFile.
    weightsFile - path of a weights file; "" when none was chosen (bound in code: the path widget's own
        binding would show an empty path as ".").
    strategy, device - as in EdranFusionLib (fusion rule; auto/cpu/cuda/mps). strategy "" (a fresh scene) becomes
        the model's default, and choosing another model selects that model's default.
    batchSize - slices per network call; 0 means automatic.
    resampleB - resample B onto A's grid when the grids differ (otherwise that is an error).
    """

    inputVolumeA: Optional[VolumeNode]
    inputVolumeB: Optional[VolumeNode]
    outputVolume: Optional[VolumeNode]
    model: str = "general"
    weightsFile: str = ""
    strategy: str = ""
    device: str = "auto"
    batchSize: Annotated[int, WithinRange(0, 256)] = 0
    resampleB: bool = False


#
# EdranFusionWidget
#


class EdranFusionWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel, bound to the parameter node.

    A fusion runs on a worker thread (EdranFusionLib.fusion.background); a timer on the GUI thread shows its
    progress and, when it ends, stores the result, so the views stay usable and Cancel stays clickable.
    Opening the panel never imports PyTorch: that happens on the worker when Apply is pressed.
    """

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._choicesLoaded = False
        self._updatingChoices = False
        self._fusion = None  # (NodeFusion, BackgroundRun) while a fusion runs
        self._device = ""
        self._torchProblem = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(resourcePath("UI/EdranFusion.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = EdranFusionLogic()
        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(POLL_INTERVAL_MS)
        self._pollTimer.connect("timeout()", self._pollFusion)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        # The three lists come from EdranFusionLib, so they are filled in code rather than bound in the .ui.
        for combo in self._choiceCombos().values():
            combo.connect("currentIndexChanged(int)", self._storeChoices)
        self.ui.weightsPathLineEdit.connect("currentPathChanged(QString)", self._storeWeightsFile)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.installButton.connect("clicked(bool)", self.onInstallButton)

        self._loadChoices()
        self._setRunning(False)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self._cancelRun()
        self._pollTimer.stop()  # the cancelled worker ends by itself; nothing is stored
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self._cancelRun()  # its nodes are going away; store() would refuse them anyway
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        """Observe the module's parameter node; preselect the first two volumes to save clicks."""
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.strategy:
            self._pickDefaultStrategy()
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
        """Fill the model/strategy/device lists from EdranFusionLib's torch-free registry."""
        if self._choicesLoaded:
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

    def _showChoices(self) -> None:
        self._updatingChoices = True
        try:
            for parameter, combo in self._choiceCombos().items():
                value = getattr(self._parameterNode, parameter)
                if combo.findText(value) < 0:
                    combo.addItem(value)  # e.g. a model saved with the scene that is not installed here
                combo.setCurrentText(value)
            self.ui.strategyComboBox.toolTip = self.logic.describeStrategy(self._parameterNode.strategy)
            if self.ui.weightsPathLineEdit.currentPath != self._parameterNode.weightsFile:
                self.ui.weightsPathLineEdit.currentPath = self._parameterNode.weightsFile
        finally:
            self._updatingChoices = False

    def _storeChoices(self) -> None:
        if self._parameterNode is None or self._updatingChoices:
            return
        modelBefore = self._parameterNode.model
        for parameter, combo in self._choiceCombos().items():
            if combo.currentText and combo.currentText != getattr(self._parameterNode, parameter):
                setattr(self._parameterNode, parameter, combo.currentText)
        if self._parameterNode.model != modelBefore:
            self._pickDefaultStrategy()

    def _pickDefaultStrategy(self) -> None:
        """The chosen model's own default strategy (its card's; the paper's sfnn-max for a file without one)."""
        node = self._parameterNode
        chosen = node.weightsFile if node.model == WEIGHTS_FILE_CHOICE else node.model
        node.strategy = self.logic.defaultStrategy(chosen)

    def _storeWeightsFile(self, path: str) -> None:
        if self._parameterNode is not None and not self._updatingChoices:
            self._parameterNode.weightsFile = path.strip()
            if self._parameterNode.model == WEIGHTS_FILE_CHOICE:
                self._pickDefaultStrategy()

    # --- state shown in the panel ----------------------------------------------------------------------

    def _updateGui(self, caller=None, event=None) -> None:
        if self._parameterNode is None:
            return
        self._showChoices()
        self.ui.weightsPathLineEdit.enabled = self._parameterNode.model == WEIGHTS_FILE_CHOICE
        self.ui.deviceInUseLabel.text = self._device or _("chosen when you press Apply")
        self._showDependencyState()
        problem = self._whyNotReady()
        self.ui.applyButton.enabled = problem is None and self._fusion is None
        self.ui.applyButton.toolTip = problem or _("Fuse volume B into volume A")

    def _showDependencyState(self) -> None:
        """A missing, outdated or broken PyTorch is said in the panel, next to the button that fixes it."""
        missing = missingRequirements()
        if self._torchProblem:
            message = self._torchProblem
        elif missing:
            message = _("Not installed yet (installed on the first Apply, after asking):\n{packages}").format(
                packages=describeMissing(missing))
        else:
            message = ""
        self.ui.dependencyLabel.text = message
        self.ui.dependencyLabel.visible = bool(message)
        self.ui.installButton.visible = bool(message)
        self.ui.installButton.enabled = self._fusion is None

    def _whyNotReady(self) -> Optional[str]:
        """Why Apply is disabled, or None when the inputs are valid."""
        parameters = self._parameterNode
        if not parameters.inputVolumeA or not parameters.inputVolumeB:
            return _("Select volumes A and B")
        if parameters.inputVolumeA == parameters.inputVolumeB:
            return _("Volumes A and B are the same volume; select two different volumes")
        if parameters.outputVolume and parameters.outputVolume in (parameters.inputVolumeA, parameters.inputVolumeB):
            return _("The fused volume must not overwrite an input; select another output or create a new one")
        if parameters.model == WEIGHTS_FILE_CHOICE and not (
                parameters.weightsFile and pathlib.Path(parameters.weightsFile).is_file()):
            return _("Select an existing weights file (.pt)")
        return None

    def _setRunning(self, running: bool) -> None:
        for section in (self.ui.inputsCollapsibleButton, self.ui.outputsCollapsibleButton,
                        self.ui.fusionCollapsibleButton, self.ui.advancedCollapsibleButton):
            section.enabled = not running
        self.ui.progressBar.value = 0
        self.ui.progressBar.visible = running
        self.ui.cancelButton.visible = running
        self.ui.cancelButton.enabled = running
        self._updateGui()

    # --- running ---------------------------------------------------------------------------------------

    def _install(self, confirm: Callable[[str], bool]) -> bool:
        """Install what is missing; the wait cursor is shown only while installing, never over the question."""
        try:
            return self.logic.installDependencies(confirm, reinstallTorch=self._torchProblem is not None)
        except Exception as error:
            slicer.util.errorDisplay(_("Installing EdranFusion's Python packages failed.") + f"\n\n{error}")
            return False
        finally:
            self._updateGui()

    def onInstallButton(self) -> None:
        if self._install(slicer.util.confirmOkCancelDisplay) and self._torchProblem:
            self._torchProblem = _("PyTorch was reinstalled; restart Slicer to load it.")
            self._updateGui()

    def onApplyButton(self) -> None:
        if missingRequirements() and not self._install(slicer.util.confirmOkCancelDisplay):
            slicer.util.showStatusMessage(_("EdranFusion needs PyTorch; nothing was done."), 5000)
            return
        parameters = self._parameterNode
        model = parameters.weightsFile if parameters.model == WEIGHTS_FILE_CHOICE else parameters.model
        try:
            self._fusion = self.logic.startProcess(
                parameters.inputVolumeA, parameters.inputVolumeB, parameters.outputVolume,
                model=model, strategy=parameters.strategy or None, device=parameters.device,
                batch_size=parameters.batchSize or None, resample=parameters.resampleB,
            )
        except Exception as error:  # bad input found before anything started (EdranFusionError)
            slicer.util.errorDisplay(_("Fusion failed.") + f"\n\n{error}")
            return
        self._setRunning(True)
        self._pollTimer.start()

    def onCancelButton(self) -> None:
        if self._fusion is not None:
            self._fusion[1].cancel()
        self.ui.cancelButton.enabled = False

    def _cancelRun(self) -> None:
        if self._fusion is not None:
            self._fusion[1].cancel()

    def _pollFusion(self) -> None:
        """Timer slot on the GUI thread: show progress; once the worker is done, store or report."""
        if self._fusion is None:
            self._pollTimer.stop()
            return
        fusion, run = self._fusion
        self.ui.progressBar.value = int(round(100 * run.fraction))
        if not run.done:
            return
        self._pollTimer.stop()
        self._fusion = None
        self._setRunning(False)
        from EdranFusionLib.errors import FusionCancelled

        try:
            output = self.logic.finishProcess(fusion, run)
        except FusionCancelled:
            slicer.util.showStatusMessage(_("Fusion cancelled; the scene is unchanged."), 5000)
            return
        except TorchNotLoadable as error:
            self._torchProblem = str(error)
            self._updateGui()
            slicer.util.errorDisplay(str(error))
            return
        except Exception as error:
            slicer.util.errorDisplay(_("Fusion failed.") + f"\n\n{error}")
            return
        self._device = self.logic.describeDevice(self._parameterNode.device) if self._parameterNode else ""
        if self._parameterNode is not None:
            self._parameterNode.outputVolume = output
        slicer.util.setSliceViewerLayers(background=output, foreground=None, fit=True)
        self._updateGui()


#
# EdranFusionLogic
#


class EdranFusionLogic(ScriptedLoadableModuleLogic):
    """GUI-free entry points, usable from the Python console. All work is done by EdranFusionLib."""

    def getParameterNode(self) -> EdranFusionParameterNode:
        return EdranFusionParameterNode(super().getParameterNode())

    @staticmethod
    def installDependencies(confirm: Callable[[str], bool] = slicer.util.confirmOkCancelDisplay,
                            reinstallTorch: bool = False) -> bool:
        """Install missing or outdated Python packages after ``confirm(question)`` agrees; True when all are
        there. ``reinstallTorch`` reinstalls PyTorch even if its metadata looks fine (it failed to load).

        PyTorch comes from PyTorch's own index for the computation backend the PyTorch extension's
        PyTorchUtils detects (matching the GPU driver) when that extension is installed, otherwise from pip;
        torchvision is never installed, EdranFusion does not use it.
        """
        missing = missingRequirements()
        torchRequirement = REQUIREMENTS["torch"]
        if reinstallTorch and torchRequirement not in missing:
            missing.insert(0, torchRequirement)
        if not missing:
            return True
        question = _(
            "EdranFusion needs these Python packages, which are not installed (or too old):\n\n{packages}\n\n"
            "Install them now? This downloads several hundred megabytes and can take a few minutes."
        ).format(packages=describeMissing(missing))
        if not confirm(question):
            return False
        with slicer.util.WaitCursor():
            if torchRequirement in missing:
                missing.remove(torchRequirement)
                slicer.util.pip_install(EdranFusionLogic.torchPipArguments(torchRequirement, reinstallTorch))
            if missing:
                slicer.util.pip_install(" ".join(missing))
        importlib.invalidate_caches()
        return not missingRequirements()

    @staticmethod
    def torchPipArguments(requirement: str, reinstall: bool = False) -> str:
        """pip arguments installing ``requirement`` (torch only) built for this machine's GPU, if known."""
        arguments = f"--force-reinstall {requirement}" if reinstall else requirement
        try:
            import PyTorchUtils
        except ImportError:
            return arguments
        backends = PyTorchUtils.PyTorchUtilsLogic.getCompatibleComputationBackends(
            torchVersionRequirement=requirement[len("torch"):])
        return f"{arguments} --index-url {PYTORCH_INDEX}{EdranFusionLogic.bestBackend(backends)}"

    @staticmethod
    def bestBackend(backends) -> str:
        """The newest CUDA backend ("cu126" over "cu118"), else "cpu"."""
        cuda = [backend for backend in backends if re.fullmatch(r"cu\d+", str(backend))]
        return max(cuda, key=lambda backend: int(backend[2:])) if cuda else "cpu"

    @staticmethod
    def choices() -> dict:
        """Names offered in the panel: installed bundled models, fusion strategies and devices (torch-free)."""
        from EdranFusionLib.choices import DEVICE_CHOICES, strategies_offered
        from EdranFusionLib.io.weights import bundled_models, card_default_strategy

        models = bundled_models()
        strategies = strategies_offered(card_default_strategy(model.card) for model in models.values())
        return {"model": list(models), "strategy": strategies, "device": list(DEVICE_CHOICES)}

    @staticmethod
    def defaultStrategy(model: str) -> str:
        """The strategy ``model`` (a bundled name or a weights file) fuses with by default (torch-free)."""
        from EdranFusionLib.io.weights import default_strategy_of

        return default_strategy_of(model)

    @staticmethod
    def describeStrategy(strategy: str) -> str:
        """What ``strategy`` does, and whether it is the paper's method, in one line (torch-free)."""
        from EdranFusionLib.choices import strategy_description

        return strategy_description(strategy)

    @staticmethod
    def describeDevice(device: str) -> str:
        """Where ``device`` (auto/cpu/cuda/mps) runs here, e.g. "cuda (NVIDIA RTX A4000)", or why it cannot.

        Imports PyTorch: call it after a fusion, not when the panel opens.
        """
        from EdranFusionLib.errors import EdranFusionError
        from EdranFusionLib.network.devices import resolve_device

        try:
            resolved = resolve_device(device)
        except EdranFusionError as error:
            return str(error)
        if resolved.type == "cuda":
            return f"cuda ({importTorch().cuda.get_device_name(resolved)})"
        return resolved.type

    @staticmethod
    def _requireDependencies() -> None:
        missing = missingRequirements()
        if missing:
            raise RuntimeError(
                f"missing or outdated Python packages: {', '.join(missing)}; "
                "run EdranFusionLogic.installDependencies() or press Apply in the EdranFusion module"
            )

    def startProcess(self, inputVolumeA, inputVolumeB, outputVolume=None, **options):
        """Start fusing on a worker thread; returns ``(fusion, run)`` for :meth:`finishProcess`.

        The voxels are copied now, on the calling thread; PyTorch is imported, the model loaded and the
        volumes fused on the worker. Poll ``run.fraction`` and ``run.done``; ``run.cancel()`` stops it.
        ``options`` are those of :meth:`process`.
        """
        self._requireDependencies()
        from EdranFusionLib.fusion.background import BackgroundRun
        from EdranFusionLib.slicer_bridge import NodeFusion

        fusion = NodeFusion(inputVolumeA, inputVolumeB, outputVolume, **self._libraryOptions(options))

        def work(progress, cancel):
            importTorch()
            return fusion.compute(progress, cancel)

        return fusion, BackgroundRun(work)

    @staticmethod
    def finishProcess(fusion, run):
        """On the calling thread, once ``run.done``: store the result and return the output node. Re-raises
        what the worker raised (FusionCancelled, EdranFusionError, TorchNotLoadable); the scene is then
        unchanged, as it is when A, B or the output left the scene meanwhile."""
        startTime = time.time()
        run.result()
        output = fusion.store()
        logging.info(f"EdranFusion: stored '{output.GetName()}' in {time.time() - startTime:.2f} s")
        return output

    @staticmethod
    def _libraryOptions(options: dict) -> dict:
        """The options given, without those left as None (None means "the library's default")."""
        return {key: value for key, value in options.items() if value is not None}

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

        Blocking, for the Python console and scripts (the panel uses :meth:`startProcess`). ``model`` is a
        bundled model name or a weights file and ``strategy`` a fusion rule (None: the library's defaults,
        "general" and that model's own default strategy). ``progress(fraction)`` is called after every batch of
        slices; ``cancel()`` returning True stops the run with FusionCancelled. A failed or cancelled run leaves
        the scene exactly as it was.
        """
        self._requireDependencies()
        from EdranFusionLib.slicer_bridge import NodeFusion

        startTime = time.time()
        options = self._libraryOptions({"model": model, "strategy": strategy, "device": device,
                                        "batch_size": batch_size, "resample": resample})
        fusion = NodeFusion(inputVolumeA, inputVolumeB, outputVolume, **options)
        importTorch()
        fusion.compute(progress, cancel)
        output = fusion.store()
        logging.info(f"EdranFusion: fused '{output.GetName()}' in {time.time() - startTime:.1f} s")
        return output


#
# EdranFusionTest
#


class EdranFusionTest(ScriptedLoadableModuleTest):
    """In-Slicer self-test: the parameter node on a fresh scene, then two small synthetic volumes fused on the
    CPU with a randomly initialised model, in the foreground and on the worker thread. Without PyTorch only
    the fusion steps are skipped."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        for test in (self.test_parameter_node_round_trip, self.test_fusion_keeps_geometry_and_units,
                     self.test_background_fusion_stores_on_the_calling_thread,
                     self.test_cancelled_fusion_leaves_scene_unchanged):
            self.setUp()
            try:
                test()
            except unittest.SkipTest as reason:
                self.delayDisplay(f"{test.__name__} skipped: {reason}")

    def _requireDependencies(self) -> None:
        missing = missingRequirements()
        if missing:
            self.skipTest(f"missing Python packages: {', '.join(missing)}")

    def _randomModelFile(self) -> str:
        torch = importTorch()
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

    def test_parameter_node_round_trip(self) -> None:
        """Every parameter of a fresh scene's parameter node can be set, read back and cleared."""
        self.delayDisplay("Parameter node on a fresh scene")
        parameters = EdranFusionLogic().getParameterNode()
        self.assertIsNone(parameters.inputVolumeA)
        self.assertIsNone(parameters.outputVolume)
        self.assertEqual(parameters.weightsFile, "")
        volume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "A")
        for name in ("inputVolumeA", "inputVolumeB", "outputVolume"):
            setattr(parameters, name, volume)
            self.assertIs(getattr(parameters, name), volume)
            setattr(parameters, name, None)
            self.assertIsNone(getattr(parameters, name))
        parameters.weightsFile = "/some/weights.pt"
        parameters.batchSize = 4
        parameters.resampleB = True
        self.assertEqual((parameters.weightsFile, parameters.batchSize, parameters.resampleB),
                         ("/some/weights.pt", 4, True))
        self.delayDisplay("Test passed")

    def test_fusion_keeps_geometry_and_units(self) -> None:
        self.delayDisplay("Fusing two synthetic volumes on the CPU")
        self._requireDependencies()
        import numpy as np

        volumeA, volumeB = self._volume("A", 0.0), self._volume("B", 0.3)
        output = EdranFusionLogic().process(volumeA, volumeB, model=self._randomModelFile(), device="cpu")
        self._checkOutput(output, volumeA, np)
        self.delayDisplay("Test passed")

    def _checkOutput(self, output, volumeA, np) -> None:
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

    def test_background_fusion_stores_on_the_calling_thread(self) -> None:
        """The panel's path: the worker fuses, the scene is untouched until finishProcess stores."""
        self.delayDisplay("Fusing on the worker thread")
        self._requireDependencies()
        import numpy as np

        volumeA, volumeB = self._volume("A", 0.0), self._volume("B", 0.3)
        logic = EdranFusionLogic()
        nodesBefore = slicer.mrmlScene.GetNumberOfNodes()
        fusion, run = logic.startProcess(volumeA, volumeB, model=self._randomModelFile(), device="cpu")
        run.result(timeout=600)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodesBefore)
        self._checkOutput(logic.finishProcess(fusion, run), volumeA, np)
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
