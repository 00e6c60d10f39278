//! Call one tool of one component over and over through the call path every caller takes,
//! and print the p50 and p90 of a call and the page faults each call cost: the loop the
//! flame graphs in bench/flamegraphs/ are recorded over (`just flamegraphs`).
//!
//! `cargo run --release -p autoglm-host --example call_loop -- COMPONENT TOOL ARGS [CALLS [GAP_US]]`
//! GAP_US idles that long between calls, to see what a cold CPU costs.

use std::time::{Duration, Instant};

use anyhow::Context;
use autoglm_host::app::{Host, Settings};
use autoglm_host::config::Config;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: call_loop COMPONENT TOOL ARGS [CALLS [GAP_US]]";
    let component = std::path::PathBuf::from(args.next().context(usage)?);
    let tool = args.next().context(usage)?;
    let call_args: serde_json::Value = serde_json::from_str(&args.next().context(usage)?)?;
    let calls: usize = args.next().map_or(Ok(10_000), |n| n.parse())?;
    let gap = Duration::from_micros(args.next().map_or(Ok(0), |n| n.parse())?);

    let plugins = tempfile::tempdir()?;
    let file = component.file_name().context("COMPONENT names a file")?;
    std::fs::copy(&component, plugins.path().join(file))?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (host, errors) =
        rt.block_on(Host::open(&Settings::new(Config::default(), plugins.path())))?;
    anyhow::ensure!(errors.is_empty(), "{errors:?}");

    let mut times = Vec::with_capacity(calls);
    let faults = autoglm_bench::minor_faults();
    for _ in 0..calls {
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
        let started = Instant::now();
        rt.block_on(host.call(&tool, &call_args)).outcome.map_err(|e| anyhow::anyhow!("{e}"))?;
        times.push(started.elapsed());
    }
    let faults = autoglm_bench::minor_faults() - faults;
    times.sort();
    println!(
        "{tool}: {calls} calls, p50 {:?}, p90 {:?}, {:.1} page faults per call",
        times[calls / 2],
        times[calls * 9 / 10],
        faults as f64 / calls as f64
    );
    Ok(())
}
