#!/usr/bin/env bash
# A PostgreSQL server on this machine for Optuna studies shared by several sweep drivers (docs/sweeps.md).
#   sudo scripts/cluster/local_postgres.sh start    # install postgresql if missing, start, print the storage URL
#   sudo scripts/cluster/local_postgres.sh status   # exit 0 when the server answers, else 1
#   sudo scripts/cluster/local_postgres.sh stop     # stop the server
# Debian's cluster "main" of the installed PostgreSQL, listening on loopback only (127.0.0.1). Start is
# idempotent: it creates the role and database once and leaves a running server as it is. The password goes
# to ~/.pgpass (mode 600) of the user who runs the script, where libpq finds it: the printed URL has no
# password, so nothing secret lands in a sweep's saved config (multirun.yaml, .hydra/hydra.yaml).
# Settings (environment): LOCAL_PG_PORT (5432), LOCAL_PG_USER (imagelab), LOCAL_PG_DB (optuna),
# LOCAL_PG_PASSWORD (random on first start). Bad input: one "error: ..." line, exit 2.
set -euo pipefail

PORT="${LOCAL_PG_PORT:-5432}"
ROLE="${LOCAL_PG_USER:-imagelab}"
DB="${LOCAL_PG_DB:-optuna}"
CLUSTER=main

die() { echo "error: $*" >&2; exit 2; }

need_root() {
  [[ "$(id -u)" == 0 ]] || die "local_postgres.sh $1 must run as root (it installs packages and starts the server): sudo $0 $1"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

[[ "$ROLE" =~ ^[a-z_][a-z0-9_]*$ && "$DB" =~ ^[a-z_][a-z0-9_]*$ ]] \
  || die "LOCAL_PG_USER and LOCAL_PG_DB must be lower-case names (letters, digits, _), got '$ROLE' and '$DB'"
[[ "$PORT" =~ ^[0-9]+$ ]] || die "LOCAL_PG_PORT must be a port number, got '$PORT'"

install_packages() {
  command -v pg_ctlcluster >/dev/null && [[ -n "$(pg_version)" ]] && return
  command -v apt-get >/dev/null || die "postgresql is not installed and apt-get is missing: install PostgreSQL with your package manager"
  echo "installing postgresql (apt-get, about a minute) ..."
  apt-get update -qq >/dev/null || die "apt-get update failed (no package registry reachable?)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null \
    || die "apt-get install postgresql failed"
}

pg_version() { ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1; }

server_up() { pg_isready -q -h 127.0.0.1 -p "$PORT" 2>/dev/null; }

as_postgres() { (cd / && runuser -u postgres -- "$@"); }

sql() { as_postgres psql -p "$PORT" -v ON_ERROR_STOP=1 -qtAc "$1"; }

ensure_cluster() {
  local version="$1"
  if ! pg_lsclusters -h 2>/dev/null | awk '{print $1" "$2}' | grep -qx "$version $CLUSTER"; then
    pg_createcluster -p "$PORT" "$version" "$CLUSTER" >/dev/null || die "pg_createcluster $version $CLUSTER failed"
  fi
  # loopback only, on the chosen port
  pg_conftool "$version" "$CLUSTER" remove listen_addresses
  mkdir -p "/etc/postgresql/$version/$CLUSTER/conf.d"
  echo "listen_addresses = '127.0.0.1'  # written by imagelab scripts/cluster/local_postgres.sh" \
    >"/etc/postgresql/$version/$CLUSTER/conf.d/imagelab-loopback.conf"
  pg_conftool "$version" "$CLUSTER" set port "$PORT"
}

ensure_role_and_db() {
  local pgpass="$HOME/.pgpass" entry password
  entry="$(grep -E "^(127\.0\.0\.1|localhost):$PORT:[^:]*:$ROLE:" "$pgpass" 2>/dev/null | head -1 || true)"
  password="${LOCAL_PG_PASSWORD:-${entry##*:}}"
  [[ -n "$password" ]] || password="$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
  [[ "$password" != *"'"* && "$password" != *:* ]] || die "LOCAL_PG_PASSWORD must not contain ' or :"
  if [[ "$(sql "SELECT 1 FROM pg_roles WHERE rolname='$ROLE'")" == 1 ]]; then
    sql "ALTER ROLE $ROLE WITH LOGIN PASSWORD '$password'" >/dev/null
  else
    sql "CREATE ROLE $ROLE WITH LOGIN PASSWORD '$password'" >/dev/null
  fi
  if [[ "$(sql "SELECT 1 FROM pg_database WHERE datname='$DB'")" != 1 ]]; then
    as_postgres createdb -p "$PORT" -O "$ROLE" "$DB" || die "createdb $DB failed"
  fi
  touch "$pgpass" && chmod 600 "$pgpass"
  grep -vE "^(127\.0\.0\.1|localhost):$PORT:[^:]*:$ROLE:" "$pgpass" >"$pgpass.new" || true
  echo "127.0.0.1:$PORT:*:$ROLE:$password" >>"$pgpass.new"
  mv "$pgpass.new" "$pgpass" && chmod 600 "$pgpass"
}

start() {
  need_root start
  install_packages
  local version
  version="$(pg_version)"
  if ! server_up; then
    port_busy "$PORT" && die "port $PORT is in use by another program: set LOCAL_PG_PORT to a free port"
    ensure_cluster "$version"
    pg_ctlcluster "$version" "$CLUSTER" start >/dev/null 2>&1 \
      || die "PostgreSQL $version/$CLUSTER did not start: see /var/log/postgresql/postgresql-$version-$CLUSTER.log"
    for _ in $(seq 30); do server_up && break; sleep 1; done
    server_up || die "PostgreSQL $version/$CLUSTER did not answer on 127.0.0.1:$PORT within 30 s"
  fi
  ensure_role_and_db
  echo "PostgreSQL $version on 127.0.0.1:$PORT, database $DB, password in $HOME/.pgpass"
  echo "storage URL: postgresql://$ROLE@127.0.0.1:$PORT/$DB"
}

stop() {
  need_root stop
  local version
  version="$(pg_version)"
  [[ -n "$version" ]] || { echo "PostgreSQL is not installed: nothing to stop"; return; }
  server_up || { echo "PostgreSQL is not running on 127.0.0.1:$PORT"; return; }
  pg_ctlcluster "$version" "$CLUSTER" stop >/dev/null 2>&1 || die "pg_ctlcluster $version $CLUSTER stop failed"
  echo "PostgreSQL $version/$CLUSTER stopped"
}

status() {
  if server_up; then
    echo "PostgreSQL answers on 127.0.0.1:$PORT: storage URL postgresql://$ROLE@127.0.0.1:$PORT/$DB"
  else
    echo "PostgreSQL does not answer on 127.0.0.1:$PORT"
    return 1
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: $0 start|stop|status" ;;
esac
