//! `autoglm mcp` as a desktop client runs it, a child process spoken to over pipes:
//! over-long lines, batches and pipelined requests.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use autoglm_test_support::host::{autoglm_bin, plugins_dir, target_dir};
use serde_json::{Value, json};

/// `autoglm mcp` over the weather plugin; killed when dropped.
struct Mcp {
    child: Child,
    stdin: ChildStdin,
    replies: mpsc::Receiver<Value>,
    _plugins: tempfile::TempDir,
    _config: tempfile::NamedTempFile,
}

impl Mcp {
    fn start() -> Mcp {
        let plugins = plugins_dir(&["weather"]);
        let mut config = tempfile::NamedTempFile::new().unwrap();
        let cache = target_dir().join("test-component-cache");
        writeln!(config, "cache_dir = {:?}", cache.display().to_string()).unwrap();
        let mut child = Command::new(autoglm_bin())
            .arg("mcp")
            .arg("--plugins")
            .arg(plugins.path())
            .arg("--config")
            .arg(config.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let (sender, replies) = mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let reply: Value =
                    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
                // `notifications/tools/list_changed` comes once the plugins load, at no
                // fixed place among the answers.
                if reply.get("id").is_some() && sender.send(reply).is_err() {
                    return;
                }
            }
        });
        // Drained so that a full pipe never blocks the server's logging.
        let stderr = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                eprintln!("[autoglm mcp] {line}");
            }
        });
        Mcp { child, stdin, replies, _plugins: plugins, _config: config }
    }

    fn send(&mut self, message: &Value) {
        writeln!(self.stdin, "{message}").unwrap();
    }

    /// The next answer (notifications are skipped).
    fn reply(&self) -> Value {
        self.replies.recv_timeout(Duration::from_secs(10)).expect("a reply within 10 s")
    }

    /// The most resident memory the server has had, in KiB.
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let peak = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).expect("VmHWM");
        peak.trim().trim_end_matches("kB").trim().parse().unwrap()
    }
}

impl Drop for Mcp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn request(id: u64, method: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method})
}

#[test]
fn a_line_over_the_body_limit_is_refused_unread_and_the_next_one_served() {
    let mut mcp = Mcp::start();
    let lists_weather = |listed: &Value| {
        let tools = listed["result"]["tools"].as_array().unwrap();
        assert!(tools.iter().any(|t| t["name"] == "weather.get_weather"), "{listed}");
    };
    // Started, its plugin compiled: what memory it takes from here is the line's doing.
    mcp.send(&request(1, "tools/list"));
    lists_weather(&mcp.reply());
    let started = mcp.peak_rss_kib();

    // Valid JSON, 20 times the default limit: refused for its size alone.
    let mut line = br#"{"jsonrpc":"2.0","id":2,"method":"ping","params":{"pad":""#.to_vec();
    line.resize(line.len() + (20 << 20), b'a');
    line.extend_from_slice(b"\"}}\n");
    mcp.stdin.write_all(&line).unwrap();
    drop(line);
    mcp.send(&request(3, "tools/list"));

    let refused = mcp.reply();
    assert_eq!(refused["id"], Value::Null, "{refused}");
    assert_eq!(refused["error"]["code"], -32600, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("server.body_limit_bytes = 1048576"), "{message}");
    let listed = mcp.reply();
    assert_eq!(listed["id"], 3, "{listed}");
    lists_weather(&listed);

    // About 1 MiB more here (peaks of 30 to 46 MiB, by the state of the compile
    // cache); holding the line whole and parsing it took 40 MiB more.
    let grown = mcp.peak_rss_kib() - started;
    assert!(grown < 10 << 10, "peak RSS grew {grown} KiB, from {started} KiB");
}

#[test]
fn a_batch_gets_one_error_and_none_of_its_requests_run() {
    let mut mcp = Mcp::start();
    mcp.send(&json!([request(1, "ping"), request(2, "ping")]));
    mcp.send(&request(3, "ping"));
    let refused = mcp.reply();
    assert_eq!(refused["id"], Value::Null, "{refused}");
    assert_eq!(refused["error"]["code"], -32600, "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("batches"), "{refused}");
    assert_eq!(mcp.reply()["id"], 3, "the batch's own requests get no answers");
}

#[test]
fn every_pipelined_request_is_answered_beyond_the_in_flight_limit() {
    const REQUESTS: u64 = 500;
    let mut mcp = Mcp::start();
    let pings: String = (0..REQUESTS).map(|id| format!("{}\n", request(id, "ping"))).collect();
    mcp.stdin.write_all(pings.as_bytes()).unwrap();
    let mut answered: Vec<u64> = (0..REQUESTS)
        .map(|_| {
            let reply = mcp.reply();
            assert_eq!(reply["result"], json!({}), "{reply}");
            reply["id"].as_u64().unwrap()
        })
        .collect();
    answered.sort_unstable();
    assert_eq!(answered, (0..REQUESTS).collect::<Vec<_>>());
}
