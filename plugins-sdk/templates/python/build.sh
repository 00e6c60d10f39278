#!/usr/bin/env bash
# Build {{name}}.wasm with componentize-py (installed into .venv unless COMPONENTIZE_PY names one).
set -euo pipefail
cd "$(dirname "$0")"
componentize=${COMPONENTIZE_PY:-.venv/bin/componentize-py}
if [ ! -x "$componentize" ]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet componentize-py==0.25.1
    componentize=.venv/bin/componentize-py
fi
"$componentize" -d wit -w plugin componentize app -o {{name}}.wasm
echo "built {{name}}.wasm ($(wc -c < {{name}}.wasm) bytes)"
