"""Contract cases: EdranFusion/EdranFusion.py on one released Slicer's own Python layer over slicer-core's MRML.

Run by test_slicer_contract.py in a child process per Slicer version ($EDRANFUSION_SLICER_LAYER names the
layer folder), never collected by the main test run. See slicer_harness.py for what is real and what stands in.
"""

from __future__ import annotations

import pathlib
import sys
import threading
import time
import unittest
from xml.etree import ElementTree

import numpy as np
import pytest
import slicer_harness

slicer = slicer_harness.load_from_environment()
LOADED = slicer_harness.load_module()
module = LOADED.module

import torch  # noqa: E402 (after the module: importing it must not need torch)
import vtk  # noqa: E402
from slicer.parameterNodeWrapper import guiConnectors  # noqa: E402

from EdranFusionLib.errors import EdranFusionError, FusionCancelled  # noqa: E402
from EdranFusionLib.network.model import EHDRAN  # noqa: E402

UI_FILE = slicer_harness.REPO / "Resources" / "UI" / "EdranFusion.ui"
BOUND_IN_CODE = {"model", "strategy", "device", "weightsFile"}  # combo lists and the path (see the module)
SAMPLE_NAME = "EdranFusion stroke T2 + FLAIR"


@pytest.fixture(autouse=True)
def fresh_scene():
    """Each case starts as Slicer does after File > Close Scene: a scene with nothing in it."""
    slicer.mrmlScene = slicer.vtkMRMLScene()
    yield slicer.mrmlScene


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> str:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "random.pt"
    torch.save(EHDRAN().state_dict(), path)
    return str(path)


def _volume(name: str, shape=(6, 20, 24), shift: float = 0.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    k, j, i = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    array = 1000 * np.clip(1.1 - (k**2 + (j - shift) ** 2 + i**2), 0, None) + rng.normal(0, 5, shape)
    node = slicer.util.addVolumeFromArray(array.astype(np.float32), name=name)
    node.SetSpacing(0.8, 1.1, 2.5)
    node.SetOrigin(10.0, -20.0, 7.5)
    node.SetIJKToRASDirections(0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    return node


def _matrix(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def _scene_state(scene) -> list:
    state = []
    for index in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(index)
        entry = [node.GetID(), node.GetClassName(), node.GetName()]
        if node.IsA("vtkMRMLVolumeNode") and node.GetImageData() is not None:
            entry.append(slicer.util.arrayFromVolume(node).tobytes())
            entry.append(_matrix(node).tobytes())
        state.append(entry)
    return state


# --- the module as Slicer loads it ---------------------------------------------------------------------------


def test_module_file_comes_from_the_repository_and_the_layer_from_the_release():
    assert pathlib.Path(module.__file__) == slicer_harness.MODULE_FILE
    layer = pathlib.Path(slicer_harness.os.environ[slicer_harness.LAYER_ENVIRONMENT_VARIABLE])
    for name in ("slicer.util", "slicer.ScriptedLoadableModule", "slicer.parameterNodeWrapper.wrapper"):
        assert pathlib.Path(sys.modules[name].__file__).is_relative_to(layer), name


def test_module_class_describes_itself_and_registers_its_self_test_and_sample():
    parent = LOADED.parent
    assert parent.title == "EdranFusion" and parent.categories == ["Filtering"]
    assert "SFNN" in parent.helpText and parent.acknowledgementText
    assert slicer.selfTests["EdranFusion"] == LOADED.instance.runTest
    import SampleData

    source = SampleData.SampleDataLogic.sourceForSampleName(SampleData.SampleDataLogic(), SAMPLE_NAME)
    assert source is not None and source.customDownloader is module.loadStrokeSample


# --- the parameter node -------------------------------------------------------------------------------------


def test_fresh_scene_parameter_node_has_the_defaults_and_no_volumes():
    parameters = module.EdranFusionLogic().getParameterNode()
    assert (parameters.inputVolumeA, parameters.inputVolumeB, parameters.outputVolume) == (None, None, None)
    assert (parameters.model, parameters.weightsFile, parameters.strategy, parameters.device) == (
        "general", "", "", "auto")  # strategy "": the panel selects the model's own default
    assert (parameters.batchSize, parameters.resampleB) == (0, False)


def _values_for(parameters, scene) -> dict:
    """A non-default value for every parameter the wrapper knows (nodes: a scalar and a vector volume)."""
    scalar = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "S")
    vector = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "V")
    chosen = {"inputVolumeA": scalar, "inputVolumeB": vector, "outputVolume": scalar, "model": "ct-mri",
              "weightsFile": "/data/run/best.pt", "strategy": "fer", "device": "cpu", "batchSize": 256,
              "resampleB": True}
    assert set(chosen) == set(type(parameters).allParameters), "a parameter this test does not cover"
    return chosen


def test_every_parameter_can_be_set_read_back_and_cleared(fresh_scene):
    parameters = module.EdranFusionLogic().getParameterNode()
    chosen = _values_for(parameters, fresh_scene)
    defaults = {name: info.default.value for name, info in type(parameters).allParameters.items()}
    for name, value in chosen.items():
        setattr(parameters, name, value)
        assert getattr(parameters, name) == value, name
        setattr(parameters, name, defaults[name])
        assert getattr(parameters, name) == defaults[name], name
    for name in ("inputVolumeA", "inputVolumeB", "outputVolume"):
        setattr(parameters, name, chosen[name])
        setattr(parameters, name, None)
        assert getattr(parameters, name) is None
    with pytest.raises(ValueError):
        parameters.batchSize = 257  # WithinRange(0, 256)


def test_parameters_survive_saving_and_reloading_the_scene(fresh_scene, tmp_path):
    parameters = module.EdranFusionLogic().getParameterNode()
    chosen = _values_for(parameters, fresh_scene)
    chosen["outputVolume"] = None
    for name, value in chosen.items():
        setattr(parameters, name, value)
    ids = {name: value.GetID() for name, value in chosen.items() if hasattr(value, "GetID")}
    path = tmp_path / "scene.mrml"
    fresh_scene.SetURL(str(path))
    assert fresh_scene.Commit()

    reloaded = slicer.vtkMRMLScene()
    reloaded.SetURL(str(path))
    assert reloaded.Connect()
    slicer.mrmlScene = reloaded
    again = module.EdranFusionLogic().getParameterNode()
    for name, value in chosen.items():
        got = getattr(again, name)
        if name in ids:
            assert got is not None and got.GetID() == ids[name] and got.GetScene() is reloaded, name
        else:
            assert got == value, name


# --- the panel's bindings against the release's own GUI connectors -------------------------------------------


def _bound_widgets() -> dict:
    bound = {}
    for widget in ElementTree.parse(UI_FILE).getroot().iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.findtext("string")] = widget.get("class")
    return bound


def _pythonqt_widget(class_name: str):
    """An instance of the class PythonQt would give for ``class_name``: Qt in qt, CTK in ctk, qMRML in slicer."""
    import ctk
    import qt

    namespace = slicer if class_name.startswith("qMRML") else ctk if class_name.startswith("ctk") else qt
    return getattr(namespace, class_name)()


def test_every_bound_widget_has_a_connector_for_its_parameter_type_in_the_release():
    wrapper = module.EdranFusionParameterNode
    bound = _bound_widgets()
    assert set(bound) | BOUND_IN_CODE == set(wrapper.allParameters), "every parameter is shown in the panel"
    assert not set(bound) & BOUND_IN_CODE
    registry = guiConnectors._registeredGuiConnectors
    assert len(registry) > 5, "the release's connector registry was not read"
    for parameter, class_name in bound.items():
        datatype = wrapper.dataType(parameter)
        widget = _pythonqt_widget(class_name)
        able = [connector.__name__ for connector in registry if connector.canRepresent(widget, datatype)]
        assert able, f"{parameter} ({datatype}) is bound to a {class_name}, which no connector of this release handles"


# --- the Logic, as used from the Python console ---------------------------------------------------------------


def test_console_entry_point_fuses_onto_volume_a_geometry(model_file):
    volume_a, volume_b = _volume("A"), _volume("B", shift=0.3, seed=1)
    output = module.EdranFusionLogic().process(volume_a, volume_b, model=model_file, device="cpu")
    assert output.GetName() == "A+B fused" and output.GetScene() is slicer.mrmlScene
    np.testing.assert_array_equal(_matrix(output), _matrix(volume_a))
    fused, input_a = slicer.util.arrayFromVolume(output), slicer.util.arrayFromVolume(volume_a)
    assert fused.shape == input_a.shape and np.isfinite(fused).all()
    assert input_a.min() - 1e-3 <= fused.min() and fused.max() <= input_a.max() + 1e-3
    assert fused.std() > 0


def test_cancelled_console_run_leaves_the_scene_as_it_was(model_file, fresh_scene):
    volume_a, volume_b = _volume("A"), _volume("B", shift=0.3, seed=1)
    existing_output = _volume("old output", seed=2)
    before = _scene_state(fresh_scene)
    for output in (None, existing_output):
        with pytest.raises(FusionCancelled):
            module.EdranFusionLogic().process(volume_a, volume_b, output, model=model_file, device="cpu",
                                              cancel=lambda: True)
        assert _scene_state(fresh_scene) == before


def test_background_run_is_cancelled_by_the_panel_flag(model_file, fresh_scene):
    volume_a, volume_b = _volume("A"), _volume("B", shift=0.3, seed=1)
    before = _scene_state(fresh_scene)
    logic = module.EdranFusionLogic()
    fusion, run = logic.startProcess(volume_a, volume_b, model=model_file, device="cpu", batch_size=1)
    run.cancel()
    with pytest.raises(FusionCancelled):
        logic.finishProcess(fusion, run)
    assert _scene_state(fresh_scene) == before


@pytest.mark.parametrize("removed", ["A", "B", "output", "scene closed"])
def test_nothing_is_stored_when_inputs_or_output_leave_the_scene_during_the_run(model_file, fresh_scene, removed):
    volume_a, volume_b, output = _volume("A"), _volume("B", shift=0.3, seed=1), _volume("out", seed=2)
    logic = module.EdranFusionLogic()
    fusion, run = logic.startProcess(volume_a, volume_b, output, model=model_file, device="cpu")
    if removed == "scene closed":
        fresh_scene.Clear(0)
    else:
        fresh_scene.RemoveNode({"A": volume_a, "B": volume_b, "output": output}[removed])
    before = _scene_state(fresh_scene)
    with pytest.raises(EdranFusionError, match="removed from the scene"):
        logic.finishProcess(fusion, run)
    assert _scene_state(fresh_scene) == before


def test_calling_thread_keeps_running_its_callbacks_while_a_64_slice_volume_fuses(model_file):
    """The panel's timer must fire during batches, not only between them: the worker releases the GIL."""
    volume_a, volume_b = _volume("A", shape=(64, 48, 48)), _volume("B", shape=(64, 48, 48), shift=0.3, seed=1)
    logic = module.EdranFusionLogic()
    fusion, run = logic.startProcess(volume_a, volume_b, model=model_file, device="cpu", batch_size=4)
    ticks_at_fraction: dict[float, int] = {}
    while not run.done:  # what a QTimer's timeout() does on the GUI thread
        fraction = run.fraction
        ticks_at_fraction[fraction] = ticks_at_fraction.get(fraction, 0) + 1
        time.sleep(0.002)
    output = logic.finishProcess(fusion, run)
    assert slicer.util.arrayFromVolume(output).shape == (64, 48, 48)
    batches = [fraction for fraction in ticks_at_fraction if fraction < 1.0]
    assert len(batches) >= 8, f"callbacks ran in only {len(batches)} of 16 batches: {ticks_at_fraction}"
    assert sum(ticks_at_fraction.values()) > 2 * 16, ticks_at_fraction
    assert threading.current_thread() is threading.main_thread()


# --- the panel (Qt stood in for: see slicer_harness.py) ---------------------------------------------------------


@pytest.fixture
def panel(fresh_scene):
    return slicer_harness.open_panel(LOADED)


def _poll_until_done(panel) -> int:
    """Fire the panel's timer as Qt would every 100 ms until the run is over; returns how often it fired."""
    fired = 0
    while panel._pollTimer.isActive():
        time.sleep(0.01)
        panel._pollTimer.emit("timeout")
        fired += 1
    return fired


def test_panel_opens_with_an_empty_weights_field_and_says_what_is_missing(panel):
    assert panel.ui.weightsPathLineEdit.currentPath == ""
    assert not panel.ui.weightsPathLineEdit.enabled
    assert not panel.ui.applyButton.enabled and panel.ui.applyButton.toolTip == "Select volumes A and B"
    assert panel.ui.modelComboBox.currentText == "general"
    assert not panel.ui.dependencyLabel.visible and not panel.ui.installButton.visible  # all installed here


def test_panel_selects_each_models_own_default_strategy(panel, tmp_path):
    from EdranFusionLib.choices import strategy_description
    from EdranFusionLib.io.model_files import save_bundled
    from EdranFusionLib.io.weights import default_strategy_of

    general = default_strategy_of("general")
    assert panel._parameterNode.strategy == panel.ui.strategyComboBox.currentText == general
    panel.ui.modelComboBox.setCurrentText("ct-mri")
    assert panel._parameterNode.strategy == panel.ui.strategyComboBox.currentText == default_strategy_of("ct-mri")
    assert panel.ui.strategyComboBox.toolTip == strategy_description(default_strategy_of("ct-mri")) != ""
    panel.ui.strategyComboBox.setCurrentText("fer")  # the user's own choice is kept while the model stays
    assert panel._parameterNode.strategy == "fer"
    assert panel.ui.strategyComboBox.toolTip.startswith("compared in the paper")  # says what the choice does
    carded = save_bundled(EHDRAN().eval(), "carded", "ct-mri", {"default_strategy": "average"}, tmp_path)
    panel.ui.modelComboBox.setCurrentText(module.WEIGHTS_FILE_CHOICE)
    panel.ui.weightsPathLineEdit.currentPath = str(carded)
    assert panel._parameterNode.strategy == panel.ui.strategyComboBox.currentText == "average"
    panel.ui.modelComboBox.setCurrentText("general")
    assert panel._parameterNode.strategy == general


def test_panel_weights_file_choice_needs_an_existing_file(panel, model_file):
    panel._parameterNode.inputVolumeA, panel._parameterNode.inputVolumeB = _volume("A"), _volume("B", seed=1)
    assert panel.ui.applyButton.enabled
    panel.ui.modelComboBox.setCurrentText(module.WEIGHTS_FILE_CHOICE)
    assert panel._parameterNode.model == module.WEIGHTS_FILE_CHOICE and panel.ui.weightsPathLineEdit.enabled
    assert not panel.ui.applyButton.enabled
    panel.ui.weightsPathLineEdit.currentPath = model_file
    assert panel._parameterNode.weightsFile == model_file and panel.ui.applyButton.enabled
    panel.ui.weightsPathLineEdit.currentPath = ""
    assert panel._parameterNode.weightsFile == "" and not panel.ui.applyButton.enabled


def test_panel_apply_fuses_on_a_worker_while_its_timer_polls(panel, model_file, fresh_scene):
    volume_a, volume_b = _volume("A", shape=(12, 32, 32)), _volume("B", shape=(12, 32, 32), seed=1)
    parameters = panel._parameterNode
    parameters.inputVolumeA, parameters.inputVolumeB = volume_a, volume_b
    parameters.model, parameters.weightsFile = module.WEIGHTS_FILE_CHOICE, model_file
    parameters.device, parameters.batchSize = "cpu", 2
    panel.ui.applyButton.emit("clicked", False)
    assert panel._pollTimer.isActive() and panel.ui.cancelButton.visible and panel.ui.cancelButton.enabled
    assert not panel.ui.applyButton.enabled and not panel.ui.inputsCollapsibleButton.enabled
    assert slicer.app.overrideCursors == [], "no wait cursor while the run can be cancelled"
    assert fresh_scene.GetNodesByName("A+B fused").GetNumberOfItems() == 0
    assert _poll_until_done(panel) >= 1
    output = parameters.outputVolume
    assert output is not None and output.GetName() == "A+B fused"
    np.testing.assert_array_equal(_matrix(output), _matrix(volume_a))
    assert not panel.ui.progressBar.visible and not panel.ui.cancelButton.visible and panel.ui.applyButton.enabled
    assert panel.ui.deviceInUseLabel.text == "cpu"


def test_panel_cancel_leaves_the_scene_as_it_was(panel, model_file, fresh_scene):
    parameters = panel._parameterNode
    parameters.inputVolumeA, parameters.inputVolumeB = _volume("A", shape=(16, 32, 32)), _volume("B", (16, 32, 32))
    parameters.model, parameters.weightsFile = module.WEIGHTS_FILE_CHOICE, model_file
    parameters.device, parameters.batchSize = "cpu", 1
    before = _scene_state(fresh_scene)
    panel.ui.applyButton.emit("clicked", False)
    panel.ui.cancelButton.emit("clicked", False)
    assert not panel.ui.cancelButton.enabled
    _poll_until_done(panel)
    assert _scene_state(fresh_scene) == before and parameters.outputVolume is None
    assert panel.ui.applyButton.enabled


def test_no_wait_cursor_over_the_installation_question(panel, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # as if PyTorch were not installed
    asked = []

    def decline(question: str) -> bool:
        asked.append((question, list(slicer.app.overrideCursors)))
        return False

    assert panel._install(decline) is False
    assert len(asked) == 1 and module.REQUIREMENTS["torch"] in asked[0][0]
    assert asked[0][1] == [], "the wait cursor must not cover the question"
    assert slicer.app.overrideCursors == []
    assert panel.ui.dependencyLabel.visible and panel.ui.installButton.visible


# --- dependencies ---------------------------------------------------------------------------------------------


def test_installation_is_not_offered_when_everything_is_there_and_asked_for_otherwise(monkeypatch):
    def must_not_ask(question: str) -> bool:
        raise AssertionError("asked although everything is installed")

    assert module.missingRequirements() == []
    assert module.EdranFusionLogic.installDependencies(must_not_ask) is True
    monkeypatch.setitem(sys.modules, "torch", None)  # as if PyTorch were not installed
    assert module.missingRequirements() == [module.REQUIREMENTS["torch"]]
    questions = []
    assert module.EdranFusionLogic.installDependencies(lambda q: questions.append(q) or False) is False
    assert len(questions) == 1 and module.REQUIREMENTS["torch"] in questions[0]


def test_an_older_torch_than_the_floor_counts_as_missing(monkeypatch):
    monkeypatch.setattr(module, "installedVersion", lambda distribution: "1.13.1" if distribution == "torch" else None)
    assert module.missingRequirements() == [module.REQUIREMENTS["torch"]]
    assert module._versionTuple("2.13.0+cpu") >= module._versionTuple("2.4") > module._versionTuple("1.13.1")


def test_torch_comes_from_the_backend_pytorchutils_detects_and_never_with_torchvision(monkeypatch):
    """Against the PyTorch extension's real PyTorchUtils.py (its backend detection needs the network, so only
    the call's contract and the choice among detected backends are checked here)."""
    import inspect

    monkeypatch.syspath_prepend(str(slicer_harness.SLICER_PYTHON / "SlicerPyTorch"))
    import PyTorchUtils

    detect = PyTorchUtils.PyTorchUtilsLogic.getCompatibleComputationBackends
    assert "torchVersionRequirement" in inspect.signature(detect).parameters
    logic = module.EdranFusionLogic
    assert logic.bestBackend(["cpu", "cu118", "cu126", "cu92"]) == "cu126"
    assert logic.bestBackend(["cpu"]) == "cpu"
    monkeypatch.setattr(PyTorchUtils.PyTorchUtilsLogic, "getCompatibleComputationBackends",
                        staticmethod(lambda torchVersionRequirement=None: ["cpu", "cu121"]))
    arguments = logic.torchPipArguments("torch>=2.1")
    assert arguments == "torch>=2.1 --index-url https://download.pytorch.org/whl/cu121"
    assert "torchvision" not in arguments
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)  # the extension is not installed
    assert logic.torchPipArguments("torch>=2.1", reinstall=True) == "--force-reinstall torch>=2.1"


# --- sample data, as the Sample Data module calls it -----------------------------------------------------------


def test_sample_data_loader_loads_a_and_b_and_selects_them():
    import SampleData

    logic = SampleData.SampleDataLogic()
    source = logic.sourceForSampleName(SAMPLE_NAME)
    nodes = source.customDownloader(source)  # what the sample's button in the Sample Data panel calls
    assert [node.GetName() for node in nodes] == module.STROKE_NODE_NAMES
    assert all(slicer.util.arrayFromVolume(node).ndim == 3 for node in nodes)
    parameters = module.EdranFusionLogic().getParameterNode()
    assert (parameters.inputVolumeA, parameters.inputVolumeB) == tuple(nodes)


# --- the module's own self-test -------------------------------------------------------------------------------


def test_the_modules_own_self_test_cases_pass_in_this_release():
    cases = module.EdranFusionTest()
    names = [name for name in cases.moduleTestNames if name.startswith("test_")]
    assert {"test_parameter_node_round_trip", "test_fusion_keeps_geometry_and_units"} <= set(names)
    suite = unittest.TestSuite(module.EdranFusionTest(name) for name in names)
    result = unittest.TextTestRunner(stream=sys.stdout, verbosity=2).run(suite)
    assert result.wasSuccessful() and not result.skipped, (result.failures, result.errors, result.skipped)


def test_the_self_test_entry_point_slicer_calls_runs_all_cases():
    LOADED.instance.runTest()  # what the Reload & Test button and ctest call
