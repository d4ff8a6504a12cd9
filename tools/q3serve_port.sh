# q3serve_port.sh - sourced by the scripts that start q3serve with --port 0 (tests/e2e_serve*.sh,
# tools/serve_bench.sh): one definition of how its port is read back from its log.
#
# q3serve_port LOG PID [TRIES]: prints the port q3serve (PID, stderr to LOG) listens on, once
# its "... on http://HOST:PORT/v1 ..." line is there; returns 1 if PID ends first or after
# TRIES tenths of a second (default 100).
q3serve_port() {
    local log=$1 pid=$2 port=
    for _ in $(seq "${3:-100}"); do
        port=$(sed -n 's/.*http:\/\/[^:]*:\([0-9]*\)\/v1.*/\1/p' "$log")
        [ -n "$port" ] && { echo "$port"; return 0; }
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
