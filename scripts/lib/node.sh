# Sourced by the scripts: GitHub's own webhook examples, signing code and REST API description for the tests, from the npm
# registry into tests/node/node_modules (never globally). Exports LIMINAL_TEST_NODE_DIR.
set -euo pipefail
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "== installing Node.js and npm (Debian packages)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
if [ ! -d tests/node/node_modules/@octokit/webhooks-methods ] || [ ! -d tests/node/node_modules/@octokit/webhooks-examples ] \
  || [ ! -d tests/node/node_modules/@octokit/openapi ]; then
  echo "== installing @octokit/webhooks-examples, @octokit/webhooks-methods and @octokit/openapi into tests/node"
  npm install --prefix tests/node --silent --no-audit --no-fund --no-save >/dev/null
fi
export LIMINAL_TEST_NODE_DIR="$PWD/tests/node"
