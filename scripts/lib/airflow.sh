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
