#!/usr/bin/env bash
# Run the bench's Node-RED peer headless, in the foreground (exec: the caller's pid is
# Node-RED's). Environment: see settings.js. Installs nothing: `./dev bench` runs `npm ci` here.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ ! -x "$here/node_modules/.bin/node-red" ]; then
  echo "node-red: not installed (run ./dev bench)" >&2
  exit 3
fi
: "${NODE_RED_USER_DIR:?set by bench/system.py}"
mkdir -p "$NODE_RED_USER_DIR"
# Node-RED finds extra nodes (node-red-contrib-influxdb) in its user dir's node_modules.
ln -sfn "$here/node_modules" "$NODE_RED_USER_DIR/node_modules"
exec node -r "$here/nodelay.js" "$here/node_modules/node-red/red.js" \
  --userDir "$NODE_RED_USER_DIR" --settings "$here/settings.js"
