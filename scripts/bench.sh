#!/usr/bin/env bash
# The benchmark: builds in release, starts a throwaway Postgres (fsync and synchronous_commit on),
# measures its ceiling with pgbench running the service's own write shape, then runs the load
# generator against the service on that Postgres, then pgbench again (the table takes the better
# of the two); then the same on the embedded SQLite default with its own ceiling. The database is
# vacuumed and checkpointed before every measured run. Prints one table, then the cross-check's
# medians and the one-client bound. Traffic stays on 127.0.0.1; the run takes ~9 minutes.
#
#   scripts/bench.sh                  # full matrix, 3 s per run (~9 minutes)
#   DURATION=2s CONCURRENCY=1,32 PROTOCOLS=rest SCENARIOS=check-valid DATABASES=postgres scripts/bench.sh
#
# A/B of builds: VARIANTS="a=/path/to/totp-service,b=/other/totp-service" runs the Postgres pass
# and the SQLite pass once per variant in the order a b … b a (so drift over the run hits each
# variant alike), each row labelled postgres-<name> or sqlite-<name>; the cold pass runs only with
# the first variant.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-3s}
CONCURRENCY=${CONCURRENCY:-1,8,32}
PROTOCOLS=${PROTOCOLS:-rest,grpc,grpc-web}
SCENARIOS=${SCENARIOS:-check-valid,check-wrong,check-locked,verify}
DATABASES=${DATABASES:-postgres,sqlite}
VARIANTS=${VARIANTS:-}
seconds=${DURATION%s}

cargo build --release --locked --workspace --bins >&2
bin=target/release
work=$(mktemp -d /tmp/totp-bench.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    [ -n "${pg_bin:-}" ] && "${as_postgres[@]}" "$pg_bin/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_ready() {
    for _ in $(seq 1 100); do
        curl -fs "http://127.0.0.1:$1/readyz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "service on port $1 did not become ready" >&2
    exit 1
}

results=$work/results.jsonl

service_bin=$bin/totp-service
run_service() { # $1 = label, rest = env assignments; runs $service_bin
    local label=$1; shift
    local port; port=$(free_port)
    mkdir -p "$work/$label"
    env "$@" TOTP_DATA_DIR="$work/$label" TOTP_LISTEN="127.0.0.1:$port" TOTP_MAX_ATTEMPTS=1000000000 \
        RUST_LOG=warn "$service_bin" serve > "$work/$label.log" 2>&1 &
    pids+=($!)
    service_pid=$!
    wait_ready "$port"
    local token
    token=$(TOTP_DATA_DIR="$work/$label" "$service_bin" token --sub bench \
        --grant 'user.write@*' --grant 'user.credential.write@*' --grant 'session.write@*')
    "$bin/totp-bench" run --json --target "http://127.0.0.1:$port" --token "$token" \
        --duration "$DURATION" --concurrency "$CONCURRENCY" --protocols "$PROTOCOLS" --scenarios "$SCENARIOS" \
        --service-pid "$service_pid" ${database_pid:+--database-pid "$database_pid"} \
        ${database_url:+--settle-database "$database_url"} | sed "s/^{/{\"database\":\"$label\",/" >> "$results" \
        || echo "the load generator saw unexpected outcomes (see the unexp column)" >&2
    # Before the cross-check, which pins the service to one core.
    if [ -n "$http_floor" ]; then measure_http_floor "$label" "$port"; fi
    if [ -n "$wrk_users" ]; then cross_check_with_wrk "$label" "$port" "$token"; fi
    kill "$service_pid"
}

# The cross-check by a load tool the project did not write: wrk (Debian's package) and totp-bench
# each send CheckTOTP over REST for one locked user with a TOTP at the highest concurrency, which
# the service refuses (it reads the user, writes nothing), so every request is alike and none needs
# a fresh code. The two take turns, wrk first, CROSS_CHECK_ROUNDS times each for DURATION: this
# VM's speed drifts by more than 10 % within seconds, and turns let the drift hit both tools alike.
# Each tool runs one thread (totp-bench's runtime is single-threaded; `wrk -t 1`). Each turn is a
# row ("rest (wrk)" and "rest (one user)"); the table ends with both medians.
# On a machine with two cores or more the service runs on the first core and each tool on the
# second for the cross-check: sharing cores, the tool that costs more CPU per request takes more of
# the service's time and reports a lower rate (totp-bench's own CPU per request is in the gen
# column of every row), whereas the check is about whether the two count and time alike.
# unexpected counts any answer but the refusal (HTTP 400 with COMMAND-SF3fg) and socket errors.
CROSS_CHECK_ROUNDS=${CROSS_CHECK_ROUNDS:-5}
wrk_users= http_floor=
if [[ ",$PROTOCOLS," == *,rest,* && ",$SCENARIOS," == *,check-locked,* ]]; then wrk_users=yes; fi
if [[ ",$CONCURRENCY," == *,1,* ]]; then http_floor=yes; fi
if [ -n "$wrk_users$http_floor" ] && ! scripts/install-packages.sh $(command -v wrk >/dev/null || echo wrk); then
    echo "without wrk, the cross-check and the one-client bound are left out" >&2
    wrk_users= http_floor=
fi

# The floor at one client: what one HTTP exchange that does nothing (GET /healthz) costs on this
# machine, client and service together, measured by wrk with one connection. A request at one
# client is such an exchange plus the service's work plus its commit, so the table ends with the
# most a service doing no work of its own could answer (see the lines printed after the table).
measure_http_floor() { # $1 = label, $2 = port
    case $1 in *-cold) return ;; esac
    wrk -t 1 -c 1 -d "$DURATION" "http://127.0.0.1:$2/healthz" > "$work/floor.out"
    local rps; rps=$(sed -n 's/^Requests\/sec:[[:space:]]*\([0-9.]*\).*/\1/p' "$work/floor.out")
    echo "{\"floor\":\"http\",\"database\":\"$1\",\"rps\":$rps}" >> "$results"
}
cross_check_with_wrk() { # $1 = label, $2 = port, $3 = token
    case $1 in *-cold) return ;; esac
    local base="http://127.0.0.1:$2" user="wrk-$RANDOM$RANDOM" connections=${CONCURRENCY##*,} round
    curl -fsS -o /dev/null -H "Authorization: Bearer $3" -H 'Content-Type: application/json' \
        -d "{\"userId\":\"$user\",\"organization\":{\"orgId\":\"bench\"},\"profile\":{\"givenName\":\"W\",\"familyName\":\"R\"},\"email\":{\"email\":\"$user@bench.test\"},\"totpSecret\":\"JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP\"}" \
        "$base/v2/users/human"
    curl -fsS -o /dev/null -X POST -H "Authorization: Bearer $3" "$base/v2/users/$user/lock"
    local on_own_core=()
    if [ "$(nproc)" -ge 2 ]; then
        taskset -a -p -c 0 "$service_pid" >/dev/null
        on_own_core=(taskset -c 1)
    fi
    for round in $(seq 1 "$CROSS_CHECK_ROUNDS"); do
        TOTP_TOKEN=$3 "${on_own_core[@]}" wrk -t 1 -c "$connections" -d "$DURATION" --latency -s scripts/wrk/check-locked.lua \
            "$base/v2/users/$user/totp/check" > "$work/wrk.out"
        python3 - "$work/wrk.out" "$1" "$connections" >> "$results" <<'PY'
import json, re, sys
text = open(sys.argv[1]).read()
rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", text).group(1))
value, unit = re.search(r"\n\s+99%\s+([0-9.]+)(us|ms|s)", text).groups()
p99_ms = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
unexpected = int(re.search(r"unexpected answers: (\d+)", text).group(1)) + errors
print(json.dumps({"database": sys.argv[2], "scenario": "check-locked", "protocol": "rest (wrk)",
                  "concurrency": int(sys.argv[3]), "rps": rps, "p99_ms": p99_ms, "unexpected": unexpected}))
PY
        # totp-bench with a pool of one locked user: the same request as wrk's.
        "${on_own_core[@]}" "$bin/totp-bench" run --json --target "$base" --token "$3" --duration "$DURATION" \
            --concurrency "$connections" --protocols rest --scenarios check-locked --pool 1 \
            --service-pid "$service_pid" ${database_pid:+--database-pid "$database_pid"} \
            | sed -e "s/^{/{\"database\":\"$1\",/" -e 's/"protocol":"rest"/"protocol":"rest (one user)"/' >> "$results" \
            || echo "the load generator saw unexpected outcomes in the cross-check" >&2
    done
}

# Runs the service's pass on database $1 (postgres | sqlite) with the build, or with each variant
# in the order a b … b a; the rest of the arguments are the service's settings.
run_each_variant() {
    local database=$1; shift
    if [ -z "$VARIANTS" ]; then
        echo "load on the service ($database) ..." >&2
        run_service "$database" "$@"
        return
    fi
    local variants order variant name i
    IFS=, read -r -a variants <<< "$VARIANTS"
    order=("${variants[@]}")
    for (( i=${#variants[@]}-1; i>=0; i-- )); do order+=("${variants[i]}"); done
    for variant in "${order[@]}"; do
        name=${variant%%=*} service_bin=${variant#*=}
        echo "load on the service ($database, variant $name: $service_bin) ..." >&2
        run_service "$database-$name" "$@"
        rm -rf "${work:?}/$database-$name"
    done
    service_bin=${variants[0]#*=}
}

# ---- Postgres ----------------------------------------------------------------------------------
# (not indented: the heredoc below must start its lines)
if [[ ",$DATABASES," == *,postgres,* ]]; then
pg_bin=$(dirname "$(readlink -f "$(command -v initdb 2>/dev/null || ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)")")
as_postgres=()
mkdir -p "$work/pg"
if [ "$(id -u)" = 0 ]; then chown postgres "$work" "$work/pg"; as_postgres=(runuser -u postgres --); fi
"${as_postgres[@]}" "$pg_bin/initdb" -D "$work/pg" -U postgres -A trust >/dev/null
pg_port=$(free_port)
"${as_postgres[@]}" "$pg_bin/pg_ctl" -w -D "$work/pg" -l "$work/pg.log" \
    -o "-p $pg_port -k $work -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on -c max_connections=200 -c shared_buffers=256MB" \
    start >/dev/null
database_url="postgres://postgres@127.0.0.1:$pg_port/postgres"
database_pid=$(head -n 1 "$work/pg/postmaster.pid")
echo "Postgres on port $pg_port (fsync on, synchronous_commit on)" >&2

# The ceiling: the service's write shape (one read, one single-statement conditional write with
# an event insert and a TOTP update), on 10,000 users, in pgbench with prepared statements.
DATABASE_URL=$database_url "$bin/totp-service" migrate >&2
psql_() { "$pg_bin/psql" -q -h 127.0.0.1 -p "$pg_port" -U postgres "$@"; }
psql_ -c "INSERT INTO users SELECT 'pgb-' || n, 'bench', 'pgb-' || n, 'pgb', 0, '{}', 'active', 1, 0, 0, 0, NULL, 0 FROM generate_series(1, 10000) n;
          INSERT INTO totp SELECT 'pgb-' || n, 'ready', 'k', '\\x00', 6, 30, 0, 0 FROM generate_series(1, 10000) n;"
cat > "$work/write.sql" <<'SQL'
\set n random(1, 10000)
SELECT u.version, u.sequence, t.last_used_step FROM users u LEFT JOIN totp t ON t.user_id = u.user_id WHERE u.user_id = 'pgb-' || :n;
WITH u AS (UPDATE users SET sequence = sequence + 1, change_date = 1, version = version + 1 WHERE user_id = 'pgb-' || :n RETURNING user_id, sequence), e AS (INSERT INTO events SELECT user_id, sequence, 'bench', '{}', 'bench', 'pgbench', 1 FROM u), t AS (UPDATE totp SET last_used_step = last_used_step + 1 WHERE user_id IN (SELECT user_id FROM u)) SELECT user_id FROM u;
SQL
# The write alone (no read before it): what one request's commit costs Postgres at one client.
grep -v '^SELECT' "$work/write.sql" > "$work/commit.sql"
# Measured before and again after the service's runs; the table takes the better of the two for
# each number, so a VM that speeds up or slows down during the run does not flatter the service.
measure_ceiling() { # $1 = before | after
    for c in ${CONCURRENCY//,/ }; do
        # As before each of the service's runs (the load generator's --settle-database): the
        # upkeep the last writes set off is done before the run, not during it.
        psql_ -c "VACUUM (ANALYZE) users, totp, events" -c "CHECKPOINT"
        rm -f "$work"/pgbench_log.*
        (cd "$work" && "$pg_bin/pgbench" -n -M prepared -h 127.0.0.1 -p "$pg_port" -U postgres -c "$c" -j 2 -T "$seconds" \
            -f write.sql -l --log-prefix=pgbench_log postgres > pgbench.out 2>&1)
        tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$work/pgbench.out")
        p99=$(cat "$work"/pgbench_log.* | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {i=int(NR*0.99); if (i<1) i=1; printf "%.2f", a[i]/1000}')
        echo "{\"ceiling\":\"postgres\",\"concurrency\":$c,\"rps\":$tps,\"p99_ms\":$p99,\"when\":\"$1\"}" >> "$results"
        echo "pgbench c=$c ($1): $tps tx/s, p99 $p99 ms" >&2
        if [ "$c" = 1 ]; then
            (cd "$work" && "$pg_bin/pgbench" -n -M prepared -h 127.0.0.1 -p "$pg_port" -U postgres -c 1 -T "$seconds" \
                -f commit.sql postgres > pgbench.out 2>&1)
            tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$work/pgbench.out")
            echo "{\"ceiling\":\"postgres-commit\",\"concurrency\":1,\"rps\":$tps,\"p99_ms\":0,\"when\":\"$1\"}" >> "$results"
            echo "pgbench c=1, the write alone ($1): $tps tx/s" >&2
        fi
    done
}
measure_ceiling before

run_each_variant postgres DATABASE_URL="$database_url" TOTP_DB_MAX_CONNECTIONS=40

# The same targets with the user cache off ("postgres-cold"): every command reads the database
# first, as when a user has not been seen for a while. At the highest concurrency only.
only() { tr ',' '\n' <<< "$1" | grep -xE "$2" | paste -sd, - || true; }
cold_scenarios=$(only "$SCENARIOS" 'check-valid|verify')
cold_protocols=$(only "$PROTOCOLS" 'rest|grpc')
if [ -n "$cold_scenarios" ] && [ -n "$cold_protocols" ]; then
    echo "load on the service (Postgres, user cache off) ..." >&2
    CONCURRENCY=${CONCURRENCY##*,} SCENARIOS=$cold_scenarios PROTOCOLS=$cold_protocols \
        run_service postgres-cold DATABASE_URL="$database_url" TOTP_DB_MAX_CONNECTIONS=40 TOTP_USER_CACHE_SIZE=0
fi
measure_ceiling after
fi

if [[ ",$DATABASES," == *,sqlite,* ]]; then
    echo "SQLite ceiling and load on the service (SQLite) ..." >&2
    mkdir -p "$work/ceiling"
    "$bin/totp-bench" ceiling-sqlite --json --path "$work/ceiling/ceiling.db" --duration "$DURATION" \
        --concurrency "$CONCURRENCY" >> "$results"
    database_pid= database_url=  # SQLite runs inside the service
    run_each_variant sqlite
fi

python3 - "$results" "$(nproc)" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
# A ceiling measured twice (Postgres: before and after the service's runs) counts at its best:
# the higher rate and the lower p99.
ceilings = {}
for r in rows:
    if "ceiling" in r:
        best = ceilings.setdefault((r["ceiling"], r["concurrency"]), dict(r))
        best["rps"] = max(best["rps"], r["rps"])
        best["p99_ms"] = min(best["p99_ms"], r["p99_ms"])
print(f"machine: {sys.argv[2]} cores; ratio = service req/s / ceiling tx/s at the same concurrency")
print(f"{'database':<13} {'scenario':<13} {'protocol':<15} {'conc':>4} {'req/s':>8} {'p99 ms':>8} {'ceiling':>8} {'ceil p99':>8} {'ratio':>6} {'unexp':>5} {'cpu ms/1k':>9} {'peak RSS':>8} {'db ms/1k':>8} {'gen ms/1k':>9}")
for r in rows:
    if "ceiling" in r or "floor" in r:
        continue
    ceiling = ceilings.get((r["database"].split("-")[0], r["concurrency"]), {})
    ratio = r["rps"] / ceiling["rps"] if ceiling.get("rps") else float("nan")
    cpu = r.get("cpu_ms_per_1k")
    rss = r.get("peak_rss_mib")
    db = r.get("db_cpu_ms_per_1k")
    gen = r.get("generator_cpu_ms_per_1k")
    print(f"{r['database']:<13} {r['scenario']:<13} {r['protocol']:<15} {r['concurrency']:>4} {r['rps']:>8.0f} {r['p99_ms']:>8.2f} "
          f"{ceiling.get('rps', float('nan')):>8.0f} {ceiling.get('p99_ms', float('nan')):>8.2f} {ratio:>6.2f} {r['unexpected']:>5} "
          f"{'-' if cpu is None else f'{cpu:.0f}':>9} {'-' if rss is None else f'{rss:.1f} MiB':>8} {'-' if db is None else f'{db:.0f}':>8} {'-' if gen is None else f'{gen:.0f}':>9}")
# The cross-check: the median of each tool's turns on one database, and how far apart they are.
for database in dict.fromkeys(r["database"] for r in rows if r.get("protocol") == "rest (wrk)"):
    medians = {}
    for tool in ("rest (one user)", "rest (wrk)"):
        rates = sorted(r["rps"] for r in rows if r.get("database") == database and r.get("protocol") == tool)
        if rates:
            middle = len(rates) // 2
            medians[tool] = rates[middle] if len(rates) % 2 else (rates[middle - 1] + rates[middle]) / 2
    if len(medians) == 2:
        ours, wrk = medians["rest (one user)"], medians["rest (wrk)"]
        print(f"cross-check on {database}: totp-bench {ours:.0f} req/s, wrk {wrk:.0f} req/s (medians); "
              f"totp-bench/wrk = {ours / wrk:.3f}")
# The bound at one client: an HTTP exchange that does nothing, then the commit alone (Postgres:
# pgbench running only the write statement; SQLite: its ceiling's transaction, whose read costs
# microseconds in place). A service that did no work of its own could answer no faster.
for floor in (r for r in rows if r.get("floor") == "http"):
    database = floor["database"]
    kind = database.split("-")[0]
    commit = ceilings.get((f"{kind}-commit" if kind == "postgres" else kind, 1), {}).get("rps")
    ceiling = ceilings.get((kind, 1), {}).get("rps")
    if not commit or not ceiling:
        continue
    exchange_us, commit_us = 1e6 / floor["rps"], 1e6 / commit
    bound = 1e6 / (exchange_us + commit_us)
    best = max((r["rps"] for r in rows if r.get("database") == database and r.get("concurrency") == 1
                and r.get("scenario") in ("check-valid", "verify")), default=0)
    print(f"one client on {database}: nothing-doing HTTP exchange {exchange_us:.0f} us (wrk, GET /healthz) + "
          f"commit alone {commit_us:.0f} us = at most {bound:.0f} req/s, ratio <= {bound / ceiling:.2f}; "
          f"best writing row {best:.0f} req/s = {best / bound:.2f} of that bound")
PY
