"""What the library needs installed, torch-free: the core requirements (requirements.txt, which the build also
reads, so the wheel and the Slicer module install exactly the same list) and the optional extras.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

from .errors import EdranFusionError

REQUIREMENTS_FILE = Path(__file__).resolve().parent / "requirements.txt"
_IMPORT_NAMES = {"pillow": "PIL"}  # distributions whose import name differs from their name


def core_requirements() -> dict[str, str]:
    """Import name -> pip specifier of every core requirement, e.g. ``{"PIL": "pillow>=10.1", ...}``."""
    specifiers = [line.strip() for line in REQUIREMENTS_FILE.read_text().splitlines() if line.strip()]
    names = [specifier.split(">")[0].split("=")[0].split("<")[0].strip() for specifier in specifiers]
    return {_IMPORT_NAMES.get(name.lower(), name): specifier for name, specifier in zip(names, specifiers)}


def missing_core_requirements() -> list[str]:
    """Pip specifiers of the core requirements that cannot be imported here."""
    return [spec for module, spec in core_requirements().items() if importlib.util.find_spec(module) is None]


def import_optional(module: str, extra: str) -> ModuleType:
    """Import a package of an optional extra, or say in one line how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise EdranFusionError(
            f"this needs {module.split('.', maxsplit=1)[0]}, which is not installed; install it with "
            f"pip install 'EdranFusionLib[{extra}]'"
        ) from error
