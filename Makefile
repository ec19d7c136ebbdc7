# Two entry points for a fresh machine: `make demo` (set up, fuse the bundled stroke T2 + FLAIR) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test wheel-check slicer58-check lint benchmark clean web-assets browser

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: on these machines 2.13.0 is the local CPU build; a bare "torch" pulls CUDA.
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[test,web]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	mkdir -p outputs
	$(PY) -m EdranFusionLib fuse EdranFusionLib/sample_data/stroke/T2.nii.gz EdranFusionLib/sample_data/stroke/FLAIR.nii.gz \
		-o outputs/stroke_T2+FLAIR_fused.nii.gz
	$(PY) -m EdranFusionLib preview outputs/stroke_T2+FLAIR_fused.nii.gz \
		EdranFusionLib/sample_data/stroke/T2.nii.gz EdranFusionLib/sample_data/stroke/FLAIR.nii.gz -o outputs/stroke_preview.png

# The web page's viewer: NiiVue from npm, pinned by package-lock.json, copied into the package (never committed).
WEB_BUNDLE := EdranFusionLib/web/static/vendor/niivue/niivue.umd.js
$(WEB_BUNDLE): EdranFusionLib/web/package.json EdranFusionLib/web/package-lock.json tools/web_assets.py
	command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; }
	$(PYTHON) tools/web_assets.py

web-assets: $(WEB_BUNDLE)

# Debian's Chromium and ChromeDriver for the browser test (as root; skipped when already installed).
browser:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }

test: setup web-assets browser wheel-check slicer58-check
	$(PY) -m pytest -q Testing

# Build the sdist + wheel, install the wheel into a fresh venv (core requirements at their floors) and use it
# from outside the checkout, as a user would.
wheel-check: setup
	$(PY) tools/wheel_check.py

# The library's tests in Slicer 5.8's Python 3.9: with what the module installs there, and with Slicer 5.8's own packages.
slicer58-check: setup
	$(PY) tools/slicer58_check.py

lint: setup
	$(VENV)/bin/ruff check .

benchmark: setup
	$(PY) -m EdranFusionLib benchmark

clean:
	rm -rf $(VENV) outputs
