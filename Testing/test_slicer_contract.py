"""The Slicer module on the real Python layer of Slicer 5.8.1, 5.10.0 and 5.12.3 (../shared/slicer-python).

Each version runs in its own child process (slicer_harness.py loads it over slicer-core's MRML), so the three
releases never meet each other or the rest of the suite: the contract cases of slicer_contract_cases.py, and two
probes that need a process of their own: opening the module imports no torch, and the module's self-test
without PyTorch builds the parameter node and skips only the fusion steps, and a broken PyTorch is reported
in the panel with its install button.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from slicer_harness import LAYER_ENVIRONMENT_VARIABLE, REPO, SLICER_PYTHON, VERSIONS, layer_folder

TESTING = REPO / "Testing"
pytestmark = pytest.mark.skipif(
    not SLICER_PYTHON.is_dir(),
    reason=f"{SLICER_PYTHON} (Slicer's own Python layer, beside the repository as ../shared) is absent",
)


def _child(arguments: list[str], version: str, timeout: int = 900) -> subprocess.CompletedProcess:
    environment = dict(os.environ, **{LAYER_ENVIRONMENT_VARIABLE: str(layer_folder(version))})
    environment["PYTHONPATH"] = os.pathsep.join([str(REPO), str(TESTING), environment.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, *arguments], cwd=TESTING, env=environment, capture_output=True,
                          text=True, timeout=timeout, check=False)


def _probe(version: str, name: str) -> dict:
    child = _child(["slicer_harness.py", str(layer_folder(version)), name], version)
    assert child.returncode == 0, child.stderr[-4000:]
    return json.loads(child.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("version", VERSIONS)
def test_contract_cases_pass_on_the_release(version):
    child = _child(["-m", "pytest", "-q", "--noconftest", "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning",
                    "slicer_contract_cases.py"], version)
    assert child.returncode == 0, f"Slicer {version}:\n{child.stdout[-6000:]}\n{child.stderr[-2000:]}"
    assert " passed" in child.stdout and "skipped" not in child.stdout, child.stdout[-2000:]


@pytest.mark.parametrize("version", VERSIONS)
def test_opening_the_module_imports_no_torch(version):
    report = _probe(version, "opening-imports-no-torch")
    assert report["torch_modules"] == [], report
    assert report["device_label"] == "chosen when you press Apply"


@pytest.mark.parametrize("version", VERSIONS)
def test_self_test_without_torch_builds_the_parameter_node_and_skips_only_fusion(version):
    report = _probe(version, "self-test-without-torch")
    assert not report["problems"], report["problems"]
    assert "test_parameter_node_round_trip" in report["run"]
    assert "test_parameter_node_round_trip" not in report["skipped"]
    fusion_steps = {name for name in report["run"] if name != "test_parameter_node_round_trip"}
    assert set(report["skipped"]) == fusion_steps and fusion_steps
    assert all("torch" in reason for reason in report["skipped"].values())


@pytest.mark.parametrize("version", VERSIONS)
def test_broken_torch_is_reported_in_the_panel_with_the_install_button(version):
    report = _probe(version, "broken-torch-panel")
    assert report["label_visible"] and report["install_visible"], report
    assert "cannot be loaded" in report["label"] and "Install PyTorch" in report["label"], report
    assert report["nodes_added"] == 0 and report["apply_enabled"], report
