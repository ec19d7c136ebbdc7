"""Load a released 3D Slicer's own Python layer over slicer-core's real MRML, and the module the way Slicer does.

``../shared/slicer-python/<version>/slicer`` (Slicer's Base/Python/slicer, unchanged) becomes the first folder
of the installed ``slicer`` package, so ``slicer.ScriptedLoadableModule``, ``slicer.parameterNodeWrapper``,
``slicer.util`` and ``slicer.i18n`` are that release's code while ``slicer.vtkMRMLScene`` and every other MRML
class are slicer-core's compiled ones; ``SampleData.py`` of the release is importable as ``SampleData``.

What a Slicer application would add and no wheel has is stood in for here, each as small as the tests need:

- ``qt`` and ``ctk`` (PythonQt's wrappers of Qt and CTK): :class:`PythonQtModuleStandIn`, one distinct Python
  class per C++ class name, as PythonQt makes them (guiConnectors tells widgets apart by ``type(widget)``).
  They keep properties and emit signals (PythonQt-style: a slot gets only the arguments it takes) and nothing
  more; the few behaviours the panel relies on (combo items, a node selector's current node, value properties
  that emit their change signal, a timer fired by the test, QUiLoader building the .ui tree) are in BEHAVIOURS;
- the qMRML C++ widgets (``slicer.qMRMLNodeComboBox`` ...): the same per-name classes;
- ``slicer.app`` (qSlicerApplication, run as ``Slicer --no-main-window --testing``): :class:`ApplicationStandIn`,
  whose only real work, ``coreIOManager().loadNodes``, reads volumes through MRML's own archetype storage node.

Load one version per process (the contract tests run each version in a child process): the layer replaces
modules of the installed ``slicer`` package, which must not leak into other tests.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
import tempfile
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SLICER_PYTHON = REPO.parent / "shared" / "slicer-python"
VERSIONS = ("v5.8.1", "v5.10.0", "v5.12.3")
MODULE_FILE = REPO / "EdranFusion" / "EdranFusion.py"
LAYER_ENVIRONMENT_VARIABLE = "EDRANFUSION_SLICER_LAYER"


class _PythonQtClassStandIn(type):
    """Enum values of a wrapped class (``qt.Qt.WaitCursor``, ``qt.QMessageBox.Ok``): a distinct bit per name,
    so that flags combine with ``|`` as in PythonQt."""

    def __getattr__(cls, name: str) -> int:
        if name.startswith("_"):
            raise AttributeError(name)
        values = cls.__dict__.get("_enum_values")
        if values is None:
            values = {}
            type.__setattr__(cls, "_enum_values", values)
        return values.setdefault(name, 1 << len(values))


class SignalStandIn:
    """A Qt signal as PythonQt exposes it: ``connect``, ``disconnect``; the stand-in widget ``emit``s it."""

    def __init__(self) -> None:
        self.slots: list = []

    def connect(self, slot) -> None:
        self.slots.append(slot)

    def disconnect(self, slot) -> None:
        self.slots.remove(slot)

    def emit(self, *args) -> None:
        for slot in list(self.slots):
            slot(*args[:_accepted_arguments(slot, len(args))])  # PythonQt drops what a slot does not take


def _accepted_arguments(slot, given: int) -> int:
    try:
        parameters = inspect.signature(slot).parameters.values()
    except (TypeError, ValueError):
        return given
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return given
    return min(given, sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters))


# Signals of the widgets the panel uses (Qt's and CTK's names).
SIGNALS = {"toggled", "clicked", "valueChanged", "currentNodeChanged", "currentPathChanged",
           "currentIndexChanged", "timeout", "textChanged", "mrmlSceneChanged", "startupCompleted", "stateChanged",
           "moduleAboutToBeUnloaded"}


class PythonQtObjectStandIn(metaclass=_PythonQtClassStandIn):
    """Any wrapped Qt/CTK/qMRML object: properties are plain attributes (as PythonQt maps Q_PROPERTYs),
    signals are :class:`SignalStandIn` (also reachable by their C++ signature in ``connect``), dynamic
    properties come from ``setProperty``, and children make a tree for ``findChildren``. It draws nothing."""

    enabled = True
    visible = True
    text = ""
    toolTip = ""
    name = ""

    def __init__(self, *args, **kwargs) -> None:
        self._children: list = []
        self._dynamic: dict = {}
        self._signals: dict = {}

    def __getattr__(self, name: str):
        if name in SIGNALS:
            return self._signals.setdefault(name, SignalStandIn())
        raise AttributeError(f"{type(self).__name__} stand-in has no '{name}'")

    def connect(self, signal: str, slot) -> None:
        getattr(self, signal.split("(", maxsplit=1)[0]).connect(slot)

    def disconnect(self, signal: str, slot) -> None:
        getattr(self, signal.split("(", maxsplit=1)[0]).disconnect(slot)

    def emit(self, signal: str, *args) -> None:
        """What Qt does when the C++ side emits ``signal``: call the connected slots."""
        getattr(self, signal.split("(", maxsplit=1)[0]).emit(*args)

    def property(self, name: str):
        return self._dynamic.get(name)

    def setProperty(self, name: str, value) -> None:
        self._dynamic[name] = value

    def children(self) -> list:
        return list(self._children)

    def findChildren(self, wrapped: type) -> list:
        found = []
        for child in self._children:
            found += ([child] if isinstance(child, wrapped) else []) + child.findChildren(wrapped)
        return found

    def isWidgetType(self) -> bool:
        return True

    def setMRMLScene(self, scene) -> None:
        self.mrmlScene = scene
        self.emit("mrmlSceneChanged", scene)


class _LayoutBehaviour:
    def addWidget(self, widget, *args) -> None:
        self._children.append(widget)

    def layout(self):
        return self


class _ComboBoxBehaviour:
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._items: list = []
        self._index = -1

    def clear(self) -> None:
        self._items, self._index = [], -1
        self.emit("currentIndexChanged", -1)

    def addItem(self, text: str) -> None:
        self._items.append(text)
        if self._index < 0:
            self.setCurrentIndex(0)

    def addItems(self, texts) -> None:
        for text in texts:
            self.addItem(text)

    def findText(self, text: str) -> int:
        return self._items.index(text) if text in self._items else -1

    def setCurrentIndex(self, index: int) -> None:
        if index != self._index:
            self._index = index
            self.emit("currentIndexChanged", index)

    def setCurrentText(self, text: str) -> None:
        if text in self._items:
            self.setCurrentIndex(self._items.index(text))

    @property
    def currentText(self) -> str:
        return self._items[self._index] if self._index >= 0 else ""


class _NodeComboBoxBehaviour:
    _node = None

    def currentNode(self):
        return self._node

    def setCurrentNode(self, node) -> None:
        if node is not self._node:
            self._node = node
            self.emit("currentNodeChanged", node)


class _ValueBehaviour:
    """QSpinBox / QCheckBox / ctkPathLineEdit: setting the value property emits its change signal."""

    value = 0
    checked = False
    currentPath = ""
    _signals_of = {"value": ("valueChanged",), "checked": ("toggled", "stateChanged"),
                   "currentPath": ("currentPathChanged",)}

    def __setattr__(self, name: str, value) -> None:
        changed = name in self._signals_of and getattr(self, name) != value
        object.__setattr__(self, name, value)
        for signal in self._signals_of.get(name, ()) if changed else ():
            self.emit(signal, value)

    def setRange(self, minimum: int, maximum: int) -> None:
        self.minimum, self.maximum = minimum, maximum


class _TimerBehaviour:
    active = False

    def setInterval(self, milliseconds: int) -> None:
        self.interval = milliseconds

    def start(self) -> None:
        self.active = True

    def stop(self) -> None:
        self.active = False

    def isActive(self) -> bool:
        return self.active


class _SettingsBehaviour:
    def contains(self, key: str) -> bool:
        return False


class _FileBehaviour:
    def __init__(self, path="", *args) -> None:
        super().__init__()
        self.path = Path(path)

    def exists(self) -> bool:
        return self.path.is_file()

    def open(self, mode) -> bool:
        return True


class _UiLoaderBehaviour:
    """QUiLoader: builds the widget tree of a Qt Designer file from the wrapped classes, with its properties."""

    def load(self, qfile):
        from xml.etree import ElementTree

        return self._build(ElementTree.parse(qfile.path).getroot().find("widget"))

    def _build(self, element):
        widget = _pythonqt_class(element.get("class"))()
        widget.name = element.get("name")
        for prop in element.findall("property"):
            value = next(iter(prop), None)
            if value is None:
                continue
            text = value.text or ""
            parsed = {"bool": text == "true", "number": int(text) if text.lstrip("-").isdigit() else 0}.get(
                value.tag, text if value.tag == "string" else None)
            if prop.get("stdset") == "0":
                widget.setProperty(prop.get("name"), parsed)
            elif parsed is not None:
                setattr(widget, prop.get("name"), parsed)
        for child in element.iter():
            if child is not element and child.tag == "widget" and _parent_widget(element, child) is element:
                widget._children.append(self._build(child))
        return widget


def _parent_widget(root, target):
    """The nearest <widget> ancestor of ``target`` under ``root`` (layouts and items are skipped)."""
    def walk(node, owner):
        for child in node:
            if child is target:
                return owner
            found = walk(child, child if child.tag == "widget" else owner)
            if found is not None:
                return found
        return None
    return walk(root, root)


BEHAVIOURS = {
    "QVBoxLayout": _LayoutBehaviour, "QFormLayout": _LayoutBehaviour, "QHBoxLayout": _LayoutBehaviour,
    "qSlicerScriptedLoadableModuleWidget": _LayoutBehaviour,
    "QComboBox": _ComboBoxBehaviour, "qMRMLNodeComboBox": _NodeComboBoxBehaviour,
    "QSpinBox": _ValueBehaviour, "QCheckBox": _ValueBehaviour, "ctkPathLineEdit": _ValueBehaviour,
    "QTimer": _TimerBehaviour, "QSettings": _SettingsBehaviour, "QFile": _FileBehaviour,
    "QUiLoader": _UiLoaderBehaviour,
}


class PythonQtModuleStandIn(types.ModuleType):
    """PythonQt's ``qt`` or ``ctk`` module: each class name gives its own class, made once."""

    def __getattr__(self, name: str) -> type:
        if name.startswith("_"):
            raise AttributeError(name)
        bases = (BEHAVIOURS[name], PythonQtObjectStandIn) if name in BEHAVIOURS else (PythonQtObjectStandIn,)
        wrapped = _PythonQtClassStandIn(name, bases, {"__module__": self.__name__})
        setattr(self, name, wrapped)
        return wrapped


QMRML = PythonQtModuleStandIn("qMRMLWidgets")  # the qMRML widget classes, which Slicer puts in ``slicer``
SLICER_GUI = PythonQtModuleStandIn("qSlicerBaseQTGUI")  # the module's C++ parents (qSlicerScriptedLoadable...)


def _pythonqt_class(class_name: str) -> type:
    """The class PythonQt gives for ``class_name``: Qt's in ``qt``, CTK's in ``ctk``, qMRML's in ``slicer``."""
    if class_name.startswith("qMRML"):
        return getattr(QMRML, class_name)
    return getattr(sys.modules["ctk" if class_name.startswith("ctk") else "qt"], class_name)


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
        self._moduleManager = SLICER_GUI.qSlicerModuleManager()

    applicationName = "Slicer"

    def moduleManager(self) -> PythonQtObjectStandIn:
        return self._moduleManager

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

    def topLevelWidgets(self) -> list:
        return []  # no main window

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
    for name in sorted(used):
        setattr(slicer, name, getattr(QMRML, name))
    slicer.app = ApplicationStandIn()
    sys.modules["qt"].QApplication = ApplicationStandIn  # qt.QApplication's static methods act on slicer.app
    slicer.mrmlScene = slicer.vtkMRMLScene()
    for module in ("util", "i18n", "parameterNodeWrapper", "ScriptedLoadableModule"):
        loaded = importlib.import_module(f"slicer.{module}")
        assert Path(loaded.__file__).is_relative_to(package), f"slicer.{module} came from {loaded.__file__}"
        setattr(slicer, module, loaded)
    sys.path.insert(0, str(folder))  # SampleData.py, as Slicer's scripted-module path has it
    return slicer


def open_panel(loaded: LoadedModule):
    """What Slicer does when the user first selects the module: make its widget, set it up and enter it."""
    parent = SLICER_GUI.qSlicerScriptedLoadableModuleWidget()
    parent.isEntered = True
    widget = loaded.module.EdranFusionWidget(parent)
    widget.setup()
    widget.enter()
    return widget


class LoadedModule(types.SimpleNamespace):
    """The module file imported as Slicer imports it, with its module-class instance."""


def load_module() -> LoadedModule:
    """Import EdranFusion.py as Slicer does (its folder on sys.path, ``import EdranFusion``), instantiate the
    module class with a qSlicerScriptedLoadableModule parent and emit startupCompleted()."""
    import slicer

    sys.path.insert(0, str(MODULE_FILE.parent))
    module = importlib.import_module(MODULE_FILE.stem)
    parent = SLICER_GUI.qSlicerScriptedLoadableModule()
    parent.path = str(MODULE_FILE)
    instance = module.EdranFusion(parent)
    slicer.modules.EdranFusionInstance = instance
    slicer.app.emit("startupCompleted()")
    return LoadedModule(module=module, instance=instance, parent=parent)


def load_from_environment() -> types.ModuleType:
    """Load the layer named by $EDRANFUSION_SLICER_LAYER (set by the contract tests for their child process)."""
    return load_slicer_layer(Path(os.environ[LAYER_ENVIRONMENT_VARIABLE]))


def _torch_modules() -> list:
    return sorted(name for name in sys.modules if name.split(".")[0] == "torch")


def _probe_opening_imports_no_torch() -> dict:
    """What is imported when Slicer loads the module and the user opens its panel."""
    loaded = load_module()
    loaded.module.EdranFusionLogic().getParameterNode()
    widget = open_panel(loaded)
    return {"torch_modules": _torch_modules(), "device_label": widget.ui.deviceInUseLabel.text}


def _probe_broken_torch_panel() -> dict:
    """A PyTorch whose metadata says 2.x but whose import fails (a half-removed or mismatched install): the
    panel opens, Apply reports the problem in the panel with the install button, and nothing is stored."""
    import slicer

    broken = Path(tempfile.mkdtemp(prefix="brokentorch")) / "torch"
    broken.mkdir()
    (broken / "__init__.py").write_text(
        'raise OSError("libtorch_cpu.so: cannot open shared object file: No such file or directory")\n')
    sys.path.insert(0, str(broken.parent))
    loaded = load_module()
    widget = open_panel(loaded)
    import numpy as np

    nodes = [slicer.util.addVolumeFromArray(np.full((4, 16, 16), value, np.float32), name=name)
             for value, name in ((1.0, "A"), (2.0, "B"))]
    parameters = loaded.module.EdranFusionLogic().getParameterNode()
    parameters.inputVolumeA, parameters.inputVolumeB = nodes
    before = slicer.mrmlScene.GetNumberOfNodes()
    widget.ui.applyButton.emit("clicked", False)
    while widget._fusion is not None:
        time.sleep(0.01)
        widget._pollTimer.emit("timeout")
    return {"label": widget.ui.dependencyLabel.text, "label_visible": widget.ui.dependencyLabel.visible,
            "install_visible": widget.ui.installButton.visible, "apply_enabled": widget.ui.applyButton.enabled,
            "nodes_added": slicer.mrmlScene.GetNumberOfNodes() - before}


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
          "self-test-without-torch": _probe_self_test_without_torch,
          "broken-torch-panel": _probe_broken_torch_panel}

if __name__ == "__main__":  # python slicer_harness.py <version folder> <probe>: prints the probe's JSON
    import json

    load_slicer_layer(Path(sys.argv[1]))
    print(json.dumps(PROBES[sys.argv[2]]()))
