#!/usr/bin/env bash
# The browser tests, in headless Chromium (Debian's package) driven by playwright-core (npm):
# enroll.test.mjs (the enrolment page /ui/enroll) and client.test.mjs (a page on another origin
# built on @connectrpc/connect-web; its messages are generated from ../../proto by buf and
# protoc-gen-es, type-checked by tsc and bundled by esbuild, all from npm). Installs what is
# missing (Chromium needs root for apt), starts the service on SQLite on a free port with CORS
# open to the page's origin, runs both, stops the service.
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
# npm ci again whenever package-lock.json changed since the last install.
if ! cmp -s package-lock.json node_modules/.installed-from-lock; then
    npm ci --no-audit --no-fund --silent
    cp package-lock.json node_modules/.installed-from-lock
fi
export PATH="$PWD/node_modules/.bin:$PATH"
rm -rf client/gen client/dist
buf generate ../../proto --template client/buf.gen.yaml -o client
tsc -p client
esbuild client/app.ts --bundle --format=iife --target=es2020 --log-level=warning --outfile=client/dist/app.js

(cd "$root" && cargo build -q --locked --bin totp-service)
bin="${CARGO_TARGET_DIR:-$root/target}/debug/totp-service"
data=$(mktemp -d /tmp/totp-browser.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
page_port=$(free_port)
env -u DATABASE_URL -u TOTP_JWKS -u TOTP_ENCRYPTION_KEYS TOTP_DATA_DIR="$data" TOTP_LISTEN="127.0.0.1:$port" \
    TOTP_CORS_ORIGINS="http://127.0.0.1:$page_port" \
    RUST_LOG=warn "$bin" serve > "$data/service.log" 2>&1 &
service=$!
trap 'kill $service 2>/dev/null || true; rm -rf "$data"' EXIT
for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
token=$(TOTP_DATA_DIR="$data" "$bin" token --sub admin \
    --grant 'user.write@*' --grant 'user.read@*' --grant 'user.credential.write@*' --grant 'session.write@*')
node enroll.test.mjs "http://127.0.0.1:$port" "$token"
node client.test.mjs "http://127.0.0.1:$port" "$token" "$page_port"
