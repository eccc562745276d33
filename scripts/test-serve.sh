#!/usr/bin/env bash
# Proves scripts/serve.sh on a bare host: given PostgreSQL and NATS addresses where nothing
# answers (free local ports) and a fresh data dir, it brings up private instances under that data
# dir, and the server answers GET /ready and a login. It then runs serve.sh again while they run,
# stops them with `serve.sh stop-services` (no process may be left), and starts once more from
# the stopped instances. The host's own PostgreSQL and NATS are not touched.
#
# Runs the debug binary `cargo test` built (SERVE_BIN), not a release build. Quiet on success.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

bin="${SERVE_BIN:-${CARGO_TARGET_DIR:-$repo/target}/debug/voidvm}"
if [ ! -x "$bin" ]; then
  echo "test-serve: $bin is missing; build it first (cargo build)" >&2
  exit 1
fi
work="$(mktemp -d /tmp/voidvm-serve-test.XXXXXX)"
# As root, the private PostgreSQL runs as user postgres, who must be able to enter the data dir.
chmod 755 "$work"
log="$work/serve.log"
server_pid=""

fail() {
  echo "test-serve: $*" >&2
  if [ -s "$log" ]; then
    echo "test-serve: serve.sh's output follows" >&2
    cat "$log" >&2
  fi
  exit 1
}

# A port a bind takes, other than those already picked (it runs in a subshell, so the
# caller records them).
picked=()
free_port() {
  # Below the kernel's ephemeral range (ip_local_port_range, 32768+ by default), where a port that
  # nothing listens on can still be the local end of an outgoing connection and refuse a bind;
  # and below VoidVM's default range for forwarded VM ports (20000-29999). Free means a bind works.
  local port
  while :; do
    port=$((10000 + RANDOM % 10000))
    [[ " ${picked[*]} " == *" $port "* ]] && continue
    if python3 -c 'import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", int(sys.argv[1])))' "$port" 2>/dev/null; then
      echo "$port"
      return
    fi
  done
}
pg_port="$(free_port)"
picked+=("$pg_port")
nats_port="$(free_port)"
picked+=("$nats_port")
http_port="$(free_port)"

export SERVE_BIN="$bin"
export VOIDVM_DATA_DIR="$work/data"
export VOIDVM_DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/voidvm"
export VOIDVM_NATS_URL="nats://127.0.0.1:$nats_port"
export VOIDVM_LISTEN="127.0.0.1:$http_port"
# No KVM probe: this test boots no VM.
export VOIDVM_ACCEL=tcg

cleanup() {
  if [ -n "$server_pid" ]; then kill -KILL "$server_pid" 2>/dev/null || true; fi
  scripts/serve.sh stop-services >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# Prints the whole HTTP response of METHOD PATH [JSON body], over bash's /dev/tcp (no curl needed).
http() {
  local body="${3:-}"
  # shellcheck disable=SC2016 # the child shell expands its own arguments
  timeout 15 bash -c '
    exec 3<>"/dev/tcp/127.0.0.1/$0" || exit 1
    printf "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" \
      "$1" "$2" "${#3}" "$3" >&3
    cat <&3' "$http_port" "$1" "$2" "$body" 2>/dev/null
}

status_of() { head -n1 | cut -d' ' -f2; }

# serve.sh execs the server, so its pid is the server's.
start_server() {
  echo "--- serve.sh $1" >>"$log"
  scripts/serve.sh >>"$log" 2>&1 &
  server_pid=$!
  local i
  for ((i = 0; i < 180; i++)); do
    kill -0 "$server_pid" 2>/dev/null || fail "serve.sh ($1) ended before the server was ready"
    [ "$(http GET /ready | status_of)" = 200 ] && return
    sleep 1
  done
  fail "the server ($1) did not answer GET /ready with 200 within 180 s"
}

stop_server() {
  kill -TERM "$server_pid"
  local i
  for ((i = 0; i < 30; i++)); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
      wait "$server_pid" || true
      server_pid=""
      return
    fi
    sleep 1
  done
  fail "the server did not stop within 30 s of SIGTERM"
}

login() {
  local answer
  answer="$(http POST /api/v1/auth/login '{"username":"admin","password":"admin123"}')"
  if [ "$(status_of <<<"$answer")" != 200 ] || [[ "$answer" != *'"token":"'* ]]; then
    fail "login did not answer 200 with a token: $(head -n1 <<<"$answer")"
  fi
}

# The private services' processes: those naming the data dir (the postmaster, nats-server),
# and the postmaster's children.
service_pids() {
  local pid
  for pid in $(pgrep -f -- "$work" || true); do
    echo "$pid"
    pgrep -P "$pid" || true
  done
}

stop_services() {
  local pids pid state left
  pids="$(service_pids)"
  [ -n "$pids" ] || fail "no private PostgreSQL or NATS process was found under $work"
  scripts/serve.sh stop-services >>"$log" 2>&1 || fail "serve.sh stop-services failed"
  for pid in $pids; do
    # A process that has exited but is not yet reaped by init (a zombie, state Z) is gone.
    state="$(ps -o stat= -p "$pid" || true)"
    if [ -n "$state" ] && [[ "$state" != Z* ]]; then
      fail "process $pid is still running after stop-services: $(ps -o args= -p "$pid")"
    fi
  done
  if left="$(pgrep -af -- "$work")"; then
    fail "processes under $work are still running after stop-services: $left"
  fi
}

start_server "on a bare host"
[ -f "$work/data/services/postgres/data/PG_VERSION" ] || fail "no private PostgreSQL was made"
[ -d "$work/data/services/nats/jetstream" ] || fail "no private NATS was made"
login
stop_server

start_server "again, with the private services running"
login
stop_server
stop_services

start_server "again, with the private services stopped"
login
stop_server
stop_services
