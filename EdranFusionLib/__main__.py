"""Allows `python -m EdranFusionLib ...`."""

import sys

from .commands.cli import main

sys.exit(main())
