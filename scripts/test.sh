#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing (QEMU, the test guest), then unit and
# integration tests against the real PostgreSQL (127.0.0.1:5432) and real QEMU under TCG.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
bash scripts/setup.sh
pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1 || {
  echo "test: PostgreSQL is not answering on 127.0.0.1:5432; start it and run again" >&2
  exit 1
}
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets "$@"
