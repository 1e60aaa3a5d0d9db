#!/usr/bin/env bash
# ZITADEL's official Node SDK (@zitadel/node, from the npm registry) against the service:
# life.test.mjs. Installs the pinned package when missing, starts the service on SQLite on a
# free port, runs the test, stops the service.
set -euo pipefail
cd "$(dirname "$0")"

# npm ci again whenever package-lock.json changed since the last install.
if ! cmp -s package-lock.json node_modules/.installed-from-lock; then
    npm ci --no-audit --no-fund --silent
    cp package-lock.json node_modules/.installed-from-lock
fi

. ../service.sh
start_service
node life.test.mjs "$base" "$token"
