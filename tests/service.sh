# Sourced by the Node test scripts (tests/browser/run.sh, tests/sdk/run.sh): builds the service,
# starts it on SQLite in a temporary data folder on a free loopback port (extra settings as
# arguments, `NAME=value`), waits until it is ready, stops it and removes the folder on exit.
# Sets `base` (http://127.0.0.1:<port>) and `token` (an administrator's, from the local key).

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

start_service() {
    local root bin port
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    (cd "$root" && cargo build -q --locked --bin totp-service)
    bin="${CARGO_TARGET_DIR:-$root/target}/debug/totp-service"
    service_data=$(mktemp -d /tmp/totp-test.XXXXXX)
    port=$(free_port)
    env -u DATABASE_URL -u TOTP_JWKS -u TOTP_ENCRYPTION_KEYS TOTP_DATA_DIR="$service_data" \
        TOTP_LISTEN="127.0.0.1:$port" RUST_LOG=warn "$@" "$bin" serve > "$service_data/service.log" 2>&1 &
    service_pid=$!
    trap 'kill $service_pid 2>/dev/null || true; rm -rf "$service_data"' EXIT
    base="http://127.0.0.1:$port"
    for _ in $(seq 1 100); do
        curl -fs "$base/readyz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    token=$(TOTP_DATA_DIR="$service_data" "$bin" token --sub admin --grant 'user.write@*' \
        --grant 'user.read@*' --grant 'user.credential.write@*' --grant 'session.write@*')
}
