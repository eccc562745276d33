#!/usr/bin/env bash
# Tests the SDKs (sdk/typescript, sdk/python) against live servers: the seed page's SDK snippets
# verbatim (but for host and token), every resource method, VoidVMError, the 429 retry and the
# feed resuming across a server restart. Also the browser tests (tests/browser: noVNC's RFB client
# on a VM's /vnc, in Debian's chromium), and a fuzz run of the whole API from its OpenAPI
# document (tests/fuzz: schemathesis, in a venv under .cache/fuzz-venv), after the others, on
# a server with no job workers. Each suite gets its own server (free port, fresh database, NATS
# stream and data dir), so the SDKs' and the browser's run at once; each may restart its own.
#
# Runs the debug binary (SERVE_BIN, default target/debug/voidvm). Installs the SDKs' deps
# (`npm ci`; a venv under sdk/python/.venv), then runs tsc --noEmit, the type regeneration diff,
# the build, a strict type check of the seed's snippet, node --test, mypy and pytest. Quiet on
# success; on failure it shows the failing output and the servers' logs. Leaves no process,
# database, NATS stream or data dir behind. SDK_TEST_SUMMARY=1 prints the test counts.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

bin="${SERVE_BIN:-${CARGO_TARGET_DIR:-$repo/target}/debug/voidvm}"
[ -x "$bin" ] || { echo "test-sdks: $bin is missing; build it first (cargo build)" >&2; exit 1; }
images="$repo/.cache/images"
[ -d "$images/busybox" ] || { echo "test-sdks: no test guest in $images; run scripts/setup.sh" >&2; exit 1; }
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "test-sdks: node and npm are needed" >&2
  exit 1
fi
chromium="${CHROMIUM:-/usr/bin/chromium}"
[ -x "$chromium" ] || { echo "test-sdks: no chromium at $chromium; run scripts/setup.sh --tests" >&2; exit 1; }

run="${TEST_RUN:-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')}"
# The run id in the path: test.sh's leftover-QEMU check finds QEMUs of this run by it.
work="$(mktemp -d "/tmp/voidvm-test-${run}-sdk.XXXXXX")"
suffix="${run}_$(basename "$work" | sed 's/.*\.//' | tr '[:upper:]' '[:lower:]')"
sdks=(ts py web fuzz)

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

# shellcheck disable=SC2317 # called by the trap
cleanup() {
  local sdk pids streams=()
  for sdk in "${sdks[@]}"; do
    if [ -d "$work/$sdk" ]; then bash scripts/sdk-test-server.sh stop "$work/$sdk" || true; fi
  done
  # QEMUs carry the data dir in their command line; the check before this reported any left.
  if pids="$(pgrep -f -- "$work" 2>/dev/null)"; then
    mapfile -t pids <<<"$pids"
    kill -KILL "${pids[@]}" 2>/dev/null || true
  fi
  for sdk in "${sdks[@]}"; do
    psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS voidvm_sdk_${suffix}_${sdk} WITH (FORCE)" \
      >/dev/null 2>&1 || true
    streams+=("SDK_${suffix^^}_${sdk^^}")
  done
  # The streams (short retention anyway): JetStream's API, with the servers stopped.
  python3 - "${streams[@]}" <<'PY' >/dev/null 2>&1 || true
import socket, sys, time
s = socket.create_connection(("127.0.0.1", 4222), 3)
s.recv(4096)
out = b'CONNECT {"verbose":false}\r\nSUB _INBOX.sdktest 1\r\n'
for name in sys.argv[1:]:
    out += b"PUB $JS.API.STREAM.DELETE.%s _INBOX.sdktest 0\r\n\r\n" % name.encode()
s.sendall(out + b"PING\r\n")
s.settimeout(2)
end, got = time.time() + 2, b""
while got.count(b"MSG ") < len(sys.argv) - 1 and time.time() < end:
    got += s.recv(4096)
PY
  rm -rf "$work"
}
trap cleanup EXIT

secret="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
for sdk in "${sdks[@]}"; do
  dir="$work/$sdk"
  # Each server its own images dir (the SDK tests import and upload images), with the test guest.
  mkdir -p "$dir/images"
  ln -s "$images/busybox" "$dir/images/busybox"
  port="$(free_port)"
  picked+=("$port")
  echo "$bin" >"$dir/bin"
  cat >"$dir/env" <<ENV
VOIDVM_LISTEN=127.0.0.1:$port
VOIDVM_DATABASE_URL=postgres://postgres@127.0.0.1:5432/voidvm_sdk_${suffix}_${sdk}
VOIDVM_DATABASE_CONNECTIONS=16
VOIDVM_DATA_DIR=$dir/data
VOIDVM_IMAGES_DIR=$dir/images
VOIDVM_ACCEL=tcg
VOIDVM_JWT_SECRET=$secret
VOIDVM_RATE_LIMIT__REQUESTS_PER_MINUTE=100000
VOIDVM_WEBHOOKS__ALLOW_PRIVATE=true
VOIDVM_IMAGES__ALLOW_PRIVATE=true
VOIDVM_NATS__STREAM=SDK_${suffix^^}_${sdk^^}
VOIDVM_NATS__PREFIX=sdk_${suffix}_${sdk}
VOIDVM_NATS__RETENTION_SECS=600
ENV
  # The fuzzer's commands are accepted and their jobs stay queued: no disks, no QEMU.
  if [ "$sdk" = fuzz ]; then echo "VOIDVM_WORKERS=0" >>"$dir/env"; fi
  echo "http://127.0.0.1:$port/api/v1" >"$dir/api"
done

show_logs() {
  local sdk
  for sdk in "${sdks[@]}"; do
    echo "test-sdks: the $sdk server's log follows" >&2
    cat "$work/$sdk/server.log" >&2 || true
  done
}

# The servers and the installs at once.
bash scripts/sdk-test-server.sh start "$work/ts" >"$work/ts-start.log" 2>&1 &
ts_start=$!
bash scripts/sdk-test-server.sh start "$work/web" >"$work/web-start.log" 2>&1 &
web_start=$!
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error) >"$work/npm-web.log" 2>&1 &
npm_web_pid=$!
bash scripts/sdk-test-server.sh start "$work/py" >"$work/py-start.log" 2>&1 &
py_start=$!
(cd sdk/typescript && npm ci --no-audit --no-fund --loglevel=error) >"$work/npm.log" 2>&1 &
npm_pid=$!
(
  [ -x sdk/python/.venv/bin/python ] || python3 -m venv sdk/python/.venv
  sdk/python/.venv/bin/pip install -q --disable-pip-version-check -e 'sdk/python[test]'
) >"$work/pip.log" 2>&1 &
pip_pid=$!
(
  [ -x .cache/fuzz-venv/bin/python ] || python3 -m venv .cache/fuzz-venv
  .cache/fuzz-venv/bin/pip install -q --disable-pip-version-check -r tests/fuzz/requirements.txt
) >"$work/pip-fuzz.log" 2>&1 &
pip_fuzz_pid=$!
bash scripts/sdk-test-server.sh start "$work/fuzz" >"$work/fuzz-start.log" 2>&1 &
fuzz_start=$!
status=0
wait "$ts_start" || { cat "$work/ts-start.log" >&2; status=1; }
wait "$web_start" || { cat "$work/web-start.log" >&2; status=1; }
wait "$npm_web_pid" || { echo "test-sdks: npm ci (tests/browser) failed" >&2; cat "$work/npm-web.log" >&2; status=1; }
wait "$py_start" || { cat "$work/py-start.log" >&2; status=1; }
wait "$npm_pid" || { echo "test-sdks: npm ci failed" >&2; cat "$work/npm.log" >&2; status=1; }
wait "$pip_pid" || { echo "test-sdks: pip install failed" >&2; cat "$work/pip.log" >&2; status=1; }
wait "$pip_fuzz_pid" || { echo "test-sdks: pip install (tests/fuzz) failed" >&2; cat "$work/pip-fuzz.log" >&2; status=1; }
wait "$fuzz_start" || { cat "$work/fuzz-start.log" >&2; status=1; }
if [ "$status" != 0 ]; then
  show_logs
  exit 1
fi

# Each suite gets its server's API address and a way to restart that server (no VOIDVM_ names:
# a restarted server would refuse them).
(
  SDK_TEST_API="$(cat "$work/ts/api")"
  export SDK_TEST_API
  export SDK_TEST_RESTART="bash $repo/scripts/sdk-test-server.sh restart $work/ts"
  cd sdk/typescript
  npx tsc -p tsconfig.json --noEmit
  node scripts/gen-types.mjs --check
  npx tsc -p tsconfig.json
  npx tsc -p tsconfig.snippet.json
  node --test --test-concurrency=1 test/
) >"$work/ts.log" 2>&1 &
ts_pid=$!
(
  SDK_TEST_API="$(cat "$work/py/api")"
  export SDK_TEST_API
  export SDK_TEST_RESTART="bash $repo/scripts/sdk-test-server.sh restart $work/py"
  cd sdk/python
  .venv/bin/mypy
  .venv/bin/pytest -q -p no:cacheprovider
) >"$work/py.log" 2>&1 &
py_pid=$!
(
  SDK_TEST_API="$(cat "$work/web/api")"
  export SDK_TEST_API CHROMIUM="$chromium"
  cd tests/browser
  node --test --test-concurrency=1 .
) >"$work/web.log" 2>&1 &
web_pid=$!
wait "$ts_pid" || { echo "test-sdks: the TypeScript SDK failed" >&2; cat "$work/ts.log" >&2; status=1; }
wait "$web_pid" || { echo "test-sdks: the browser tests failed" >&2; cat "$work/web.log" >&2; status=1; }
wait "$py_pid" || { echo "test-sdks: the Python SDK failed" >&2; cat "$work/py.log" >&2; status=1; }
# The fuzzer after the others: its load would slow their guests' boots under TCG.
SCHEMATHESIS="$repo/.cache/fuzz-venv/bin/schemathesis" bash tests/fuzz/run.sh "$(cat "$work/fuzz/api")" \
  >"$work/fuzz.log" 2>&1 || { echo "test-sdks: the fuzz run (tests/fuzz) failed" >&2; cat "$work/fuzz.log" >&2; status=1; }

# Every test stops and deletes the VMs it started: no QEMU of this run may be left.
if left="$(pgrep -af -- "$work" | grep -i qemu)"; then
  echo "test-sdks: QEMU processes of this run are still running:" >&2
  echo "$left" >&2
  status=1
fi
[ "$status" = 0 ] || show_logs
if [ -n "${SDK_TEST_SUMMARY:-}" ]; then
  grep -E '^# (pass|fail)' "$work/ts.log" || true
  tail -n1 "$work/py.log"
  grep -E '^# (pass|fail)' "$work/web.log" || true
  grep -E '^  [0-9]+ generated' "$work/fuzz.log" || true
fi
exit "$status"
