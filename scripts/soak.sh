#!/usr/bin/env bash
# The soak (not in CI: it takes half an hour). A Patroni cluster (scripts/ha-cluster.sh), two
# release-built service instances on it, and `totp-bench soak`: users' whole lives at half of the
# peak rate measured first, for SOAK_DURATION (30m); every SOAK_INTERVAL (60s) it prints per
# instance the rate, p99, failed answers, RSS, open descriptors and database connections, then
# the table and whether memory, descriptors and connections stayed flat after the warm-up.
#
#   scripts/soak.sh                      # 30 minutes
#   SOAK_DURATION=5m scripts/soak.sh     # a shorter try
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${SOAK_DURATION:-30m}
interval=${SOAK_INTERVAL:-60s}

cargo build --release --locked --workspace -q
folder=$(mktemp -d /tmp/totp-soak.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    scripts/ha-cluster.sh down "$folder" || true
}
trap cleanup EXIT
scripts/ha-cluster.sh up "$folder"
# shellcheck disable=SC1091
. "$folder/env"
export DATABASE_URL TOTP_DATA_DIR="$folder/service"
export TOTP_ENCRYPTION_KEYS="soak:$(head -c 32 /dev/urandom | base64)"
export TOTP_MAX_ATTEMPTS=3 TOTP_LOCKOUT_DURATION=1h TOTP_LOG_FORMAT=json
mkdir -p "$TOTP_DATA_DIR"

targets=()
for instance in 0 1; do
    TOTP_LISTEN=127.0.0.1:0 target/release/totp-service serve 2> "$folder/instance-$instance.log" &
    pids+=($!)
    for _ in $(seq 1 300); do
        address=$(sed -n 's/.*"address":"\([^"]*\)".*serving REST.*/\1/p; s/.*serving REST.*"address":"\([^"]*\)".*/\1/p' "$folder/instance-$instance.log" | head -n 1)
        [ -n "$address" ] && break
        sleep 0.1
    done
    [ -n "$address" ] || { cat "$folder/instance-$instance.log" >&2; exit 1; }
    targets+=(--target "http://$address" --pid "${pids[-1]}")
done
token=$(target/release/totp-service token --sub soak \
    --grant 'user.write@*' --grant 'user.read@*' --grant 'user.credential.write@*' --grant 'session.write@*')

target/release/totp-bench soak "${targets[@]}" --token "$token" \
    --duration "$duration" --interval "$interval" --max-attempts "$TOTP_MAX_ATTEMPTS"
