#!/usr/bin/env bash
# The browser tests, in headless Chromium (Debian's package) driven by playwright-core (npm):
# enroll.test.mjs (the enrolment page /ui/enroll) and client.test.mjs (a page on another origin
# built on @connectrpc/connect-web; its messages are generated from ../../proto by buf and
# protoc-gen-es, type-checked by tsc and bundled by esbuild, all from npm). Installs what is
# missing (Chromium needs root for apt), starts the service on SQLite on a free port with CORS
# open to the page's origin, runs both, stops the service.
set -euo pipefail
cd "$(dirname "$0")"

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

. ../service.sh
page_port=$(free_port)
start_service TOTP_CORS_ORIGINS="http://127.0.0.1:$page_port"
node enroll.test.mjs "$base" "$token"
node client.test.mjs "$base" "$token" "$page_port"
