#!/usr/bin/env bash
# Counts the instructions of clearing synthetic hosts (40 workloads x 8 bundles x 4 resources)
# with callgrind, which counts the same on a busy or an idle machine, unlike a clock: per host,
# and per source line of the clearing engine (scripts/callgrind_lines.py). The mean welfare is
# printed too, so that two builds can be checked to make the same allocations.
#
#   scripts/profile-clearing.sh                    # 300 hosts, the root only (time limit 0)
#   HOSTS=50 TIME_LIMIT_MS=0.2 FRAME=inner TOP=60 scripts/profile-clearing.sh
#
# Needs valgrind and addr2line (Debian: valgrind, binutils).
set -euo pipefail
cd "$(dirname "$0")/.."
hosts=${HOSTS:-300}
time_limit_ms=${TIME_LIMIT_MS:-0}
for tool in valgrind addr2line; do
    command -v "$tool" >/dev/null || { echo "$tool is not installed (apt-get install valgrind binutils)" >&2; exit 1; }
done
cargo build --release -q -p entente-arbiter --example host_timings
binary="${CARGO_TARGET_DIR:-target}/release/examples/host_timings"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$binary" "$work/host_timings"   # the profile's addresses must match the binary they resolve in
valgrind --tool=callgrind --dump-instr=yes --dump-line=no --callgrind-out-file="$work/profile" \
    --toggle-collect='*clear_host_within*' "$work/host_timings" "$hosts" 0 "$time_limit_ms" 0 allocation \
    > "$work/out" 2> "$work/err"
grep -E "^per host" "$work/out" | sed -E 's/.*(mean welfare=.*)/\1/'
collected=$(sed -nE 's/.*Collected : ([0-9]+).*/\1/p' "$work/err")
echo "instructions per host: $((collected / hosts))"
python3 scripts/callgrind_lines.py "$work/profile" "$work/host_timings" --function . --file arbiter/src \
    --frame "${FRAME:-outer}" --top "${TOP:-30}"
