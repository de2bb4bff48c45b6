# The one image of every entente service (agent, arbiter, predictor, CLI): docker-compose.yml
# runs each with its own command.
#
# The build is split so that editing a source file does not rebuild the dependencies: the
# "skeleton" stage keeps only the manifests, the lockfile and an empty stand-in for each target's
# source, the "build" stage compiles the dependencies against that skeleton (a layer that stays
# cached while manifests and lockfile are unchanged), then copies the real sources and compiles
# the workspace. Plain Dockerfile syntax: it builds with BuildKit and with the classic builder.
#
# Offline machines: scripts/build-base-images.sh builds local stand-ins for the two base images.

FROM rust:1.95-bookworm AS skeleton
WORKDIR /src
COPY . .
RUN set -eu; \
    mkdir /skeleton; \
    cp Cargo.toml Cargo.lock /skeleton/; \
    for manifest in $(find . -name Cargo.toml -not -path './Cargo.toml' -not -path '*/fuzz/*' -not -path './target/*'); do \
      crate="$(dirname "$manifest")"; \
      mkdir -p "/skeleton/$crate"; \
      cp "$manifest" "/skeleton/$crate/"; \
      if [ -f "$crate/build.rs" ]; then cp "$crate/build.rs" "/skeleton/$crate/"; fi; \
      if [ -f "$crate/src/lib.rs" ]; then mkdir -p "/skeleton/$crate/src"; : > "/skeleton/$crate/src/lib.rs"; fi; \
      for target in $(find "$crate/src/main.rs" "$crate/src/bin" "$crate/benches" "$crate/tests" "$crate/examples" \
                        -maxdepth 1 -name '*.rs' 2>/dev/null); do \
        mkdir -p "/skeleton/$(dirname "$target")"; \
        echo 'fn main() {}' > "/skeleton/$target"; \
      done; \
    done

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY --from=skeleton /skeleton/ ./
RUN cargo build --release --locked --bins
COPY . .
# The real sources may be older than the skeleton's build: touch them so cargo rebuilds the
# workspace crates (and only those) from them.
RUN find . -path ./target -prune -o -name '*.rs' -exec touch {} + \
    && cargo build --release --locked --bins \
    && mkdir /out \
    && for bin in $(find target/release -maxdepth 1 -type f -executable -name 'entente*'); do \
         objcopy --strip-debug "$bin" "/out/$(basename "$bin")"; \
       done \
    && ls -l /out

# The demo's workload image: redis, its benchmark client and stress-ng antagonists, plus the
# entente binaries for the demo's second host, whose agent starts its workloads itself.
FROM debian:bookworm-slim AS demo-workloads
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server redis-tools stress-ng \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /usr/local/bin/

# The entente image (the default target).
FROM debian:bookworm-slim
COPY --from=build /out/ /usr/local/bin/
# The predictor's shipped model (ONNX file, sidecar, model card) at the path the compose file
# gives it; mount another directory there to serve a retrained model.
COPY predictor/model/ /usr/local/share/entente/model/
# Each service keeps its state in /data (a volume in docker-compose.yml).
RUN mkdir /data
WORKDIR /data
CMD ["entente-agent", "--help"]
