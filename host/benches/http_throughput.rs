//! Tool-call throughput and latency over HTTP at 1, 16 and 64 keep-alive
//! connections, next to a hyper hello-world server measured in the same run with
//! the same load generator. Prints a table with ratios and records the report's `http`
//! section under `just bench`; no pass/fail.
//!
//! By hand: `cargo bench -p autoglm-host --bench http_throughput [-- --quick]` after
//! `just plugins`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use autoglm_bench::{Chart, Section, Series, Table, duration, percentiles, ratio, significant};
use autoglm_host::app::{Host, Settings};
use autoglm_host::config::Config;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Requests per second and latency percentiles of one run.
struct Run {
    rps: f64,
    p50: Duration,
    p99: Duration,
}

/// One keep-alive connection sending `request` back to back until `until`.
async fn client(addr: SocketAddr, request: Arc<Vec<u8>>, until: Instant) -> Vec<Duration> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).ok();
    let mut stream = BufReader::new(stream);
    let mut latencies = Vec::new();
    let mut head = Vec::new();
    while Instant::now() < until {
        let started = Instant::now();
        stream.get_mut().write_all(&request).await.expect("write");
        head.clear();
        // Read the head byte by byte up to the blank line (BufReader keeps it cheap).
        while !head.ends_with(b"\r\n\r\n") {
            head.push(stream.read_u8().await.expect("read"));
        }
        let head_text = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(head_text.starts_with("http/1.1 200"), "{head_text}");
        let length: usize = head_text
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("content-length");
        let mut body = vec![0; length];
        stream.read_exact(&mut body).await.expect("body");
        latencies.push(started.elapsed());
    }
    latencies
}

async fn load(addr: SocketAddr, request: &[u8], connections: usize, seconds: Duration) -> Run {
    let request = Arc::new(request.to_vec());
    let until = Instant::now() + seconds;
    let started = Instant::now();
    let tasks: Vec<_> =
        (0..connections).map(|_| tokio::spawn(client(addr, request.clone(), until))).collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("client task"));
    }
    let rps = all.len() as f64 / started.elapsed().as_secs_f64();
    let (p50, p99) = percentiles(all);
    Run { rps, p50, p99 }
}

async fn hello_world() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let builder = builder.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                        b"{\"result\":\"hello\"}",
                    ))))
                });
                let _ = builder.serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    addr
}

fn main() -> anyhow::Result<()> {
    let seconds = Duration::from_secs(if autoglm_bench::quick() { 1 } else { 3 });
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
        let dir = tempfile::tempdir()?;
        std::fs::copy(target.join("plugins/weather.wasm"), dir.path().join("weather.wasm"))
            .map_err(|e| anyhow::anyhow!("{e}: run `just plugins` first"))?;
        let mut config = Config::default();
        config.cache_dir = Some(target.join("bench-component-cache"));
        // Measure the server, not the limiter.
        config.server.rate_per_minute = u32::MAX;
        config.server.concurrency = 1024;
        let (host, errors) = Host::open(&Settings::new(config.clone(), dir.path())).await?;
        anyhow::ensure!(errors.is_empty(), "{errors:?}");
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(autoglm_host::server::AppState::new(host.invoker.clone(), config.server.clone(), true)?);
        tokio::spawn(autoglm_host::server::serve(state, listener, std::future::pending()));
        let baseline = hello_world().await;

        let body = r#"{"location":"Beijing"}"#;
        let tool_call = format!(
            "POST /v1/tools/weather.get_weather/call HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let hello = format!("GET / HTTP/1.1\r\nhost: {baseline}\r\n\r\n");
        let mut table = Table::new(&[
            "connections",
            "tool calls/s",
            "p50",
            "p99",
            "hello-world req/s",
            "p50",
            "p99",
            "tool ÷ hello req/s",
            "goal ≥ 0.5x",
        ]);
        let mut series = Series::named(&["tool calls (weather)", "hyper hello-world"]);
        for connections in [1, 16, 64] {
            let tool = load(addr, tool_call.as_bytes(), connections, seconds).await;
            let base = load(baseline, hello.as_bytes(), connections, seconds).await;
            table.row(vec![
                connections.to_string(),
                significant(tool.rps),
                duration(tool.p50),
                duration(tool.p99),
                significant(base.rps),
                duration(base.p50),
                duration(base.p99),
                ratio(tool.rps, base.rps),
                autoglm_bench::verdict(tool.rps >= 0.5 * base.rps),
            ]);
            series[0].values.push(tool.rps);
            series[1].values.push(base.rps);
        }
        println!(
            "HTTP tool calls vs hyper hello-world, {}s per run, keep-alive\n{}",
            seconds.as_secs(),
            table.text()
        );
        let mut section = Section::new(
            "http",
            "HTTP: tool-call throughput and latency vs hyper hello-world",
            &format!(
                "`POST /v1/tools/weather.get_weather/call` on the real server (fresh sandbox per \
                 call, schema validation, metrics; rate limit off) against a hyper hello-world \
                 server answering a constant body, both on 127.0.0.1, driven by the same \
                 keep-alive load generator for {} s per run at 1, 16 and 64 connections. The \
                 load generator shares the machine's cores with the server.",
                seconds.as_secs()
            ),
        );
        section.tables.push(table);
        section.notes.push(
            "Where the time goes (flamegraphs/http.svg, and `perf stat` on the server): a tool \
             call costs the server about 2.4 context switches against hello-world's one, and the \
             fresh sandbox itself (see the per-call section: its p50 grows several times when the \
             CPU has idled in between, as it has at one connection). Under load (16 and 64 \
             connections) the ratio is the CPU per request: the sandbox call alone is more than \
             half of what a 0.5x ratio would allow the whole request, so this goal waits on the \
             per-call one."
                .into(),
        );
        section.charts.push(Chart {
            file: "http.png".into(),
            title: "Requests/s by connections (log scale)".into(),
            unit: "requests/s".into(),
            log_scale: true,
            groups: ["1", "16", "64"].iter().map(|c| format!("{c} connections")).collect(),
            series,
        });
        section.record()?;
        Ok(())
    })
}
