# Two commands set everything up from nothing: `make book` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
COMPANION := $(VENV)/bin/companion
PROFILE ?= default
# Notebooks executed at once by `make book` (each gets its share of the cores: two on a 2-core laptop run the two
# papers side by side, which samples text about 1.3x faster than one notebook on both cores).
JOBS ?= 2
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# Python caches the bytecode it compiles (the venv is installed with --no-compile, below); an environment that sets
# PYTHONDONTWRITEBYTECODE=1 (this project's build machine does) would make every process compile torch, transformers and
# TRL again (about 9 s each).
unexport PYTHONDONTWRITEBYTECODE

SUDO   := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: setup kernel lab browser book lint test bench clean help

help:
	@echo "make book   - set up (venv, packages, embedded models) and build the book with the $(PROFILE) profile"
	@echo "make test   - set up and run the tests (unit tests + smoke run of every notebook + browser check)"
	@echo "make bench  - run the speed benchmarks and print a table"
	@echo "make lint   - ruff on the package, tests, benchmarks and notebooks"
	@echo "make lab    - set up, install the 'companion' Jupyter kernel into the venv and start JupyterLab"

# --no-compile: Python compiles a module the first time it is imported, so only what runs is compiled (installing
# took 49 s instead of 86 s on a 2-core machine; the first import of torch, transformers and TRL 9 s more, once).
PIP := $(PY) -m pip install --quiet --no-compile

$(VENV)/.installed: requirements.txt requirements-nodeps.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -r requirements.txt
	$(PIP) --no-deps -r requirements-nodeps.txt
	$(PIP) --no-deps --no-build-isolation -e .
	touch $@

setup: $(VENV)/.installed

# The named kernel notebooks open with in JupyterLab (and papermill -k companion), installed into the venv.
KERNEL_PREFIX ?= $(VENV)
kernel: setup
	$(PY) -m ipykernel install --prefix $(KERNEL_PREFIX) --name companion --display-name "Python (companion)"

LAB_FLAGS := $(shell [ "$$(id -u)" -eq 0 ] && echo --allow-root)
lab: kernel
	$(VENV)/bin/jupyter lab $(LAB_FLAGS) notebooks

book: setup
	$(COMPANION) run --profile $(PROFILE) --jobs $(JOBS)
	$(COMPANION) build

# Debian's Chromium and its driver for the browser test (no browser download at run time).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  ($(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver)

lint: setup
	$(VENV)/bin/ruff check .

test: setup browser lint
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/run.py

clean:
	rm -rf _build book/_generated
