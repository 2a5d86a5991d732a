# recops — two commands matter: `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
export PYTHONUNBUFFERED := 1
export GX_ANALYTICS_ENABLED := false
export MLFLOW_ENABLE_TELEMETRY := false
export DO_NOT_TRACK := 1

# A local copy of the dataset beside the project is used as a mirror when present;
# otherwise recops downloads the official zip and checks its checksum.
LOCAL_MIRROR := $(abspath $(wildcard ../shared/datasets/ml-latest-small))
export RECOPS_DATA_MIRROR ?= $(LOCAL_MIRROR)

STAMP := $(VENV)/.installed

.PHONY: help install run test test-gpu test-unit lint bench airflow stack-up stack-down clean

help:
	@echo "make run    install, then run the whole pipeline with dvc repro and print a summary"
	@echo "make test   install, then run the whole test suite"
	@echo "make airflow  start a local Airflow (standalone) with the recops DAGs"
	@echo "make stack-up / stack-down  start / stop the production stack on 127.0.0.1 (docs/production-stack.md)"

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"

$(STAMP): $(VENV)/bin/python pyproject.toml requirements.lock
	$(BIN)/pip install --quiet -c requirements.lock "torch==2.13.0" -e ".[dev]"
	@touch $@

install: $(STAMP)

run: install
	dvc repro
	recops summary

# Two workers (one per core); a test file stays on one worker. GPU tests run on GPU machines: make test-gpu.
test: install
	pytest -q -p no:cacheprovider -n 2 --dist loadfile -m "not gpu"

test-gpu: install
	pytest -q -p no:cacheprovider -m gpu

test-unit: install
	pytest -q -m "not integration" -p no:cacheprovider

lint: install
	ruff check src tests dags benchmarks

airflow: install
	scripts/airflow.sh

# Production stack on 127.0.0.1 (PostgreSQL, moto S3, MLflow with basic auth, Airflow); see docs/production-stack.md
stack-up: install
	scripts/stack.sh up

stack-down:
	scripts/stack.sh down

bench: install
	python benchmarks/pipeline.py

clean:
	rm -rf data reports .pytest_cache
