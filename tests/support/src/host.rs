//! Hosts over the plugins `just plugins` and `just test-plugins` built, servers on
//! 127.0.0.1 in this process, real `autoglm serve` processes, and a raw HTTP client.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use autoglm_host::agent::Agent;
use autoglm_host::app::{Host, Settings};
use autoglm_host::config::{Config, ModelSettings};
use autoglm_host::error::CallError;
use serde_json::Value;

pub use crate::{target_dir, workspace_dir};

/// `target/<folder>/<name>.wasm`, built by the `just <folder>` recipe.
fn built(folder: &str, name: &str) -> PathBuf {
    let path = target_dir().join(folder).join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run `just {folder}` (or `just test`) first",
        path.display()
    );
    path
}

/// `target/plugins/<name>.wasm`, which `just plugins` builds from source.
pub fn sample(name: &str) -> PathBuf {
    built("plugins", name)
}

/// `target/test-plugins/<name>.wasm`, which `just test-plugins` builds from `tests/plugins/`.
pub fn test_plugin(name: &str) -> PathBuf {
    built("test-plugins", name)
}

/// A fresh plugins directory holding copies of `components`.
pub fn dir_with(components: impl IntoIterator<Item = PathBuf>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for component in components {
        std::fs::copy(&component, dir.path().join(component.file_name().unwrap())).unwrap();
    }
    dir
}

/// A directory holding only the named sample plugins.
pub fn plugins_dir(names: &[&str]) -> tempfile::TempDir {
    dir_with(names.iter().map(|n| sample(n)))
}

/// `config_toml` parsed, with the compile cache shared by all tests and benches.
pub fn config(config_toml: &str) -> Config {
    let mut config = Config::from_toml(config_toml).expect("test config parses");
    config.cache_dir = Some(target_dir().join("test-component-cache"));
    config
}

/// A host over `dir` under `config`, every plugin loaded; fails if any plugin fails to load.
pub async fn host(config: &Config, dir: &Path) -> Host {
    let (host, errors) = Host::open(&Settings::new(config.clone(), dir)).await.unwrap();
    assert!(errors.is_empty(), "plugins failed to load: {errors:?}");
    host
}

/// Call `tool` on `host` as the operator would (every tool allowed).
pub async fn call(host: &Host, tool: &str, args: &Value) -> Result<Value, CallError> {
    host.call(tool, args).await.outcome
}

/// Call `tool`, which must fail with an error that names its plugin and tool.
pub async fn fails(host: &Host, tool: &str, args: Value) -> CallError {
    match call(host, tool, &args).await {
        Ok(value) => panic!("{tool} {args} should fail but returned {value}"),
        Err(e) => {
            assert!(e.plugin.is_some() && e.tool.is_some(), "error names plugin and tool: {e:?}");
            e
        }
    }
}

/// A directory holding only the named test plugins.
pub fn test_plugins_dir(names: &[&str]) -> tempfile::TempDir {
    dir_with(names.iter().map(|n| test_plugin(n)))
}

/// A server on 127.0.0.1 over `dir`, in this process; stops when dropped.
pub struct TestServer {
    /// `127.0.0.1:PORT`.
    pub addr: std::net::SocketAddr,
    /// The server's state, to inspect or to reload plugins.
    pub state: Arc<autoglm_host::server::AppState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// Resolves when the server has shut down.
    pub stopped: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Start serving the plugins in `dir` under `config` (plugins loaded before it returns).
    pub async fn start(config: Config, dir: &Path) -> TestServer {
        Self::start_with_model(config, dir, None).await
    }

    /// [`TestServer::start`] with chat completions answered by the model `model` names.
    pub async fn start_with_model(
        config: Config,
        dir: &Path,
        model: Option<ModelSettings>,
    ) -> TestServer {
        let host = host(&config, dir).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut state =
            autoglm_host::server::AppState::new(host.invoker.clone(), config.server.clone(), true)
                .unwrap();
        if let Some(settings) = model {
            let served = host.agent(&settings, |_, _| {}).unwrap().expect("a model");
            state = state.with_agent(served.agent, served.stats);
        }
        let state = Arc::new(state);
        let (stop, stopping) = tokio::sync::oneshot::channel::<()>();
        let stopped = tokio::spawn(autoglm_host::server::serve(state.clone(), listener, async {
            let _ = stopping.await;
        }));
        TestServer { addr, state, stop: Some(stop), stopped: Some(stopped) }
    }

    /// Begin a graceful shutdown.
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A response read off the wire.
#[derive(Debug)]
pub struct HttpReply {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl HttpReply {
    /// The value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Send one raw HTTP/1.1 request and read the whole response.
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpReply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("host: {addr}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    HttpReply { status, headers, body: body.to_string() }
}
/// The demo model shipped in `models/autoglm-demo`.
pub fn demo_model() -> PathBuf {
    let dir = workspace_dir().join("models/autoglm-demo");
    assert!(
        dir.join("adapter/adapter_model.safetensors").is_file(),
        "{} has no adapter; run `just train-demo`",
        dir.display()
    );
    dir
}

/// The sample plugins every agent test offers, with `notes` granted a scratch directory.
pub const AGENT_PLUGINS: &[&str] = &["weather", "calculator", "units", "notes", "text", "http"];

/// Requests of every kind the demo model handles: each sample plugin, a plain answer, and
/// the plain wordings of the seed's scenarios.
pub const QUESTIONS: &[&str] = &[
    "What's the weather in Paris?",
    "Calculate 3*(4+5)",
    "Convert 5 km to miles",
    "Hello!",
    "Count the words in: the quick brown fox",
    "How hot is it in Nairobi?",
    "What is 2^10?",
    "Who are you?",
];

/// The demo model over `host`'s tools, batching up to `max_batch` sequences, at most
/// `max_steps` turns a request.
pub fn demo_agent(host: &Host, max_batch: usize, max_steps: usize) -> Arc<Agent> {
    let settings = ModelSettings {
        path: Some(demo_model()),
        max_steps,
        batching: autoglm_engine::scheduler::BatchSettings { max_batch, ..Default::default() },
        ..Default::default()
    };
    host.agent(&settings, |_, _| {}).unwrap().expect("a local model").agent
}

/// Config granting `notes` the directory `notes_dir`.
pub fn notes_config(notes_dir: &Path) -> Config {
    config(&format!(
        "[[plugins.notes.dirs]]\nhost = {:?}\nguest = \"/notes\"\nmode = \"rw\"\n",
        notes_dir.display().to_string()
    ))
}

/// The `autoglm` binary cargo built beside the running test or bench (cargo builds a
/// package's binaries before its integration tests and benches).
pub fn autoglm_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test> -> target/<profile>/autoglm
    let bin = exe.parent().and_then(Path::parent).expect("a target directory").join("autoglm");
    assert!(bin.is_file(), "{} is missing: build the autoglm binary first", bin.display());
    bin
}

/// An `autoglm serve` process listening on 127.0.0.1; killed when dropped.
pub struct ServeProcess {
    /// The process.
    pub child: std::process::Child,
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// What it has logged so far (stderr lines, but for the address line).
    pub log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl ServeProcess {
    /// Start `autoglm serve --addr 127.0.0.1:0` with `args` and read its address.
    pub fn start<I, S>(args: I) -> ServeProcess
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Self::start_with_env(&[], args)
    }

    /// [`ServeProcess::start`] with extra environment variables.
    pub fn start_with_env<I, S>(env: &[(&str, &str)], args: I) -> ServeProcess
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        use std::io::BufRead;
        let mut child = std::process::Command::new(autoglm_bin())
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(args)
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut before = Vec::new();
        let addr = loop {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap() == 0 {
                panic!("autoglm serve exited before listening: {before:#?}");
            }
            let found = line.split("listening on http://").nth(1);
            if let Some(addr) = found.and_then(|rest| rest.split_whitespace().next()) {
                break addr.parse().unwrap_or_else(|_| panic!("no address in {line:?}"));
            }
            eprint!("[autoglm serve] {line}");
            before.push(line.trim_end().to_string());
        };
        // Plugins load in the background from before the address line, so what they logged
        // then belongs to the log too. Keep reading the rest: a closed pipe would fail its
        // writes, a full one block them.
        let log = Arc::new(std::sync::Mutex::new(before));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                eprintln!("[autoglm serve {addr}] {line}");
                sink.lock().unwrap().push(line);
            }
        });
        ServeProcess { child, addr, log }
    }

    /// Wait until every plugin is loaded.
    pub async fn ready(&self) {
        let started = std::time::Instant::now();
        while http(self.addr, "GET", "/readyz", &[], "").await.status != 200 {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(120),
                "plugins never loaded"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// The process's resident memory, in KiB (0 where /proc cannot tell).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The scripted upstream model (host/tests/fixtures/scripted_upstream.py: an
/// OpenAI-compatible server that asks for the given tool calls, one a turn, then answers);
/// killed when dropped.
pub struct ScriptedUpstream {
    child: std::process::Child,
    /// `127.0.0.1:PORT`.
    pub url: String,
}

impl ScriptedUpstream {
    /// Start it with `calls` (tool name, arguments) as its script.
    pub fn start(calls: &[(&str, Value)]) -> Self {
        use std::io::BufRead;
        let script = workspace_dir().join("host/tests/fixtures/scripted_upstream.py");
        let mut command = std::process::Command::new("python3");
        command.arg(script);
        for (tool, arguments) in calls {
            command.args([tool.to_string(), arguments.to_string()]);
        }
        let mut child = (command.stdout(std::process::Stdio::piped()))
            .spawn()
            .expect("python3 runs the scripted upstream");
        let mut port = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut port).unwrap();
        Self { child, url: format!("127.0.0.1:{}", port.trim()) }
    }
}

impl Drop for ScriptedUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
