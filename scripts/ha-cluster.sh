#!/usr/bin/env bash
# A highly available Postgres on this machine, from Debian's own packages: etcd (the consensus
# store), two Postgres 15 nodes managed by Patroni in synchronous mode (a commit acknowledged to
# the service exists on both nodes), and HAProxy in front, sending connections to whichever node
# Patroni's REST API calls the primary. Everything listens on 127.0.0.1 on free ports; all data
# lives in one folder. The HA tests drive it; it is also the worked example of the README's
# "Running beyond one machine".
#
#   scripts/ha-cluster.sh up DIR            # start; writes DIR/env (DATABASE_URL=… through HAProxy)
#   scripts/ha-cluster.sh wait-healthy DIR  # until there is a primary and a streaming sync standby
#   scripts/ha-cluster.sh primary DIR       # the current primary's node name
#   scripts/ha-cluster.sh kill-primary DIR  # kill -9 the primary's postmaster (Patroni stays)
#   scripts/ha-cluster.sh switchover DIR    # planned switchover to the sync standby
#   scripts/ha-cluster.sh stop-all DIR      # every Postgres node down (Patroni paused: none restarts)
#   scripts/ha-cluster.sh start-all DIR     # the nodes up again, Patroni resumed
#   scripts/ha-cluster.sh psql DIR [ARGS]   # psql on the current primary
#   scripts/ha-cluster.sh down DIR          # stop everything (the folder stays)
#
# Installs patroni, etcd-server and haproxy with apt when missing (as root), and says so when it
# cannot.
set -euo pipefail

command=${1:?usage: ha-cluster.sh up|wait-healthy|primary|kill-primary|switchover|stop-all|start-all|psql|down DIR}
dir=${2:?the cluster folder}
shift 2
# Everything runs from / with the folder by its absolute name: etcd and Patroni run as the
# postgres user, and Patroni's helper processes fail (and its bootstrap hangs) in a current
# directory that user cannot enter, such as a root-only clone of the repository.
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
cd /
nodes=(node1 node2)

pg_bin=$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)")
as_postgres=()
[ "$(id -u)" = 0 ] && as_postgres=(runuser -u postgres --)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

install_missing() {
    local missing=()
    command -v patroni >/dev/null || missing+=(patroni)
    command -v etcd >/dev/null || missing+=(etcd-server)
    command -v haproxy >/dev/null || missing+=(haproxy)
    "$(dirname "$0")/install-packages.sh" "${missing[@]}"
}

patronictl_() { "${as_postgres[@]}" patronictl -c "$dir/node1.yml" "$@"; }

# The node whose Patroni REST API answers 200 on /primary (empty when none does).
primary() {
    local node
    for node in "${nodes[@]}"; do
        if curl -fs -o /dev/null --max-time 1 "http://127.0.0.1:$(cat "$dir/$node.api")/primary"; then
            echo "$node"
            return 0
        fi
    done
}

write_node_config() { # $1 = node name
    local node=$1
    cat > "$dir/$node.yml" <<YAML
scope: totp
name: $node
log:
  dir: $dir/log-$node
restapi:
  listen: 127.0.0.1:$(cat "$dir/$node.api")
  connect_address: 127.0.0.1:$(cat "$dir/$node.api")
etcd3:
  hosts: 127.0.0.1:$etcd_port
bootstrap:
  dcs:
    # A dead leader's lock expires after ttl; its Patroni renews it every loop_wait. The rule
    # loop_wait + 2 * retry_timeout <= ttl keeps a leader that is merely slow to reach etcd from
    # being deposed. Small values make failover fast on one machine, where etcd is never far.
    ttl: 10
    loop_wait: 1
    retry_timeout: 4
    # A crashed primary is not restarted in place (crash recovery could take long): the
    # synchronous standby, which has every acknowledged commit, takes over at once.
    master_start_timeout: 0
    # Every acknowledged commit is on the synchronous standby too, so the failover loses none.
    synchronous_mode: true
    postgresql:
      use_pg_rewind: true
      parameters:
        max_connections: 200
        wal_log_hints: "on"
        synchronous_commit: "on"
        fsync: "on"
        shared_buffers: 128MB
  initdb:
    - encoding: UTF8
    - auth: trust
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 trust
    - host replication all 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:$(cat "$dir/$node.pg")
  connect_address: 127.0.0.1:$(cat "$dir/$node.pg")
  data_dir: $dir/$node
  bin_dir: $pg_bin
  pgpass: $dir/$node.pgpass
  authentication:
    superuser:
      username: postgres
      password: postgres
    replication:
      username: replicator
      password: replicator
  parameters:
    unix_socket_directories: $dir
YAML
}

up() {
    install_missing
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    etcd_port=$(free_port)
    local peer_port; peer_port=$(free_port)
    "${as_postgres[@]}" etcd --name etcd --data-dir "$dir/etcd" \
        --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
        --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
        --initial-cluster "etcd=http://127.0.0.1:$peer_port" > "$dir/etcd.log" 2>&1 &
    echo $! > "$dir/etcd.pid"
    for _ in $(seq 1 100); do
        curl -fs "http://127.0.0.1:$etcd_port/health" >/dev/null 2>&1 && break
        sleep 0.1
    done

    local node servers=""
    for node in "${nodes[@]}"; do
        free_port > "$dir/$node.api"
        free_port > "$dir/$node.pg"
        write_node_config "$node"
        "${as_postgres[@]}" mkdir -p "$dir/log-$node"
        servers+="  server $node 127.0.0.1:$(cat "$dir/$node.pg") check port $(cat "$dir/$node.api")"$'\n'
    done
    [ "$(id -u)" = 0 ] && chown postgres "$dir"/*.yml
    # The first node bootstraps the cluster; the second is started once there is a primary to
    # copy (two nodes racing to bootstrap would make one wait for the other anyway).
    for node in "${nodes[@]}"; do
        "${as_postgres[@]}" patroni "$dir/$node.yml" > "$dir/$node.log" 2>&1 &
        echo $! > "$dir/$node.patroni.pid"
        for _ in $(seq 1 300); do
            [ -n "$(primary)" ] && break
            sleep 0.2
        done
    done

    local haproxy_port; haproxy_port=$(free_port)
    cat > "$dir/haproxy.cfg" <<CFG
global
    maxconn 2000
defaults
    mode tcp
    timeout connect 1s
    timeout client 1h
    timeout server 1h
    timeout check 1s
    # A refused connection is passed on to the client at once: the service answers 14 and its
    # client tries again, rather than HAProxy retrying a dead node with a 1 s pause each time.
    retries 0
listen primary
    bind 127.0.0.1:$haproxy_port
    # Patroni's REST API answers /primary with 200 only on the node that holds the leader lock
    # and runs as primary. Checked five times a second (cheap on loopback; a switchover is seen
    # within 200 ms); a node failing one check is out, and the connections still open to it are
    # cut, so no client keeps talking to a demoted primary.
    option httpchk GET /primary
    http-check expect status 200
    default-server inter 200ms fall 1 rise 1 on-marked-down shutdown-sessions
$servers
CFG
    haproxy -f "$dir/haproxy.cfg" -p "$dir/haproxy.pid" -D
    echo "DATABASE_URL=postgres://postgres@127.0.0.1:$haproxy_port/postgres" > "$dir/env"
    wait_healthy
}

# Until a node is primary, the other streams as the synchronous standby, and HAProxy reaches
# the primary (at most 120 s).
wait_healthy() {
    local url; url=$(sed -n 's/^DATABASE_URL=//p' "$dir/env")
    for _ in $(seq 1 600); do
        if patronictl_ list -f json 2>/dev/null | python3 -c '
import json, sys
members = json.load(sys.stdin)
roles = sorted(m["Role"] for m in members if m["State"] in ("running", "streaming"))
sys.exit(0 if roles == ["Leader", "Sync Standby"] else 1)' \
            && "$pg_bin/psql" -qAt "$url" -c "SELECT NOT pg_is_in_recovery()" 2>/dev/null | grep -qx t; then
            return 0
        fi
        sleep 0.2
    done
    echo "the cluster did not become healthy; patronictl says:" >&2
    patronictl_ list >&2 || true
    local node
    for node in "${nodes[@]}"; do
        echo "--- the end of $node's Patroni output and log:" >&2
        tail -n 15 "$dir/$node.log" "$dir/log-$node/patroni.log" >&2 2>/dev/null || true
    done
    exit 1
}

case "$command" in
    up) up ;;
    wait-healthy) wait_healthy ;;
    primary) primary ;;
    kill-primary)
        node=$(primary)
        [ -n "$node" ] || { echo "no primary to kill" >&2; exit 1; }
        kill -9 "$(head -n 1 "$dir/$node/postmaster.pid")"
        echo "$node"
        ;;
    switchover)
        leader=$(primary)
        candidate=$(for n in "${nodes[@]}"; do [ "$n" != "$leader" ] && echo "$n"; done | head -n 1)
        patronictl_ switchover --leader "$leader" --candidate "$candidate" --force >&2
        ;;
    stop-all)
        patronictl_ pause --wait >&2
        for node in "${nodes[@]}"; do
            "${as_postgres[@]}" "$pg_bin/pg_ctl" -D "$dir/$node" -m immediate stop >/dev/null 2>&1 || true
        done
        ;;
    start-all)
        # `restart` rather than `start`: Patroni passes the port and other settings on the
        # command line, and `restart` starts again with the options it finds in postmaster.opts.
        for node in "${nodes[@]}"; do
            "${as_postgres[@]}" "$pg_bin/pg_ctl" -D "$dir/$node" -l "$dir/$node.restart.log" -w restart >/dev/null 2>&1
        done
        patronictl_ resume --wait >&2
        ;;
    psql)
        node=$(primary)
        "$pg_bin/psql" -qAt -h 127.0.0.1 -p "$(cat "$dir/$node.pg")" -U postgres "$@"
        ;;
    down)
        for pidfile in "$dir"/*.patroni.pid "$dir/etcd.pid" "$dir/haproxy.pid"; do
            [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
        done
        for node in "${nodes[@]}"; do
            [ -f "$dir/$node/postmaster.pid" ] && \
                "${as_postgres[@]}" "$pg_bin/pg_ctl" -D "$dir/$node" -m immediate stop >/dev/null 2>&1 || true
        done
        ;;
    *) echo "unknown command $command" >&2; exit 2 ;;
esac
