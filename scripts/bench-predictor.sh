#!/usr/bin/env bash
# Inference cost of entente-predictor: latency of one host batch (windows of up to 32 workloads
# -> usage, slowdown and the counterfactual interference matrix, with tract) and the workload
# forecasts per second one core sustains. Release build, pinned to one core.
#
#   scripts/bench-predictor.sh [ITERATIONS] [WORKLOADS] [MODEL_DIR]
#   PROFILE=1 scripts/bench-predictor.sh     # then also where a model run spends its time, per operator
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
ITERATIONS="${1:-5000}"; WORKLOADS="${2:-32}"; MODEL_DIR="${3:-predictor/model}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/entente-target}"
cargo build --release -q -p entente-predictor --example inference_latency
core="${BENCH_CORE:-0}"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); pinned to core $core" >&2
taskset -c "$core" "$CARGO_TARGET_DIR/release/examples/inference_latency" \
  --model-dir "$MODEL_DIR" --iterations "$ITERATIONS" --workloads "$WORKLOADS"
if [ "${PROFILE:-0}" = 1 ]; then
  taskset -c "$core" "$CARGO_TARGET_DIR/release/examples/inference_latency" \
    --model-dir "$MODEL_DIR" --iterations "$ITERATIONS" --profile
fi
