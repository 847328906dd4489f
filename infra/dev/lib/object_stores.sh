# shellcheck shell=bash
# Throw-away object-store servers for tests: moto (an S3 server, from PyPI) and Azurite (the
# Azure Blob emulator, from npm). Both run on 127.0.0.1 only, keep everything in memory and are
# stopped by PID; nothing they hold outlives them.
#
# Source this file from a bash script (after infra/dev/lib/postgres.sh, for pg_free_port), then:
#   os_ensure_moto REPO            # install moto[server] if moto_server is missing
#   os_ensure_azurite REPO         # install azurite@3.35.0 under REPO/.dev/node if missing
#   os_start_moto DIR              # start on a free port; sets OS_MOTO_PORT; PID in DIR/moto.pid
#   os_start_azurite DIR           # start on a free port; sets OS_AZURITE_PORT; PID in DIR/azurite.pid
#   os_stop_all DIR                # stop whatever of the two DIR's PID files name; never fails
#
# Tests reach them as
#   S3:     http://127.0.0.1:$OS_MOTO_PORT             (path-style; create a bucket with PUT /NAME)
#   Azure:  http://127.0.0.1:$OS_AZURITE_PORT/devstoreaccount1
#           (account devstoreaccount1 with the emulator's well-known key; create a container
#           with a SharedKey-signed PUT /devstoreaccount1/NAME?restype=container)

# The Azurite release the tests are known to pass with; 3.37 and later need Node 22.
OS_AZURITE_VERSION="3.35.0"
# Where moto_server and azurite-blob were found; set by the os_ensure_* functions.
OS_MOTO_BIN=""
OS_AZURITE_BIN=""
OS_MOTO_PORT=""
OS_AZURITE_PORT=""

_os_log() { printf '%s\n' "$*" >&2; }

# _os_answers PORT: true when an HTTP server answers on 127.0.0.1:PORT (any status).
_os_answers() {
    local port="$1" line=""
    # A subshell with its own timeout, so a server that accepts but never answers cannot hang us.
    line="$(timeout 2 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" >&3
        IFS= read -r status <&3 && printf "%s" "$status"
    ' _ "$port" 2>/dev/null)" || return 1
    [[ "$line" == HTTP/1.* ]]
}

# _os_free_port: a port nothing listens on (postgres.sh's when sourced, else our own search).
_os_free_port() {
    if declare -F pg_free_port >/dev/null; then
        pg_free_port
        return
    fi
    local attempt port
    for attempt in $(seq 1 100); do
        # 20000-32767: below the kernel's usual range for outgoing connections' ports.
        port=$((20000 + RANDOM % 12768))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            printf '%s\n' "$port"
            return 0
        fi
    done
    _os_log "could not find a free port after $attempt attempts"
    return 1
}

# os_ensure_moto REPO: finds moto_server, installing moto[server] with pip when it is missing:
# into the active Python when pip may write there, else into a virtualenv at REPO/.dev/moto.
os_ensure_moto() {
    local repo="$1" venv="$1/.dev/moto" log
    if command -v moto_server >/dev/null 2>&1; then
        OS_MOTO_BIN="$(command -v moto_server)"
        return 0
    fi
    if [[ -x "$venv/bin/moto_server" ]]; then
        OS_MOTO_BIN="$venv/bin/moto_server"
        return 0
    fi
    command -v python3 >/dev/null 2>&1 ||
        { _os_log "python3 is needed to run moto (the S3 test server); install it (apt-get install python3)"; return 1; }
    mkdir -p "$repo/.dev"
    log="$repo/.dev/moto-install.log"
    _os_log "moto_server is missing; installing moto[server] with pip (about 30 s)..."
    if python3 -m pip install --quiet --disable-pip-version-check "moto[server]" >"$log" 2>&1 &&
        command -v moto_server >/dev/null 2>&1; then
        OS_MOTO_BIN="$(command -v moto_server)"
        return 0
    fi
    # A distribution-managed python3 refuses pip installs (PEP 668), or the scripts directory is
    # not on PATH: a private virtualenv works in both cases.
    _os_log "installing into a virtualenv at $venv instead..."
    if python3 -m venv "$venv" >>"$log" 2>&1 &&
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "moto[server]" >>"$log" 2>&1 &&
        [[ -x "$venv/bin/moto_server" ]]; then
        OS_MOTO_BIN="$venv/bin/moto_server"
        return 0
    fi
    tail -n 20 "$log" >&2
    _os_log "could not install moto; try: python3 -m pip install 'moto[server]'"
    _os_log "(on Debian without venv support: apt-get install python3-venv)"
    return 1
}

# os_ensure_azurite REPO: finds azurite-blob under REPO/.dev/node, installing the pinned Azurite
# there with npm when it is missing.
os_ensure_azurite() {
    local repo="$1" prefix="$1/.dev/node" log installed
    local bin="$prefix/node_modules/.bin/azurite-blob"
    installed="$(cat "$prefix/node_modules/azurite/package.json" 2>/dev/null |
        sed -n 's/^  "version": "\(.*\)",$/\1/p' || true)"
    if [[ -x "$bin" && "$installed" == "$OS_AZURITE_VERSION" ]]; then
        OS_AZURITE_BIN="$bin"
        return 0
    fi
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        _os_log "node and npm are needed to run Azurite (the Azure Blob test server);"
        _os_log "install them (apt-get install nodejs npm)"
        return 1
    fi
    mkdir -p "$prefix"
    log="$repo/.dev/azurite-install.log"
    _os_log "Azurite $OS_AZURITE_VERSION is missing; installing it under $prefix with npm..."
    # A registry request that hangs is cut after 30 s and retried, and a whole attempt after
    # 5 minutes: three attempts, so one stalled connection does not stall the test command.
    local attempt
    for attempt in 1 2 3; do
        if timeout 300 npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error \
            --fetch-timeout=30000 --fetch-retries=4 --fetch-retry-mintimeout=2000 \
            --fetch-retry-maxtimeout=20000 "azurite@$OS_AZURITE_VERSION" >"$log" 2>&1 &&
            [[ -x "$bin" ]]; then
            break
        fi
        ((attempt < 3)) && _os_log "npm install of Azurite failed or hung (attempt $attempt of 3); trying again"
    done
    if [[ ! -x "$bin" ]]; then
        tail -n 20 "$log" >&2
        _os_log "could not install Azurite; try: npm install --prefix $prefix azurite@$OS_AZURITE_VERSION"
        return 1
    fi
    OS_AZURITE_BIN="$bin"
    return 0
}

# _os_start NAME DIR PORT COMMAND...: starts COMMAND in the background with its output in
# DIR/NAME.log, records its PID in DIR/NAME.pid and waits up to 30 s for HTTP on PORT.
_os_start() {
    local name="$1" dir="$2" port="$3" pid waited
    shift 3
    mkdir -p "$dir"
    "$@" >"$dir/$name.log" 2>&1 </dev/null &
    pid=$!
    printf '%s\n' "$pid" >"$dir/$name.pid"
    for waited in $(seq 1 300); do
        if _os_answers "$port"; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            _os_log "$name exited before it answered on port $port; its log ends with:"
            tail -n 20 "$dir/$name.log" >&2
            rm -f "$dir/$name.pid"
            return 1
        fi
        sleep 0.1
    done
    _os_log "$name does not answer on 127.0.0.1:$port after ${waited} tries; its log ends with:"
    tail -n 20 "$dir/$name.log" >&2
    _os_stop "$dir" "$name"
    return 1
}

# os_start_moto DIR: starts moto on a free port (three tries); sets OS_MOTO_PORT.
os_start_moto() {
    local dir="$1" attempt port
    [[ -n "$OS_MOTO_BIN" ]] || { _os_log "os_start_moto: call os_ensure_moto first"; return 1; }
    for attempt in 1 2 3; do
        port="$(_os_free_port)" || return 1
        if _os_start moto "$dir" "$port" "$OS_MOTO_BIN" -H 127.0.0.1 -p "$port"; then
            OS_MOTO_PORT="$port"
            return 0
        fi
        _os_log "retrying moto with another port (attempt $attempt failed)"
    done
    return 1
}

# os_start_azurite DIR: starts Azurite's blob service on a free port (three tries), keeping
# everything in memory; sets OS_AZURITE_PORT.
os_start_azurite() {
    local dir="$1" attempt port
    [[ -n "$OS_AZURITE_BIN" ]] || { _os_log "os_start_azurite: call os_ensure_azurite first"; return 1; }
    for attempt in 1 2 3; do
        port="$(_os_free_port)" || return 1
        # --skipApiVersionCheck: object_store may send a newer x-ms-version than this release knows.
        if _os_start azurite "$dir" "$port" "$OS_AZURITE_BIN" --blobHost 127.0.0.1 \
            --blobPort "$port" --inMemoryPersistence \
            --disableTelemetry --skipApiVersionCheck --silent; then
            OS_AZURITE_PORT="$port"
            return 0
        fi
        _os_log "retrying Azurite with another port (attempt $attempt failed)"
    done
    return 1
}

# _os_stop DIR NAME: stops the process DIR/NAME.pid names (TERM, then KILL after 5 s).
_os_stop() {
    local dir="$1" name="$2" pid waited
    [[ -f "$dir/$name.pid" ]] || return 0
    pid="$(cat "$dir/$name.pid")"
    rm -f "$dir/$name.pid"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for waited in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    return 0
}

# os_stop_all DIR: stops moto and Azurite if DIR's PID files name them. Never fails.
os_stop_all() {
    local dir="$1"
    _os_stop "$dir" moto
    _os_stop "$dir" azurite
    return 0
}
