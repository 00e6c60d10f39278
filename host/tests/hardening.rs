//! The HTTP endpoint under hostile clients: slow uploads, idle connection floods, oversized
//! bodies on kept-alive connections, password guessing and foreign origins. Each test starts
//! a real server on 127.0.0.1 and talks raw HTTP/1.1 to it.

use std::time::Duration;

use autoglm_test_support::host::{TestServer, config, http, plugins_dir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CALL: &str = "/v1/tools/weather.get_weather/call";
const ARGS: &str = r#"{"location": "Beijing"}"#;

async fn server(config_toml: &str) -> (TestServer, tempfile::TempDir) {
    let dir = plugins_dir(&["weather"]);
    (TestServer::start(config(config_toml), dir.path()).await, dir)
}

/// Everything the server sends on `stream` until it closes it (or `wait` passes).
async fn read_until_closed(stream: &mut TcpStream, wait: Duration) -> Option<String> {
    let mut raw = Vec::new();
    let read = tokio::time::timeout(wait, stream.read_to_end(&mut raw)).await;
    read.ok().map(|_| String::from_utf8_lossy(&raw).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_uploads_hold_no_slot_and_time_out_with_the_connection_closed() {
    let (server, _dir) = server("[server]\nconcurrency = 2\nbody_read_timeout_ms = 1500\n").await;
    let mut slow = Vec::new();
    for _ in 0..6 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let head = format!(
            "POST {CALL} HTTP/1.1\r\nhost: {}\r\ncontent-length: 100\r\n\r\n{{",
            server.addr
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        slow.push(stream);
    }
    // Six uploads in progress on a key with two slots: others still get through.
    for _ in 0..3 {
        let reply = http(server.addr, "POST", CALL, &[], ARGS).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    for mut stream in slow {
        let answer = read_until_closed(&mut stream, Duration::from_secs(10)).await.expect("closed");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(
            answer.contains("body_timeout") && answer.contains("body_read_timeout_ms"),
            "{answer}"
        );
        assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_early_413_tells_the_client_to_close_the_connection() {
    let (server, _dir) = server("[server]\nbody_limit_bytes = 1024\n").await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let head =
        format!("POST {CALL} HTTP/1.1\r\nhost: {}\r\ncontent-length: 2000000\r\n\r\n", server.addr);
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut stream, Duration::from_secs(10)).await.expect("closed");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_are_capped_and_closed_while_the_server_keeps_answering() {
    let (server, _dir) = server("[server]\nmax_connections = 8\nidle_timeout_ms = 300\n").await;
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }
    let health = tokio::time::timeout(
        Duration::from_secs(20),
        http(server.addr, "GET", "/healthz", &[], ""),
    )
    .await
    .expect("/healthz answers while idle connections come and go");
    assert_eq!(health.status, 200);
    let metrics = http(server.addr, "GET", "/metrics", &[], "").await.body;
    let open: f64 = (metrics.lines())
        .find_map(|l| l.strip_prefix("autoglm_http_connections "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no connections gauge: {metrics}"));
    assert!((1.0..=8.0).contains(&open), "{open} connections open, over the cap of 8");
    for mut stream in idle {
        // Accepted ones are closed once idle; the rest were never accepted and are closed
        // (or accepted, then closed) in turn: every one ends with nothing sent.
        let answer = read_until_closed(&mut stream, Duration::from_secs(20)).await;
        assert_eq!(answer.as_deref(), Some(""), "an idle connection stayed open");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn guessing_keys_is_throttled_per_address_and_a_right_guess_is_not_revealed() {
    let (server, _dir) = server(
        "[server]\nlogin_failures_per_minute = 3\n[[server.keys]]\nname = \"k\"\ntoken = \"right\"\n",
    )
    .await;
    let call = |token: &'static str| {
        let auth = format!("Bearer {token}");
        async move { http(server.addr, "POST", CALL, &[("authorization", &auth)], ARGS).await }
    };
    for _ in 0..3 {
        assert_eq!(call("wrong").await.status, 401);
    }
    let throttled = call("wrong").await;
    assert_eq!(throttled.status, 429, "{}", throttled.body);
    assert!(throttled.header("retry-after").is_some());
    assert!(throttled.body.contains("login_failures_per_minute"), "{}", throttled.body);
    assert_eq!(call("right").await.status, 429, "while throttled, a right key looks the same");
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_servers_own_origin_and_configured_ones_pass_exactly() {
    let (server, _dir) =
        server("[server]\nallowed_origins = [\"https://app.example.com\"]\n").await;
    let port = server.addr.port();
    let status = |origins: Vec<String>| async move {
        let headers: Vec<(&str, &str)> = origins.iter().map(|o| ("origin", o.as_str())).collect();
        http(server.addr, "POST", CALL, &headers, ARGS).await.status
    };
    assert_eq!(status(vec![format!("http://{}", server.addr)]).await, 200, "own origin");
    assert_eq!(status(vec!["https://app.example.com".into()]).await, 200);
    assert_eq!(status(vec![format!("http://127.0.0.1:{}", port + 1)]).await, 403);
    assert_eq!(status(vec![format!("evil://127.0.0.1:{port}")]).await, 403);
    assert_eq!(status(vec!["http://app.example.com".into()]).await, 403, "the scheme counts");
    assert_eq!(
        status(vec![format!("http://{}", server.addr), "https://evil.example".into()]).await,
        403,
        "every Origin header counts"
    );
}

/// Open an MCP notification stream on a fresh connection and read its status line.
async fn open_stream(addr: std::net::SocketAddr, session: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /mcp HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\nmcp-session-id: {session}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = vec![0u8; 512];
    let n = stream.read(&mut head).await.unwrap();
    let status = String::from_utf8_lossy(&head[..n]).lines().next().unwrap_or("").to_string();
    (stream, status)
}

/// A session of the session-based MCP revision on `server`.
async fn mcp_session(server: &TestServer) -> String {
    let initialize = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let reply = http(server.addr, "POST", "/mcp", &[], initialize).await;
    reply.header("mcp-session-id").expect("a session").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_are_capped_per_key_and_give_their_place_back() {
    let (server, _dir) = server("[server]\nconcurrency = 3\nstreams_per_key = 2\n").await;
    let session = mcp_session(&server).await;
    let (first, status) = open_stream(server.addr, &session).await;
    assert!(status.contains("200"), "{status}");
    let (_second, status) = open_stream(server.addr, &session).await;
    assert!(status.contains("200"), "{status}");
    let (_third, status) = open_stream(server.addr, &session).await;
    assert!(status.contains("429"), "a third stream is over streams_per_key = 2: {status}");
    drop(first);
    let mut reopened = false;
    for _ in 0..200 {
        // The closed stream's task notices and gives its place back.
        let (_stream, line) = open_stream(server.addr, &session).await;
        if line.contains("200") {
            reopened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(reopened, "a closed stream's place is given back");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_stream_holds_its_keys_concurrency_slot() {
    let (server, _dir) = server("[server]\nconcurrency = 2\nstreams_per_key = 8\n").await;
    let session = mcp_session(&server).await;
    let _streams =
        [open_stream(server.addr, &session).await, open_stream(server.addr, &session).await];
    let reply = http(server.addr, "POST", CALL, &[], ARGS).await;
    assert_eq!(reply.status, 429, "two open streams hold both slots: {}", reply.body);
    assert!(reply.body.contains("in flight"), "{}", reply.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_mcp_session_belongs_to_the_key_that_opened_it() {
    let keys = "[[server.keys]]\nname = \"a\"\ntoken = \"ta\"\n[[server.keys]]\nname = \"b\"\ntoken = \"tb\"\n";
    let (server, _dir) = server(keys).await;
    let initialize = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let a = [("authorization", "Bearer ta")];
    let reply = http(server.addr, "POST", "/mcp", &a, initialize).await;
    let session = reply.header("mcp-session-id").expect("a session").to_string();
    let as_b = [("authorization", "Bearer tb"), ("mcp-session-id", session.as_str())];
    let deleted = http(server.addr, "DELETE", "/mcp", &as_b, "").await;
    assert_eq!(deleted.status, 404, "key b cannot end key a's session: {}", deleted.body);
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let as_a = [("authorization", "Bearer ta"), ("mcp-session-id", session.as_str())];
    let listed = http(server.addr, "POST", "/mcp", &as_a, list).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert!(listed.json()["result"]["tools"].is_array(), "{}", listed.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_stream_is_not_an_idle_connection() {
    let (server, _dir) = server("[server]\nidle_timeout_ms = 200\n").await;
    let session = mcp_session(&server).await;
    let (mut stream, status) = open_stream(server.addr, &session).await;
    assert!(status.contains("200"), "{status}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_millis(300), stream.read(&mut byte)).await;
    assert!(read.is_err(), "the stream was closed as idle: {read:?}");
}
