"""Static checks of the Slicer module, its Qt Designer file and its build files.

The Slicer application cannot run on these machines, so what the in-Slicer self-test cannot cover here is
checked by reading the files: the .ui is valid Qt Designer XML; every widget the Widget code touches exists in
it with the class the code expects; the widgets bound to the parameter node have a class the binding accepts;
the CMake lists name existing files and every library file; the module imports nothing heavy at load time.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from xml.etree import ElementTree

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE_FILE = ROOT / "EdranFusion" / "EdranFusion.py"
UI_FILE = ROOT / "Resources" / "UI" / "EdranFusion.ui"
MODULE_CMAKE = ROOT / "EdranFusion" / "CMakeLists.txt"
TOP_CMAKE = ROOT / "CMakeLists.txt"

QT_CLASSES = {"QWidget", "QLabel", "QComboBox", "QCheckBox", "QSpinBox", "QPushButton", "QProgressBar"}
# Widget class implied by the end of a widget's name (longest suffix first).
CLASS_BY_SUFFIX = (
    ("CollapsibleButton", "ctkCollapsibleButton"),
    ("PathLineEdit", "ctkPathLineEdit"),
    ("Selector", "qMRMLNodeComboBox"),
    ("ComboBox", "QComboBox"),
    ("CheckBox", "QCheckBox"),
    ("SpinBox", "QSpinBox"),
    ("ProgressBar", "QProgressBar"),
    ("Button", "QPushButton"),
    ("Label", "QLabel"),
)
# Widget class the parameter node wrapper binds to each annotated type (slicer.parameterNodeWrapper.guiConnectors).
# (test_slicer_contract.py checks the bindings against each release's real connector registry.)
CLASS_BY_ANNOTATION = {"Optional[VolumeNode]": "qMRMLNodeComboBox", "bool": "QCheckBox", "int": "QSpinBox"}


def _expected_class(name: str) -> str:
    return next(cls for suffix, cls in CLASS_BY_SUFFIX if name.lower().endswith(suffix.lower()))


@pytest.fixture(scope="module")
def ui() -> ElementTree.Element:
    return ElementTree.parse(UI_FILE).getroot()


@pytest.fixture(scope="module")
def module_tree() -> ast.Module:
    return ast.parse(MODULE_FILE.read_text(), filename=str(MODULE_FILE))


def _widgets(ui: ElementTree.Element) -> dict[str, ElementTree.Element]:
    return {widget.get("name"): widget for widget in ui.iter("widget")}


def _class_body(tree: ast.Module, name: str) -> list[ast.stmt]:
    return next(node.body for node in tree.body if isinstance(node, ast.ClassDef) and node.name == name)


def _parameter_annotations(tree: ast.Module) -> dict[str, str]:
    body = _class_body(tree, "EdranFusionParameterNode")
    return {stmt.target.id: ast.unparse(stmt.annotation) for stmt in body if isinstance(stmt, ast.AnnAssign)}


def _parameter_defaults(tree: ast.Module) -> dict[str, object]:
    body = _class_body(tree, "EdranFusionParameterNode")
    return {stmt.target.id: ast.literal_eval(stmt.value) for stmt in body
            if isinstance(stmt, ast.AnnAssign) and stmt.value is not None}


def _ui_names_used(tree: ast.Module) -> set[str]:
    """Names X in every ``self.ui.X`` of the module."""
    return {
        node.attr for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "ui"
    }


def _cmake_list(text: str, variable: str) -> list[str]:
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert match, f"{variable} is not set in the CMake file"
    return [item for item in match.group(1).split() if not item.startswith("#")]


def _cmake_value(text: str, variable: str) -> str:
    match = re.search(rf'set\({variable}\s+"?([^")]*)"?\)', text)
    assert match, f"{variable} is not set in {TOP_CMAKE.name}"
    return match.group(1)


# --- the .ui file ------------------------------------------------------------------------------------------


def test_ui_is_a_qt_designer_form_with_unique_widget_names(ui):
    assert ui.tag == "ui" and ui.get("version") == "4.0"
    top = ui.find("widget")
    assert (top.get("class"), top.get("name"), ui.findtext("class")) == ("qMRMLWidget", "EdranFusion", "EdranFusion")
    names = [widget.get("name") for widget in ui.iter("widget")]
    assert len(names) == len(set(names)), "widget names must be unique"


def test_every_non_qt_class_is_declared_as_a_custom_widget(ui):
    declared = {custom.findtext("class") for custom in ui.iter("customwidget")}
    used = {widget.get("class") for widget in ui.iter("widget")}
    assert used - QT_CLASSES <= declared
    assert declared <= used, "declared custom widgets that are not used"


def test_every_node_selector_gets_the_scene_and_lists_scalar_and_vector_volumes(ui):
    widgets = _widgets(ui)
    selectors = {name for name, widget in widgets.items() if widget.get("class") == "qMRMLNodeComboBox"}
    receivers = {
        connection.findtext("receiver") for connection in ui.iter("connection")
        if connection.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
        and connection.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"
    }
    assert selectors and receivers == selectors
    for name in selectors:
        properties = {prop.get("name"): prop for prop in widgets[name].findall("property")}
        node_types = [item.text for item in properties["nodeTypes"].iter("string")]
        assert node_types == ["vtkMRMLScalarVolumeNode", "vtkMRMLVectorVolumeNode"], name
        assert properties["showChildNodeTypes"].findtext("bool") == "false", f"{name} would list label maps"


def test_advanced_options_start_collapsed(ui):
    advanced = _widgets(ui)["advancedCollapsibleButton"]
    collapsed = [prop for prop in advanced.findall("property") if prop.get("name") == "collapsed"]
    assert collapsed and collapsed[0].findtext("bool") == "true"


# --- the Widget code against the .ui ------------------------------------------------------------------------


def test_every_widget_the_code_uses_exists_with_the_expected_class(ui, module_tree):
    widgets = _widgets(ui)
    used = _ui_names_used(module_tree)
    assert {"applyButton", "cancelButton", "progressBar", "deviceInUseLabel"} <= used
    for name in sorted(used):
        assert name in widgets, f"the Widget uses self.ui.{name}, which is not in {UI_FILE.name}"
        assert widgets[name].get("class") == _expected_class(name), name


def test_parameter_bound_widgets_match_the_parameter_node(ui, module_tree):
    annotations = _parameter_annotations(module_tree)
    bound = {}
    for widget in ui.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.findtext("string")] = widget
    assert bound, "no widget is bound to the parameter node"
    for parameter, widget in bound.items():
        assert parameter in annotations, f"{widget.get('name')} is bound to unknown parameter {parameter}"
        annotation = annotations[parameter]
        kind = "int" if annotation.startswith("Annotated[int") else annotation
        assert kind in CLASS_BY_ANNOTATION, f"{parameter}: {annotation} has no widget binding here"
        assert widget.get("class") == CLASS_BY_ANNOTATION[kind], parameter
    unbound = set(annotations) - set(bound)
    assert unbound == {"model", "strategy", "device", "weightsFile"}, \
        "only the lists filled from the library and the weights path (empty, not '.') are bound in code"


def test_parameter_defaults_are_the_library_defaults(module_tree):
    pytest.importorskip("torch")
    from EdranFusionLib.choices import DEFAULT_MODEL, DEVICE_CHOICES, KNOWN_MODELS

    defaults = _parameter_defaults(module_tree)
    assert defaults["model"] == DEFAULT_MODEL
    assert defaults["strategy"] == ""  # the panel then selects the model's own default (its card's)
    assert defaults["device"] == DEVICE_CHOICES[0] == "auto"
    assert defaults["batchSize"] == 0 and defaults["resampleB"] is False
    weights_choice = next(
        ast.literal_eval(node.value) for node in module_tree.body
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "WEIGHTS_FILE_CHOICE"
    )
    assert weights_choice not in KNOWN_MODELS


# --- the module file itself ---------------------------------------------------------------------------------


def test_module_folder_holds_no_other_python_file():
    assert sorted(path.name for path in MODULE_FILE.parent.glob("*.py")) == ["EdranFusion.py"]


def test_module_imports_neither_the_library_nor_torch_at_load_time(module_tree):
    top_level = set()
    for node in module_tree.body:
        if isinstance(node, ast.Import):
            top_level |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            top_level.add((node.module or "").split(".")[0])
    assert not top_level & {"EdranFusionLib", "torch", "numpy", "SimpleITK"}


def test_requirements_are_the_core_install_with_floors_no_higher(module_tree):
    """The same packages as the wheel's core (requirements.txt); the module's floors may be lower, where the
    Python of an older supported Slicer cannot have the version the wheel check tests (torch 2.13 needs 3.10)."""
    from EdranFusionLib.requirements import core_requirements

    requirements = next(
        ast.literal_eval(node.value) for node in module_tree.body
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "REQUIREMENTS"
    )
    core = core_requirements()
    assert requirements.keys() == core.keys()

    def floor(specifier: str) -> tuple[int, ...]:
        return tuple(int(part) for part in specifier.split(">=")[1].split("."))

    assert all(floor(requirements[name]) <= floor(core[name]) for name in core)


# --- build files --------------------------------------------------------------------------------------------


def test_module_cmake_builds_the_module_with_generic_tests_and_the_self_test():
    text = MODULE_CMAKE.read_text()
    assert re.search(r"slicerMacroBuildScriptedModule\(.*WITH_GENERIC_TESTS.*?\)", text, re.S)
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text
    scripts = [item.replace("${MODULE_NAME}", "EdranFusion") for item in _cmake_list(text, "MODULE_PYTHON_SCRIPTS")]
    assert scripts == ["EdranFusion.py"]


def test_cmake_lists_every_library_file_and_only_existing_files():
    text = MODULE_CMAKE.read_text()
    listed = _cmake_list(text, "EDRANFUSIONLIB_PYTHON_SCRIPTS")
    actual = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "EdranFusionLib").rglob("*.py")
                    if "__pycache__" not in path.parts)
    assert sorted(listed) == actual, "EDRANFUSIONLIB_PYTHON_SCRIPTS differs from the files in EdranFusionLib/"
    resources = [item for item in _cmake_list(text, "EDRANFUSION_RESOURCES") if not item.startswith("${")]
    missing = [item for item in resources if not (ROOT / item).is_file()]
    assert not missing, f"listed but missing: {missing}"
    for folder in ("Resources", "EdranFusionLib/sample_data"):
        shipped = {str(path.relative_to(ROOT)) for path in (ROOT / folder).rglob("*") if path.is_file()}
        assert shipped <= set(resources), f"not installed: {sorted(shipped - set(resources))}"
    for pattern in re.findall(r"\$\{PROJECT_SOURCE_DIR\}/(\S+)", text):
        assert (ROOT / pattern).parent.is_dir(), pattern


def test_top_level_cmake_describes_the_extension():
    text = TOP_CMAKE.read_text()
    for variable in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                     "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        assert _cmake_value(text, variable).strip(), variable
    assert _cmake_value(text, "EXTENSION_DEPENDS") == "PyTorch"
    assert "add_subdirectory(EdranFusion)" in text
    for variable in ("EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        in_repository = _cmake_value(text, variable).split("/raw/main/", 1)[1]
        assert (ROOT / in_repository).is_file(), f"{variable} points at a file the repository lacks"
