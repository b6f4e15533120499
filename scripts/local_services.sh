#!/usr/bin/env bash
# Find or start the PostgreSQL and Redis that `make run`, `make test` and CI use.
#
#   eval "$(scripts/local_services.sh env)"   # prints `export DATABASE_URL=…` / `export REDIS_URL=…`
#   scripts/local_services.sh stop            # stops only the throwaway servers under .data/
#   scripts/local_services.sh needs           # prints the Debian packages `env` would need, starts nothing
#
# For each service, in order: keep the URL already in the environment; else use a server
# answering on the standard localhost port; else start a throwaway one under <repo>/.data
# (PostgreSQL on 54329, Redis on 63799); else say what to install and exit 1.
# `env` writes only the export lines to stdout; all progress goes to stderr. Idempotent.
#
# Test-only overrides (so the fallback path can be exercised while real servers run):
#   OTTRECON_PG_PROBE_PORT     port probed for an existing PostgreSQL (default 5432)
#   OTTRECON_REDIS_PROBE_PORT  port probed for an existing Redis (default 6379)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DATA_DIR="$ROOT/.data"
PG_DATA="$DATA_DIR/postgres"
PG_SOCK="$DATA_DIR/pgsock"
PG_LOG="$DATA_DIR/postgres.log"
PG_PROBE_PORT="${OTTRECON_PG_PROBE_PORT:-5432}"
REDIS_PROBE_PORT="${OTTRECON_REDIS_PROBE_PORT:-6379}"
PG_LOCAL_PORT=54329
REDIS_LOCAL_PORT=63799
DB_NAME=ottrecon
WAIT_SECONDS=20
# Every client call below is bounded; a half-open port must never hang `make test`.
export PGCONNECT_TIMEOUT=3

log() { printf 'local_services: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# Run a command with a time limit when coreutils `timeout` exists (it does not on stock macOS).
bounded() {
    if command -v timeout >/dev/null 2>&1; then timeout 5 "$@"; else "$@"; fi
}

tcp_open() {  # tcp_open PORT: something accepts connections on 127.0.0.1:PORT
    # shellcheck disable=SC2016 # $1 expands in the child bash, by design
    bounded bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

# ---------------------------------------------------------------- PostgreSQL

pg_answers() {  # pg_answers PORT
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -t 2 -h 127.0.0.1 -p "$1"
    else
        tcp_open "$1"
    fi
}

# psql against 127.0.0.1:PORT as the trusted `postgres` superuser; PSQL may point into the server's bin dir.
pg_sql() {  # pg_sql PORT SQL
    "${PSQL:-psql}" -X -q -h 127.0.0.1 -p "$1" -U postgres -d postgres -v ON_ERROR_STOP=1 -Atc "$2"
}

ensure_database() {  # ensure_database PORT — creates $DB_NAME unless present; a concurrent creator is fine
    local port="$1"
    if [[ -n "$(pg_sql "$port" "select 1 from pg_database where datname = '$DB_NAME'")" ]]; then
        return 0
    fi
    if ! pg_sql "$port" "create database $DB_NAME" >/dev/null 2>&1 \
        && [[ -z "$(pg_sql "$port" "select 1 from pg_database where datname = '$DB_NAME'")" ]]; then
        die "could not create database $DB_NAME on 127.0.0.1:$port"
    fi
    log "created database $DB_NAME on 127.0.0.1:$port"
}

find_pg_bin() {  # prints the directory holding initdb and pg_ctl, or fails
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v pg_ctl)"
        return 0
    fi
    local dir
    # Debian/Ubuntu keep server binaries off PATH, one directory per major version.
    dir="$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
    [[ -x "$dir/initdb" && -x "$dir/pg_ctl" ]] || return 1
    printf '%s\n' "$dir"
}

# initdb, pg_ctl and postgres refuse to run as root, so as root they run as the `postgres` user.
as_pg() {
    if [[ "$(id -u)" != 0 ]]; then
        "$@"
    elif command -v runuser >/dev/null 2>&1; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && su postgres -s /bin/sh -c "$(printf '%q ' "$@")")
    fi
}

start_local_pg() {
    local bin
    bin="$(find_pg_bin)" || die "PostgreSQL not found: install it (Debian/Ubuntu: apt-get install postgresql;" \
        "macOS: brew install postgresql) or set DATABASE_URL"
    if [[ -x "$bin/psql" ]]; then PSQL="$bin/psql"; else PSQL=psql; fi

    take_lock
    mkdir -p "$PG_SOCK"
    if [[ "$(id -u)" == 0 ]]; then
        id -u postgres >/dev/null 2>&1 || die "running as root and there is no 'postgres' user to run" \
            "PostgreSQL as: create one (useradd -r postgres), run as a normal user, or set DATABASE_URL"
        [[ -d "$PG_DATA" ]] || install -d -m 700 "$PG_DATA"
        touch "$PG_LOG"
        chown postgres "$PG_SOCK" "$PG_LOG"
        [[ "$(stat -c %U "$PG_DATA")" == postgres ]] || chown -R postgres "$PG_DATA"
        as_pg test -w "$PG_DATA" || die "user 'postgres' cannot reach $PG_DATA (a parent directory is" \
            "not searchable); run as a normal user or set DATABASE_URL"
    fi

    if [[ ! -s "$PG_DATA/PG_VERSION" ]]; then
        log "initialising throwaway PostgreSQL cluster in $PG_DATA"
        as_pg "$bin/initdb" -D "$PG_DATA" -A trust -U postgres --no-sync -E UTF8 >"$DATA_DIR/initdb.log" 2>&1 \
            || die "initdb failed; see $DATA_DIR/initdb.log"
    fi
    local major
    major="$("$bin/pg_ctl" --version | sed -E 's/^[^0-9]*([0-9]+).*/\1/')"
    [[ "$(cat "$PG_DATA/PG_VERSION")" == "$major" ]] || die "$PG_DATA was created by PostgreSQL" \
        "$(cat "$PG_DATA/PG_VERSION") but $bin is $major: run '$0 stop && rm -rf $PG_DATA'"

    if ! as_pg "$bin/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
        log "starting throwaway PostgreSQL on 127.0.0.1:$PG_LOCAL_PORT (log: $PG_LOG)"
        as_pg "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$WAIT_SECONDS" \
            -o "-p $PG_LOCAL_PORT -k '$PG_SOCK' -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null 9>&- \
            || die "PostgreSQL did not start within ${WAIT_SECONDS}s; last log lines:
$(tail -n 5 "$PG_LOG" 2>/dev/null)"
    fi
    local i
    for ((i = 0; i < WAIT_SECONDS * 5; i++)); do
        pg_sql "$PG_LOCAL_PORT" 'select 1' >/dev/null 2>&1 && break
        sleep 0.2
    done
    pg_sql "$PG_LOCAL_PORT" 'select 1' >/dev/null || die "throwaway PostgreSQL on $PG_LOCAL_PORT does not answer"
    ensure_database "$PG_LOCAL_PORT"
    log "using throwaway PostgreSQL at 127.0.0.1:$PG_LOCAL_PORT"
    DATABASE_URL="postgresql://postgres@127.0.0.1:$PG_LOCAL_PORT/$DB_NAME"
}

resolve_database_url() {
    if [[ -n "${DATABASE_URL:-}" ]]; then
        log "using DATABASE_URL from the environment"
        return 0
    fi
    if command -v psql >/dev/null 2>&1 && pg_answers "$PG_PROBE_PORT" \
        && pg_sql "$PG_PROBE_PORT" 'select 1' >/dev/null 2>&1; then
        ensure_database "$PG_PROBE_PORT"
        log "using PostgreSQL at 127.0.0.1:$PG_PROBE_PORT"
        DATABASE_URL="postgresql://postgres@127.0.0.1:$PG_PROBE_PORT/$DB_NAME"
        return 0
    fi
    start_local_pg
}

# --------------------------------------------------------------------- Redis

redis_answers() {  # redis_answers PORT: the server replies PONG
    if command -v redis-cli >/dev/null 2>&1; then
        [[ "$(bounded redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" == PONG ]]
    else
        # shellcheck disable=SC2016 # $1 expands in the child bash, by design
        bounded bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf "PING\r\n" >&3 \
            && IFS= read -r -t 2 line <&3 && [[ "$line" == "+PONG"* ]]' _ "$1" 2>/dev/null
    fi
}

start_local_redis() {
    command -v redis-server >/dev/null 2>&1 || die "Redis not found: install it (Debian/Ubuntu:" \
        "apt-get install redis-server; macOS: brew install redis) or set REDIS_URL"
    take_lock
    if ! redis_answers "$REDIS_LOCAL_PORT"; then
        log "starting throwaway Redis on 127.0.0.1:$REDIS_LOCAL_PORT (log: $DATA_DIR/redis.log)"
        redis-server --port "$REDIS_LOCAL_PORT" --bind 127.0.0.1 --daemonize yes --save '' \
            --appendonly yes --appendfsync always \
            --dir "$DATA_DIR" --pidfile "$DATA_DIR/redis.pid" --logfile "$DATA_DIR/redis.log" >&2 9>&-
        local i
        for ((i = 0; i < WAIT_SECONDS * 5; i++)); do
            redis_answers "$REDIS_LOCAL_PORT" && break
            sleep 0.2
        done
        redis_answers "$REDIS_LOCAL_PORT" || die "Redis did not start within ${WAIT_SECONDS}s; last log lines:
$(tail -n 5 "$DATA_DIR/redis.log" 2>/dev/null)"
    fi
    log "using throwaway Redis at 127.0.0.1:$REDIS_LOCAL_PORT"
    REDIS_URL="redis://127.0.0.1:$REDIS_LOCAL_PORT/0"
}

resolve_redis_url() {
    if [[ -n "${REDIS_URL:-}" ]]; then
        log "using REDIS_URL from the environment"
    elif redis_answers "$REDIS_PROBE_PORT"; then
        log "using Redis at 127.0.0.1:$REDIS_PROBE_PORT"
        REDIS_URL="redis://127.0.0.1:$REDIS_PROBE_PORT/0"
    else
        start_local_redis
    fi
}

# ------------------------------------------------------------------ commands

# Serialise concurrent callers (parallel `make` targets) so only one of them initdb's or starts a server.
# Taken lazily: a machine whose servers are already running never gets a .data directory. The servers
# are started with fd 9 closed, or the daemons would inherit the lock and hold it forever.
LOCKED=0
take_lock() {
    mkdir -p "$DATA_DIR"
    [[ "$LOCKED" == 0 ]] || return 0
    LOCKED=1
    command -v flock >/dev/null 2>&1 || return 0
    exec 9>"$DATA_DIR/.lock"
    flock -w $((WAIT_SECONDS * 3)) 9 || die "another local_services.sh holds $DATA_DIR/.lock"
}

cmd_env() {
    resolve_database_url
    resolve_redis_url
    # %q keeps URLs with shell metacharacters (e.g. passwords) intact through the caller's eval.
    printf 'export DATABASE_URL=%q\n' "$DATABASE_URL"
    printf 'export REDIS_URL=%q\n' "$REDIS_URL"
}

cmd_stop() {
    [[ -d "$DATA_DIR" ]] || { log "nothing to stop"; return 0; }
    take_lock
    local bin
    if [[ -f "$PG_DATA/postmaster.pid" ]] && bin="$(find_pg_bin)" \
        && as_pg "$bin/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
        as_pg "$bin/pg_ctl" -D "$PG_DATA" -m fast -w -t "$WAIT_SECONDS" stop >/dev/null
        log "stopped throwaway PostgreSQL"
    fi
    local pid
    # Only the Redis whose pidfile we wrote: never shut down someone else's server on 63799.
    if [[ -f "$DATA_DIR/redis.pid" ]] && pid="$(cat "$DATA_DIR/redis.pid")" && kill -0 "$pid" 2>/dev/null; then
        bounded redis-cli -h 127.0.0.1 -p "$REDIS_LOCAL_PORT" shutdown nosave >/dev/null 2>&1 || kill "$pid"
        log "stopped throwaway Redis"
    fi
}

# What `env` would find missing, as Debian/Ubuntu package names (one per line); changes nothing.
# scripts/prerequisites.sh installs them or names them before `make test` runs anything.
cmd_needs() {
    if [[ -z "${DATABASE_URL:-}" ]] \
        && ! { command -v psql >/dev/null 2>&1 && pg_answers "$PG_PROBE_PORT" \
            && pg_sql "$PG_PROBE_PORT" 'select 1' >/dev/null 2>&1; } \
        && ! find_pg_bin >/dev/null; then
        echo postgresql
    fi
    if [[ -z "${REDIS_URL:-}" ]] && ! redis_answers "$REDIS_PROBE_PORT" && ! command -v redis-server >/dev/null 2>&1; then
        echo redis-server
    fi
}

case "${1:-}" in
    env) cmd_env ;;
    stop) cmd_stop ;;
    needs) cmd_needs ;;
    *)
        printf 'usage: %s env|stop|needs\n' "$0" >&2
        exit 2
        ;;
esac
