#!/bin/sh
# First start: a cluster owned by postgres whose superuser is $POSTGRES_USER with
# $POSTGRES_PASSWORD (scram), a database $POSTGRES_DB, reachable over the network. Then Postgres
# in the foreground as the postgres user.
set -eu
mkdir -p "$PGDATA"
chown postgres:postgres "$PGDATA"
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    printf '%s\n' "$POSTGRES_PASSWORD" > /tmp/password
    chown postgres /tmp/password
    runuser -u postgres -- initdb --username="$POSTGRES_USER" --pwfile=/tmp/password \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm /tmp/password
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    runuser -u postgres -- pg_ctl -w -o "-c listen_addresses=''" start >/dev/null
    runuser -u postgres -- psql -q --username="$POSTGRES_USER" --dbname=postgres \
        -c "CREATE DATABASE \"$POSTGRES_DB\""
    runuser -u postgres -- pg_ctl -w stop >/dev/null
fi
exec runuser -u postgres -- postgres -c listen_addresses='*'
