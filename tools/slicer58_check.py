"""Run the library's tests in Slicer 5.8's Python, 3.9, as the module uses the library there (run by `make test`).

Slicer 5.8 loads EdranFusionLib from the source tree (the module puts the repository root on sys.path) with the
packages the module installs into Slicer's Python (EdranFusion.REQUIREMENTS) beside the ones Slicer bundles. Two
environments: ``newest``, what pip takes for REQUIREMENTS on 3.9 (torch 2.8, Pillow 11, numpy 2.0, SimpleITK 2.5);
``slicer-5.8``, Slicer 5.8's own SimpleITK (2.3.1) and numpy (1.26.4) with the module's torch and Pillow floors.
The wheel needs 3.10+, so nothing else runs the library on 3.9. Left to the main suite: the web server and the
wheel (3.10+, not part of Slicer) and the Slicer contract and bridge tests (the slicer-core wheel has no 3.9
build). Says so and does nothing where this machine has no python3.9 (on PATH or from pyenv). The venvs
(.venv-py39-<environment>, about 5-7 GB each: pip gives 3.9 a CUDA torch) are kept between runs and rebuilt
when their requirements change.
"""

from __future__ import annotations

import ast
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SLICER_58_BUNDLED = ["SimpleITK==2.3.1", "numpy==1.26.4"]
TEST_TOOLS = ["pytest>=7", "pytest-timeout>=2", "hypothesis>=6", "scipy", "scikit-image", "matplotlib",
              "phasepack==1.5", "sewar>=0.4.10"]
NOT_ON_PYTHON_39 = ["test_web_api.py", "test_web_browser.py", "test_web_jobs.py", "test_web_setup.py",
                    "test_packaging.py", "test_slicer_contract.py", "test_slicer_bridge.py"]


def module_requirements() -> list[str]:
    """The pip specifiers of EdranFusion.REQUIREMENTS, read from the module file (importing it needs Slicer)."""
    tree = ast.parse((REPO / "EdranFusion" / "EdranFusion.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "REQUIREMENTS" for t in node.targets):
            return list(ast.literal_eval(node.value).values())
    raise SystemExit("slicer 5.8 check: no REQUIREMENTS in EdranFusion/EdranFusion.py")


def environments() -> dict[str, list[str]]:
    """Each environment's pip requirements: the module's own, and Slicer 5.8's bundled packages at its floors."""
    requirements = module_requirements()
    floors = [r.replace(">=", "==") for r in requirements if not r.startswith(("SimpleITK", "numpy"))]
    return {"newest": requirements, "slicer-5.8": floors + SLICER_58_BUNDLED}


def ensure_venv(python39: str, venv: Path, requirements: list[str]) -> Path:
    stamp = venv / ".installed"
    wanted = hashlib.sha256(" ".join([*requirements, *TEST_TOOLS]).encode()).hexdigest()
    if stamp.is_file() and stamp.read_text() == wanted:
        return venv / "bin" / "python"
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([python39, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    print(f"slicer 5.8 check: installing {' '.join(requirements)} into {venv.name}", flush=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *requirements, *TEST_TOOLS], check=True)
    stamp.write_text(wanted)
    return python


def find_python39() -> str | None:
    """A python3.9 that runs: the one on PATH (a pyenv shim there may not be active) or a pyenv-installed 3.9."""
    pyenv = sorted(str(p) for p in Path.home().glob(".pyenv/versions/3.9*/bin/python3.9"))
    candidates = [shutil.which("python3.9"), *pyenv]
    for candidate in filter(None, candidates):
        ran = subprocess.run([candidate, "-c", "import sys; print(sys.executable)"], capture_output=True, text=True,
                             check=False)
        if ran.returncode == 0:
            return ran.stdout.strip()
    return None


def main() -> int:
    python39 = find_python39()
    if python39 is None:
        print("slicer 5.8 check: not run: no python3.9 on this machine")
        return 0
    failed = []
    for name, requirements in environments().items():
        python = ensure_venv(python39, REPO / f".venv-py39-{name}", requirements)
        versions = subprocess.run(
            [str(python), "-c", "import sys, torch, numpy, PIL, SimpleITK as s; print(sys.version.split()[0], "
             "'torch', torch.__version__, 'numpy', numpy.__version__, 'Pillow', PIL.__version__, 'SimpleITK', "
             "s.Version.VersionString())"], capture_output=True, text=True, check=True).stdout.strip()
        print(f"slicer 5.8 check [{name}]: Python {versions}", flush=True)
        ignored = [f"--ignore=Testing/{test}" for test in NOT_ON_PYTHON_39]
        command = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--disable-warnings", "Testing"]
        environment = {**os.environ, "PYTHONPATH": str(REPO)}
        result = subprocess.run([*command, *ignored], check=False, cwd=REPO, env=environment)
        print(f"slicer 5.8 check [{name}]: {'passed' if result.returncode == 0 else 'FAILED'}", flush=True)
        if result.returncode:
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
