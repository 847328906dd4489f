# shellcheck shell=bash
# Throw-away PostgreSQL clusters for local development and tests.
#
# Source this file from a bash script, then:
#   pg_ensure_binaries          # install PostgreSQL if it is missing (root), or explain how
#   port="$(pg_free_port)"      # a port in 20000-40000 that nothing listens on
#   pg_start DIR PORT           # initdb DIR/data (once) and start; returns when it accepts connections
#   pg_stop DIR                 # stop it (immediately: the data is disposable)
#
# The cluster trusts every local connection (user `postgres`, no password), listens only on
# 127.0.0.1 and a unix socket inside DIR, and runs without fsync: it is for tests and must never
# hold data anyone wants to keep. As root, PostgreSQL refuses to run, so initdb and pg_ctl run as
# the `postgres` user and DIR is handed to that user.

# Where the PostgreSQL programs are. DIAGNOSIS_PG_BIN overrides the search.
PG_BIN="${DIAGNOSIS_PG_BIN:-}"

_pg_log() { printf '%s\n' "$*" >&2; }

_pg_is_root() { [[ "$(id -u)" == 0 ]]; }

# Runs a PostgreSQL program, as the postgres user when we are root.
_pg_run() {
    if _pg_is_root; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# Sets PG_BIN to the directory holding initdb: version 15 when present, else the newest installed.
_pg_find_bin() {
    if [[ -n "$PG_BIN" && -x "$PG_BIN/initdb" ]]; then
        return 0
    fi
    if [[ -x /usr/lib/postgresql/15/bin/initdb ]]; then
        PG_BIN=/usr/lib/postgresql/15/bin
        return 0
    fi
    local candidate
    candidate="$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/initdb' 2>/dev/null | sort -V | tail -n 1)"
    if [[ -n "$candidate" ]]; then
        PG_BIN="$(dirname "$candidate")"
        return 0
    fi
    return 1
}

# Makes sure initdb, pg_ctl and pg_isready exist, installing PostgreSQL with apt when root.
pg_ensure_binaries() {
    if ! _pg_find_bin; then
        if ! _pg_is_root; then
            _pg_log "PostgreSQL is not installed (no /usr/lib/postgresql/15/bin/initdb)."
            _pg_log "Install it, then run this again:"
            _pg_log "    sudo apt-get update && sudo apt-get install -y postgresql-15"
            _pg_log "(or set DIAGNOSIS_PG_BIN to the directory that holds initdb and pg_ctl)"
            return 1
        fi
        _pg_log "PostgreSQL is not installed; installing it with apt-get (about a minute)..."
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        if ! apt-get install -y -qq postgresql-15 >/dev/null 2>&1; then
            apt-get install -y -qq postgresql >/dev/null
        fi
        if ! _pg_find_bin; then
            _pg_log "apt-get installed PostgreSQL, but no initdb was found under /usr/lib/postgresql."
            return 1
        fi
    fi
    if _pg_is_root && ! id -u postgres >/dev/null 2>&1; then
        _pg_log "PostgreSQL refuses to run as root and there is no 'postgres' user to run it as."
        _pg_log "Create one (useradd --system postgres) or reinstall the postgresql package."
        return 1
    fi
    return 0
}

# True when something accepts TCP connections on 127.0.0.1:PORT.
_pg_port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Prints a port in 20000-40000 that nothing listens on.
pg_free_port() {
    local attempt port
    for attempt in $(seq 1 100); do
        port=$((20000 + RANDOM % 20001))
        if ! _pg_port_in_use "$port"; then
            printf '%s\n' "$port"
            return 0
        fi
    done
    _pg_log "could not find a free port in 20000-40000 after $attempt attempts"
    return 1
}

# pg_start DIR PORT: creates the cluster in DIR/data on first use and starts it on PORT.
# DIR also holds the unix socket and the server log (DIR/postgres.log). As root, DIR is given to
# the postgres user, which must be able to reach it: pass a directory made by `mktemp -d` itself,
# not a folder inside it (mktemp makes its directory private).
pg_start() {
    local dir="$1" port="$2"
    _pg_find_bin || { _pg_log "pg_start: call pg_ensure_binaries first"; return 1; }
    mkdir -p "$dir"
    if _pg_is_root; then
        chown postgres: "$dir"
        if ! runuser -u postgres -- test -w "$dir"; then
            _pg_log "pg_start: the postgres user cannot write to $dir (is a parent directory private?)."
            _pg_log "Use a directory it can reach, e.g. one made by mktemp -d under /tmp."
            return 1
        fi
    fi
    if [[ ! -f "$dir/data/PG_VERSION" ]]; then
        if ! _pg_run "$PG_BIN/initdb" --pgdata="$dir/data" --no-sync --auth=trust --username=postgres \
            --encoding=UTF8 --locale=C >"$dir/initdb.log" 2>&1; then
            _pg_log "initdb failed:"
            cat "$dir/initdb.log" >&2
            return 1
        fi
        # Quoted for postgresql.conf: a single quote is doubled.
        local socket_dir="${dir//\'/\'\'}"
        _pg_run tee -a "$dir/data/postgresql.conf" >/dev/null <<EOF

# Disposable test cluster: speed over durability.
listen_addresses = '127.0.0.1'
unix_socket_directories = '$socket_dir'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
logging_collector = off
EOF
    fi
    if ! _pg_run "$PG_BIN/pg_ctl" --pgdata="$dir/data" --log="$dir/postgres.log" \
        --options="-p $port" --wait --timeout=60 --silent start >/dev/null; then
        _pg_log "PostgreSQL did not start on port $port; its log ($dir/postgres.log) ends with:"
        tail -n 20 "$dir/postgres.log" >&2 2>/dev/null || true
        return 1
    fi
    local waited
    for waited in $(seq 1 300); do
        if "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres; then
            return 0
        fi
        sleep 0.1
    done
    _pg_log "PostgreSQL started but does not accept connections on 127.0.0.1:$port after ${waited} tries"
    return 1
}

# pg_stop DIR: stops the cluster in DIR if it runs. Never fails.
pg_stop() {
    local dir="$1"
    _pg_find_bin || return 0
    if [[ -f "$dir/data/postmaster.pid" ]]; then
        _pg_run "$PG_BIN/pg_ctl" --pgdata="$dir/data" --mode=immediate --wait --silent stop \
            >/dev/null 2>&1 || true
    fi
    return 0
}
