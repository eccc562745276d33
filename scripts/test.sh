#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing (QEMU, the test guest), then unit and
# integration tests against the real PostgreSQL (127.0.0.1:5432) and real QEMU under TCG, then
# scripts/test-serve.sh (serve.sh bringing up private PostgreSQL and NATS), then
# scripts/test-sdks.sh (the TypeScript and Python SDKs, and noVNC in chromium, against live servers).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
bash scripts/setup.sh --tests
pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1 || {
  echo "test: PostgreSQL is not answering on 127.0.0.1:5432; start it and run again" >&2
  exit 1
}
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
# This run's test data dirs carry its id, so the check below finds this run's QEMUs only (other
# suites may run on the same machine). Not a VOIDVM_ variable: the server refuses unknown settings.
TEST_RUN="$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
export TEST_RUN
# The JetStream streams before the run: the default stream's name is checked against it below.
streams_before="$(python3 scripts/nats-streams.py)" || {
  echo "test: NATS with JetStream is not answering on 127.0.0.1:4222; start it and run again" >&2
  exit 1
}
status=0
cargo test --all-targets "$@" || status=$?
# Every test that starts a VM stops its QEMU: none of this run may be left.
if left="$(pgrep -af -- "voidvm-test-${TEST_RUN}-")"; then
  echo "test: QEMU processes of this run are still running:" >&2
  echo "$left" >&2
  exit 1
fi
# serve.sh on a bare host: private PostgreSQL and NATS on free ports, with the debug server that
# `cargo test` built (no release build).
bash scripts/test-serve.sh || status=1
# The SDKs (sdk/typescript, sdk/python) against live servers of the same debug binary.
bash scripts/test-sdks.sh || status=1
# Every test, bench and SDK run deletes the NATS stream it made (their names carry the run id),
# and none may make the default stream a real server on this NATS would take for its own.
streams_after="$(python3 scripts/nats-streams.py)" || status=1
left="$(grep -i -- "$TEST_RUN" <<<"$streams_after" || true)"
if ! grep -qx VOIDVM <<<"$streams_before" && grep -qx VOIDVM <<<"$streams_after"; then
  left="${left:+$left$'\n'}VOIDVM (the default stream; it was not there before the run)"
fi
if [ -n "$left" ]; then
  echo "test: NATS streams of this run are still there:" >&2
  echo "$left" >&2
  status=1
fi
exit "$status"
