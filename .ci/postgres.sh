#!/usr/bin/env bash
# A throwaway PostgreSQL server for the deploy tests, on 127.0.0.1 only.
#
#   .ci/postgres.sh start DATADIR [PORT]   initdb if needed, start if not running, create the
#                                          dagster role and database if missing; prints the
#                                          `export DAGSTER_PG_...` lines for eval
#   .ci/postgres.sh stop DATADIR
#
# Idempotent: a second start finds the cluster running and only prints the exports. The role
# may create databases: the tests make a fresh one each and drop it afterwards.
# Installs PostgreSQL from Debian packages when PG_INSTALL=1 and no server binaries exist.
# Run as root, the server runs as the `postgres` user (PostgreSQL refuses root).
set -euo pipefail

action=${1:?start or stop}
datadir=${2:?data directory}
port=${3:-55432}
user=dagster
password=dagster
db=dagster

log() { echo "postgres.sh: $*" >&2; }

bindir() {
    local dir
    for dir in /usr/lib/postgresql/*/bin; do
        [[ -x "$dir/pg_ctl" ]] && { echo "$dir"; return 0; }
    done
    command -v pg_ctl >/dev/null 2>&1 && { dirname "$(command -v pg_ctl)"; return 0; }
    return 1
}

if ! bin=$(bindir); then
    if [[ "${PG_INSTALL:-0}" == 1 ]]; then
        log "installing postgresql from Debian packages"
        sudo_cmd=()
        [[ $(id -u) == 0 ]] || sudo_cmd=(sudo)
        "${sudo_cmd[@]}" apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq postgresql >&2
        bin=$(bindir)
    else
        log "no PostgreSQL server binaries (pg_ctl) found"
        exit 3
    fi
fi

# As root, run everything PostgreSQL as its own user.
as_owner=()
if [[ $(id -u) == 0 ]]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql postgres
    as_owner=(runuser -u postgres --)
fi

if [[ "$action" == stop ]]; then
    if [[ -f "$datadir/postmaster.pid" ]]; then
        "${as_owner[@]}" "$bin/pg_ctl" -D "$datadir" -m fast -w stop >&2
    fi
    exit 0
fi
[[ "$action" == start ]] || { log "unknown action $action"; exit 2; }

mkdir -p "$datadir"
[[ ${#as_owner[@]} == 0 ]] || chown postgres "$datadir"
if [[ ! -f "$datadir/PG_VERSION" ]]; then
    "${as_owner[@]}" "$bin/initdb" -D "$datadir" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
        --no-instructions >/dev/null
fi
if ! "${as_owner[@]}" "$bin/pg_ctl" -D "$datadir" status >/dev/null 2>&1; then
    "${as_owner[@]}" "$bin/pg_ctl" -D "$datadir" -w -t 60 -l "$datadir/server.log" \
        -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories='$datadir'" \
        start >&2
fi

# The superuser over the cluster's own socket (trust); dagster over TCP with its password.
psql_admin=("${as_owner[@]}" "$bin/psql" -h "$datadir" -p "$port" -U postgres -d postgres -qtA -v ON_ERROR_STOP=1)
if [[ -z $("${psql_admin[@]}" -c "select 1 from pg_roles where rolname = '$user'") ]]; then
    "${psql_admin[@]}" -c "create role $user login createdb password '$password'"
fi
if [[ -z $("${psql_admin[@]}" -c "select 1 from pg_database where datname = '$db'") ]]; then
    "${psql_admin[@]}" -c "create database $db owner $user"
fi

cat <<EXPORTS
export DAGSTER_PG_HOST=127.0.0.1
export DAGSTER_PG_PORT=$port
export DAGSTER_PG_USERNAME=$user
export DAGSTER_PG_PASSWORD=$password
export DAGSTER_PG_DB=$db
EXPORTS
