# Two entry points for a fresh machine: `make demo` (set up, fuse the bundled stroke T2 + FLAIR) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test wheel-check lint benchmark clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: on these machines 2.13.0 is the local CPU build; a bare "torch" pulls CUDA.
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	mkdir -p outputs
	$(PY) -m EdranFusionLib fuse EdranFusionLib/sample_data/stroke/T2.nii.gz EdranFusionLib/sample_data/stroke/FLAIR.nii.gz \
		-o outputs/stroke_T2+FLAIR_fused.nii.gz
	$(PY) -m EdranFusionLib preview outputs/stroke_T2+FLAIR_fused.nii.gz \
		EdranFusionLib/sample_data/stroke/T2.nii.gz EdranFusionLib/sample_data/stroke/FLAIR.nii.gz -o outputs/stroke_preview.png

test: setup wheel-check
	$(PY) -m pytest -q Testing

# Build the sdist + wheel, install the wheel into a fresh venv (core requirements at their floors) and use it
# from outside the checkout, as a user would.
wheel-check: setup
	$(PY) tools/wheel_check.py

lint: setup
	$(VENV)/bin/ruff check .

benchmark: setup
	$(PY) -m EdranFusionLib benchmark

clean:
	rm -rf $(VENV) outputs
