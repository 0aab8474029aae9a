#!/usr/bin/env bash
# deps.sh makes sure PostgreSQL and Redis answer on their default local ports,
# installing them from Debian's packages and starting them when they do not,
# and that Chromium is installed for the operator page's browser test
# (without it that one test is skipped).
#
# It is idempotent: on a machine where both already run it only checks them.
# As root it does the work; as another user it prints the exact commands to run
# and exits non-zero. It also creates the development role the service uses
# (orderd/orderd, allowed to create databases so that each test package gets
# its own).
set -euo pipefail

PGPORT=${PGPORT:-5432}
REDIS_PORT=${REDIS_PORT:-6379}
PG_ROLE=${PG_ROLE:-orderd}
PG_PASSWORD=${PG_PASSWORD:-orderd}

log() { printf 'deps: %s\n' "$*" >&2; }

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 name=$2
  for _ in $(seq 1 60); do
    listening "$port" && return 0
    sleep 0.5
  done
  log "$name did not start listening on 127.0.0.1:$port"
  return 1
}

need_root() {
  log "$1 is not running on 127.0.0.1:$2 and this script is not root."
  log "Run these commands as root, then try again:"
  shift 2
  for cmd in "$@"; do printf '    %s\n' "$cmd" >&2; done
  exit 1
}

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    apt_updated=1
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

# install_chromium installs the Debian package chromium, running apt-get update
# first only when the package lists are empty or do not know the package.
install_chromium() {
  if [ -z "$apt_updated" ] && [ -n "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v '^lock$\|^partial$' || true)" ]; then
    log "apt-get install chromium"
    if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; then
      return 0
    fi
  fi
  apt_install chromium
}

start_postgres() {
  if ! command -v pg_lsclusters >/dev/null 2>&1 || [ -z "$(pg_lsclusters -h 2>/dev/null)" ]; then
    apt_install postgresql
  fi
  if [ -z "$(pg_lsclusters -h 2>/dev/null)" ]; then
    # Installed, but its cluster was removed: create one for the newest version.
    local ver
    ver=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
    log "creating PostgreSQL cluster $ver/main"
    pg_createcluster "$ver" main --port "$PGPORT" >/dev/null
  fi
  # Start every cluster that is down (the package's own cluster is 15/main).
  pg_lsclusters -h | while read -r ver name port status _; do
    if [ "$status" != "online" ]; then
      log "starting PostgreSQL cluster $ver/$name (port $port)"
      pg_ctlcluster "$ver" "$name" start
    fi
  done
  wait_port "$PGPORT" PostgreSQL
}

ensure_role() {
  # Idempotent: create or update the development role.
  su postgres -c "psql -q -v ON_ERROR_STOP=1 -p $PGPORT" <<SQL
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_ROLE') THEN
    CREATE ROLE $PG_ROLE LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
  ELSE
    ALTER ROLE $PG_ROLE LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
  END IF;
END
\$\$;
SELECT 'CREATE DATABASE $PG_ROLE OWNER $PG_ROLE'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_ROLE') \gexec
SQL
}

# check_role tells a user who is not root whether the development role can
# log in, and how to create it if not (it cannot do that itself).
check_role() {
  if ! command -v psql >/dev/null 2>&1; then
    log "psql is not installed: cannot check the $PG_ROLE role (the tests will tell)"
    return 0
  fi
  if PGPASSWORD=$PG_PASSWORD PGCONNECT_TIMEOUT=5 psql -h 127.0.0.1 -p "$PGPORT" -U "$PG_ROLE" -d "$PG_ROLE" \
      -qtAc 'SELECT 1' </dev/null >/dev/null 2>&1; then
    log "PostgreSQL role $PG_ROLE can log in"
    return 0
  fi
  log "PostgreSQL answers but role $PG_ROLE cannot log in to database $PG_ROLE. As root, run:"
  printf '    %s\n' \
    "su postgres -c \"psql -c \\\"CREATE ROLE $PG_ROLE LOGIN CREATEDB PASSWORD '$PG_PASSWORD'\\\"\"" \
    "  (or, if the role exists: su postgres -c \"psql -c \\\"ALTER ROLE $PG_ROLE LOGIN CREATEDB PASSWORD '$PG_PASSWORD'\\\"\")" \
    "su postgres -c \"createdb -O $PG_ROLE $PG_ROLE\"" >&2
  exit 1
}

start_redis() {
  if ! command -v redis-server >/dev/null 2>&1; then
    apt_install redis-server
    # The package may have started its own server where an init system runs.
    if listening "$REDIS_PORT"; then
      log "Redis answers on 127.0.0.1:$REDIS_PORT (started by its package)"
      return 0
    fi
  fi
  log "starting Redis on 127.0.0.1:$REDIS_PORT (append-only file on)"
  mkdir -p /var/lib/redis
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" \
    --dir /var/lib/redis --appendonly yes --appendfsync everysec \
    --logfile /var/log/redis-orderd.log --save ""
  wait_port "$REDIS_PORT" Redis
}

main() {
  local root=""
  [ "$(id -u)" = 0 ] && root=1

  if listening "$PGPORT"; then
    log "PostgreSQL answers on 127.0.0.1:$PGPORT"
  elif [ -n "$root" ]; then
    start_postgres
  else
    need_root PostgreSQL "$PGPORT" \
      "apt-get update && apt-get install -y postgresql" \
      "pg_ctlcluster 15 main start" \
      "su postgres -c \"psql -c \\\"CREATE ROLE $PG_ROLE LOGIN CREATEDB PASSWORD '$PG_PASSWORD'\\\"\"" \
      "su postgres -c \"createdb -O $PG_ROLE $PG_ROLE\""
  fi
  if [ -n "$root" ] && id postgres >/dev/null 2>&1; then
    ensure_role
  elif [ -z "$root" ]; then
    check_role
  fi

  if listening "$REDIS_PORT"; then
    log "Redis answers on 127.0.0.1:$REDIS_PORT"
  elif [ -n "$root" ]; then
    start_redis
  else
    need_root Redis "$REDIS_PORT" \
      "apt-get update && apt-get install -y redis-server" \
      "redis-server --daemonize yes --bind 127.0.0.1 --port $REDIS_PORT --appendonly yes"
  fi

  # Chromium is optional: without it the browser test of the operator page
  # (services/ingress) is skipped, so a user who is not root is told how to
  # install it and the script goes on.
  if [ -x "$CHROMIUM" ]; then
    log "Chromium is installed ($CHROMIUM)"
  elif [ -n "$root" ]; then
    install_chromium
    [ -x "$CHROMIUM" ] || { log "chromium was installed but $CHROMIUM is missing"; exit 1; }
    log "Chromium is installed ($CHROMIUM)"
  else
    log "Chromium is not installed ($CHROMIUM): the operator page's browser test will be skipped."
    log "To run it, run these commands as root:"
    printf '    %s\n' "apt-get update" "apt-get install -y chromium" >&2
  fi
}

main "$@"
