#!/usr/bin/env bash
# Installs the Debian packages named in the arguments with apt when a test needs them and the
# machine lacks them: as root it runs apt-get; otherwise it says what to install and fails.
#   scripts/install-packages.sh podman buildah
set -euo pipefail
[ "$#" -gt 0 ] || exit 0
if [ "$(id -u)" != 0 ]; then
    echo "this test needs the Debian packages $*; run as root to install them, or install them first" >&2
    exit 1
fi
echo "installing $* with apt ..." >&2
{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"; } >&2 || {
    echo "could not install $* with apt-get (is the Debian mirror reachable?)" >&2
    exit 1
}
