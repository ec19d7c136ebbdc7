"""The user's data folder: models a user trains and training runs live here, never inside the installed package.

``$EDRANFUSION_DATA`` when set (scripts, tests, shared machines), otherwise the platform's per-user data
folder (platformdirs: ~/.local/share/EdranFusion on Linux, ~/Library/Application Support/EdranFusion on macOS,
%LOCALAPPDATA%\\EdranFusion on Windows).
"""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "EdranFusion"
ENVIRONMENT_VARIABLE = "EDRANFUSION_DATA"


def user_data_dir() -> Path:
    override = os.environ.get(ENVIRONMENT_VARIABLE)
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def user_models_dir() -> Path:
    """Where ``training.report ship`` puts a user's trained models (weights + card), found by name afterwards."""
    return user_data_dir() / "models"


def user_runs_dir() -> Path:
    """Where training runs go when no --run-dir is given."""
    return user_data_dir() / "runs"
