"""Training script: ``python -m EdranFusionLib.train``, ``python path/to/train.py`` or, headless in Slicer,
``Slicer --no-main-window --python-script path/to/EdranFusionLib/train.py -- ...``.

Run as a file, Python puts this folder on sys.path; its subpackages (``io`` ...) must not shadow other
packages, so the folder is replaced by its parent before the package is imported.
"""

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    _HERE = Path(__file__).resolve().parent
    sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]
    __package__ = "EdranFusionLib"

import traceback  # noqa: E402

from EdranFusionLib.commands.train import main  # noqa: E402

if __name__ == "__main__":
    # Slicer (--python-script) ends only on SystemExit: any other exception would print and leave a headless
    # Slicer running forever, so every failure becomes a traceback and exit status 1.
    try:
        status = main()
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        raise SystemExit(1) from None
    sys.exit(status)
