#!/usr/bin/env bash
# The scale run of docs/EVALUATION.md: simulated hosts (default 250 to 4000, 10 workloads each)
# over real NATS against three real arbiters and the real predictor, sweeping the host count and
# recording round time, decision latency and cpu per component (scripts/scale_run.py).
#
#   scripts/scale-run.sh [--out DIR] [--hosts 250,500,1000,2000,4000] [--workloads 10] [--rounds 15]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/entente-target}"
venv="${ENTENTE_EVAL_VENV:-$HOME/.cache/entente-eval-venv}"
nats="${ENTENTE_NATS_SERVER:-$(command -v nats-server || echo "$HOME/.cache/entente-venv/bin/nats-server")}"
out="results/scale-$(date +%Y%m%d-%H%M%S)"
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
cargo build --release --locked -q -p entente-arbiter -p entente-predictor --bins --example round_load
if [ ! -x "$venv/bin/python" ]; then python3 -m venv "$venv"; fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r scripts/requirements-eval.txt
exec "$venv/bin/python" scripts/scale_run.py --out "$out" --bin-dir "$CARGO_TARGET_DIR/release" \
  --nats-server "$nats" --model-dir predictor/model "${args[@]}"
