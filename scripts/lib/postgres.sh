# Sourced by the scripts: make sure a PostgreSQL server answers on 127.0.0.1:5432 for the ledger tests,
# installing and starting Debian's package when it does not. Exports LIMINAL_TEST_POSTGRES_URL.
set -euo pipefail
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "== installing PostgreSQL (Debian package)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) || true
  fi
  version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1 || true)"
  if [ -n "$version" ]; then
    pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || true
  fi
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  # a role and database of our own; local socket access as the postgres user needs no password
  if [ "$(id -u)" = 0 ] && command -v runuser >/dev/null; then
    runuser -u postgres -- psql -q -c "DO \$\$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='liminal') THEN CREATE ROLE liminal LOGIN PASSWORD 'liminal' CREATEDB; END IF; END\$\$;" >/dev/null 2>&1 || true
  fi
  export LIMINAL_TEST_POSTGRES_URL="${LIMINAL_TEST_POSTGRES_URL:-postgresql+psycopg://liminal:liminal@127.0.0.1:5432/postgres}"
fi
