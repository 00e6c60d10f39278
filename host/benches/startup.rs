//! `autoglm serve` from start to serving, and its memory: for 1, 10 and 50 plugins, the time
//! until `/healthz` answers and until `/readyz` reports every plugin loaded, on a first start
//! (every component compiled) and on a restart (compiled code from the cache); resident
//! memory per loaded plugin and per call in flight. Real processes, real HTTP.
//!
//! `just bench` records the sections; by hand: `cargo bench -p autoglm-host --bench startup`
//! after `just plugins test-plugins`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use autoglm_bench::{Chart, Section, Series, Table, duration, significant};
use autoglm_test_support::host::{ServeProcess, sample, test_plugin};

const COUNTS: &[usize] = &[1, 10, 50];
const IN_FLIGHT: usize = 32;

/// A component that differs from `bytes` only by a custom section naming `i`, so each copy
/// has its own hash and compiles on its own, as distinct plugins would.
fn distinct_copy(bytes: &[u8], i: usize) -> Vec<u8> {
    let name = b"autoglm-bench-copy";
    let payload = i.to_le_bytes();
    let mut body = leb128(name.len());
    body.extend_from_slice(name);
    body.extend_from_slice(&payload);
    let mut out = bytes.to_vec();
    out.push(0); // custom section id
    out.extend(leb128(body.len()));
    out.extend(body);
    out
}

fn leb128(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// Start `autoglm serve` on a free port over `plugins` with `config`; returns once it printed
/// its address.
fn serve(plugins: &Path, config: &Path) -> ServeProcess {
    ServeProcess::start([
        "--plugins".as_ref(),
        plugins.as_os_str(),
        "--config".as_ref(),
        config.as_os_str(),
    ])
}

/// Status code of `GET path` (or `POST` with `body`), 0 when the connection failed.
fn status(addr: SocketAddr, path: &str, body: Option<&str>) -> u16 {
    let Ok(mut stream) = TcpStream::connect(addr) else { return 0 };
    let request = match body {
        None => format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"),
        Some(body) => format!(
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: \
             application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ),
    };
    let mut reply = String::new();
    if stream.write_all(request.as_bytes()).is_err() || stream.read_to_string(&mut reply).is_err() {
        return 0;
    }
    reply.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Poll `path` every 2 ms until it answers 200; the time since `started`.
fn until_ok(addr: SocketAddr, path: &str, started: Instant) -> anyhow::Result<Duration> {
    loop {
        match status(addr, path, None) {
            200 => return Ok(started.elapsed()),
            // Not listening yet, or not ready yet.
            0 | 503 => {}
            other => anyhow::bail!("{path} answered {other}"),
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "{path} never answered 200");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// One start: time to `/healthz`, time to `/readyz`, resident memory once ready (KiB).
fn start(plugins: &Path, config: &Path) -> anyhow::Result<(Duration, Duration, u64)> {
    let started = Instant::now();
    let server = serve(plugins, config);
    let healthy = until_ok(server.addr, "/healthz", started)?;
    let ready = until_ok(server.addr, "/readyz", started)?;
    std::thread::sleep(Duration::from_millis(200));
    Ok((healthy, ready, server.rss_kib()))
}

fn main() -> anyhow::Result<()> {
    let weather = std::fs::read(sample("weather"))?;
    let work = tempfile::tempdir()?;

    let mut table = Table::new(&[
        "plugins",
        "first start: /healthz",
        "first start: ready",
        "restart: /healthz",
        "restart: ready",
        "ready, first ÷ restart",
    ]);
    let mut rss = Vec::new();
    let mut series = Series::named(&["first start: ready", "restart: ready", "restart: /healthz"]);
    for &n in COUNTS {
        let plugins = work.path().join(format!("plugins-{n}"));
        std::fs::create_dir_all(&plugins)?;
        for i in 0..n {
            std::fs::write(
                plugins.join(format!("weather{i:02}.wasm")),
                distinct_copy(&weather, i),
            )?;
        }
        let cache = work.path().join(format!("cache-{n}"));
        let config = work.path().join(format!("config-{n}.toml"));
        std::fs::write(&config, format!("cache_dir = {cache:?}\n"))?;
        let (first_health, first_ready, _) = start(&plugins, &config)?;
        let (health, ready, resident) = start(&plugins, &config)?;
        table.row(vec![
            n.to_string(),
            duration(first_health),
            duration(first_ready),
            duration(health),
            duration(ready),
            autoglm_bench::ratio(first_ready.as_secs_f64(), ready.as_secs_f64()),
        ]);
        for (s, d) in series.iter_mut().zip([first_ready, ready, health]) {
            s.values.push(d.as_secs_f64() * 1e3);
        }
        rss.push((n, resident));
    }
    println!("cold start of autoglm serve (weather plugin copies)\n{}", table.text());

    let mut section = Section::new(
        "cold_start",
        "Cold start: 1, 10 and 50 plugins",
        "`autoglm serve` started as a process with N distinct copies of the weather plugin \
         (each copy carries its own custom section, so each compiles on its own). First start: \
         empty compile cache, every component compiled by Cranelift. Restart: the same \
         directory again, compiled code loaded from the cache. `/healthz` answers as soon as \
         the server listens; `/readyz` once every plugin is loaded: serving does not wait for \
         compilation.",
    );
    section.tables.push(table);
    let (first, restart) = (last(&series[0].values), last(&series[1].values));
    let mut goals = Table::new(&["goal (50 plugins)", "target", "measured", "met"]);
    goals.row(vec![
        "first start ready (stretch)".into(),
        "≤ 3 s".into(),
        format!("{} ms", significant(first)),
        autoglm_bench::verdict(first <= 3000.0),
    ]);
    goals.row(vec![
        "restart ready".into(),
        "≤ 50 ms".into(),
        format!("{} ms", significant(restart)),
        autoglm_bench::verdict(restart <= 50.0),
    ]);
    println!("goals\n{}", goals.text());
    section.tables.push(goals);
    let fifty = &series[0].values;
    section.notes.push(format!(
        "With 50 plugins the first start is ready after {} ms and a restart after {} ms; \
         `/healthz` answers after {} ms either way.",
        significant(fifty[fifty.len() - 1]),
        significant(series[1].values[series[1].values.len() - 1]),
        significant(series[2].values[series[2].values.len() - 1]),
    ));
    section.notes.push(
        "Where a first start's time goes (flamegraphs/startup.svg): Cranelift, on both cores \
         (parallel compilation is on). A baseline compiler first and Cranelift in the background \
         would cut it, but wasmtime 48's baseline compiler, Winch, cannot consume fuel, and a \
         tier without the fuel limit does not count; so the first start stays Cranelift-bound. \
         A restart reads each plugin's compiled code from the cache, checks the cache \
         directory's ownership and instantiates each plugin once to list its tools."
            .into(),
    );
    section.charts.push(Chart {
        file: "cold_start.png".into(),
        title: "Time from process start (ms, log scale)".into(),
        unit: "ms".into(),
        log_scale: true,
        groups: COUNTS.iter().map(|&n| plugin_count(n)).collect(),
        series,
    });
    section.record()?;
    memory(work.path(), &rss)
}

fn last(values: &[f64]) -> f64 {
    values.last().copied().unwrap_or(f64::NAN)
}

/// Resident memory per loaded plugin (from the restarts above) and per call in flight.
fn memory(work: &Path, rss: &[(usize, u64)]) -> anyhow::Result<()> {
    let plugins = work.join("plugins-inflight");
    std::fs::create_dir_all(&plugins)?;
    std::fs::copy(test_plugin("hostile"), plugins.join("hostile.wasm"))?;
    let config = work.join("config-inflight.toml");
    std::fs::write(
        &config,
        format!(
            "cache_dir = {:?}\n[server]\nconcurrency = 256\nrate_per_minute = 1000000\n\
             [plugins.hostile.limits]\nconcurrency = {IN_FLIGHT}\ndeadline_ms = 20000\n",
            work.join("cache-inflight")
        ),
    )?;
    let server = serve(&plugins, &config);
    until_ok(server.addr, "/readyz", Instant::now())?;
    // One call first, so the pool and code pages are warm before the idle figure.
    anyhow::ensure!(
        status(server.addr, "/v1/tools/hostile.sleep/call", Some(r#"{"ms": 1}"#)) == 200,
        "hostile.sleep failed"
    );
    std::thread::sleep(Duration::from_millis(300));
    let idle = server.rss_kib();
    let addr = server.addr;
    let calls: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            std::thread::spawn(move || {
                status(addr, "/v1/tools/hostile.sleep/call", Some(r#"{"ms": 3000}"#))
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let busy = server.rss_kib();
    let answered = calls.into_iter().filter_map(|c| c.join().ok()).filter(|s| *s == 200).count();
    anyhow::ensure!(answered == IN_FLIGHT, "{answered} of {IN_FLIGHT} sleeping calls succeeded");

    let mut table = Table::new(&["server", "resident memory", "growth"]);
    let (first_n, first_rss) = rss[0];
    let (last_n, last_rss) = rss[rss.len() - 1];
    let growth =
        |n: usize, resident: u64| resident.saturating_sub(first_rss) as f64 / (n - first_n) as f64;
    let per_plugin = growth(last_n, last_rss);
    for &(n, resident) in rss {
        let per = if n == first_n {
            String::new()
        } else {
            format!("{} KiB per plugin", significant(growth(n, resident)))
        };
        table.row(vec![
            format!("weather plugins: {n} loaded"),
            format!("{} MiB", significant(resident as f64 / 1024.0)),
            per,
        ]);
    }
    let per_call = busy.saturating_sub(idle) as f64 / IN_FLIGHT as f64;
    table.row(vec![
        "test plugin: idle".into(),
        format!("{} MiB", significant(idle as f64 / 1024.0)),
        String::new(),
    ]);
    table.row(vec![
        format!("test plugin: {IN_FLIGHT} calls in flight"),
        format!("{} MiB", significant(busy as f64 / 1024.0)),
        format!("{} KiB per call", significant(per_call)),
    ]);
    println!("memory\n{}", table.text());
    let mut section = Section::new(
        "memory",
        "Memory: per loaded plugin and per call in flight",
        "Resident set size (VmRSS) of the `autoglm serve` process. Per plugin: the growth from \
         1 to 50 loaded weather plugins (restarts above, compiled code from the cache), divided \
         by 49. Per call: the test plugin's `sleep` tool holds 32 calls in flight at once, each \
         in its own fresh instance; the growth over the idle server, divided by 32.",
    );
    section.tables.push(table);
    section.notes.push(format!(
        "A loaded plugin costs about {} KiB; a call in flight about {} KiB (its instance, \
         linear memory and WASI context).",
        significant(per_plugin),
        significant(per_call)
    ));
    section.charts.push(Chart {
        file: "memory.png".into(),
        title: "Resident memory of autoglm serve (MiB)".into(),
        unit: "MiB".into(),
        log_scale: false,
        groups: rss
            .iter()
            .map(|&(n, _)| plugin_count(n))
            .chain([format!("test plugin, {IN_FLIGHT} calls in flight")])
            .collect(),
        series: vec![Series {
            name: "resident".into(),
            values: rss
                .iter()
                .map(|(_, r)| *r as f64 / 1024.0)
                .chain([busy as f64 / 1024.0])
                .collect(),
        }],
    });
    section.record()
}

fn plugin_count(n: usize) -> String {
    format!("{n} plugin{}", if n == 1 { "" } else { "s" })
}
