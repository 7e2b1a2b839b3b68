#!/usr/bin/env bash
# Speed of native CPU kernels against kernels pinned to AVX2, alternated twice on a quiet machine:
# SmolLM2-135M, OWL w. Wanda at 70%, 8 calibration windows of 512, 16 test windows, float32, 1 thread.
# The first run computes the dense statistics and the others reuse them (so only the pruning and
# evaluation times compare). Usage: OWL_DATA_DIR=../shared/data bench/cpu_kernel_speed.sh [OUT_DIR]
set -euo pipefail
out=${1:-/tmp/owl-cpu-kernel-speed}
mkdir -p "$out"
for i in 1 2; do for label in native avx2; do
  pin=(); [ $label = avx2 ] && pin=(ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 MKL_CBWR=AVX2 ONEDNN_MAX_CPU_ISA=AVX2)
  env "${pin[@]}" OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/owl prune --model smollm2-135m \
    --prune_method wanda_owl --sparsity_ratio 0.7 --nsamples 8 --seqlen 512 --dtype float32 \
    --eval_dtype float32 --eval_limit 16 --save "$out/${label}_$i" > "$out/${label}_$i.log" 2>&1
done; done
.venv/bin/python - "$out" <<'PY'
import json, sys, time
sys.path.insert(0, "bench")
from bench_eval_precision import cpuinfo_identity
out = sys.argv[1]
runs = {f"{l}_{i}": json.load(open(f"{out}/{l}_{i}/result.json")) for i in (1, 2) for l in ("native", "avx2")}
print(json.dumps({"date": time.strftime("%Y-%m-%d"), "cpuinfo": cpuinfo_identity(), "runs": {k: {
    "cpu": r["precision"]["cpu"], "cpu_kernels": r["precision"]["cpu_kernels"], "ppl": r["ppl"],
    "timings_s": r["timings_s"]} for k, r in runs.items()}}, indent=1))
PY
