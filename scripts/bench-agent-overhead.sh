#!/usr/bin/env bash
# CPU overhead of entente-agent: one agent negotiating for N workloads (sleeping processes it
# starts in their own cgroups, enforced on real cgroups) at a 1 s interval against a one-replica
# arbiter on a local nats-server. Measures the agent's own CPU time over a steady-state window.
#
#   scripts/bench-agent-overhead.sh [WORKLOADS] [SECONDS]      (needs root, for cgroups)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
WORKLOADS="${1:-50}"; SECONDS_MEASURED="${2:-60}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/entente-target}"
NATS_SERVER="${ENTENTE_NATS_SERVER:-$(command -v nats-server || echo "$HOME/.cache/entente-venv/bin/nats-server")}"
cargo build --release -q -p entente-arbiter -p entente-agent

work="$(mktemp -d)"
agent_pid=""; arbiter_pid=""; nats_pid=""
cleanup() {
  for p in "$agent_pid" "$arbiter_pid"; do [ -n "$p" ] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
  [ -n "$nats_pid" ] && kill "$nats_pid" 2>/dev/null
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"$NATS_SERVER" -a 127.0.0.1 -p "$port" -js -sd "$work/js" >"$work/nats.log" 2>&1 & nats_pid=$!
sleep 1
"$CARGO_TARGET_DIR/release/entente-arbiter" run --node-id 1 --peers 1 --data-dir "$work/arbiter" \
  --nats "nats://127.0.0.1:$port" --round-ms 1000 >"$work/arbiter.log" 2>&1 & arbiter_pid=$!

{
  echo "host = \"overhead-host\""
  echo "interval_ms = 1000"
  echo "cgroup_parent = \"entente-overhead-$$\""
  echo "capacity = { cpu = $((WORKLOADS * 200)), memory = $((WORKLOADS * 268435456)), disk_bw = 0, net_bw = 0 }"
  for i in $(seq 1 "$WORKLOADS"); do
    cat <<W
[[workload]]
id = "w$i"
command = ["sleep", "100000"]
class = "$([ $((i % 3)) -eq 0 ] && echo latency_critical || echo best_effort)"
priority = $(( (i * 7) % 100 + 1 ))
slo = { type = "psi", resource = "cpu", scope = "some", max_avg10_pct = 5.0 }
guaranteed = { cpu = 50, memory = 0, disk_bw = 0, net_bw = 0 }
limit = { cpu = 400, memory = 268435456, disk_bw = 0, net_bw = 0 }
W
  done
} > "$work/agent.toml"
"$CARGO_TARGET_DIR/release/entente-agent" run --config "$work/agent.toml" --nats "nats://127.0.0.1:$port" \
  >"$work/agent.log" 2>&1 & agent_pid=$!

ticks="$(getconf CLK_TCK)"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$agent_pid/stat"; }
sleep 10   # start-up: registration, cgroups, the first samples
before="$(cpu_ticks)"; t0="$(date +%s.%N)"
sleep "$SECONDS_MEASURED"
after="$(cpu_ticks)"; t1="$(date +%s.%N)"
rounds="$(grep -c "round decided" "$work/arbiter.log" || true)"
python3 - "$before" "$after" "$t0" "$t1" "$ticks" "$WORKLOADS" "$rounds" <<'PY'
import json, sys
before, after, t0, t1, ticks, workloads, rounds = sys.argv[1:]
cpu_s = (int(after) - int(before)) / int(ticks)
wall = float(t1) - float(t0)
print(json.dumps({"workloads": int(workloads), "interval_ms": 1000, "window_s": round(wall, 1),
                  "agent_cpu_s": cpu_s, "agent_cpu_percent_of_one_core": round(100 * cpu_s / wall, 3),
                  "rounds_decided_total": int(rounds)}))
PY
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p')" >&2
