# Two entry points for a fresh machine with Python 3.11+: `make run` and `make test`.
# Both create the virtual environment, install the pinned dependencies and build the Cython core.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: setup build run test bench clean distclean

setup: $(VENV)/.installed

# $(VENV)/.installed marks a complete environment: it is removed before any change and written
# last, so an interrupted setup (Ctrl-C, a failed download) leaves none, and a $(VENV) without
# it is half built: the next setup removes it and builds afresh (so does `make clean`).
$(VENV)/.installed: requirements.txt constraints.txt setup.py pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("ibfleet needs Python 3.11+") if sys.version_info < (3, 11) else None'
	@if [ -e $(VENV) ] && [ ! -e $@ ]; then echo "removing a half-built $(VENV)"; rm -rf $(VENV); fi
	rm -f $@
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt -c constraints.txt
	$(BIN)/pip install --quiet --no-build-isolation --no-deps -e .
	touch $@

build: setup
	$(BIN)/python setup.py --quiet build_ext --inplace

# ARGS: options for `ibfleet up`, e.g. make run ARGS="--config my-fleet.toml"
run: build
	$(BIN)/ibfleet up $(ARGS)

# Debian's chromium, for the test that opens a backtest's report.html headless
# (tests/backtest/test_catalog_backtest.py): installed when missing (as root; else say how)
.PHONY: chromium
chromium:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } \
	  || { echo "the tests need Debian's chromium: sudo apt-get install chromium"; exit 1; }

# two workers, one test file each at a time: most tests wait on real processes, not the CPU
test: build chromium
	$(BIN)/python -m pytest -n 2 --dist loadfile

bench: build
	$(BIN)/python bench/run_all.py --write docs/benchmarks.md

# clean: build products, and $(VENV) if it is half built (no .installed); distclean: $(VENV) too
clean:
	rm -rf build *.egg-info core/*.c core/*.so core/*.html
	@if [ -e $(VENV) ] && [ ! -e $(VENV)/.installed ]; then echo "rm -rf $(VENV) (half built)"; rm -rf $(VENV); fi

distclean: clean
	rm -rf $(VENV)
