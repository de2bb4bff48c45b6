#!/usr/bin/env bash
# Round throughput of the arbiter cluster: nats-server, three release arbiters, and the
# round_load generator simulating HOSTS hosts x WORKLOADS workloads that bid every round.
# Prints the generator's JSON summary (rounds/s, decision latency after the deadline).
#
#   scripts/bench-rounds.sh [HOSTS] [WORKLOADS] [ROUNDS] [ROUND_MS]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
HOSTS="${1:-1000}"; WORKLOADS="${2:-20}"; ROUNDS="${3:-30}"; ROUND_MS="${4:-1000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/entente-target}"
NATS_SERVER="${ENTENTE_NATS_SERVER:-$(command -v nats-server || echo "$HOME/.cache/entente-venv/bin/nats-server")}"
cargo build --release -q -p entente-arbiter --bin entente-arbiter --example round_load

work="$(mktemp -d)"
nats_pid=""
arbiter_pids=()
cleanup() {
  kill "${arbiter_pids[@]}" 2>/dev/null || true
  wait "${arbiter_pids[@]}" 2>/dev/null || true
  [ -n "$nats_pid" ] && kill "$nats_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
# One round's decisions travel as a single Raft entry: allow payloads that large.
cat > "$work/nats.conf" <<CONF
listen: 127.0.0.1:$port
max_payload: 16MB
jetstream { store_dir: "$work/js" }
CONF
"$NATS_SERVER" -c "$work/nats.conf" >"$work/nats.log" 2>&1 & nats_pid=$!
sleep 1
for node in 1 2 3; do
  "$CARGO_TARGET_DIR/release/entente-arbiter" run --node-id "$node" --peers 1,2,3 \
    --data-dir "$work/arbiter-$node" --nats "nats://127.0.0.1:$port" --round-ms "$ROUND_MS" \
    >"$work/arbiter-$node.log" 2>&1 & arbiter_pids+=($!)
done
"$CARGO_TARGET_DIR/release/examples/round_load" --nats "nats://127.0.0.1:$port" \
  --hosts "$HOSTS" --workloads "$WORKLOADS" --rounds "$ROUNDS"
grep -h "round decided" "$work"/arbiter-*.log | tail -3 | sed 's/\x1b\[[0-9;]*m//g' >&2 || true
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p')" >&2
