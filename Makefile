# Two commands do all the set-up on a fresh machine:
#   make demo   train on the built-in rock_gate world and compare with the exact solution
#   make test   the fast test tier (what CI runs); `make test-all` adds the slow learning tests
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-all bench fidelity docs clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/quickstart.py

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

test-all: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m benchmarks.run_all

fidelity: $(STAMP)
	$(PY) -m benchmarks.fidelity_matrix

docs: $(STAMP)
	$(PY) -m tools.gen_docs

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
