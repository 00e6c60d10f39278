//! `autoglm new` for each language: scaffold the template, run its own tests,
//! build it with its real toolchain, load it in the host and call its tool over HTTP.

use std::path::{Path, PathBuf};
use std::process::Command;

use autoglm_test_support::host::{TestServer, config, dir_with, http, target_dir};

/// Run `command` in `dir`, failing the test with its output when it fails.
fn run(dir: &Path, command: &str, env: &[(&str, PathBuf)]) {
    let output = Command::new("bash")
        .args(["-c", command])
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (*k, v.as_os_str())))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "`{command}` failed in {}:\n{}\n{}",
        dir.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A toolchain that `just test` installs; its absence is a failure, not a skip.
fn installed(path: &str) -> PathBuf {
    let path = target_dir().join(path);
    assert!(
        path.exists(),
        "{} is missing: `just test` installs it (recipe templates-env)",
        path.display()
    );
    path
}

/// Scaffold `name` in `lang` under target/template-tests and return its directory.
fn scaffold(name: &str, lang: &str) -> PathBuf {
    let dir = target_dir().join("template-tests").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let output = Command::new(env!("CARGO_BIN_EXE_autoglm"))
        .args(["new", name, "--lang", lang, "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(printed.contains("./build.sh"), "prints the next commands: {printed}");
    dir
}

/// Serve the built component and check its tool answers and refuses bad arguments.
async fn serve_and_call(project: &Path, name: &str) {
    let plugins = dir_with([project.join(format!("{name}.wasm"))]);
    let server = TestServer::start(config(""), plugins.path()).await;
    let path = format!("/v1/tools/{name}.greet/call");
    let reply = http(server.addr, "POST", &path, &[], r#"{"name": "Ada", "excited": true}"#).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["result"]["greeting"], "Hello, Ada!");
    for bad in [r#"{"name": "  "}"#, r#"{"nom": "Ada"}"#] {
        let reply = http(server.addr, "POST", &path, &[], bad).await;
        assert_eq!(reply.status, 400, "{bad}: {}", reply.body);
        assert_eq!(reply.json()["error"]["kind"], "invalid_arguments");
    }
    context_and_progress_reach_the_host(server.addr, name).await;
}

/// The template's `work` tool reads the call's context and reports progress through the
/// host import: the trace id is the request's, the key is the host's, and an MCP client
/// that asked for progress hears each step.
async fn context_and_progress_reach_the_host(addr: std::net::SocketAddr, name: &str) {
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace}-00f067aa0ba902b7-01");
    let path = format!("/v1/tools/{name}.work/call");
    let reply =
        http(addr, "POST", &path, &[("traceparent", &traceparent)], r#"{"steps": 3}"#).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let worked = &reply.json()["result"];
    assert_eq!(worked["trace_id"], trace, "{worked}");
    let key = worked["idempotency_key"].as_str().unwrap_or_default();
    assert!(key.len() >= 16 && key != "native", "a key from the host: {worked}");
    assert!(worked["deadline_ms"].as_u64().is_some_and(|ms| ms > 0), "{worked}");

    let headers = [
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", "2026-07-28"),
    ];
    let call = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": format!("{name}.work"), "arguments": {"steps": 3}, "_meta": {"progressToken": "p"}}});
    let reply = http(addr, "POST", "/mcp", &headers, &call.to_string()).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let progress: Vec<(f64, String)> = (reply.body.lines())
        .filter_map(|line| serde_json::from_str(line.strip_prefix("data: ")?).ok())
        .filter(|m: &serde_json::Value| m["method"] == "notifications/progress")
        .map(|m| {
            let params = &m["params"];
            let message = params["message"].as_str().unwrap_or_default().to_string();
            (params["progress"].as_f64().unwrap_or(-1.0), message)
        })
        .collect();
    // The host announces the call at 0; each step after that is the plugin's own report.
    let calling = format!("calling {name}.work");
    let expected: Vec<(f64, String)> = [calling.as_str(), "step 1", "step 2", "step 3"]
        .iter()
        .enumerate()
        .map(|(done, message)| (done as f64, message.to_string()))
        .collect();
    assert_eq!(progress, expected, "{}", reply.body);
}

#[tokio::test]
async fn rust_template_builds_and_serves() {
    let project = scaffold("demo-rust", "rust");
    let manifest = std::fs::read_to_string(project.join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains("autoglm-sdk = { path = "),
        "inside the repository the SDK is a path: {manifest}"
    );
    let target = [("CARGO_TARGET_DIR", target_dir().join("template-tests/cargo-target"))];
    run(&project, "cargo test --quiet", &target);
    run(&project, "./build.sh", &target);
    serve_and_call(&project, "demo-rust").await;
}

#[tokio::test]
async fn python_template_builds_and_serves() {
    let project = scaffold("demo-python", "python");
    run(&project, "python3 -m unittest --quiet", &[]);
    run(
        &project,
        "./build.sh",
        &[("COMPONENTIZE_PY", installed("py/componentize/bin/componentize-py"))],
    );
    serve_and_call(&project, "demo-python").await;
}

#[tokio::test]
async fn js_template_builds_and_serves() {
    let project = scaffold("demo-js", "js");
    run(&project, "npm test --silent", &[]);
    run(
        &project,
        "./build.sh",
        &[("COMPONENTIZE_JS", installed("js-toolchain/node_modules/.bin/componentize-js"))],
    );
    serve_and_call(&project, "demo-js").await;
}

#[test]
fn new_refuses_bad_names_and_existing_projects() {
    let dir = tempfile::tempdir().unwrap();
    let new = |name: &str, target: &Path| {
        Command::new(env!("CARGO_BIN_EXE_autoglm"))
            .args(["new", name, "--lang", "python", "--dir"])
            .arg(target)
            .output()
            .unwrap()
    };
    let bad = new("Bad Name", &dir.path().join("x"));
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("must start with a-z"));
    std::fs::write(dir.path().join("keep.txt"), "mine").unwrap();
    let taken = new("fine", dir.path());
    assert!(!taken.status.success(), "a non-empty directory is not overwritten");
    assert_eq!(std::fs::read_to_string(dir.path().join("keep.txt")).unwrap(), "mine");
}
