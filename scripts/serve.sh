#!/usr/bin/env bash
# Runs the VoidVM server (http://127.0.0.1:3000 unless VOIDVM_LISTEN says otherwise), installing
# what is missing first: QEMU and the small test guest (scripts/setup.sh), and, when nothing
# answers at the configured PostgreSQL or NATS and that address is on this host, private
# instances of them under <data dir>/services (installed from Debian packages when missing).
#
# Usage: scripts/serve.sh [--config FILE]          (arguments go to `voidvm serve`)
#        scripts/serve.sh stop-services [--config FILE]
#
# Settings come from VOIDVM_* variables and the config file, as the server reads them (see
# README.md). SERVE_BIN=path runs that voidvm binary instead of `cargo run --release` (tests use
# the debug build); it is not a VOIDVM_ variable because the server refuses unknown ones.
# Idempotent and non-interactive; run as root, or with sudo available for apt-get.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The server runs from here too, so relative paths (the default data dir ./data, --config FILE)
# mean the same to this script and to the server.
cd "$repo"

say() { echo "serve: $*"; }
die() {
  echo "serve: $*" >&2
  exit 1
}

# apt-get and /etc need root; setup.sh does the same.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  else
    sudo "$@"
  fi
}

apt_install() {
  say "installing $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

command=serve
if [ "${1:-}" = stop-services ]; then
  command=stop-services
  shift
fi

# --- Effective settings: VOIDVM_* variable, else the config file's top-level key, else the
# server's default (src/config.rs). ---

config_file=""
prev=""
for arg in "$@"; do
  case "$arg" in
    --config=*) config_file="${arg#--config=}" ;;
    *) if [ "$prev" = --config ]; then config_file="$arg"; fi ;;
  esac
  prev="$arg"
done

# Prints a top-level string key of a TOML file (before any [table]); enough for the three
# settings read here, which are plain strings.
toml_string() {
  awk -v key="$2" '
    /^[[:space:]]*\[/ { exit }
    match($0, "^[[:space:]]*" key "[[:space:]]*=[[:space:]]*[\"\x27]") {
      quote = substr($0, RLENGTH, 1)
      value = substr($0, RLENGTH + 1)
      print substr(value, 1, index(value, quote) - 1)
      exit
    }' "$1"
}

setting() { # variable key default
  local value="${!1:-}"
  if [ -z "$value" ] && [ -n "$config_file" ] && [ -f "$config_file" ]; then
    value="$(toml_string "$config_file" "$2")"
  fi
  echo "${value:-$3}"
}

data_dir="$(realpath -m -- "$(setting VOIDVM_DATA_DIR data_dir ./data)")"
database_url="$(setting VOIDVM_DATABASE_URL database_url postgres://postgres@127.0.0.1:5432/voidvm)"
nats_url="$(setting VOIDVM_NATS_URL nats_url nats://127.0.0.1:4222)"

services="$data_dir/services"
pg_dir="$services/postgres"
pg_data="$pg_dir/data"
pg_run="$pg_dir/run"
pg_log="$pg_dir/postgres.log"
nats_dir="$services/nats"
nats_pid_file="$nats_dir/nats-server.pid"
nats_log="$nats_dir/nats-server.log"
# JetStream keeps its streams in <this>/jetstream.
nats_store="$nats_dir"

# Prints host, port and user of a URL (scheme://[user[:password]@]host[:port][/...]), one a line;
# the host without IPv6 brackets, "localhost" when empty.
url_parts() { # url default-port default-user
  local rest="${1#*://}" authority userinfo="" hostport host port=""
  authority="${rest%%[/?]*}"
  if [[ "$authority" == *@* ]]; then
    userinfo="${authority%@*}"
    hostport="${authority##*@}"
  else
    hostport="$authority"
  fi
  if [[ "$hostport" == \[* ]]; then
    host="${hostport#\[}"
    host="${host%%\]*}"
    [[ "$hostport" == *\]:* ]] && port="${hostport##*\]:}"
  else
    host="${hostport%%:*}"
    [[ "$hostport" == *:* ]] && port="${hostport##*:}"
  fi
  # A host=... parameter (libpq's and sqlx's) overrides the host, e.g. a Unix socket directory
  # (its slashes often written %2F).
  local params param slash='%2[fF]'
  if [[ "$rest" == *\?* ]]; then
    IFS='&' read -ra params <<<"${rest#*\?}"
    for param in "${params[@]}"; do
      if [[ "$param" == host=* ]]; then
        host="${param#host=}"
        host="${host//$slash//}"
      fi
    done
  fi
  local user="${userinfo%%:*}"
  printf '%s\n%s\n%s\n' "${host:-localhost}" "${port:-$2}" "${user:-$3}"
}

is_local() {
  case "$1" in
    localhost | ::1 | 127.*) return 0 ;;
    *) return 1 ;;
  esac
}

# sqlx, like libpq, takes the OS user when the URL names none.
{ read -r pg_host; read -r pg_port; read -r pg_user_in_url; } < <(url_parts "$database_url" 5432 "${PGUSER:-$(id -un)}")
# Several NATS servers may be listed (comma-separated); the first decides.
{ read -r nats_host; read -r nats_port; read -r _; } < <(url_parts "${nats_url%%,*}" 4222 "")

# Waits until `answers` succeeds, for at most `seconds`; gives up early when `alive` fails
# (the process is gone).
wait_for() { # answers alive seconds
  local i
  for ((i = 0; i < $3; i++)); do
    "$1" && return 0
    "$2" >/dev/null || return 1
    sleep 1
  done
  "$1"
}

# --- PostgreSQL ---

pg_answers() {
  local isready="${pg_bin:+$pg_bin/pg_isready}"
  isready="${isready:-$(command -v pg_isready || true)}"
  if [ -n "$isready" ]; then
    "$isready" -q -h "$pg_host" -p "$pg_port" -t 3
  else
    # Before the packages are installed: is anything listening? ($0 and $1 are the child's.)
    # shellcheck disable=SC2016
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$pg_host" "$pg_port" 2>/dev/null
  fi
}

# The server binaries of the private cluster's version, else of the newest version installed.
find_pg_bin() {
  pg_bin=""
  if [ -f "$pg_data/PG_VERSION" ]; then
    local version
    version="$(cat "$pg_data/PG_VERSION")"
    [ -x "/usr/lib/postgresql/$version/bin/pg_ctl" ] ||
      die "the private PostgreSQL in $pg_data is version $version, whose server (Debian package postgresql-$version) is not installed"
    pg_bin="/usr/lib/postgresql/$version/bin"
    return
  fi
  local dir
  for dir in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V); do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then pg_bin="$dir"; fi
  done
}

install_postgres() {
  # The package would create a cluster of its own and start it on port 5432, where the private
  # one listens by default: keep it from doing so, for this install only.
  local dropin_dir=/etc/postgresql-common/createcluster.d
  local dropin="$dropin_dir/zz-voidvm-serve.conf"
  as_root mkdir -p "$dropin_dir"
  echo "create_main_cluster = false" | as_root tee "$dropin" >/dev/null
  local status=0
  apt_install postgresql || status=$?
  as_root rm -f "$dropin"
  as_root rmdir "$dropin_dir" 2>/dev/null || true
  [ "$status" -eq 0 ] || die "could not install postgresql"
}

# PostgreSQL refuses to run as root: as root, it runs as the user owning the cluster (the
# "postgres" user the Debian package creates, for a new one); otherwise as the invoking user.
pick_pg_user() {
  if [ "$(id -u)" -ne 0 ]; then
    pg_user="$(id -un)"
    if [ -e "$pg_data" ] && [ ! -O "$pg_data" ]; then
      die "the private PostgreSQL in $pg_data belongs to $(stat -c %U "$pg_data"); run this as that user or as root"
    fi
    return
  fi
  pg_user=postgres
  if [ -e "$pg_data" ] && [ "$(stat -c %u "$pg_data")" -ne 0 ]; then
    pg_user="$(stat -c %U "$pg_data")"
  fi
  getent passwd "$pg_user" >/dev/null || die "user $pg_user, who would run PostgreSQL, does not exist"
}

as_pg() {
  if [ "$pg_user" = "$(id -un)" ]; then
    "$@"
  else
    # From /, which that user can enter (initdb and pg_ctl complain about a working directory
    # they cannot read).
    (cd / && runuser -u "$pg_user" -- "$@")
  fi
}

pg_running() { as_pg "$pg_bin/pg_ctl" status -D "$pg_data" >/dev/null 2>&1; }

# postgresql.conf values are single-quoted, with quotes doubled.
pg_quote() { printf "'%s'" "${1//\'/\'\'}"; }

start_postgres() {
  find_pg_bin
  if [ -z "$pg_bin" ]; then
    install_postgres
    find_pg_bin
    [ -n "$pg_bin" ] || die "postgresql was installed but no initdb was found under /usr/lib/postgresql"
  fi
  pick_pg_user
  mkdir -p "$pg_dir"
  if [ ! -f "$pg_data/PG_VERSION" ]; then
    [ "$pg_user" = "$(id -un)" ] || chown -R "$pg_user:" "$pg_dir"
    chmod 700 "$pg_dir"
  fi
  as_pg test -w "$pg_dir" ||
    die "PostgreSQL runs as $pg_user, who cannot write to $pg_dir; that user must be able to enter every directory above it (chmod o+x), or choose another VOIDVM_DATA_DIR"
  as_pg mkdir -p "$pg_run"

  if [ ! -f "$pg_data/PG_VERSION" ]; then
    say "initialising a private PostgreSQL in $pg_data"
    # Trust for local and loopback connections (the server's default URL has no password);
    # UTF-8 whatever the host's locale is.
    as_pg "$pg_bin/initdb" -D "$pg_data" -U "$pg_user_in_url" --auth=trust --encoding=UTF8 \
      --no-locale >"$pg_dir/initdb.log" 2>&1 || die "initdb failed; see $pg_dir/initdb.log"
    # Where it listens is rewritten at each start, so it follows the URL.
    echo "include_if_exists = 'voidvm.conf'" | as_pg tee -a "$pg_data/postgresql.conf" >/dev/null
  fi

  if pg_running; then
    # Still starting (or recovering), or listening elsewhere: it was started for another URL.
    wait_for pg_answers pg_running 30 ||
      die "the private PostgreSQL in $pg_data runs but does not answer at $pg_host:$pg_port; stop it with scripts/serve.sh stop-services and run again"
    return
  fi
  local sockets="$pg_run"
  # A Unix socket path is limited to 107 bytes; past that, TCP only.
  [ "${#sockets}" -le 90 ] || sockets=""
  as_pg tee "$pg_data/voidvm.conf" >/dev/null <<EOF
# Written by scripts/serve.sh at each start.
listen_addresses = $(pg_quote "$pg_host")
port = $pg_port
unix_socket_directories = $(pg_quote "$sockets")
EOF
  say "starting PostgreSQL on $pg_host:$pg_port (log: $pg_log)"
  # pg_ctl detaches the postmaster into its own session, so it outlives this script and the
  # server it becomes, and a Ctrl-C in the terminal does not reach it.
  as_pg "$pg_bin/pg_ctl" start -D "$pg_data" -l "$pg_log" -w -t 60 >/dev/null ||
    die "PostgreSQL did not start within 60 s; see $pg_log"
  wait_for pg_answers pg_running 30 ||
    die "PostgreSQL did not come up at $pg_host:$pg_port; see $pg_log"
}

stop_postgres() {
  [ -f "$pg_data/PG_VERSION" ] || return 0
  find_pg_bin
  pick_pg_user
  pg_running || return 0
  as_pg "$pg_bin/pg_ctl" stop -D "$pg_data" -m fast -w -t 60 >/dev/null ||
    die "PostgreSQL in $pg_data did not stop within 60 s; see $pg_log"
  say "stopped PostgreSQL in $pg_data"
}

# --- NATS ---

# A NATS server greets every connection with an INFO line.
nats_answers() {
  # shellcheck disable=SC2016 # $0, $1 and $line are the child shell's
  timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1" && read -r -t 2 line <&3 && [[ "$line" == INFO* ]]' \
    "$nats_host" "$nats_port" 2>/dev/null
}

# The private nats-server's pid, if it runs (the pid file alone may be stale).
nats_pid() {
  local pid
  pid="$(cat "$nats_pid_file" 2>/dev/null)" || return 1
  [ -n "$pid" ] && tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "$nats_store" || return 1
  echo "$pid"
}

start_nats() {
  if ! command -v nats-server >/dev/null 2>&1; then
    apt_install nats-server
    # The package runs a NATS of its own (port 4222, without JetStream); the private one
    # replaces it, so that one is stopped and disabled.
    if [ -d /run/systemd/system ] && systemctl is-enabled --quiet nats-server.service 2>/dev/null; then
      as_root systemctl disable --now --quiet nats-server.service
      say "disabled the nats-server service the package installed"
    fi
  fi
  if nats_pid >/dev/null; then
    wait_for nats_answers nats_pid 30 && return
    die "the private NATS in $nats_dir runs but does not answer at $nats_host:$nats_port; stop it with scripts/serve.sh stop-services and run again"
  fi
  mkdir -p "$nats_dir"
  say "starting NATS with JetStream on $nats_host:$nats_port (log: $nats_log)"
  # setsid: its own session, so it outlives this script and the server it becomes, and a
  # Ctrl-C in the terminal does not reach it. Without job control the background child is no
  # group leader, so setsid does not fork and $! is nats-server's pid.
  (
    set +m
    setsid nats-server -js -a "$nats_host" -p "$nats_port" -sd "$nats_store" \
      </dev/null >>"$nats_log" 2>&1 &
    echo "$!" >"$nats_pid_file"
  )
  wait_for nats_answers nats_pid 30 ||
    die "NATS did not come up at $nats_host:$nats_port; see $nats_log"
}

stop_nats() {
  local pid i
  pid="$(nats_pid)" || {
    rm -f "$nats_pid_file"
    return 0
  }
  kill -TERM "$pid"
  for i in $(seq 1 30); do
    if ! nats_pid >/dev/null; then
      rm -f "$nats_pid_file"
      say "stopped NATS in $nats_dir"
      return
    fi
    sleep 1
  done
  die "NATS (pid $pid) did not stop within 30 s; see $nats_log"
}

if [ "$command" = stop-services ]; then
  stop_nats
  stop_postgres
  exit 0
fi

# Something that answers is used as it is, wherever it runs; a private instance is only ever
# made on this host. Checked before setup, so a wrong remote address fails at once.
pg_bin=""
need_pg=false
need_nats=false
if ! pg_answers; then
  is_local "$pg_host" ||
    die "PostgreSQL does not answer at $pg_host:$pg_port (VOIDVM_DATABASE_URL), and serve.sh starts one only at a TCP address of this host"
  need_pg=true
fi
if ! nats_answers; then
  is_local "$nats_host" ||
    die "NATS does not answer at $nats_host:$nats_port (VOIDVM_NATS_URL), and serve.sh starts one only at an address of this host"
  need_nats=true
fi

bash scripts/setup.sh
if $need_pg; then start_postgres; fi
if $need_nats; then start_nats; fi

# The guest that setup builds is offered as image "busybox" unless images live elsewhere (the
# variable, or images_dir in the config file).
VOIDVM_IMAGES_DIR="$(setting VOIDVM_IMAGES_DIR images_dir "$repo/.cache/images")"
export VOIDVM_IMAGES_DIR
if [ -n "${SERVE_BIN:-}" ]; then
  exec "$SERVE_BIN" serve "$@"
fi
exec cargo run --release --bin voidvm -- serve "$@"
