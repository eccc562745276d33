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
exit "$status"
