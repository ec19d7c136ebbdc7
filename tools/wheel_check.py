"""Install EdranFusionLib as a user does and use it from outside the checkout (run by `make test`).

Builds the sdist and, from it, the wheel (the build must print no warnings); checks both hold every library
module and data file; installs the wheel into a fresh venv with only the core requirements, each at its floor
(requirements.txt pinned with ==, so the floors are what is tested); then, from a folder outside the checkout,
runs `edranfusion --version`, `--help` of every sub-command, `models`, `models --json`, `strategies --json`, `fuse`
on two images and on the bundled sample volumes, `preview` (which must ask for the [plots] extra), and the Python API.
Exits non-zero with the first failure. torch comes from the local 2.13.0 wheel pip already has (installed
first, pinned, so nothing downloads CUDA).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
LIBRARY = REPO / "EdranFusionLib"
TORCH = "torch==2.13.0"
OPTIONAL = ("scipy", "skimage", "matplotlib")  # extras: the core install must work without them
# Lines the build may print that are not the project's: pip's notes about this machine's local index folders.
FOREIGN_LINE = re.compile(r"^WARNING: Location 'file:")


def run(command: list[str | Path], *, cwd: Path, env: dict | None = None, expect: int = 0) -> str:
    started = time.perf_counter()
    result = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True,
                            check=False, timeout=900)
    shown = " ".join((str(c).strip().splitlines() or [""])[0] for c in command[:6])  # first line of a script
    print(f"  {time.perf_counter() - started:6.1f} s  {shown}", flush=True)
    if result.returncode != expect:
        sys.exit(f"wheel check: `{shown}` exited {result.returncode}, expected {expect}:\n"
                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout + result.stderr


def expected_files() -> set[str]:
    """Every module and data file the library has in the checkout, relative to the repository."""
    patterns = ("*.py", "requirements.txt", "weights/*.pt", "weights/*.json", "sample_data/stroke/*")
    return {str(p.relative_to(REPO)) for pattern in patterns for p in LIBRARY.rglob(pattern)
            if "__pycache__" not in p.parts}


def check_archives(dist: Path) -> Path:
    wheel = next(dist.glob("*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = set(archive.namelist())
    with tarfile.open(next(dist.glob("*.tar.gz"))) as archive:
        in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for what, names in (("wheel", in_wheel), ("sdist", in_sdist)):
        missing = sorted(expected_files() - names)
        if missing:
            sys.exit(f"wheel check: the {what} lacks {len(missing)} files, e.g. {missing[:5]}")
    if not any(name.endswith("licenses/LICENSE") for name in in_wheel) or "LICENSE" not in in_sdist:
        sys.exit("wheel check: LICENSE is not in the wheel's dist-info or the sdist")
    return wheel


def floor_constraints(folder: Path) -> Path:
    """requirements.txt with every floor (>=) turned into a pin (==)."""
    pins = [line.replace(">=", "==") for line in (LIBRARY / "requirements.txt").read_text().split() if line]
    path = folder / "floors.txt"
    path.write_text("\n".join(pin for pin in pins if not pin.startswith("torch")) + "\n")
    return path


def stroke_slices(folder: Path) -> tuple[Path, Path]:
    """Two 2-D PNGs (middle axial slices of the sample T2 and FLAIR) made with this interpreter's packages."""
    import SimpleITK as sitk

    paths = []
    for name in ("T2", "FLAIR"):
        volume = sitk.GetArrayFromImage(sitk.ReadImage(str(LIBRARY / "sample_data" / "stroke" / f"{name}.nii.gz")))
        middle = volume[len(volume) // 2].astype(np.float64)
        paths.append(folder / f"{name}.png")
        Image.fromarray(np.rint(middle / middle.max() * 255).astype(np.uint8)).save(paths[-1])
    return paths[0], paths[1]


API_SCRIPT = """
import sys
import EdranFusionLib
assert "torch" not in sys.modules, "import EdranFusionLib imported torch"
from EdranFusionLib import __version__, fuse_images, fuse_volumes, provenance_of, read_image, read_volume
from EdranFusionLib.requirements import missing_core_requirements
assert missing_core_requirements() == [], missing_core_requirements()
a, b = read_image(sys.argv[1]), read_image(sys.argv[2])
fused = fuse_images(a, b, model="general")
assert fused.shape == a.shape and fused.dtype.name == "uint8", fused.shape
assert provenance_of("general", "sfnn-max")["version"] == __version__
print("api ok", __version__, fused.shape)
"""


def main() -> int:
    started = time.perf_counter()
    version = re.search(r'__version__ = "([^"]+)"', (LIBRARY / "version.py").read_text()).group(1)
    with tempfile.TemporaryDirectory(prefix="edranfusion-wheel-") as temporary:
        root = Path(temporary)
        environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")}
        print("wheel check: build (sdist, then the wheel from it)")
        log = run([sys.executable, "-m", "build", "--outdir", root / "dist", REPO], cwd=root, env=environment)
        warnings = [line for line in log.splitlines() if "warning" in line.lower() and not FOREIGN_LINE.match(line)]
        if warnings:
            sys.exit("wheel check: the build printed warnings:\n" + "\n".join(warnings))
        wheel = check_archives(root / "dist")

        print("wheel check: fresh venv with the core requirements at their floors")
        venv = root / "venv"
        run([sys.executable, "-m", "venv", venv], cwd=root)
        python, script = venv / "bin" / "python", venv / "bin" / "edranfusion"
        run([python, "-m", "pip", "install", "--quiet", TORCH], cwd=root, env=environment)
        run([python, "-m", "pip", "install", "--quiet", "-c", floor_constraints(root), wheel], cwd=root,
            env=environment)
        for module in OPTIONAL:
            run([python, "-c", f"import {module}"], cwd=root, expect=1)

        print("wheel check: the installed product, from a folder outside the checkout")
        work = root / "work"
        work.mkdir()
        user = {**environment, "EDRANFUSION_DATA": str(root / "user-data")}
        shown = run([script, "--version"], cwd=work, env=user).strip()
        if shown != f"EdranFusion {version}":
            sys.exit(f"wheel check: --version says '{shown}', version.py says {version}")
        commands = run([python, "-c", "from EdranFusionLib.commands.cli import COMMANDS; print(*COMMANDS)"],
                       cwd=work, env=user).split()
        for command in [[], *[[name] for name in commands]]:
            run([script, *command, "--help"], cwd=work, env=user)
        if "general" not in run([script, "models"], cwd=work, env=user):
            sys.exit("wheel check: `models` does not list the bundled general model")
        listing = json.loads(run([script, "models", "--json"], cwd=work, env=user))
        if {m["name"] for m in listing["models"]} != {"ct-mri", "spect-mri", "pet-mri", "general"} or any(
                "license" not in m["card"] for m in listing["models"]):
            sys.exit(f"wheel check: `models --json` lists {[m['name'] for m in listing['models']]} or cards lack terms")
        offered = json.loads(run([script, "strategies", "--json"], cwd=work, env=user))["strategies"]
        described = all(row["description"] for row in offered)
        if not described or not any("general" in row["default_for"] for row in offered):
            sys.exit("wheel check: `strategies --json` lacks a description or general's default")
        a, b = stroke_slices(work)
        run([script, "fuse", a, b, "-o", work / "fused.png", "--quiet"], cwd=work, env=user)
        text = Image.open(work / "fused.png").text
        if text.get("EdranFusion.version") != version or text.get("EdranFusion.model") != "general":
            sys.exit(f"wheel check: fused.png carries no provenance ({text})")
        sample = run([python, "-c", "import EdranFusionLib, pathlib; "
                      "print(pathlib.Path(EdranFusionLib.__file__).parent / 'sample_data' / 'stroke')"],
                     cwd=work, env=user).strip()
        run([script, "fuse", f"{sample}/T2.nii.gz", f"{sample}/FLAIR.nii.gz", "-o", work / "fused.nii.gz", "--quiet"],
            cwd=work, env=user)
        read_descrip = "import SimpleITK as s; print(s.ReadImage('fused.nii.gz').GetMetaData('descrip'))"
        descrip = run([python, "-c", read_descrip], cwd=work, env=user)
        if not descrip.startswith(f"EdranFusion {version} general sha256:"):
            sys.exit(f"wheel check: fused.nii.gz descrip is '{descrip.strip()}'")
        hint = run([script, "preview", work / "fused.nii.gz", "-o", work / "p.png"], cwd=work, env=user, expect=2)
        if "EdranFusionLib[plots]" not in hint:
            sys.exit(f"wheel check: preview without matplotlib says '{hint.strip()}'")
        run([python, "-c", API_SCRIPT, a, b], cwd=work, env=user)
    print(f"wheel check: passed in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
