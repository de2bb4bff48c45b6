#!/usr/bin/env bash
# Measures the clearing engine on synthetic hosts (40 workloads x 8 bundles x 4 resources, seeded
# generator in arbiter/src/clearing/synthetic.rs): per-host median/p99/max with and without VCG
# payments, and a whole round of many hosts cleared in parallel. Then, unless QUICK=1, the
# criterion benchmarks (arbiter/benches/clearing.rs).
#
#   scripts/bench-clearing.sh                       # 200 hosts, round of 10000, no time limit
#   HOSTS=50 ROUND_HOSTS=0 TIME_LIMIT_MS=1 scripts/bench-clearing.sh
#   RELATIVE_GAP=1e-4 scripts/bench-clearing.sh    # every solve proven within 0.01 % of optimal
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
hosts=${HOSTS:-200}
round_hosts=${ROUND_HOSTS:-10000}
time_limit_ms=${TIME_LIMIT_MS:--}
relative_gap=${RELATIVE_GAP:-0}

cd "$root"
echo "machine: $(nproc) cores, $(lscpu | grep 'Model name' | sed 's/Model name:[[:space:]]*//')"
cargo run --release -q -p entente-arbiter --example host_timings -- "$hosts" "$round_hosts" "$time_limit_ms" "$relative_gap"
if [[ ${QUICK:-0} != 1 ]]; then
    cargo bench -q -p entente-arbiter --bench clearing
fi
