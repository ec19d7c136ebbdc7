"""Load a released 3D Slicer's own Python layer over slicer-core's real MRML, and the module the way Slicer does.

``../shared/slicer-python/<version>/slicer`` (Slicer's Base/Python/slicer, unchanged) becomes the first folder
of the installed ``slicer`` package, so ``slicer.ScriptedLoadableModule``, ``slicer.parameterNodeWrapper``,
``slicer.util`` and ``slicer.i18n`` are that release's code while ``slicer.vtkMRMLScene`` and every other MRML
class are slicer-core's compiled ones; ``SampleData.py`` of the release is importable as ``SampleData``.

What a Slicer application would add and no wheel has is stood in for here, each as small as the tests need:

- ``qt`` and ``ctk`` (PythonQt's wrappers of Qt and CTK): :class:`PythonQtModuleStandIn`, one distinct Python
  class per C++ class name, as PythonQt makes them (guiConnectors tells widgets apart by ``type(widget)``);
- the qMRML C++ widgets (``slicer.qMRMLNodeComboBox`` ...): the same per-name classes;
- ``slicer.app`` (qSlicerApplication, run as ``Slicer --no-main-window``): :class:`ApplicationStandIn`, whose
  only real work, ``coreIOManager().loadNodes``, reads volumes through MRML's own archetype storage node.

Load one version per process (the contract tests run each version in a child process): the layer replaces
modules of the installed ``slicer`` package, which must not leak into other tests.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import tempfile
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SLICER_PYTHON = REPO.parent / "shared" / "slicer-python"
VERSIONS = ("v5.8.1", "v5.10.0", "v5.12.3")
MODULE_FILE = REPO / "EdranFusion" / "EdranFusion.py"
LAYER_ENVIRONMENT_VARIABLE = "EDRANFUSION_SLICER_LAYER"


class _PythonQtClassStandIn(type):
    """Enum values of a wrapped class (``qt.Qt.WaitCursor``, ``qt.QFile.ReadOnly``) read as their own names."""

    def __getattr__(cls, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        return name


class PythonQtObjectStandIn(metaclass=_PythonQtClassStandIn):
    """Any wrapped Qt/CTK/qMRML object: takes any constructor arguments and properties; records connections."""

    def __init__(self, *args, **kwargs) -> None:
        self.connections: dict[str, list] = {}

    def connect(self, signal: str, slot) -> None:
        self.connections.setdefault(signal, []).append(slot)

    def emit(self, signal: str) -> None:
        """What Qt does when the C++ side emits ``signal``: call the connected slots."""
        for slot in self.connections.get(signal, []):
            slot()


class PythonQtModuleStandIn(types.ModuleType):
    """PythonQt's ``qt`` or ``ctk`` module: each class name gives its own class, made once."""

    def __getattr__(self, name: str) -> type:
        if name.startswith("_"):
            raise AttributeError(name)
        wrapped = _PythonQtClassStandIn(name, (PythonQtObjectStandIn,), {"__module__": self.__name__})
        setattr(self, name, wrapped)
        return wrapped


class CoreIOManagerStandIn:
    """qSlicerCoreIOManager, for volume files only: MRML's archetype storage node reads them (ITK readers)."""

    def fileType(self, fileName) -> str:
        return "VolumeFile"

    def loadNodes(self, fileType, properties, loadedNodes, userMessages) -> bool:
        import slicer

        if fileType != "VolumeFile":
            userMessages.AddMessage(0, f"this stand-in reads volume files only, not {fileType}")
            return False
        path = Path(properties["fileName"])
        scene = slicer.mrmlScene
        storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
        storage.SetFileName(str(path))
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", properties.get("name", path.name.split(".")[0]))
        node.SetAndObserveStorageNodeID(storage.GetID())
        if not storage.ReadData(node):
            scene.RemoveNode(node)
            scene.RemoveNode(storage)
            userMessages.AddMessage(0, f"could not read {path}")
            return False
        node.CreateDefaultDisplayNodes()
        loadedNodes.AddItem(node)
        return True


class ApplicationStandIn(PythonQtObjectStandIn):
    """qSlicerApplication started as ``Slicer --no-main-window --testing`` (no layout, no views)."""

    overrideCursors: list = []  # QApplication's override-cursor stack (static, as in Qt)

    def __init__(self) -> None:
        super().__init__()
        self.temporaryPath = tempfile.mkdtemp(prefix="EdranFusionSlicer")
        self.processedEvents = 0
        self._ioManager = CoreIOManagerStandIn()

    def translate(self, context: str, text: str) -> str:
        return text

    def processEvents(self) -> None:
        self.processedEvents += 1

    def testingEnabled(self) -> bool:
        return True

    def commandOptions(self):
        return types.SimpleNamespace(testingEnabled=True, noMainWindow=True)

    def coreIOManager(self) -> CoreIOManagerStandIn:
        return self._ioManager

    def layoutManager(self):
        return None  # no main window

    def mainWindow(self):
        return None

    @classmethod
    def setOverrideCursor(cls, cursor) -> None:
        cls.overrideCursors.append(cursor)

    @classmethod
    def restoreOverrideCursor(cls) -> None:
        cls.overrideCursors.pop()


def layer_folder(version: str) -> Path:
    return SLICER_PYTHON / version


def load_slicer_layer(folder: Path) -> types.ModuleType:
    """Make ``slicer`` the release in ``folder`` over slicer-core's MRML; returns the ``slicer`` package."""
    for name in ("qt", "ctk"):
        sys.modules[name] = PythonQtModuleStandIn(name)
    import slicer  # slicer-core: the MRML classes, and the wheel's own trimmed slicer.util

    wheel_util = sys.modules.pop("slicer.util", None)
    if wheel_util is not None:  # the wheel copies its util's names into the package; Slicer's package has none
        for name in getattr(wheel_util, "__all__", []):
            if getattr(slicer, name, None) is getattr(wheel_util, name, None):
                delattr(slicer, name)
    package = folder / "slicer"
    slicer.__path__.insert(0, str(package))
    init = package / "__init__.py"
    exec(compile(init.read_text(), str(init), "exec"), slicer.__dict__)  # slicer.modules, slicer.moduleNames
    used = set()
    for source in [*package.rglob("*.py"), folder / "SampleData.py", MODULE_FILE]:
        used |= set(re.findall(r"slicer\.(qMRML\w+)", source.read_text(errors="replace")))
    qmrml = PythonQtModuleStandIn("qMRMLWidgets")
    for name in sorted(used):
        setattr(slicer, name, getattr(qmrml, name))
    slicer.app = ApplicationStandIn()
    sys.modules["qt"].QApplication = ApplicationStandIn  # qt.QApplication's static methods act on slicer.app
    slicer.mrmlScene = slicer.vtkMRMLScene()
    for module in ("util", "i18n", "parameterNodeWrapper", "ScriptedLoadableModule"):
        loaded = importlib.import_module(f"slicer.{module}")
        assert Path(loaded.__file__).is_relative_to(package), f"slicer.{module} came from {loaded.__file__}"
        setattr(slicer, module, loaded)
    sys.path.insert(0, str(folder))  # SampleData.py, as Slicer's scripted-module path has it
    return slicer


class LoadedModule(types.SimpleNamespace):
    """The module file imported as Slicer imports it, with its module-class instance."""


def load_module() -> LoadedModule:
    """Import EdranFusion.py as Slicer does (its folder on sys.path, ``import EdranFusion``), instantiate the
    module class with a qSlicerScriptedLoadableModule parent and emit startupCompleted()."""
    import slicer

    sys.path.insert(0, str(MODULE_FILE.parent))
    module = importlib.import_module(MODULE_FILE.stem)
    parent = PythonQtModuleStandIn("qSlicerBaseQTGUI").qSlicerScriptedLoadableModule()
    parent.path = str(MODULE_FILE)
    instance = module.EdranFusion(parent)
    slicer.modules.EdranFusionInstance = instance
    slicer.app.emit("startupCompleted()")
    return LoadedModule(module=module, instance=instance, parent=parent)


def load_from_environment() -> types.ModuleType:
    """Load the layer named by $EDRANFUSION_SLICER_LAYER (set by the contract tests for their child process)."""
    return load_slicer_layer(Path(os.environ[LAYER_ENVIRONMENT_VARIABLE]))


def _probe_opening_imports_no_torch() -> dict:
    """What the module imports when Slicer loads it and its parameter node and choices are built."""
    loaded = load_module()
    logic = loaded.module.EdranFusionLogic()
    logic.getParameterNode()
    logic.choices()
    loaded.module.missingRequirements()
    return {"torch_modules": sorted(name for name in sys.modules if name.split(".")[0] == "torch")}


def _probe_self_test_without_torch() -> dict:
    """The module's self-test where PyTorch is not installed (importing it fails as it would)."""
    import unittest

    sys.modules["torch"] = None  # what `import torch` sees when the package is absent
    loaded = load_module()
    cases = loaded.module.EdranFusionTest()
    names = [name for name in cases.moduleTestNames if name.startswith("test_")]
    result = unittest.TextTestRunner(stream=sys.stderr, verbosity=2).run(
        unittest.TestSuite(loaded.module.EdranFusionTest(name) for name in names))
    loaded.instance.runTest()  # the entry point Slicer calls must not fail either
    return {
        "run": names,
        "skipped": {case.id().rsplit(".", 1)[-1]: reason for case, reason in result.skipped},
        "problems": [str(problem) for _case, problem in result.failures + result.errors],
    }


PROBES = {"opening-imports-no-torch": _probe_opening_imports_no_torch,
          "self-test-without-torch": _probe_self_test_without_torch}

if __name__ == "__main__":  # python slicer_harness.py <version folder> <probe>: prints the probe's JSON
    import json

    load_slicer_layer(Path(sys.argv[1]))
    print(json.dumps(PROBES[sys.argv[2]]()))
