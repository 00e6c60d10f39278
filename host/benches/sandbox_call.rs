//! Cost of one tool call per guest language (the `greet` tool of the Rust, Python and
//! JavaScript templates): a fresh sandbox with every limit armed, as this host runs each
//! call, against a warm instance kept across calls and against the same logic as a native
//! Rust function, all measured in the same run. Also each component's size and compile time,
//! cold and from the cache.
//!
//! `just bench` builds the guests (recipe bench-guests) and records the section; by hand:
//! `cargo bench -p autoglm-host --bench sandbox_call [-- --quick]`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use autoglm_bench::{Chart, Section, Series, Table, duration, percentiles, ratio};
use autoglm_host::app::{Host, Settings};
use autoglm_host::config::Config;
use serde::{Deserialize, Serialize};

const GUESTS: &[(&str, &str)] = &[("Rust", "rust"), ("Python", "python"), ("JavaScript", "js")];
const ARGS: &str = r#"{"name": "Ada", "excited": true}"#;

/// Sample `f` for about `budget` (after a tenth of that warming up), at most 20,000 times.
fn measure(budget: Duration, mut f: impl FnMut()) -> (Duration, Duration) {
    let warm_until = Instant::now() + budget / 10;
    while Instant::now() < warm_until {
        f();
    }
    let until = Instant::now() + budget;
    let mut samples = Vec::new();
    while Instant::now() < until && samples.len() < 20_000 {
        let started = Instant::now();
        f();
        samples.push(started.elapsed());
    }
    percentiles(samples)
}

#[derive(Deserialize)]
struct GreetArgs {
    name: String,
    #[serde(default)]
    excited: bool,
}

#[derive(Serialize)]
struct Greeting {
    greeting: String,
}

/// The templates' `greet`, natively: decode the arguments, greet, encode the result.
fn native_greet(args: &str) -> String {
    let args: GreetArgs = serde_json::from_str(args).expect("valid arguments");
    let end = if args.excited { "!" } else { "." };
    let greeting = Greeting { greeting: format!("Hello, {}{end}", args.name.trim()) };
    serde_json::to_string(&greeting).expect("serialisable")
}

fn guest_file(lang: &str) -> PathBuf {
    let name = format!("demo-{lang}");
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/bench-guests")
        .join(&name)
        .join(format!("{name}.wasm"))
}

/// p50 and p99 of each way to call, and the component's size and compile times.
struct Measured {
    native: (Duration, Duration),
    warm: (Duration, Duration),
    fresh: (Duration, Duration),
    routed: (Duration, Duration),
    size: usize,
    cold_compile: Duration,
    cached_compile: Duration,
}

fn measure_guest(
    rt: &tokio::runtime::Runtime,
    lang: &str,
    budget: Duration,
) -> anyhow::Result<Measured> {
    let file = guest_file(lang);
    let bytes = std::fs::read(&file)
        .map_err(|e| anyhow::anyhow!("{}: {e}; run `just bench-guests`", file.display()))?;
    let name = format!("demo-{lang}");
    // One cold compilation (which also fills the cache), then the same bytes again.
    let cache = tempfile::tempdir()?;
    let mut config = Config::default();
    config.cache_dir = Some(cache.path().to_path_buf());
    let runtime =
        autoglm_host::runtime::Runtime::new(&config.wasm, Some(cache.path().to_path_buf()))?;
    let started = Instant::now();
    runtime.compile(&name, &bytes)?;
    let cold_compile = started.elapsed();
    let started = Instant::now();
    runtime.compile(&name, &bytes)?;
    let cached_compile = started.elapsed();

    let dir = tempfile::tempdir()?;
    std::fs::copy(&file, dir.path().join(format!("{name}.wasm")))?;
    let (host, errors) = rt.block_on(Host::open(&Settings::new(config, dir.path())))?;
    anyhow::ensure!(errors.is_empty(), "{errors:?}");
    let router = host.invoker.router();
    let tool = format!("{name}.greet");
    let target = router.resolve(&tool)?;
    let spec = &target.tool().spec;
    let sandbox = &target.plugin.sandbox;
    let args: serde_json::Value = serde_json::from_str(ARGS)?;

    // Every way of calling must give the same answer before its speed means anything.
    let expected = native_greet(ARGS);
    let mut warm = rt.block_on(sandbox.warm_instance())?;
    let same = |json: &str| serde_json::from_str::<serde_json::Value>(json).ok();
    anyhow::ensure!(same(&rt.block_on(warm.call("greet", ARGS))?) == same(&expected));
    anyhow::ensure!(same(&rt.block_on(sandbox.call(spec, ARGS)).outcome?) == same(&expected));

    let native = measure(budget, || {
        black_box(native_greet(black_box(ARGS)));
    });
    let warm = measure(budget, || {
        rt.block_on(warm.call("greet", ARGS)).expect("warm call");
    });
    let fresh = measure(budget, || {
        rt.block_on(sandbox.call(spec, ARGS)).outcome.expect("sandboxed call");
    });
    let routed = measure(budget, || {
        rt.block_on(host.call(&tool, &args)).outcome.expect("routed call");
    });
    Ok(Measured { native, warm, fresh, routed, size: bytes.len(), cold_compile, cached_compile })
}

fn main() -> anyhow::Result<()> {
    let quick = autoglm_bench::quick();
    let budget = if quick { Duration::from_millis(700) } else { Duration::from_secs(3) };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut calls = Table::new(&[
        "guest",
        "native fn",
        "warm instance",
        "fresh sandbox",
        "fresh p99",
        "via call path",
        "fresh ÷ warm",
        "fresh ÷ native",
    ]);
    let mut components = Table::new(&["guest", "size", "compile (cold)", "compile (cache)"]);
    let mut series =
        Series::named(&["native fn", "warm instance", "fresh sandbox", "via call path"]);
    let mut fresh_rust = Duration::ZERO;
    for (label, lang) in GUESTS {
        let m = measure_guest(&rt, lang, budget)?;
        let secs = |d: Duration| d.as_secs_f64();
        calls.row(vec![
            label.to_string(),
            duration(m.native.0),
            duration(m.warm.0),
            duration(m.fresh.0),
            duration(m.fresh.1),
            duration(m.routed.0),
            ratio(secs(m.fresh.0), secs(m.warm.0)),
            ratio(secs(m.fresh.0), secs(m.native.0)),
        ]);
        components.row(vec![
            label.to_string(),
            format!("{} KiB", m.size >> 10),
            duration(m.cold_compile),
            duration(m.cached_compile),
        ]);
        for (s, d) in series.iter_mut().zip([m.native, m.warm, m.fresh, m.routed]) {
            s.values.push(d.0.as_secs_f64() * 1e6);
        }
        if *lang == "rust" {
            fresh_rust = m.fresh.0;
        }
    }
    println!("per-call cost, p50 (greet tool of each template)\n{}", calls.text());
    println!("components\n{}", components.text());

    let mut section = Section::new(
        "per_call",
        "Per-call cost: fresh sandbox vs warm instance vs native",
        "The `greet` tool of the Rust, Python and JavaScript templates, called with the same \
         JSON arguments four ways: the same logic as a native Rust function; a warm instance \
         kept across calls (what hosts that reuse instances pay); a fresh sandbox per call with \
         fuel, deadline, memory cap, output cap and grants armed (what this host does for every \
         call); and through the call path every caller takes (`invoke`), which adds name \
         resolution, the allowlist check, JSON-schema validation, metrics and the log line. \
         Median (p50) per call unless stated.",
    );
    section.tables = vec![calls, components];
    section.notes.push(format!(
        "A fresh Rust sandbox costs {} per call; the seed document measured 8-12 ms per \
         plugin call in its architecture, {} to {} as much.",
        duration(fresh_rust),
        ratio(8e-3, fresh_rust.as_secs_f64()),
        ratio(12e-3, fresh_rust.as_secs_f64()),
    ));
    section.notes.push(
        "Interpreted guests pay for their runtime's start-up in every fresh instance: the \
         Python and JavaScript rows are dominated by instantiating the interpreter, not by \
         `greet`."
            .into(),
    );
    section.charts.push(Chart {
        file: "per_call.png".into(),
        title: "Cost of one greet call (p50, log scale)".into(),
        unit: "µs per call".into(),
        log_scale: true,
        groups: GUESTS.iter().map(|(label, _)| label.to_string()).collect(),
        series,
    });
    section.record()
}
