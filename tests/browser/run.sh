#!/usr/bin/env bash
# The browser test: the enrolment page in headless Chromium (Debian's package) driven by
# playwright-core (npm). Installs both when missing (Chromium needs root for apt), starts the
# service on SQLite on a free port, runs enroll.test.mjs, stops the service.
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)

if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "the browser test needs Chromium: sudo apt-get install chromium" >&2
        exit 1
    fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
[ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund --silent

(cd "$root" && cargo build -q --locked --bin totp-service)
bin="${CARGO_TARGET_DIR:-$root/target}/debug/totp-service"
data=$(mktemp -d /tmp/totp-browser.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
env -u DATABASE_URL -u TOTP_JWKS -u TOTP_ENCRYPTION_KEYS TOTP_DATA_DIR="$data" TOTP_LISTEN="127.0.0.1:$port" \
    RUST_LOG=warn "$bin" serve > "$data/service.log" 2>&1 &
service=$!
trap 'kill $service 2>/dev/null || true; rm -rf "$data"' EXIT
for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
token=$(TOTP_DATA_DIR="$data" "$bin" token --sub admin \
    --grant 'user.write@*' --grant 'user.read@*' --grant 'user.credential.write@*')
node enroll.test.mjs "http://127.0.0.1:$port" "$token"
