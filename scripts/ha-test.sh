#!/usr/bin/env bash
# The HA tests (tests/ha): each starts its own Patroni cluster with scripts/ha-cluster.sh
# (installing patroni, etcd-server and haproxy with apt when missing) and two service instances
# on it, puts 32 clients of load on them while the primary fails, and audits the database after.
# One test at a time: each one loads both cores. About three minutes in all.
# Extra arguments go to the test binary (e.g. `scripts/ha-test.sh switchover`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --locked --features ha-tests --test ha -- --test-threads=1 --nocapture "$@"
