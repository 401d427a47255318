# Sourced by scripts/test: make Redis and PostgreSQL reachable on 127.0.0.1.
# Starts them when installed but stopped; installs them from Debian when absent.
# nginx is only installed: the edge tests start their own on a free port.

_apt_updated=0
apt_install() {
  if [ "$_apt_updated" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null && _apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

port_open() {  # port_open PORT
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_port() {  # wait_port PORT NAME
  for _ in $(seq 1 60); do port_open "$1" && return 0; sleep 0.5; done
  echo "error: $2 did not come up on 127.0.0.1:$1" >&2
  return 1
}

ensure_redis() {
  port_open 6379 && return 0
  command -v redis-server >/dev/null || { echo "==> installing redis-server"; apt_install redis-server; }
  echo "==> starting redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_port 6379 redis
}

ensure_rabbitmq() {
  port_open 5672 && return 0
  command -v rabbitmq-server >/dev/null || { echo "==> installing rabbitmq-server"; apt_install rabbitmq-server; }
  echo "==> starting rabbitmq"
  rabbitmq-server -detached
  wait_port 5672 rabbitmq
}

ensure_postgres() {
  if ! port_open 5432; then
    if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
      echo "==> installing postgresql"
      apt_install postgresql
    fi
    echo "==> starting postgresql"
    local ver
    ver="$(ls /etc/postgresql | sort -V | tail -n1)"
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
    wait_port 5432 postgresql
  fi
  # Tests connect over TCP as `postgres`. A fresh Debian install asks for a
  # password on TCP, so give that role one and tell the tests.
  if [ -z "${MEDIAMILL_TEST_POSTGRES_URL:-}" ]; then
    if psql -h 127.0.0.1 -U postgres -d postgres -Atc 'select 1' >/dev/null 2>&1; then
      export MEDIAMILL_TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    else
      su postgres -c "psql -qc \"ALTER ROLE postgres PASSWORD 'postgres'\"" >/dev/null
      export MEDIAMILL_TEST_POSTGRES_URL="postgresql+psycopg://postgres:postgres@127.0.0.1:5432/postgres"
    fi
  fi
}

nginx_bin() {  # the nginx binary, also when /usr/sbin is not on PATH
  command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; }
}

ensure_nginx() {
  if [ -z "$(nginx_bin)" ]; then
    echo "==> installing nginx"
    # Debian starts the service after installing it unless policy-rc.d says no;
    # the tests run their own nginx, so say no for this install only.
    local policy=/usr/sbin/policy-rc.d added=0 rc=0
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' > "$policy"
      chmod 755 "$policy"
      added=1
    fi
    apt_install nginx || rc=$?
    if [ "$added" = 1 ]; then rm -f "$policy"; fi
    if [ "$rc" != 0 ]; then echo "error: installing nginx failed" >&2; return "$rc"; fi
  fi
  # The edge config checks signed URLs with the secure_link module.
  case "$("$(nginx_bin)" -V 2>&1)" in
    *--with-http_secure_link_module*) ;;
    *) echo "error: $(nginx_bin) was built without the secure_link module" >&2; return 1 ;;
  esac
}

ensure_players() {  # Debian's Chromium and the npm players (hls.js, dash.js) of tests/players
  if ! command -v chromium >/dev/null 2>&1; then
    echo "==> installing chromium"
    apt_install --no-install-recommends chromium
  fi
  local dir lock stamp
  dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/tests/players"
  lock="$(sha256sum "$dir/package-lock.json" | cut -c1-64)"
  stamp="$dir/node_modules/.mediamill-installed"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock" ]; then
    echo "==> installing the players (npm ci in tests/players)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    echo "$lock" > "$stamp"
  fi
}
