"""The product as installed: one version, the declared requirements, a CLI whose help and `models` answer without
importing torch, user-trained models beside the bundled ones, training output never inside the package.

(The wheel itself is built, installed into a fresh venv and used from outside the checkout by
tools/wheel_check.py, which `make test` runs.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO

import EdranFusionLib
from EdranFusionLib import api
from EdranFusionLib.commands.cli import COMMANDS
from EdranFusionLib.io.model_files import save_bundled
from EdranFusionLib.io.user_data import user_models_dir
from EdranFusionLib.io.weights import installed_models, resolve
from EdranFusionLib.network.model import EHDRAN
from EdranFusionLib.requirements import core_requirements

# Runs the CLI as `python -m EdranFusionLib` does, then says which heavy packages got imported.
PROBE = """
import runpy, sys
sys.argv = ["edranfusion", *sys.argv[1:]]
try:
    runpy.run_module("EdranFusionLib", run_name="__main__")
except SystemExit as exit_:
    code = exit_.code
print("IMPORTED", *[name for name in ("torch", "scipy", "matplotlib", "skimage") if name in sys.modules],
      "EXIT", code, file=sys.stderr)
"""


def probe(*args: str) -> tuple[list[str], str]:
    result = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=REPO,
                            timeout=120, check=True)
    report = result.stderr.strip().splitlines()[-1].split()
    return report[1:report.index("EXIT")], report[-1]


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["models"], ["models", "--json"], ["strategies"],
                                  *[[name, "--help"] for name in COMMANDS]], ids=" ".join)
def test_help_and_models_do_not_import_torch(args):
    imported, code = probe(*args)
    assert code in ("0", "None") and imported == [], imported


def test_one_version_everywhere():
    result = subprocess.run([sys.executable, "-m", "EdranFusionLib", "--version"], capture_output=True, text=True,
                            cwd=REPO, timeout=60, check=True)
    assert result.stdout.strip() == f"EdranFusion {EdranFusionLib.__version__}"
    assert 'version = { attr = "EdranFusionLib.version.__version__" }' in (REPO / "pyproject.toml").read_text()


def test_package_exports_the_api_lazily():
    assert sorted(EdranFusionLib.__all__) == sorted([*api.__all__, "__version__"])
    assert EdranFusionLib.fuse_volumes is api.fuse_volumes


def test_core_requirements_are_what_fusion_imports_and_have_floors():
    requirements = core_requirements()
    assert set(requirements) == {"torch", "numpy", "SimpleITK", "PIL", "tqdm"}
    assert all(">=" in specifier for specifier in requirements.values())
    assert requirements["PIL"] == "pillow>=10.1.0"  # ImageFont.load_default(size=) arrived in Pillow 10.1


def test_models_json_lists_bundled_and_user_models_with_cards(user_data_folder):
    user_models_dir().mkdir(parents=True, exist_ok=True)
    torch.manual_seed(1)
    save_bundled(EHDRAN().eval(), "my-model", "ct-mri", {"license": {"terms": "mine"}}, user_models_dir())
    result = subprocess.run([sys.executable, "-m", "EdranFusionLib", "models", "--json"], capture_output=True,
                            text=True, cwd=REPO, timeout=60, check=True)
    listing = {m["name"]: m for m in json.loads(result.stdout)["models"]}
    assert listing["my-model"]["origin"] == "user" and listing["my-model"]["card"]["license"]["terms"] == "mine"
    assert listing["general"]["origin"] == "bundled"
    assert "education and research" in listing["general"]["card"]["license"]["terms"]
    assert str(user_data_folder) in json.loads(result.stdout)["user_models_folder"]
    path, expected = resolve("my-model")  # found by name, checksum from its card
    assert path.parent == user_models_dir() and expected == installed_models()["my-model"].sha256


def test_user_model_cannot_shadow_a_bundled_name():
    save_bundled(EHDRAN().eval(), "general", "general", {}, user_models_dir())
    try:
        assert installed_models()["general"].origin == "bundled"
    finally:
        for suffix in (".pt", ".json"):
            (user_models_dir() / f"general{suffix}").unlink()


@pytest.mark.parametrize("card", sorted((REPO / "EdranFusionLib" / "weights").glob("*.json")), ids=lambda p: p.stem)
def test_bundled_cards_state_terms_use_limitations_and_citation(card):
    facts = json.loads(card.read_text())
    assert "education and research" in facts["license"]["terms"]
    assert any("diagnosis" in use.lower() for use in facts["out_of_scope_use"])
    assert facts["intended_use"] and facts["limitations"] and "Zhou" in facts["citation"] and facts["base_model"]


def test_preview_without_matplotlib_names_the_extra(tmp_path):
    blocker = tmp_path / "matplotlib"  # an import of matplotlib that fails, as in a core-only install
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError('not installed')\n")
    result = subprocess.run([sys.executable, "-m", "EdranFusionLib", "preview", "x.nii.gz", "-o", "p.png"],
                            capture_output=True, text=True, cwd=REPO, timeout=60, check=False,
                            env={**os.environ, "PYTHONPATH": f"{tmp_path}:{REPO}"})
    assert result.returncode == 2 and "pip install 'EdranFusionLib[plots]'" in result.stderr, result.stderr


def test_resume_needs_the_run_folder(tmp_path, capsys):
    from EdranFusionLib.commands.cli import main

    assert main(["train", "--data", str(tmp_path), "--resume"]) == 2
    assert "--resume needs --run-dir" in capsys.readouterr().err
