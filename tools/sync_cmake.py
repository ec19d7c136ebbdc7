"""Rewrite EDRANFUSIONLIB_PYTHON_SCRIPTS in EdranFusion/CMakeLists.txt from the files in EdranFusionLib/.

Run after adding or removing a library file; Testing/test_slicer_module_static.py fails until the list matches.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    files = sorted(
        str(p.relative_to(ROOT)) for p in (ROOT / "EdranFusionLib").rglob("*.py") if "__pycache__" not in p.parts
    )
    cmake = ROOT / "EdranFusion" / "CMakeLists.txt"
    body = "".join(f"  {f}\n" for f in files)
    pattern = r"set\(EDRANFUSIONLIB_PYTHON_SCRIPTS\n.*?  \)"
    listed = "set(EDRANFUSIONLIB_PYTHON_SCRIPTS\n" + body + "  )"
    cmake.write_text(re.sub(pattern, listed, cmake.read_text(), flags=re.S))
    print(f"{len(files)} files listed in {cmake}")


if __name__ == "__main__":
    main()
