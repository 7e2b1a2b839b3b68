#!/usr/bin/env bash
# Run a benchmark on a quiet machine while a Snakemake grid runs in the background: stop the grid's
# notebook kernels (SIGSTOP), run the command, and resume them (SIGCONT) however it ends. Paused
# jobs keep their memory and lose nothing but wall time; Snakemake and papermill just wait.
# Usage: bench/with_grid_paused.sh python bench/bench_speed.py --old ../old
set -uo pipefail
if [ $# -eq 0 ]; then
  echo "usage: $0 COMMAND [ARGS...]: the command to run with the grid's kernels paused" >&2
  exit 2
fi
pids=$(pgrep -f ipykernel_launcher | tr '\n' ' ')
if [ -n "$pids" ]; then
  echo "pausing grid kernels: $pids ($(date -u +%T))" >&2
  kill -STOP $pids
  trap 'kill -CONT $pids 2>/dev/null; echo "resumed grid kernels: $pids ($(date -u +%T))" >&2' EXIT
else
  echo "no grid kernel running; nothing to pause" >&2
fi
"$@"
