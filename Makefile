# Two entry points for a fresh machine with Python 3.11+: `make run` and `make test`.
# Both create the virtual environment, install the pinned dependencies and build the Cython core.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: setup build run test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt constraints.txt setup.py pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("ibfleet needs Python 3.11+") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt -c constraints.txt
	$(BIN)/pip install --quiet --no-build-isolation --no-deps -e .
	touch $@

build: setup
	$(BIN)/python setup.py --quiet build_ext --inplace

run: build
	$(BIN)/ibfleet up

test: build
	$(BIN)/python -m pytest

bench: build
	$(BIN)/python bench/run_all.py

clean:
	rm -rf build *.egg-info core/*.c core/*.so core/*.html
