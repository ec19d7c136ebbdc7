"""Fetch the page's front-end packages from npm (pinned by package-lock.json) into EdranFusionLib/web/static/vendor/.

`make web-assets` runs this before tests and wheel builds. The bundle and a licence file listing every npm
package in it are copied from node_modules; nothing fetched is committed (static/vendor/ is git-ignored).
"""

import json
import shutil
import subprocess
from pathlib import Path

WEB = Path(__file__).resolve().parents[1] / "EdranFusionLib" / "web"
MODULES = WEB / "node_modules"
TARGET = WEB / "static" / "vendor" / "niivue"
BUNDLE = MODULES / "@niivue" / "niivue" / "dist" / "niivue.umd.js"
LICENCE_NAMES = ("license", "license.md", "license.txt", "licence", "copying", "notice")


def licences() -> str:
    """Name, version, declared licence and licence text of every installed npm package."""
    sections = []
    for manifest in sorted(MODULES.glob("**/package.json")):
        folder = manifest.parent
        if folder.parent.name != "node_modules" and folder.parent.parent.name != "node_modules":
            continue  # package.json files inside a package's own tree
        info = json.loads(manifest.read_text())
        texts = [p.read_text(errors="replace") for p in sorted(folder.iterdir()) if p.name.lower() in LICENCE_NAMES]
        repository = info.get("repository", "")
        repository = repository.get("url", "") if isinstance(repository, dict) else repository
        header = f"{info['name']} {info.get('version', '')}: {info.get('license', 'no licence declared')} {repository}"
        sections.append(header + "\n\n" + ("\n".join(texts) or "(the package ships no licence file)") + "\n")
    return ("=" * 78 + "\n").join(sections)


def main() -> None:
    subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--omit=optional"], cwd=WEB,
                   check=True)
    TARGET.mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUNDLE, TARGET / BUNDLE.name)
    (TARGET / "LICENSES.txt").write_text(licences())
    print(f"copied {BUNDLE.name} ({BUNDLE.stat().st_size // 1024} KiB) and its licences into {TARGET}")


if __name__ == "__main__":
    main()
