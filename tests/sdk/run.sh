#!/usr/bin/env bash
# ZITADEL's official Node SDK (@zitadel/node, from the npm registry) against the service:
# life.test.mjs. Installs the pinned package when missing, starts the service on SQLite on a
# free port, runs the test, stops the service.
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)

# npm ci again whenever package-lock.json changed since the last install.
if ! cmp -s package-lock.json node_modules/.installed-from-lock; then
    npm ci --no-audit --no-fund --silent
    cp package-lock.json node_modules/.installed-from-lock
fi

(cd "$root" && cargo build -q --locked --bin totp-service)
bin="${CARGO_TARGET_DIR:-$root/target}/debug/totp-service"
data=$(mktemp -d /tmp/totp-sdk.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
env -u DATABASE_URL -u TOTP_JWKS -u TOTP_ENCRYPTION_KEYS TOTP_DATA_DIR="$data" \
    TOTP_LISTEN="127.0.0.1:$port" RUST_LOG=warn "$bin" serve > "$data/service.log" 2>&1 &
service=$!
trap 'kill $service 2>/dev/null || true; rm -rf "$data"' EXIT
for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
token=$(TOTP_DATA_DIR="$data" "$bin" token --sub admin \
    --grant 'user.write@*' --grant 'user.read@*' --grant 'user.credential.write@*')
node life.test.mjs "http://127.0.0.1:$port" "$token"
