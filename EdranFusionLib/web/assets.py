"""The page's files: our own HTML/JS/CSS in static/, and NiiVue's bundle fetched from npm into static/vendor/.

NiiVue is never kept in the source tree: `make web-assets` (tools/web_assets.py) runs ``npm ci`` on the pinned
package.json + package-lock.json beside this file and copies the bundle and its licences into static/vendor/,
from where the wheel build packages them. A server started without them refuses with the command to run.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import EdranFusionError

STATIC_DIR = Path(__file__).resolve().parent / "static"
VENDOR_DIR = STATIC_DIR / "vendor"
NIIVUE_BUNDLE = VENDOR_DIR / "niivue" / "niivue.umd.js"


def check_assets() -> None:
    """Refuse to serve a page that could not show volumes."""
    if not NIIVUE_BUNDLE.is_file():
        raise EdranFusionError(
            f"the page's viewer (NiiVue) is missing from {VENDOR_DIR}; in a source checkout run 'make web-assets' "
            "(needs npm), or install a wheel built after it"
        )
