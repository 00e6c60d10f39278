//! The host under load: many concurrent calls with hostile ones mixed in, and
//! plugin files replaced while they are being called.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use autoglm_host::error::ErrorKind;
use serde_json::json;

/// Resident set size of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_mixed_calls_all_benign_ones_succeed_and_memory_stays_flat() {
    let dir = common::test_plugins_dir(&["hostile"]);
    let limits = "[plugins.hostile.limits]\nfuel = 50000000\nmemory_mib = 16\ndeadline_ms = 5000\n";
    let (_live, router) = common::host(&common::config(limits), dir.path()).await;
    let hostile = [
        ("trap", ErrorKind::Trap),
        ("panic", ErrorKind::Trap),
        ("spin", ErrorKind::OutOfFuel),
        ("memory_bomb", ErrorKind::MemoryLimit),
        ("recurse", ErrorKind::Trap),
    ];
    let next = Arc::new(AtomicUsize::new(0));
    let mut warm_rss = 0;
    for (total, tasks) in [(2_000, 64), (10_000, 64)] {
        let workers: Vec<_> = (0..tasks)
            .map(|_| {
                let (router, next) = (router.clone(), next.clone());
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total {
                            return;
                        }
                        if i % 10 == 0 {
                            let (tool, kind) = hostile[(i / 10) % hostile.len()];
                            let error = router
                                .call(&format!("hostile.{tool}"), &json!({}))
                                .await
                                .unwrap_err();
                            assert_eq!(error.kind, kind, "call {i} ({tool}): {error}");
                        } else {
                            let text = format!("call {i}");
                            let echoed =
                                router.call("hostile.echo", &json!({ "text": text })).await;
                            assert_eq!(echoed.unwrap(), json!(text), "call {i}");
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.await.expect("no benign call failed");
        }
        if total == 2_000 {
            warm_rss = rss();
        }
    }
    let end_rss = rss();
    let growth = end_rss as f64 / warm_rss as f64 - 1.0;
    eprintln!("RSS after 2,000 calls: {} MiB, after 10,000: {} MiB", warm_rss >> 20, end_rss >> 20);
    assert!(growth < 0.10, "RSS grew {:.1}% from {warm_rss} to {end_rss}", growth * 100.0);
}

/// `component` with a custom section appended: different bytes, same behaviour.
fn variant(component: &[u8], n: u32) -> Vec<u8> {
    let name = b"autoglm-test-variant";
    let payload = n.to_le_bytes();
    let size = 1 + name.len() + payload.len();
    let mut bytes = component.to_vec();
    bytes.extend([0u8, size as u8, name.len() as u8]);
    bytes.extend(name);
    bytes.extend(payload);
    bytes
}

/// Replace `path` atomically, as a deployment tool would.
fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_plugin_under_load_fails_no_call() {
    let dir = common::test_plugins_dir(&["hostile"]);
    let file = dir.path().join("hostile.wasm");
    let original = std::fs::read(&file).unwrap();
    let (live, _) = common::host(&common::config(""), dir.path()).await;
    let watch = live.watch().unwrap();
    let mut changes = live.changes();

    let stop = Arc::new(AtomicBool::new(false));
    let (calls, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let (live, stop, calls, failures) =
                (live.clone(), stop.clone(), calls.clone(), failures.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let result = live.router().call("hostile.echo", &json!({"text": "hi"})).await;
                    calls.fetch_add(1, Ordering::Relaxed);
                    if result.as_ref().ok() != Some(&json!("hi")) {
                        eprintln!("failed call: {result:?}");
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    let mut seen = 0;
    for n in 1..=20 {
        replace(&file, &variant(&original, n));
        // Wait for this version to be picked up before replacing it again.
        tokio::time::timeout(Duration::from_secs(30), changes.changed()).await.unwrap().unwrap();
        seen += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.unwrap();
    }
    assert_eq!(seen, 20, "every replacement was loaded");
    assert!(calls.load(Ordering::Relaxed) > 100, "the callers kept calling");
    assert_eq!(failures.load(Ordering::Relaxed), 0, "of {} calls", calls.load(Ordering::Relaxed));

    // Reload by hand from here on, so each report is this test's own.
    drop(watch);
    // A broken file leaves the previous version serving.
    std::fs::write(&file, b"\0asm garbage").unwrap();
    let report = live.reload().await.unwrap();
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(live.router().call("hostile.echo", &json!({"text": "ok"})).await.unwrap(), "ok");

    // A removed file takes its tools away.
    std::fs::remove_file(&file).unwrap();
    let report = live.reload().await.unwrap();
    assert_eq!(report.removed, ["hostile"]);
    let error = live.router().call("hostile.echo", &json!({"text": "gone"})).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::UnknownTool);
}
