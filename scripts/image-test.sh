#!/usr/bin/env bash
# The container image tests (tests/image): build the image from the Dockerfile's runtime stage
# with the release binary and run it with podman against the suite's Postgres (DATABASE_URL,
# which scripts/test.sh provides), and run compose.yaml with podman-compose.
#
# Installs podman, buildah, runc, mmdebstrap and podman-compose with apt when missing (as root),
# and says so when it cannot. When no `debian:bookworm-slim` image is present (this machine kind cannot reach
# Docker Hub), it makes one from the Debian mirror with mmdebstrap, trimmed like Docker's slim
# image (no manuals, docs or locales, no apt lists).
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF="$PWD/tests/image/containers.conf"

missing=()
for tool in podman buildah runc mmdebstrap podman-compose; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
scripts/install-packages.sh "${missing[@]}"

podman=(podman --runtime runc --cgroup-manager cgroupfs)
if ! "${podman[@]}" image exists debian:bookworm-slim; then
    echo "making debian:bookworm-slim with mmdebstrap ..." >&2
    rootfs=$(mktemp -d)
    trap 'rm -rf "$rootfs"' EXIT
    mmdebstrap --quiet --variant=minbase \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
        bookworm "$rootfs/rootfs.tar" >&2
    "${podman[@]}" import "$rootfs/rootfs.tar" debian:bookworm-slim >/dev/null
fi

cargo build --release --locked -p totp-service
cargo test --locked --features image-tests --test image -- --nocapture --test-threads=1 "$@"
