# Open-AutoGLM tasks. `just --list` shows them all.

set shell := ["bash", "-euo", "pipefail", "-c"]

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

# Serve the tools over HTTP with the sample plugins.
serve *ARGS: plugins
    cargo run --release -p autoglm-host -- serve {{ ARGS }}

# Run every test: unit tests, plugin tests and the host's integration tests.
test: plugins test-plugins
    cargo test --workspace --no-fail-fast

# Run the benchmarks.
bench:
    @echo "benchmarks are not built yet (issue #9)"

# Format all code.
fmt:
    cargo fmt --all

# Lint with clippy, warnings as errors.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
