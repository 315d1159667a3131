# The two commands of the README. Each sets up .venv first (quick when done).
VENV ?= $(if $(MMSPATIAL_VENV),$(MMSPATIAL_VENV),$(CURDIR)/.venv)
PYTHON := $(VENV)/bin/python
export MMSPATIAL_VENV := $(VENV)
# triton 3.6 (the GPU image's), installed beside the venv by tools/setup_env.sh
MMSPATIAL_CACHE ?= $(HOME)/.cache/mmspatial
export MMSPATIAL_TRITON36_PATH ?= $(MMSPATIAL_CACHE)/triton-3.6.0

.PHONY: setup demo test
setup:
	bash tools/setup_env.sh

demo: setup
	$(PYTHON) tools/demo.py

# The Triton tests count: the run fails if they were skipped (tests/conftest.py).
test: setup
	MMSPATIAL_REQUIRE_TRITON_TESTS=1 $(PYTHON) -m pytest tests -ra
