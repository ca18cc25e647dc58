# Sourced by the scripts: make .venv (Python >= 3.11) with the project and its dev tools installed.
set -euo pipefail
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "error: $PYTHON must be Python 3.11 or newer" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null \
  2> >(grep -v "^WARNING: Location" >&2)
python -m pip install --quiet --disable-pip-version-check -e ".[dev]" \
  2> >(grep -v "^WARNING: Location" >&2)
