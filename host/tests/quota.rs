//! Disk quotas enforced as the guest writes: every way WASI grows a directory is
//! charged before it lands, concurrent writers cannot overshoot together, empty files
//! count, and what a plugin deletes or overwrites is given back.

use std::path::Path;

use autoglm_host::app::Host;
use autoglm_host::error::ErrorKind;
use autoglm_host::policy::quota::{BLOCK_BYTES, footprint};
use autoglm_test_support::host::{call, config, fails, host, plugins_dir, test_plugins_dir};
use serde_json::json;

const MIB: u64 = 1 << 20;

/// What `dir` holds, counted as the host counts it.
fn held(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in walkdir(dir) {
        let meta = std::fs::symlink_metadata(&entry).unwrap();
        total += if meta.is_file() { footprint(meta.len()) } else { BLOCK_BYTES };
    }
    total
}

fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() && !path.is_symlink() {
            found.extend(walkdir(&path));
        }
        found.push(path);
    }
    found
}

/// The running total the host keeps for `plugin`'s one directory.
fn charged(host: &Host, plugin: &str) -> u64 {
    let registry = host.plugins.registry();
    let granted = registry.plugin(plugin).unwrap().sandbox.policy().describe();
    granted["directories"][0]["used_bytes"].as_u64().unwrap()
}

fn grant(plugin: &str, guest: &str, dir: &Path, quota_mib: u64) -> String {
    format!(
        "[[plugins.{plugin}.dirs]]\nhost = {dir:?}\nguest = \"{guest}\"\nmode = \"rw\"\n\
         quota_mib = {quota_mib}\n[plugins.{plugin}.limits]\nconcurrency = 16\nqueue = 16\n"
    )
}

async fn hostile(data: &Path, quota_mib: u64) -> (tempfile::TempDir, Host) {
    let plugins = test_plugins_dir(&["hostile"]);
    let host = host(&config(&grant("hostile", "/data", data, quota_mib)), plugins.path()).await;
    (plugins, host)
}

/// The refusal names the directory and the setting to change.
fn refused_by_quota(error: &autoglm_host::error::CallError) {
    assert_eq!(error.kind, ErrorKind::PermissionDenied, "{error}");
    assert!(error.message.contains("quota_mib") && error.message.contains("/data"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_cannot_overshoot_together() {
    let data = tempfile::tempdir().unwrap();
    let (_plugins, host) = hostile(data.path(), 1).await;
    // 16 writers of 1 MB each at once, in 64 KiB writes that interleave: at most one
    // can finish within 1 MiB, and together they stop at the quota.
    let host = std::sync::Arc::new(host);
    let text = "w".repeat(1_000_000);
    let writes: Vec<_> = (0..16)
        .map(|i| {
            let (host, text) = (host.clone(), text.clone());
            tokio::spawn(async move {
                let args = json!({"path": format!("/data/{i}"), "text": text});
                call(&host, "hostile.write_data", &args).await
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for write in writes {
        outcomes.push(write.await.unwrap());
    }
    let written = outcomes.iter().filter(|o| o.is_ok()).count();
    for error in outcomes.iter().filter_map(|o| o.as_ref().err()) {
        refused_by_quota(error);
    }
    assert!(written <= 1, "{outcomes:?}");
    assert!(held(data.path()) <= MIB, "{} bytes under a 1 MiB quota", held(data.path()));
    assert_eq!(charged(&host, "hostile"), held(data.path()));
}

#[tokio::test]
async fn every_way_of_growing_a_file_is_charged() {
    let data = tempfile::tempdir().unwrap();
    let (_plugins, host) = hostile(data.path(), 1).await;
    let disk = |op: &str, path: &str, n: u64| json!({"op": op, "path": path, "n": n});
    // A sparse file of 1 GiB holds no blocks on most filesystems but its length counts.
    refused_by_quota(&fails(&host, "hostile.disk", disk("set_len", "/data/sparse", 1 << 30)).await);
    // One byte a gigabyte out is the same file by another road (a write at an offset).
    refused_by_quota(&fails(&host, "hostile.disk", disk("write_at", "/data/far", 1 << 30)).await);
    // Appends through a stream stop at the quota, not after it.
    refused_by_quota(&fails(&host, "hostile.disk", disk("append", "/data/log", 2 * MIB)).await);
    let log = std::fs::metadata(data.path().join("log")).map_or(0, |m| m.len());
    assert!(log > MIB / 2 && log <= MIB, "the appends stopped at {log} bytes");
    assert!(held(data.path()) <= MIB, "{} bytes under a 1 MiB quota", held(data.path()));
    // Within the quota, each works.
    std::fs::remove_file(data.path().join("log")).unwrap();
    let host = hostile(data.path(), 1).await.1;
    for (op, path) in [("set_len", "/data/a"), ("write_at", "/data/b"), ("append", "/data/c")] {
        call(&host, "hostile.disk", &disk(op, path, 100_000)).await.unwrap();
    }
    assert_eq!(std::fs::metadata(data.path().join("b")).unwrap().len(), 100_001);
    assert_eq!(charged(&host, "hostile"), held(data.path()));
}

#[tokio::test]
async fn empty_files_count() {
    let data = tempfile::tempdir().unwrap();
    let (_plugins, host) = hostile(data.path(), 1).await;
    let args = json!({"op": "empty_files", "path": "/data/many", "n": 1000});
    refused_by_quota(&fails(&host, "hostile.disk", args).await);
    // 256 blocks in 1 MiB: the directory itself and 255 empty files.
    let made = std::fs::read_dir(data.path().join("many")).unwrap().count() as u64;
    assert_eq!(made, MIB / BLOCK_BYTES - 1);
    assert_eq!(charged(&host, "hostile"), held(data.path()));
}

#[tokio::test]
async fn overwrites_and_deletes_give_space_back() {
    let notes = plugins_dir(&["notes"]);
    let data = tempfile::tempdir().unwrap();
    let host = host(&config(&grant("notes", "/notes", data.path(), 1)), notes.path()).await;
    let text = "n".repeat(400 << 10);
    let write = |name: &str| json!({"name": name, "text": text});
    // Rewriting one note (a new file renamed over the old) never accumulates.
    for _ in 0..20 {
        call(&host, "notes.write", &write("one")).await.unwrap();
    }
    call(&host, "notes.write", &write("two")).await.unwrap();
    let error = call(&host, "notes.write", &write("three")).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::PermissionDenied, "{error}");
    assert!(error.message.contains("quota_mib") && error.message.contains("/notes"), "{error}");
    assert!(!data.path().join("three").exists());
    // At its quota a plugin may still delete, and what it deletes is room again.
    call(&host, "notes.delete", &json!({"name": "one"})).await.unwrap();
    call(&host, "notes.write", &write("three")).await.unwrap();
    assert_eq!(call(&host, "notes.read", &json!({"name": "three"})).await.unwrap()["text"], text);
    // The running total has not drifted from what the directory holds.
    assert_eq!(charged(&host, "notes"), held(data.path()));
}

#[tokio::test]
async fn a_deleted_file_counts_until_it_is_closed() {
    let data = tempfile::tempdir().unwrap();
    let (_plugins, host) = hostile(data.path(), 1).await;
    let args = json!({"op": "unlink_open", "path": "/data/held", "n": 600 << 10});
    // The write made while the deleted file was still open was refused; the one made
    // after it was closed fit.
    refused_by_quota(&fails(&host, "hostile.disk", args).await);
    assert_eq!(std::fs::metadata(data.path().join("held.late")).unwrap().len(), 600 << 10);
    assert!(!data.path().join("held.early").exists());
    assert_eq!(charged(&host, "hostile"), held(data.path()));
}

#[tokio::test]
async fn what_is_already_there_counts_from_the_start() {
    let data = tempfile::tempdir().unwrap();
    for i in 0..300 {
        std::fs::write(data.path().join(i.to_string()), "").unwrap();
    }
    let (_plugins, host) = hostile(data.path(), 1).await;
    let error = fails(&host, "hostile.write_data", json!({"path": "/data/new", "text": "x"})).await;
    refused_by_quota(&error);
    assert!(!data.path().join("new").exists());
}
