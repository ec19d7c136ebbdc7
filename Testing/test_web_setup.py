"""What a user without the web extra or without the fetched viewer sees: one line saying what to install."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO

from EdranFusionLib.errors import EdranFusionError
from EdranFusionLib.web import assets


def test_serve_without_the_web_extra_says_how_to_get_it() -> None:
    hide = "import sys; sys.modules['uvicorn'] = None; from EdranFusionLib.commands.cli import main; sys.exit(main())"
    done = subprocess.run([sys.executable, "-c", hide, "serve"], capture_output=True, text=True, check=False,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: the web server needs the 'web' extra (uvicorn is missing); "
                                   "pip install \"EdranFusionLib[web]\"")


def test_a_missing_viewer_bundle_is_refused_with_the_command(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(assets, "NIIVUE_BUNDLE", tmp_path / "niivue.umd.js")
    with pytest.raises(EdranFusionError, match="run 'make web-assets'"):
        assets.check_assets()
