#!/usr/bin/env bash
# Runs the VoidVM server on http://127.0.0.1:3000, installing what is missing first (QEMU, the
# small test guest). Settings come from VOIDVM_* variables (see README.md); extra arguments go to
# `voidvm serve` (e.g. --config voidvm.toml).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
bash scripts/setup.sh
# The guest that setup builds is offered as image "busybox" unless images live elsewhere.
export VOIDVM_IMAGES_DIR="${VOIDVM_IMAGES_DIR:-$repo/.cache/images}"
exec cargo run --release --bin voidvm -- serve "$@"
