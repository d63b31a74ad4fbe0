# The two commands of README: `make run` (service + demo data) and `make test` (the suite).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench

$(BIN)/citygrid: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

run: $(BIN)/citygrid
	$(BIN)/citygrid up

test: $(BIN)/citygrid
	$(BIN)/citygrid db up
	$(BIN)/pytest

lint: $(BIN)/citygrid
	$(BIN)/ruff check .
