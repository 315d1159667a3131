# The two commands of the README. Each sets up .venv first (quick when done).
VENV ?= $(if $(MMSPATIAL_VENV),$(MMSPATIAL_VENV),$(CURDIR)/.venv)
PYTHON := $(VENV)/bin/python
export MMSPATIAL_VENV := $(VENV)

.PHONY: setup demo test
setup:
	bash tools/setup_env.sh

demo: setup
	$(PYTHON) tools/demo.py

# The Triton tests count: the run fails if they were skipped (tests/conftest.py).
test: setup
	MMSPATIAL_REQUIRE_TRITON_TESTS=1 $(PYTHON) -m pytest tests -ra
