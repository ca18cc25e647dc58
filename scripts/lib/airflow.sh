# Sourced by the scripts: make Airflow 3's own virtualenv (AIRFLOW_VENV, default .airflow-venv) with
# the providers rendered DAGs use. Kept apart from .venv: Airflow pins hundreds of packages.
set -euo pipefail
PYTHON="${PYTHON:-python3}"
AIRFLOW_VENV="${AIRFLOW_VENV:-$PWD/.airflow-venv}"
export AIRFLOW_VENV
if ! "$AIRFLOW_VENV/bin/python" -c 'import airflow.providers.cncf.kubernetes, airflow.providers.docker' 2>/dev/null; then
  echo "== installing Airflow 3 into $AIRFLOW_VENV (a few minutes, once)"
  "$PYTHON" -m venv "$AIRFLOW_VENV"
  "$AIRFLOW_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    -c scripts/airflow-constraints.txt \
    apache-airflow==3.3.2 apache-airflow-providers-cncf-kubernetes apache-airflow-providers-docker \
    2> >(grep -v "^WARNING: Location" >&2)
fi

# ---- a running Airflow 3 for the tests ----------------------------------------------------------
# Starts api-server, scheduler, dag-processor and triggerer separately (`airflow standalone` does
# not shut down cleanly) on 127.0.0.1:$LIMINAL_AIRFLOW_PORT with SQLite, unless one answers there
# already; `liminal_airflow_down` stops only what this script started. Exports
# LIMINAL_TEST_AIRFLOW_URL, _USERNAME, _PASSWORD, _HOME and _DAGS (its dags folder).
LIMINAL_AIRFLOW_PORT="${LIMINAL_AIRFLOW_PORT:-28080}"
LIMINAL_AIRFLOW_HOME="${LIMINAL_AIRFLOW_HOME:-/tmp/liminal-airflow}"
_liminal_airflow_pgids=()

liminal_airflow_down() {
  for pgid in "${_liminal_airflow_pgids[@]:-}"; do
    [ -n "$pgid" ] && kill -TERM -- "-$pgid" 2>/dev/null || true
  done
  for pgid in "${_liminal_airflow_pgids[@]:-}"; do
    [ -n "$pgid" ] && for _ in $(seq 1 60); do kill -0 -- "-$pgid" 2>/dev/null || break; sleep 0.25; done
    [ -n "$pgid" ] && kill -KILL -- "-$pgid" 2>/dev/null || true
  done
  _liminal_airflow_pgids=()
}

liminal_airflow_env() {
  # the settings every Airflow process of the tests shares (also used by tests that start an api-server)
  export AIRFLOW_HOME="$LIMINAL_AIRFLOW_HOME"
  export AIRFLOW__CORE__DAGS_FOLDER="$LIMINAL_AIRFLOW_HOME/dags"
  export AIRFLOW__CORE__LOAD_EXAMPLES=False
  export AIRFLOW__CORE__EXECUTOR=LocalExecutor
  export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=admin:admin
  export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:$LIMINAL_AIRFLOW_PORT/execution/"
  export AIRFLOW__API__HOST=127.0.0.1
  export AIRFLOW__API__PORT="$LIMINAL_AIRFLOW_PORT"
  export AIRFLOW__API__WORKERS=1
  export AIRFLOW__API__SECRET_KEY=liminal-test-secret-key
  export AIRFLOW__API_AUTH__JWT_SECRET=liminal-test-jwt-secret-of-at-least-32-bytes
  # a new repository's loader file is found by listing the folder; every later change of that
  # repository goes through the reparse API (the controller never waits for this)
  export AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL=2
  # a changed DAG is serialized (and served by the API) at once, not at most every 30 s
  export AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL=0
  export AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK=False
  export PATH="$AIRFLOW_VENV/bin:$PATH"
}

_liminal_airflow_up() {
  local url="http://127.0.0.1:$LIMINAL_AIRFLOW_PORT"
  export LIMINAL_TEST_AIRFLOW_URL="$url"
  export LIMINAL_TEST_AIRFLOW_USERNAME=admin
  export LIMINAL_TEST_AIRFLOW_HOME="$LIMINAL_AIRFLOW_HOME"
  export LIMINAL_TEST_AIRFLOW_DAGS="$LIMINAL_AIRFLOW_HOME/dags"
  mkdir -p "$LIMINAL_AIRFLOW_HOME/dags" "$LIMINAL_AIRFLOW_HOME/logs"
  local passwords="$LIMINAL_AIRFLOW_HOME/simple_auth_manager_passwords.json.generated"
  if [ ! -s "$passwords" ]; then
    printf '{"admin": "%s"}\n' "$(head -c 18 /dev/urandom | base64 | tr -d '/+=')" >"$passwords"
  fi
  LIMINAL_TEST_AIRFLOW_PASSWORD="$("$AIRFLOW_VENV/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["admin"])' "$passwords")"
  export LIMINAL_TEST_AIRFLOW_PASSWORD
  # the same settings for the processes a test starts itself (a second api-server it can stop)
  ( liminal_airflow_env; env | grep -E '^(AIRFLOW_HOME|AIRFLOW__)' ) >"$LIMINAL_AIRFLOW_HOME/airflow.env"
  if curl -fsS -o /dev/null "$url/api/v2/monitor/health" 2>/dev/null; then return; fi
  echo "== starting Airflow 3 on $url (home $LIMINAL_AIRFLOW_HOME; about a minute)"
  (
    liminal_airflow_env
    airflow db migrate >"$LIMINAL_AIRFLOW_HOME/logs/db-migrate.out" 2>&1
  ) || { echo "airflow db migrate failed; see $LIMINAL_AIRFLOW_HOME/logs/db-migrate.out" >&2; tail -20 "$LIMINAL_AIRFLOW_HOME/logs/db-migrate.out" >&2; return 1; }
  local part
  for part in api-server scheduler dag-processor triggerer; do
    # each part in its own session, so that stopping it stops the workers it forks too; restarted
    # when it dies, as systemd or Kubernetes would (Airflow 3.3's dag-processor can die of a
    # StaleDataError when a DAG is deleted through the API while it deactivates the same DAG)
    ( liminal_airflow_env; exec setsid bash -c 'while :; do airflow "$1"; echo "== airflow $1 exited ($?); restarting" >&2; sleep 2; done' _ "$part" >"$LIMINAL_AIRFLOW_HOME/logs/$part.out" 2>&1 ) &
    _liminal_airflow_pgids+=("$!")
  done
}

liminal_airflow_wait() {
  # wait for the Airflow started by _liminal_airflow_up (the scripts do other set-up meanwhile)
  local url="$LIMINAL_TEST_AIRFLOW_URL"
  for _ in $(seq 1 240); do
    if curl -fsS "$url/api/v2/monitor/health" 2>/dev/null | grep -q '"dag_processor": *{"status": *"healthy"'; then
      return
    fi
    sleep 0.5
  done
  echo "Airflow did not become healthy on $url; logs in $LIMINAL_AIRFLOW_HOME/logs" >&2
  tail -20 "$LIMINAL_AIRFLOW_HOME/logs/api-server.out" >&2
  return 1
}
_liminal_airflow_up
