#!/usr/bin/env bash
# Rerun one committed tuning trial (SmolLM2-135M, Wanda with DLP alpha 0.15 at 70%, calibration
# seed 100, 32 WikiText-2 validation windows, float32 throughout, 1 thread) on this CPU, once with
# its native kernels and once with every library pinned to AVX2 kernels, and compare both with the
# committed perplexity. Tells whether this CPU reproduces a run made on another one, and whether
# pinning the instruction set makes it do so.
# Usage: OWL_DATA_DIR=../shared/data bench/cross_cpu.sh [OUT_DIR]   (about 25 min at two runs at once)
set -euo pipefail
out=${1:-/tmp/owl-cross-cpu}
trial=results/default/runs/smollm2-135m/tune_wanda_dlp_s0.7_a0.15_seed100
run() {  # $1 = label, then environment settings
  local label=$1; shift
  env "$@" OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/owl prune --model smollm2-135m \
    --prune_method wanda_dlp --dlp_alpha 0.15 --sparsity_ratio 0.7 --nsamples 32 --seqlen 2048 \
    --seed 100 --calib_batch_size 8 --dtype float32 --eval_dtype float32 \
    --eval_dataset wikitext2_validation --eval_limit 32 \
    --stats_path results/default/calibration/smollm2-135m/c4-n32-len2048-seed100-float32/statistics.pt \
    --save "$out/$label" > "$out/$label.log" 2>&1
}
mkdir -p "$out"
run native &
run avx2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 MKL_CBWR=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 &
wait
.venv/bin/python - "$trial" "$out" <<'PY'
import json, sys, time
sys.path.insert(0, "bench")
from bench_eval_precision import cpuinfo_identity
trial, out = sys.argv[1], sys.argv[2]
ref = json.load(open(f"{trial}/result.json"))
rows = {"committed": ref}
rows.update({label: json.load(open(f"{out}/{label}/result.json")) for label in ("native", "avx2")})
summary = {"date": time.strftime("%Y-%m-%d"), "trial": trial, "cpuinfo": cpuinfo_identity(), "runs": {}}
for label, r in rows.items():
    ppl = r["ppl"]["wikitext2_validation"]
    summary["runs"][label] = {
        "cpu": r["precision"]["cpu"], "ppl": ppl, "ratio_to_committed": ppl / ref["ppl"]["wikitext2_validation"],
        "same_allocation": r["layer_sparsities"] == ref["layer_sparsities"],
        "same_achieved_sparsities": r["layer_achieved_sparsities"] == ref["layer_achieved_sparsities"],
        "timings_s": r["timings_s"],
    }
print(json.dumps(summary, indent=1))
PY
