#!/usr/bin/env bash
# Starts, stops or restarts one VoidVM server for the SDK tests (scripts/test-sdks.sh). DIR holds
# its settings (`env`: VOIDVM_* lines; `bin`: the binary), its pid and its log. The SDK feed
# tests call `restart DIR` to kill the server and start it again on the same database and port,
# proving that the feed iterators resume without a gap.
#   sdk-test-server.sh start|stop|restart DIR
set -euo pipefail
cmd="$1"
dir="$2"

alive() {
  local state
  state="$(ps -o stat= -p "$1" 2>/dev/null || true)"
  [ -n "$state" ] && [[ "$state" != Z* ]]
}

ready() {
  local port="$1"
  # shellcheck disable=SC2016 # the child shell expands its own arguments
  timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0" || exit 1
    printf "GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" >&3
    head -n1 <&3' "$port" 2>/dev/null | grep -q ' 200 '
}

start() {
  local port i
  port="$(sed -n 's/^VOIDVM_LISTEN=.*://p' "$dir/env")"
  echo "--- start $(date -u +%T)" >>"$dir/server.log"
  # A clean environment (the server refuses unknown VOIDVM_* variables), in a new session,
  # from a subshell that exits at once, so the server is nobody's child here.
  (
    mapfile -t vars <"$dir/env"
    setsid env -i PATH="$PATH" HOME="${HOME:-/root}" "${vars[@]}" "$(cat "$dir/bin")" serve \
      >>"$dir/server.log" 2>&1 </dev/null &
    echo $! >"$dir/pid"
  )
  for ((i = 0; i < 120; i++)); do
    alive "$(cat "$dir/pid")" || { echo "sdk-test-server: the server in $dir exited" >&2; exit 1; }
    ready "$port" && return
    sleep 0.5
  done
  echo "sdk-test-server: the server in $dir did not answer GET /ready with 200 within 60 s" >&2
  exit 1
}

stop() {
  local signal="$1" pid i
  [ -f "$dir/pid" ] || return 0
  pid="$(cat "$dir/pid")"
  kill "-$signal" "$pid" 2>/dev/null || true
  for ((i = 0; i < 60; i++)); do
    alive "$pid" || { rm -f "$dir/pid"; return 0; }
    sleep 0.5
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$dir/pid"
}

case "$cmd" in
  start) start ;;
  stop) stop TERM ;;
  restart) stop KILL && start ;;
  *) echo "usage: $0 start|stop|restart DIR" >&2; exit 2 ;;
esac
