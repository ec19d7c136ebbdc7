"""The user's data folder: models a user trains and training runs live here, never inside the installed package.

``$EDRANFUSION_DATA`` when set (scripts, tests, shared machines), otherwise the platform's per-user data
folder: $XDG_DATA_HOME/EdranFusion or ~/.local/share/EdranFusion on Linux, ~/Library/Application
Support/EdranFusion on macOS, %LOCALAPPDATA%\\EdranFusion on Windows. (Three rules, so no dependency: the Slicer
module installs nothing for it.)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP_NAME = "EdranFusion"
ENVIRONMENT_VARIABLE = "EDRANFUSION_DATA"


def user_data_dir() -> Path:
    override = os.environ.get(ENVIRONMENT_VARIABLE)
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local") / APP_NAME
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / APP_NAME
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / APP_NAME


def user_models_dir() -> Path:
    """Where ``training.report ship`` puts a user's trained models (weights + card), found by name afterwards."""
    return user_data_dir() / "models"


def user_runs_dir() -> Path:
    """Where training runs go when no --run-dir is given."""
    return user_data_dir() / "runs"
