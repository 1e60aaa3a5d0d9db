#!/usr/bin/env bash
# Runs the whole test suite: unit tests, the integration tests over REST, gRPC, gRPC-web and
# Connect against SQLite and a real Postgres, the browser test (tests/browser/run.sh, which
# installs Chromium and playwright-core when missing), the image test (scripts/image-test.sh, which
# installs podman when missing) and the HA tests (scripts/ha-test.sh, which installs patroni,
# etcd-server and haproxy when missing). Without DATABASE_URL it starts a throwaway
# Postgres cluster from the installed binaries (Debian's postgresql-15 or any `initdb` on PATH)
# and removes it after.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh sqlite_rest`).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${DATABASE_URL:-}" ]; then
    pg_bin=$(dirname "$(readlink -f "$(command -v initdb 2>/dev/null || ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)")")
    [ -x "$pg_bin/initdb" ] || { echo "no Postgres binaries found (install postgresql-15)" >&2; exit 1; }
    cluster=$(mktemp -d /tmp/totp-test-pg.XXXXXX)
    as_postgres=()
    if [ "$(id -u)" = 0 ]; then
        # initdb refuses to run as root; the cluster belongs to the postgres user.
        chown postgres "$cluster"
        as_postgres=(runuser -u postgres --)
    fi
    "${as_postgres[@]}" "$pg_bin/initdb" -D "$cluster/data" -U postgres -A trust --no-sync >/dev/null
    stop_cluster() {
        "${as_postgres[@]}" "$pg_bin/pg_ctl" -D "$cluster/data" -m immediate stop >/dev/null 2>&1 || true
        rm -rf "$cluster"
    }
    trap stop_cluster EXIT
    # A free port: let the kernel pick one, then hand it to Postgres (retry if taken meanwhile).
    for attempt in 1 2 3 4 5; do
        port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        if "${as_postgres[@]}" "$pg_bin/pg_ctl" -w -D "$cluster/data" -l "$cluster/log" \
            -o "-p $port -k $cluster -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=400" \
            start >/dev/null; then
            break
        fi
        [ "$attempt" = 5 ] && { cat "$cluster/log" >&2; exit 1; }
    done
    export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
    echo "throwaway Postgres on port $port" >&2
fi

cargo test --locked "$@"

# The browser test (headless Chromium on the enrolment page), ZITADEL's Node SDK (npm), the
# container image test (podman) and the HA tests (a Patroni cluster failing over under load) with
# the full run; a filtered run (`scripts/test.sh <filter>`) is about the Rust tests only.
if [ "$#" = 0 ]; then
    tests/browser/run.sh
    tests/sdk/run.sh
    scripts/image-test.sh
    scripts/ha-test.sh
fi
