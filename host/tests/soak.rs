//! A soak: a real `autoglm serve` on 127.0.0.1 takes a bounded run of valid and hostile
//! requests at once, over kept-alive connections, from several clients. No benign call
//! fails, every hostile one gets its own typed error, no reused connection sees a
//! protocol error, and the server's memory is flat once warm.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use autoglm_test_support::host::{ServeProcess, dir_with, sample, test_plugin};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

type Http = Client<HttpConnector, Full<bytes::Bytes>>;

const CLIENTS: usize = 8;
/// Requests each client sends per round; one warm-up round, then the measured rounds.
const PER_ROUND: usize = 104;
const ROUNDS: usize = 8;

/// One request of the mix: the `n`th of a client. What it must get back is part of it.
fn request(client: usize, n: usize) -> (String, String, Expect) {
    let tool = |name: &str, args: Value| (format!("/v1/tools/{name}/call"), args.to_string());
    let (path, body) = match n % 13 {
        0..=2 => tool("calculator.evaluate", json!({"expression": format!("{n} * 2 + {client}")})),
        3 => {
            tool("notes.write", json!({"name": format!("c{client}"), "text": format!("note {n}")}))
        }
        4 => tool("notes.read", json!({"name": format!("c{client}")})),
        5 => tool("hostile.spin", json!({})),
        6 => tool("hostile.memory_bomb", json!({})),
        7 => tool("hostile.write_file", json!({"path": "/etc/passwd", "text": "x"})),
        8 => tool("hostile.lie", json!({"text": "not a number"})),
        9 => tool("nobody.nothing", json!({})),
        10 => ("/v1/tools/calculator.evaluate/call".into(), "{not json".into()),
        // Over server.body_limit_bytes: answered early, the connection closed after it.
        11 => tool("calculator.evaluate", json!({"expression": "1".repeat(80 << 10)})),
        _ => tool("hostile.trap", json!({})),
    };
    let expect = match n % 13 {
        0..=2 => Expect::Value(json!((n * 2 + client) as f64)),
        3 | 4 => Expect::Ok,
        5 => Expect::Error("out_of_fuel"),
        6 => Expect::Error("memory_limit"),
        // Nothing is mounted for it: the path is not there.
        7 => Expect::Error("tool_error"),
        8 => Expect::Error("tool_error"),
        9 => Expect::Error("unknown_tool"),
        10 => Expect::Error("bad_request"),
        11 => Expect::Error("body_too_large"),
        _ => Expect::Error("trap"),
    };
    (path, body, expect)
}

#[derive(Debug)]
enum Expect {
    Value(Value),
    Ok,
    /// This error kind, or `overloaded` (the hostile plugin's own queue is small, by design).
    Error(&'static str),
}

async fn send(http: &Http, base: &str, path: &str, body: String) -> (u16, Value) {
    let request = hyper::Request::post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let response =
        http.request(request).await.expect("no protocol error on a kept-alive connection");
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.expect("a whole body").to_bytes();
    (status, serde_json::from_slice(&bytes).expect("a JSON answer"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mixed_valid_and_hostile_traffic_fails_nothing_benign_and_memory_stays_flat() {
    let plugins = dir_with([sample("calculator"), sample("notes"), test_plugin("hostile")]);
    let notes = tempfile::tempdir().unwrap();
    let config = plugins.path().join("autoglm.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nrate_per_minute = 1000000\nbody_limit_bytes = 65536\n[plugins.hostile.limits]\ndeadline_ms = 2000\nfuel = 20000000\nmemory_mib = 16\n\
             concurrency = 4\nqueue = 64\n\
             [[plugins.notes.dirs]]\nhost = {:?}\nguest = \"/notes\"\nmode = \"rw\"\n",
            notes.path()
        ),
    )
    .unwrap();
    let server = ServeProcess::start([
        "--plugins".as_ref(),
        plugins.path().as_os_str(),
        "--config".as_ref(),
        config.as_os_str(),
    ]);
    server.ready().await;
    let base = Arc::new(format!("http://{}", server.addr));
    let http: Http = Client::builder(TokioExecutor::new()).build_http();
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let overloaded = Arc::new(AtomicUsize::new(0));
    let mut rss = Vec::new();
    for round in 0..=ROUNDS {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let (http, base) = (http.clone(), base.clone());
                let (failures, overloaded) = (failures.clone(), overloaded.clone());
                tokio::spawn(async move {
                    for i in 0..PER_ROUND {
                        let n = round * PER_ROUND + i;
                        let (path, body, expect) = request(client, n);
                        let (status, answer) = send(&http, &base, &path, body).await;
                        let kind = answer["error"]["kind"].as_str().unwrap_or_default().to_string();
                        let fine = match &expect {
                            Expect::Value(v) => status == 200 && answer["result"] == *v,
                            Expect::Ok => status == 200,
                            Expect::Error(_) if kind == "overloaded" => {
                                overloaded.fetch_add(1, Ordering::Relaxed);
                                true
                            }
                            Expect::Error(wanted) => status >= 400 && kind == *wanted,
                        };
                        if !fine {
                            let got = format!("{path}: {expect:?} got {status} {kind}");
                            failures.lock().unwrap().push((got, answer.to_string()));
                        }
                    }
                })
            })
            .collect();
        for client in clients {
            client.await.unwrap();
        }
        rss.push(server.rss_kib());
    }
    let failures = failures.lock().unwrap();
    let mut kinds = std::collections::BTreeMap::new();
    for (got, answer) in failures.iter() {
        kinds.entry(got).or_insert((0, answer)).0 += 1;
    }
    assert!(
        failures.is_empty(),
        "{} wrong answers (count, one answer): {kinds:#?}",
        failures.len()
    );
    // The hostile plugin's queue absorbs the load: most hostile calls ran to their error.
    let hostile = (ROUNDS + 1) * CLIENTS * PER_ROUND * 5 / 13;
    assert!(
        overloaded.load(Ordering::Relaxed) < hostile / 4,
        "{} of {hostile} overloaded",
        overloaded.load(Ordering::Relaxed)
    );
    // Flat once warm: the measured rounds grow resident memory by under 24 MiB in all.
    let (warm, last) = (rss[0], *rss.last().unwrap());
    assert!(warm > 0, "no /proc here to read memory from");
    assert!(last < warm + 24 * 1024, "resident memory grew from {warm} KiB to {last} KiB: {rss:?}");
    eprintln!(
        "soak: {} requests, resident KiB per round {rss:?}",
        (ROUNDS + 1) * CLIENTS * PER_ROUND
    );
}
