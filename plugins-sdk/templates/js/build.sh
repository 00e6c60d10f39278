#!/usr/bin/env bash
# Build {{name}}.wasm with componentize-js (from node_modules unless COMPONENTIZE_JS names one).
set -euo pipefail
cd "$(dirname "$0")"
componentize=${COMPONENTIZE_JS:-node_modules/.bin/componentize-js}
if [ ! -x "$componentize" ]; then
    npm install --no-audit --no-fund --silent
    componentize=node_modules/.bin/componentize-js
fi
# The host gives tools no HTTP server role: leave out the fetch-event export and wasi:http.
"$componentize" tool.js --wit wit --world-name plugin -d http fetch-event -o {{name}}.wasm
echo "built {{name}}.wasm ($(wc -c < {{name}}.wasm) bytes)"
