# Sourced by scripts/test: Debian's Chromium for the browser tests (Playwright drives it; its own
# browser download cannot work without the internet). About 1-2 minutes the first time.
# Exports LIMINAL_TEST_CHROMIUM.
set -euo pipefail
if ! command -v chromium >/dev/null; then
  echo "== installing chromium (Debian package, for the browser tests)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
export LIMINAL_TEST_CHROMIUM="$(command -v chromium)"
