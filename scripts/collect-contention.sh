#!/usr/bin/env bash
# One command that regenerates predictor/data/ from real contention on this host (about 85
# minutes; needs root). Installs the workloads' tools with apt if they are missing, then runs
# scripts/collect_contention.py with the parameters the committed data was collected with.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v stress-ng >/dev/null || ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y stress-ng redis-server redis-tools
fi
OUT="${1:-predictor/data}"
if [ -e "$OUT/samples.csv.gz" ]; then
    echo "$OUT already holds data; move it away first (the collector appends)" >&2
    exit 1
fi
# One run, as the committed data was collected: every workload runs alone twice per experiment
# (its solo throughput is the mean of the two), beside 5 co-located segments.
exec python3 scripts/collect_contention.py --out "$OUT" --experiments 44 --seed 9 --solo-segments 2
