//! Cost of one sandboxed tool call — fresh Store, every limit armed, JSON in and
//! out — next to the same logic as a native Rust function, measured in the same run.
//!
//! Run with `cargo bench -p autoglm-host --bench sandbox_call` after `just test-plugins`.
//! Prints p50/p99 per call and the ratio to native; no pass/fail.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use autoglm_host::config::Config;
use serde_json::{Value, json};

const CALLS: usize = 20_000;

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (samples[samples.len() / 2], samples[samples.len() * 99 / 100])
}

fn measure(mut f: impl FnMut()) -> (Duration, Duration) {
    for _ in 0..CALLS / 10 {
        f();
    }
    let samples = (0..CALLS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    percentiles(samples)
}

/// What the `echo` tool does, natively: decode the arguments, encode the result.
fn native_echo(args: &str) -> String {
    let args: Value = serde_json::from_str(args).unwrap();
    serde_json::to_string(&args["text"]).unwrap()
}

fn main() -> anyhow::Result<()> {
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-plugins");
    let dir = tempfile::tempdir()?;
    std::fs::copy(plugins.join("hostile.wasm"), dir.path().join("hostile.wasm"))
        .map_err(|e| anyhow::anyhow!("{e}: run `just test-plugins` first"))?;
    let config =
        Config { cache_dir: Some(plugins.join("../bench-component-cache")), ..Default::default() };

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (live, errors) = rt.block_on(autoglm_host::open(&config, dir.path()))?;
    anyhow::ensure!(errors.is_empty(), "{errors:?}");
    let router = live.router();
    let target = router.resolve("hostile.echo")?;
    let args = json!({"text": "hello"});
    let args_text = args.to_string();

    let native = measure(|| {
        black_box(native_echo(black_box(&args_text)));
    });
    let sandbox = measure(|| {
        rt.block_on(target.plugin.sandbox.call(&target.tool().spec, &args_text)).outcome.unwrap();
    });
    let routed = measure(|| {
        rt.block_on(router.call("hostile.echo", &args)).unwrap();
    });

    println!("sandboxed call of a trivial tool ({CALLS} calls, pooled: {})", live_pooled(&config));
    println!("{:<34} {:>10} {:>10} {:>12}", "", "p50", "p99", "p50/native");
    for (name, (p50, p99)) in [
        ("native Rust function", native),
        ("sandbox (fresh Store, all limits)", sandbox),
        ("router (+ name, schema, grants)", routed),
    ] {
        let ratio = p50.as_secs_f64() / native.0.as_secs_f64();
        println!("{name:<34} {:>10.2?} {:>10.2?} {ratio:>11.0}x", p50, p99);
    }
    templates(&rt)?;
    Ok(())
}

/// Per-language figures for the components `cargo test --test templates` builds:
/// size, compile time cold and from the cache, and p50 per call.
fn templates(rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/template-tests");
    println!(
        "\ntemplate components (build them with `cargo test -p autoglm-host --test templates`)"
    );
    println!(
        "{:<8} {:>10} {:>12} {:>12} {:>10} {:>10}",
        "lang", "size", "compile", "cached", "p50", "p99"
    );
    for lang in ["rust", "python", "js"] {
        let name = format!("demo-{lang}");
        let file = built.join(&name).join(format!("{name}.wasm"));
        let Ok(bytes) = std::fs::read(&file) else {
            println!("{lang:<8} not built");
            continue;
        };
        let cold = {
            let runtime = autoglm_host::runtime::Runtime::new(&Default::default(), None)?;
            let started = Instant::now();
            runtime.compile(&name, &bytes)?;
            started.elapsed()
        };
        let cache = tempfile::tempdir()?;
        let runtime = autoglm_host::runtime::Runtime::new(
            &Default::default(),
            Some(cache.path().to_path_buf()),
        )?;
        runtime.compile(&name, &bytes)?;
        let started = Instant::now();
        runtime.compile(&name, &bytes)?;
        let cached = started.elapsed();

        let dir = tempfile::tempdir()?;
        std::fs::copy(&file, dir.path().join(format!("{name}.wasm")))?;
        let config = Config { cache_dir: Some(cache.path().to_path_buf()), ..Default::default() };
        let (live, errors) = rt.block_on(autoglm_host::open(&config, dir.path()))?;
        anyhow::ensure!(errors.is_empty(), "{errors:?}");
        let router = live.router();
        let args = json!({"name": "Ada"});
        let tool = format!("{name}.greet");
        let mut samples: Vec<Duration> = (0..500)
            .map(|_| {
                let started = Instant::now();
                rt.block_on(router.call(&tool, &args)).unwrap();
                started.elapsed()
            })
            .collect();
        samples.drain(..50);
        let (p50, p99) = percentiles(samples);
        println!(
            "{lang:<8} {:>8} KB {:>12.2?} {:>12.2?} {:>10.2?} {:>10.2?}",
            bytes.len() >> 10,
            cold,
            cached,
            p50,
            p99
        );
    }
    Ok(())
}

fn live_pooled(config: &Config) -> bool {
    autoglm_host::runtime::Runtime::new(&config.engine, None)
        .map(|r| r.is_pooled())
        .unwrap_or(false)
}
