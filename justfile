# Open-AutoGLM tasks. `just --list` shows them all.

set shell := ["bash", "-euo", "pipefail", "-c"]
set positional-arguments := true

# The sample plugins, each built to target/plugins/<name>.wasm.
samples := "weather calculator units notes http text"

# List the recipes.
default:
    @just --list

# Build the host in release mode.
build:
    cargo build --release -p autoglm-host

# Build every sample plugin into target/plugins/ (a WebAssembly component each).
plugins:
    plugins-sdk/cargo-wasm build --profile plugin {{ prepend("-p ", samples) }}
    mkdir -p target/plugins
    for p in {{ samples }}; do cp target/wasm32-wasip2/plugin/$p.wasm target/plugins/$p.wasm; done
    @ls -l target/plugins

# Plugins that misbehave on purpose, for the sandbox tests (target/test-plugins/).
test-plugins:
    plugins-sdk/cargo-wasm build --profile plugin -p hostile -p incompatible
    mkdir -p target/test-plugins
    for p in hostile incompatible; do cp target/wasm32-wasip2/plugin/$p.wasm target/test-plugins/$p.wasm; done

# Virtual environments with the real MCP (2.x and 1.x) and OpenAI clients, pinned.
python-env:
    tests/python/ensure-venv target/py/v2 tests/python/requirements-v2.txt
    tests/python/ensure-venv target/py/v1 tests/python/requirements-v1.txt

# The Python (componentize-py) and JavaScript (componentize-js) plugin toolchains, pinned.
templates-env:
    tests/python/ensure-venv target/py/componentize tests/python/requirements-componentize.txt
    tests/js-toolchain/ensure target/js-toolchain

# Serve the sample plugins over HTTP, with the shipped demo model answering chat completions.
serve *ARGS: plugins
    cargo run --release -p autoglm-host -- serve --model models/autoglm-demo {{ ARGS }}

# Ask the demo model a question (or chat interactively without one); tool calls are shown.
chat *QUESTION: plugins
    cargo run --release -p autoglm-host -- chat --model models/autoglm-demo "${@}"

# Retrain the demo model from its fixed seed (about 30 minutes on 2 cores; not part of `just test`).
train-demo: plugins
    cargo run --release -p autoglm-trainer -- --plugins target/plugins --out models/autoglm-demo

# Score the demo model on its held-out split (writes target/eval-demo.json).
eval-demo: plugins
    cargo run --release -p autoglm-host -- eval --model models/autoglm-demo --data models/autoglm-demo/heldout.jsonl --json target/eval-demo.json

# Run every test: unit and integration tests, then the real Python clients against `autoglm serve`.
test: plugins test-plugins python-env templates-env
    cargo test --workspace --no-fail-fast
    target/py/v2/bin/pytest -q tests/python/test_mcp_v2.py tests/python/test_openai.py
    target/py/v1/bin/pytest -q tests/python/test_mcp_v1.py

# Run the benchmarks (release build): sandboxed call cost per language, HTTP throughput,
# engine tokens/s, chat requests with and without batching.
bench: plugins test-plugins
    cargo bench -p autoglm-host

# Format all code.
fmt:
    cargo fmt --all

# Lint with clippy, warnings as errors.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
