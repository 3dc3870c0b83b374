# Two commands set everything up from nothing: `make book` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
COMPANION := $(VENV)/bin/companion
PROFILE ?= default
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup book test bench clean help

help:
	@echo "make book   - set up (venv, packages, embedded models) and build the book with the $(PROFILE) profile"
	@echo "make test   - set up and run the tests (unit tests + smoke run of every notebook + browser check)"
	@echo "make bench  - run the speed benchmarks and print a table"

$(VENV)/.installed: requirements.txt requirements-nodeps.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

setup: $(VENV)/.installed

book: setup
	$(COMPANION) run --profile $(PROFILE)
	$(COMPANION) build

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/run.py

clean:
	rm -rf _build book/_generated
