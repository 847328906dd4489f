# shellcheck shell=bash
# Throw-away PostgreSQL clusters for local development and tests.
#
# Source this file from a bash script, then:
#   pg_ensure_binaries          # install PostgreSQL if it is missing (root), or explain how
#   port="$(pg_free_port)"      # a port from 20000 up, below the kernel's outgoing ports, that nothing listens on
#   pg_start DIR PORT           # initdb DIR/data (once) and start; returns when it accepts connections
#   pg_stop DIR                 # stop it (immediately: the data is disposable)
#   pg_restart DIR              # pg_ctl restart -m fast -w: what an operator's restart does
#   pg_setting DIR 'name = v'   # add a line to postgresql.conf (read at the next (re)start)
#   pg_enable_tls DIR PORT      # a started cluster then accepts only TLS on TCP (restarts it)
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

# Prints a port from 20000 up that nothing listens on, below the range the kernel takes ports for
# outgoing connections from (net.ipv4.ip_local_port_range, usually from 32768): a port from that
# range may be taken by any process's outgoing connection between this check and the bind.
pg_free_port() {
    local attempt port low=20000 high=40000 outgoing_start
    if read -r outgoing_start _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null &&
        ((outgoing_start > low + 1000)); then
        high=$((outgoing_start - 1))
    fi
    for attempt in $(seq 1 100); do
        port=$((low + RANDOM % (high - low + 1)))
        if ! _pg_port_in_use "$port"; then
            printf '%s\n' "$port"
            return 0
        fi
    done
    _pg_log "could not find a free port in $low-$high after $attempt attempts"
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

# pg_enable_tls DIR PORT: turns the cluster of DIR (started with pg_start on PORT) into one that
# accepts TCP connections only over TLS, and restarts it. openssl generates, in DIR/tls:
#   ca.crt        the test CA, which signed the server certificate
#   server.crt    the server certificate: SAN IP:127.0.0.1 and DNS:localhost
#   server.key    its key (mode 0600, owned by the cluster's user, as PostgreSQL insists)
#   other-ca.crt  an unrelated CA, which a client must refuse
# pg_hba.conf then holds `hostssl all all 127.0.0.1/32 trust` and refuses every plain TCP
# connection (`hostnossl ... reject`); local (unix socket) connections stay trusted.
pg_enable_tls() {
    local dir="$1" port="$2" tls="$1/tls"
    command -v openssl >/dev/null 2>&1 || { _pg_log "pg_enable_tls: openssl is needed"; return 1; }
    mkdir -p "$tls"
    local log="$tls/openssl.log"
    {
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3 \
            -subj "/CN=Diagnosis Server test CA" -keyout "$tls/ca.key" -out "$tls/ca.crt" &&
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3 \
                -subj "/CN=Unrelated test CA" -keyout "$tls/other-ca.key" -out "$tls/other-ca.crt" &&
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                -subj "/CN=localhost" -keyout "$tls/server.key" -out "$tls/server.csr" &&
            printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=CA:FALSE" \
                "keyUsage=digitalSignature" "extendedKeyUsage=serverAuth" >"$tls/server.ext" &&
            openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" \
                -CAcreateserial -days 3 -extfile "$tls/server.ext" -out "$tls/server.crt"
    } >"$log" 2>&1 || {
        _pg_log "pg_enable_tls: openssl failed:"
        cat "$log" >&2
        return 1
    }
    chmod 0600 "$tls/server.key" "$tls/ca.key" "$tls/other-ca.key"
    chmod 0644 "$tls/ca.crt" "$tls/other-ca.crt" "$tls/server.crt"
    if _pg_is_root; then
        chown -R postgres: "$tls"
    fi
    # Quoted for postgresql.conf: a single quote is doubled.
    local quoted="${tls//\'/\'\'}"
    _pg_run tee -a "$dir/data/postgresql.conf" >/dev/null <<EOF

# TLS only on TCP (pg_enable_tls).
ssl = on
ssl_cert_file = '$quoted/server.crt'
ssl_key_file = '$quoted/server.key'
EOF
    _pg_run tee "$dir/data/pg_hba.conf" >/dev/null <<'EOF'
# TYPE    DATABASE  USER  ADDRESS       METHOD
local     all       all                 trust
hostssl   all       all   127.0.0.1/32  trust
hostnossl all       all   0.0.0.0/0     reject
EOF
    pg_stop "$dir"
    pg_start "$dir" "$port"
}

# pg_restart DIR: restarts the cluster in DIR (started with pg_start) as an operator would: a fast
# shutdown (sessions are ended, open transactions roll back, a checkpoint is written), then a
# start on the same port; returns when it accepts connections again. pg_ctl restart reads the
# options of the last start from postmaster.opts; the log is named again so that the new server
# does not write to pg_ctl's own output.
pg_restart() {
    local dir="$1"
    _pg_find_bin || { _pg_log "pg_restart: call pg_ensure_binaries first"; return 1; }
    if ! _pg_run "$PG_BIN/pg_ctl" --pgdata="$dir/data" --log="$dir/postgres.log" --mode=fast \
        --wait --timeout=60 --silent restart >/dev/null; then
        _pg_log "PostgreSQL did not restart; its log ($dir/postgres.log) ends with:"
        tail -n 20 "$dir/postgres.log" >&2 2>/dev/null || true
        return 1
    fi
}

# pg_setting DIR LINE: appends LINE (`name = value`, quoted for postgresql.conf) to the cluster's
# postgresql.conf, where it overrides earlier lines from the next start or restart on.
pg_setting() {
    local dir="$1" line="$2"
    printf '%s\n' "$line" | _pg_run tee -a "$dir/data/postgresql.conf" >/dev/null
}

# pg_start_restartable DIR: starts a cluster in DIR that callers may restart, committing as
# production does (synchronous_commit = on), on a free local port (three attempts); restarts it
# once, which proves the restart works before anything relies on it. Sets PG_RESTARTABLE_PORT
# and writes DIR/restart, a program that restarts the cluster (pg_ctl restart -m fast -w) and
# returns once it accepts connections again.
pg_start_restartable() {
    local dir="$1" attempt port lib
    lib="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/postgres.sh"
    for attempt in 1 2 3; do
        port="$(pg_free_port)"
        if pg_start "$dir" "$port" &&
            pg_setting "$dir" "synchronous_commit = on" &&
            pg_restart "$dir"; then
            PG_RESTARTABLE_PORT="$port"
            {
                printf '#!/usr/bin/env bash\n'
                printf '# Restarts the cluster in %s (pg_ctl restart -m fast -w).\n' "$dir"
                printf 'set -euo pipefail\n'
                printf 'source %q\n' "$lib"
                printf 'PG_BIN=%q\n' "$PG_BIN"
                printf 'pg_restart %q\n' "$dir"
            } >"$dir/restart"
            chmod 0755 "$dir/restart"
            return 0
        fi
        pg_stop "$dir"
        _pg_log "retrying with another port (attempt $attempt failed)"
    done
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
