#!/usr/bin/env bash
# Prepares a host to run VoidVM's machines and its integration tests: installs QEMU and the tools
# the test guest is built with (only what is missing), then builds the guest under .cache/images.
# With --tests (scripts/test.sh), also Debian's chromium for the browser tests (tests/browser).
# Idempotent and non-interactive; run as root (or with sudo available).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# command -> Debian package providing it
declare -A wanted=(
  [qemu-system-x86_64]=qemu-system-x86
  [qemu-img]=qemu-utils
  [cpio]=cpio
  [gzip]=gzip
  [zstd]=zstd
  [xz]=xz-utils
  [dpkg-deb]=dpkg
  [genisoimage]=genisoimage
  [ip]=iproute2
  [bridge]=iproute2
)
if [ "${1:-}" = "--tests" ]; then
  wanted[chromium]=chromium
  shift
fi

missing=()
for cmd in "${!wanted[@]}"; do
  if ! command -v "$cmd" >/dev/null 2>&1; then
    missing+=("${wanted[$cmd]}")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  # Always ask for the QEMU pair together so apt never resolves a version clash by removing one.
  missing+=(qemu-system-x86 qemu-utils)
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update
  if ! $sudo apt-get install -y --no-install-recommends "${missing[@]}"; then
    # A newer qemu-utils (e.g. from backports) can be installed already and clash with the
    # distribution's qemu-system-x86. Install the matching pair from the configured release,
    # downgrading qemu-utils, rather than adding package sources.
    codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
    if [ -z "$codename" ]; then
      echo "setup: could not install ${missing[*]}, and the release is unknown" >&2
      exit 1
    fi
    pinned=()
    for pkg in "${missing[@]}"; do
      case "$pkg" in
        qemu-system-x86|qemu-utils) pinned+=("$pkg/$codename") ;;
        *) pinned+=("$pkg") ;;
      esac
    done
    echo "setup: installing the ${codename} QEMU pair: ${pinned[*]}"
    $sudo apt-get install -y --no-install-recommends --allow-downgrades "${pinned[@]}"
  fi
else
  echo "setup: qemu and guest build tools already installed"
fi

qemu-system-x86_64 --version | head -n1
qemu-img --version | head -n1

"$repo_root/scripts/build-guest.sh" "$@"
