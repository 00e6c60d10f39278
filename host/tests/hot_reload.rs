//! Plugin files replaced while they are being called.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use autoglm_host::error::ErrorKind;
use autoglm_test_support::host::{call, config, host, test_plugins_dir};
use serde_json::json;

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
    let dir = test_plugins_dir(&["hostile"]);
    let file = dir.path().join("hostile.wasm");
    let original = std::fs::read(&file).unwrap();
    let host = Arc::new(host(&config(""), dir.path()).await);
    let live = host.plugins.clone();
    let watch = live.watch().unwrap();
    let mut changes = live.changes();

    let stop = Arc::new(AtomicBool::new(false));
    let (calls, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let (host, stop, calls, failures) =
                (host.clone(), stop.clone(), calls.clone(), failures.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let result = call(&host, "hostile.echo", &json!({"text": "hi"})).await;
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
    assert_eq!(call(&host, "hostile.echo", &json!({"text": "ok"})).await.unwrap(), "ok");

    // A removed file takes its tools away.
    std::fs::remove_file(&file).unwrap();
    let report = live.reload().await.unwrap();
    assert_eq!(report.removed, ["hostile"]);
    let error = call(&host, "hostile.echo", &json!({"text": "gone"})).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::UnknownTool);
}
