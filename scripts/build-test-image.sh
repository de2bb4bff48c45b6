#!/bin/sh
# Builds entente-test-busybox:local, the tiny image the Docker enforcement tests start.
#
# Test machines cannot pull images, so the image is made from the host's static busybox
# (Debian/Ubuntu package busybox-static) on top of `scratch`: no registry involved.
set -eu

TAG="${1:-entente-test-busybox:local}"
BUSYBOX="$(command -v busybox || true)"
if [ -z "$BUSYBOX" ] || ! ldd "$BUSYBOX" 2>&1 | grep -Eq "not a dynamic executable|statically linked"; then
    echo "a static busybox is needed on PATH: apt-get install -y busybox-static" >&2
    exit 1
fi

CONTEXT="$(mktemp -d)"
trap 'rm -rf "$CONTEXT"' EXIT
cp "$BUSYBOX" "$CONTEXT/busybox"
cat > "$CONTEXT/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
ENTRYPOINT ["/bin/busybox", "sleep", "3600"]
DOCKERFILE

docker build --quiet --tag "$TAG" "$CONTEXT"
echo "built $TAG"
