//! A plugin that misbehaves on purpose (tests/plugins/hostile): every misbehaviour
//! gets its own error kind, within its limit, and the host keeps serving.

use std::time::{Duration, Instant};

use autoglm_host::app::{Host, Settings};
use autoglm_host::error::{CallError, ErrorKind};
use autoglm_test_support::host::{call, config, host, plugins_dir, test_plugins_dir};
use serde_json::{Value, json};

/// Small limits keep the suite fast; each test states the ones it relies on.
const LIMITS: &str =
    "[plugins.hostile.limits]\ndeadline_ms = 2000\nfuel = 50000000\nmemory_mib = 32\n";

async fn hostile(extra_toml: &str) -> (tempfile::TempDir, Host) {
    let dir = test_plugins_dir(&["hostile"]);
    let host = host(&config(extra_toml), dir.path()).await;
    (dir, host)
}

/// The shared check that the call fails naming its plugin and tool, and that the plugin
/// and tool it names are the hostile ones called.
async fn fails(host: &Host, tool: &str, args: Value) -> CallError {
    let error = autoglm_test_support::host::fails(host, tool, args).await;
    assert_eq!(error.plugin.as_deref(), Some("hostile"));
    assert_eq!(error.tool.as_deref(), Some(tool.trim_start_matches("hostile.")));
    error
}

async fn still_serves(host: &Host) {
    let echoed = call(host, "hostile.echo", &json!({"text": "still here"})).await.unwrap();
    assert_eq!(echoed, "still here");
}

#[tokio::test]
async fn cpu_hogs_run_out_of_fuel() {
    let (_dir, host) = hostile(LIMITS).await;
    for tool in ["hostile.spin", "hostile.chatty"] {
        let error = fails(&host, tool, json!({})).await;
        assert_eq!(error.kind, ErrorKind::OutOfFuel, "{tool}: {error}");
        assert!(
            error.message.contains("plugins.hostile.limits.fuel"),
            "names the setting: {error}"
        );
    }
    still_serves(&host).await;
}

#[tokio::test]
async fn a_loop_with_fuel_to_spare_meets_its_deadline() {
    let limits = "[plugins.hostile.limits]\ndeadline_ms = 300\nfuel = 1000000000000\n";
    let (_dir, host) = hostile(limits).await;
    let started = Instant::now();
    let error = fails(&host, "hostile.spin", json!({})).await;
    assert_eq!(error.kind, ErrorKind::Timeout, "{error}");
    assert!(error.message.contains("300 ms") && error.message.contains("deadline_ms"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped near its deadline: {:?}",
        started.elapsed()
    );
    still_serves(&host).await;
}

#[tokio::test]
async fn a_guest_blocked_in_a_host_call_times_out() {
    let limits = "[plugins.hostile.limits]\ndeadline_ms = 300\n";
    let (_dir, host) = hostile(limits).await;
    let started = Instant::now();
    let error = fails(&host, "hostile.sleep", json!({"ms": 60000})).await;
    assert_eq!(error.kind, ErrorKind::Timeout, "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped near its deadline: {:?}",
        started.elapsed()
    );
    assert_eq!(call(&host, "hostile.sleep", &json!({"ms": 1})).await.unwrap(), "awake");
}

#[tokio::test]
async fn memory_bombs_hit_the_memory_cap() {
    let (_dir, host) = hostile(LIMITS).await;
    let error = fails(&host, "hostile.memory_bomb", json!({})).await;
    assert_eq!(error.kind, ErrorKind::MemoryLimit, "{error}");
    assert!(error.message.contains("32 MiB") && error.message.contains("memory_mib"), "{error}");
    still_serves(&host).await;
}

#[tokio::test]
async fn a_guest_hoarding_handles_hits_its_resource_cap() {
    let granted = tempfile::tempdir().unwrap();
    std::fs::write(granted.path().join("f.txt"), "x").unwrap();
    let config = format!(
        "{LIMITS}resources = 100\n[[plugins.hostile.dirs]]\nhost = {:?}\nguest = \"/data\"\n",
        granted.path()
    );
    let (_dir, host) = hostile(&config).await;
    let error = fails(&host, "hostile.hoard", json!({"path": "/data/f.txt"})).await;
    assert_eq!(error.kind, ErrorKind::ResourceLimit, "{error}");
    assert!(error.message.contains("limits.resources"), "{error}");
    // The next call starts with a fresh table.
    assert_eq!(call(&host, "hostile.echo", &json!({"text": "ok"})).await.unwrap(), "ok");
}

#[tokio::test]
async fn a_result_that_breaks_its_output_schema_is_the_tools_error() {
    let (_dir, host) = hostile(LIMITS).await;
    let error = fails(&host, "hostile.lie", json!({"text": "not a number"})).await;
    assert_eq!(error.kind, ErrorKind::ToolError, "{error}");
    assert!(error.message.contains("output schema"), "{error}");
}

#[tokio::test]
async fn recursion_traps_and_panics_are_traps() {
    let (_dir, host) = hostile(LIMITS).await;
    let error = fails(&host, "hostile.recurse", json!({})).await;
    assert_eq!(error.kind, ErrorKind::Trap, "{error}");
    assert!(error.message.contains("stack"), "{error}");
    let error = fails(&host, "hostile.trap", json!({})).await;
    assert_eq!(error.kind, ErrorKind::Trap, "{error}");
    assert!(error.message.contains("unreachable"), "{error}");
    assert!(error.message.contains("backtrace"), "a short backtrace: {error}");
    let error = fails(&host, "hostile.panic", json!({})).await;
    assert_eq!(error.kind, ErrorKind::Trap, "{error}");
    still_serves(&host).await;
}

#[tokio::test]
async fn a_100_mb_result_hits_whichever_limit_comes_first() {
    let (_dir, host) = hostile(LIMITS).await;
    let error = fails(&host, "hostile.huge_result", json!({"mb": 100})).await;
    assert_eq!(error.kind, ErrorKind::MemoryLimit, "32 MiB of memory cannot hold it: {error}");

    let roomy =
        "[plugins.hostile.limits]\nmemory_mib = 500\nfuel = 10000000000\ndeadline_ms = 20000\n";
    let (_dir, host) = hostile(roomy).await;
    let error = fails(&host, "hostile.huge_result", json!({"mb": 100})).await;
    assert_eq!(error.kind, ErrorKind::OutputTooLarge, "{error}");
    assert!(error.message.contains("result_bytes"), "{error}");
    still_serves(&host).await;
}

#[tokio::test]
async fn a_flood_of_stdout_is_truncated_and_the_call_succeeds() {
    let limits = "[plugins.hostile.limits]\nfuel = 100000000000\ndeadline_ms = 60000\n";
    let (_dir, host) = hostile(limits).await;
    let result = call(&host, "hostile.flood_stdout", &json!({"mb": 100})).await.unwrap();
    assert_eq!(result, "flooded");
}

#[tokio::test]
async fn paths_outside_the_grant_reach_nothing() {
    let granted = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.txt");
    std::fs::write(&secret, "TOP SECRET").unwrap();
    std::fs::write(granted.path().join("inside.txt"), "fine").unwrap();
    std::os::unix::fs::symlink(&secret, granted.path().join("link.txt")).unwrap();
    std::os::unix::fs::symlink(outside.path(), granted.path().join("linkdir")).unwrap();
    let config = format!(
        "{LIMITS}[[plugins.hostile.dirs]]\nhost = {:?}\nguest = \"/data\"\n",
        granted.path()
    );
    let (_dir, host) = hostile(&config).await;

    let inside =
        call(&host, "hostile.read_file", &json!({"path": "/data/inside.txt"})).await.unwrap();
    assert_eq!(inside, "fine");
    let escapes = [
        "/data/../secret.txt".to_string(),
        format!("/data/../{}/secret.txt", outside.path().file_name().unwrap().to_str().unwrap()),
        secret.display().to_string(),
        "../secret.txt".to_string(),
        "/etc/passwd".to_string(),
        "/data/link.txt".to_string(),
        "/data/linkdir/secret.txt".to_string(),
    ];
    for path in escapes {
        let outcome = call(&host, "hostile.read_file", &json!({ "path": path })).await;
        let error = outcome.expect_err(&format!("{path} must not be readable"));
        // Escapes through the granted directory reach the host, which refuses and
        // says so; other paths match no grant and never leave the guest's libc.
        let expected = if path.starts_with("/data/") {
            ErrorKind::PermissionDenied
        } else {
            ErrorKind::ToolError
        };
        assert_eq!(error.kind, expected, "{path}: {error}");
        assert!(!error.message.contains("TOP SECRET"));
    }
    let error =
        fails(&host, "hostile.write_as_reader", json!({"path": "/data/new.txt", "text": "x"}))
            .await;
    assert_eq!(error.kind, ErrorKind::PermissionDenied, "the grant is read-only: {error}");
    assert!(
        error.message.contains("/data/new.txt") || error.message.contains("new.txt"),
        "{error}"
    );
    assert!(!granted.path().join("new.txt").exists());
}

/// A call gets only what its tool declares of the plugin's grants, at the lower of declared
/// and granted access, even where the plugin is granted more.
#[tokio::test]
async fn each_tool_sees_only_what_it_declares_of_the_plugins_grants() {
    let granted = tempfile::tempdir().unwrap();
    std::fs::write(granted.path().join("inside.txt"), "fine").unwrap();
    let config = format!(
        "{LIMITS}[plugins.hostile]\nenv = [\"PATH\", \"HOME\"]\n[[plugins.hostile.dirs]]\n\
         host = {:?}\nguest = \"/data\"\nmode = \"rw\"\n",
        granted.path()
    );
    assert!(std::env::var("HOME").is_ok(), "the test needs HOME set on the host");
    let (_dir, host) = hostile(&config).await;
    let write = |tool: &'static str| {
        let host = &host;
        async move { fails(host, tool, json!({"path": "/data/new.txt", "text": "x"})).await }
    };
    // Declares nothing: the granted directory is not there at all.
    let error = write("hostile.write_file").await;
    assert_eq!(error.kind, ErrorKind::ToolError, "{error}");
    // Declares read access to a read-write grant: it reads and cannot write.
    let error = write("hostile.write_as_reader").await;
    assert_eq!(error.kind, ErrorKind::PermissionDenied, "{error}");
    assert!(!granted.path().join("new.txt").exists(), "a tool wrote what it did not declare");
    let read = call(&host, "hostile.read_file", &json!({"path": "/data/inside.txt"})).await;
    assert_eq!(read.unwrap(), "fine");
    // Environment variables: only the declared ones of the granted ones.
    let env = |tool: &'static str, key: &'static str| {
        let host = &host;
        async move { call(host, tool, &json!({ "key": key })).await.unwrap() }
    };
    assert_eq!(env("hostile.env", "PATH").await, Value::Null, "declared nothing");
    assert_eq!(env("hostile.path_env", "PATH").await, std::env::var("PATH").unwrap());
    assert_eq!(env("hostile.path_env", "HOME").await, Value::Null, "HOME is granted, not declared");
}

#[tokio::test]
async fn only_granted_environment_variables_are_visible() {
    let (_dir, host) = hostile(LIMITS).await;
    assert!(std::env::var("PATH").is_ok(), "the test needs PATH set on the host");
    assert_eq!(call(&host, "hostile.env", &json!({"key": "PATH"})).await.unwrap(), Value::Null);

    let granted = format!("{LIMITS}[plugins.hostile]\nenv = [\"PATH\"]\n");
    let (_dir, host) = hostile(&granted).await;
    let path = call(&host, "hostile.path_env", &json!({"key": "PATH"})).await.unwrap();
    assert_eq!(path, std::env::var("PATH").unwrap());
    let home = call(&host, "hostile.path_env", &json!({"key": "HOME"})).await.unwrap();
    assert_eq!(home, Value::Null);
}

#[tokio::test]
async fn a_component_for_another_contract_version_is_refused_clearly() {
    let dir = test_plugins_dir(&["incompatible", "hostile"]);
    let (host, errors) = Host::open(&Settings::new(config(""), dir.path())).await.unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].kind, ErrorKind::IncompatiblePlugin);
    let message = errors[0].to_string();
    assert!(
        message.contains("incompatible") && message.contains("0.9.0") && message.contains("0.2.0"),
        "{message}"
    );
    still_serves(&host).await;
}

#[tokio::test]
async fn a_read_only_grant_allows_reads_and_refuses_writes() {
    let notes = plugins_dir(&["notes"]);
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("todo"), "ship it").unwrap();
    let grants = format!(
        "[[plugins.notes.dirs]]\nhost = {:?}\nguest = \"/notes\"\nmode = \"ro\"\n",
        data.path()
    );
    let host = host(&config(&grants), notes.path()).await;
    assert_eq!(
        call(&host, "notes.read", &json!({"name": "todo"})).await.unwrap()["text"],
        "ship it"
    );
    let error =
        call(&host, "notes.write", &json!({"name": "todo", "text": "changed"})).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::PermissionDenied, "{error}");
    assert!(error.message.contains("mode = \"rw\""), "says what to change: {error}");
    assert_eq!(std::fs::read_to_string(data.path().join("todo")).unwrap(), "ship it");
}
