//! The HTTP endpoint over raw HTTP/1.1 on 127.0.0.1: statuses, authentication,
//! origins, limits, cancellation and graceful shutdown.

use std::process::Command;
use std::time::{Duration, Instant};

use autoglm_test_support::host::{
    ServeProcess, TestServer, config, dir_with, http, plugins_dir, sample, target_dir, test_plugin,
    test_plugins_dir,
};
use serde_json::json;

async fn server(config_toml: &str, plugins: &[&str]) -> (tempfile::TempDir, TestServer) {
    let dir =
        dir_with(plugins.iter().map(|&n| if n == "hostile" { test_plugin(n) } else { sample(n) }));
    let server = TestServer::start(config(config_toml), dir.path()).await;
    (dir, server)
}

#[tokio::test]
async fn tools_are_listed_in_openai_format_and_called_by_any_name_form() {
    let (_dir, server) = server("", &["weather", "calculator"]).await;
    let listed = http(server.addr, "GET", "/v1/tools", &[], "").await;
    assert_eq!(listed.status, 200);
    let tools = listed.json()["data"].as_array().unwrap().clone();
    let weather = tools.iter().find(|t| t["id"] == "weather.get_weather").expect("weather listed");
    assert_eq!(weather["type"], "function");
    assert_eq!(weather["function"]["name"], "get_weather");
    assert_eq!(weather["function"]["parameters"]["required"], json!(["location"]));
    assert_eq!(weather["plugin"], "weather");
    assert!(weather["capabilities"]["granted"].is_object());

    for name in ["weather.get_weather", "get_weather", "weather__get_weather"] {
        let reply = http(
            server.addr,
            "POST",
            &format!("/v1/tools/{name}/call"),
            &[],
            r#"{"location":"Beijing"}"#,
        )
        .await;
        assert_eq!(reply.status, 200, "{name}: {}", reply.body);
        assert_eq!(reply.json()["result"]["city"], "Beijing");
    }
}

#[tokio::test]
async fn each_failure_has_its_status_and_kind() {
    let limits = "[plugins.hostile.limits]\nfuel = 20000000\nmemory_mib = 16\n";
    let (_dir, server) = server(limits, &["weather", "calculator", "hostile"]).await;
    let call = |tool: &str, body: &str| {
        let path = format!("/v1/tools/{tool}/call");
        let body = body.to_string();
        async move { http(server.addr, "POST", &path, &[], &body).await }
    };
    for (tool, body, status, kind) in [
        ("get_weather", r#"{"location":""}"#, 400, "invalid_arguments"),
        ("get_weather", r#"{"location":"#, 400, "bad_request"),
        ("nope.nothing", "{}", 404, "unknown_tool"),
        ("calculator.evaluate", r#"{"expression":"1/0"}"#, 422, "tool_error"),
        ("hostile.spin", "{}", 500, "out_of_fuel"),
        ("hostile.memory_bomb", "{}", 500, "memory_limit"),
        ("hostile.trap", "{}", 500, "trap"),
    ] {
        let reply = call(tool, body).await;
        assert_eq!(reply.status, status, "{tool}: {}", reply.body);
        assert_eq!(reply.json()["error"]["kind"], kind, "{tool}");
    }
    let reply = call("hostile.spin", "{}").await;
    assert_eq!(reply.json()["error"]["plugin"], "hostile");
    assert_eq!(reply.json()["error"]["tool"], "spin");

    for (method, path) in
        [("GET", "/v1/nowhere"), ("POST", "/v1/tools/call"), ("POST", "/v1/tools//call")]
    {
        let reply = http(server.addr, method, path, &[], "{}").await;
        assert_eq!(
            (reply.status, reply.json()["error"]["kind"].as_str()),
            (404, Some("not_found")),
            "{path}"
        );
    }
    let reply = call("get_weather", r#"["Beijing"]"#).await;
    assert_eq!(
        (reply.status, reply.json()["error"]["kind"].as_str()),
        (400, Some("invalid_arguments"))
    );
    let metrics = http(server.addr, "GET", "/metrics", &[], "").await;
    assert!(
        metrics.body.contains(
            r#"autoglm_tool_calls_total{plugin="hostile",tool="spin",outcome="out_of_fuel"} 2"#
        ),
        "{}",
        metrics.body
    );
    assert!(metrics.body.contains("autoglm_tool_call_seconds_bucket"));
    assert!(metrics.body.contains(r#"autoglm_plugin_memory_peak_bytes{plugin="hostile"}"#));
}

#[tokio::test]
async fn api_keys_are_required_when_configured() {
    let config = "[[server.keys]]\nname = \"ci\"\ntoken = \"s3cret\"\n[[server.keys]]\nname = \"weather-only\"\ntoken = \"w\"\ntools = [\"weather.*\"]\n";
    let (_dir, server) = server(config, &["weather", "calculator"]).await;
    let body = r#"{"location":"Oslo"}"#;
    let path = "/v1/tools/weather.get_weather/call";
    let anonymous = http(server.addr, "POST", path, &[], body).await;
    assert_eq!(
        (anonymous.status, anonymous.json()["error"]["kind"].as_str()),
        (401, Some("unauthorized"))
    );
    assert_eq!(anonymous.header("www-authenticate"), Some("Bearer"));
    let wrong = http(server.addr, "POST", path, &[("authorization", "Bearer guess")], body).await;
    assert_eq!(wrong.status, 401);
    let right = http(server.addr, "POST", path, &[("authorization", "Bearer s3cret")], body).await;
    assert_eq!(right.status, 200, "{}", right.body);

    let limited = [("authorization", "Bearer w")];
    assert_eq!(http(server.addr, "POST", path, &limited, body).await.status, 200);
    let other = http(
        server.addr,
        "POST",
        "/v1/tools/calculator.evaluate/call",
        &limited,
        r#"{"expression":"1"}"#,
    )
    .await;
    assert_eq!(
        (other.status, other.json()["error"]["kind"].as_str()),
        (403, Some("permission_denied"))
    );
    assert_eq!(other.json()["error"]["plugin"], "calculator", "{}", other.body);
    assert_eq!(other.json()["error"]["tool"], "evaluate", "{}", other.body);
    let listed = http(server.addr, "GET", "/v1/tools", &limited, "").await.json();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "the key sees only its tools");
    assert_eq!(
        http(server.addr, "GET", "/healthz", &[], "").await.status,
        200,
        "health needs no key"
    );
}

#[tokio::test]
async fn the_console_is_public_and_what_it_shows_is_not() {
    let config = "[[server.keys]]\nname = \"ops\"\ntoken = \"o\"\n[[server.keys]]\nname = \"weather-only\"\ntoken = \"w\"\ntools = [\"weather.*\"]\n";
    let dir = dir_with([sample("weather"), sample("calculator")]);
    let server = TestServer::start(self::config(config), dir.path()).await;
    for path in ["/", "/ui/app.js"] {
        let page = http(server.addr, "GET", path, &[], "").await;
        assert_eq!(page.status, 200, "{path}: the page holds no data and needs no key");
        assert!(
            page.header("content-security-policy")
                .is_some_and(|p| p.starts_with("default-src 'self'"))
        );
        assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    }
    assert_eq!(http(server.addr, "GET", "/ui/secret", &[], "").await.status, 401);
    assert_eq!(http(server.addr, "GET", "/v1/plugins", &[], "").await.status, 401);
    let foreign = [("origin", "http://evil.example")];
    assert_eq!(http(server.addr, "GET", "/", &foreign, "").await.status, 403, "origin rules hold");

    let ops = http(server.addr, "GET", "/v1/plugins", &[("authorization", "Bearer o")], "").await;
    let listed = ops.json();
    let names: Vec<&str> =
        listed["data"].as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["calculator", "weather"], "{listed}");
    assert_eq!(listed["data"][1]["tools"], json!(["weather.get_weather"]));
    assert_eq!(listed["data"][1]["file"], "weather.wasm", "the file name, not the operator's path");
    assert_eq!(listed["failed"], json!([]), "{listed}");

    let limited =
        http(server.addr, "GET", "/v1/plugins", &[("authorization", "Bearer w")], "").await.json();
    let names: Vec<&str> =
        limited["data"].as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["weather"], "a key sees the plugins it may call");
    assert_eq!(limited["failed"], json!([]), "and no other plugin's failure");
}

#[tokio::test]
async fn foreign_origins_big_bodies_and_bursts_are_refused() {
    let config = "[server]\nbody_limit_bytes = 64\nrate_per_minute = 3\n";
    let (_dir, server) = server(config, &["weather"]).await;
    let path = "/v1/tools/get_weather/call";
    let rebound =
        http(server.addr, "GET", "/v1/tools", &[("host", "rebound.evil.example:8080")], "").await;
    assert_eq!(
        (rebound.status, rebound.json()["error"]["kind"].as_str()),
        (403, Some("forbidden_origin"))
    );
    let foreign =
        http(server.addr, "POST", path, &[("origin", "https://evil.example")], "{}").await;
    assert_eq!(
        (foreign.status, foreign.json()["error"]["kind"].as_str()),
        (403, Some("forbidden_origin"))
    );
    // A page the server itself served: its own origin (another local port would be another
    // site, see tests/hardening.rs).
    let own = format!("http://{}", server.addr);
    let local =
        http(server.addr, "POST", path, &[("origin", own.as_str())], r#"{"location":"x"}"#).await;
    assert_eq!(local.status, 200);
    let big = format!(r#"{{"location":"{}"}}"#, "x".repeat(100));
    let reply = http(server.addr, "POST", path, &[], &big).await;
    assert_eq!(
        (reply.status, reply.json()["error"]["kind"].as_str()),
        (413, Some("body_too_large"))
    );
    // Three requests passed the gate (the foreign one was refused before it); the
    // minute's allowance of three is spent.
    let limited = http(server.addr, "POST", path, &[], r#"{"location":"x"}"#).await;
    assert_eq!(limited.status, 200, "{}", limited.body);
    let limited = http(server.addr, "POST", path, &[], r#"{"location":"x"}"#).await;
    assert_eq!(
        (limited.status, limited.json()["error"]["kind"].as_str()),
        (429, Some("rate_limited")),
        "{}",
        limited.body
    );
    let retry: u64 = limited.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=21).contains(&retry), "{retry}");
}

#[tokio::test]
async fn a_client_that_disconnects_stops_its_call() {
    let (_dir, server) =
        server("[plugins.hostile.limits]\ndeadline_ms = 60000\n", &["hostile"]).await;
    let addr = server.addr;
    let call = tokio::spawn(async move {
        http(addr, "POST", "/v1/tools/hostile.sleep/call", &[], r#"{"ms":30000}"#).await
    });
    let in_flight = || async {
        let metrics = http(addr, "GET", "/metrics", &[], "").await.body;
        metrics
            .lines()
            .find(|l| l.starts_with("autoglm_tool_calls_in_flight "))
            .map(|l| l.ends_with(" 1"))
    };
    let started = Instant::now();
    while in_flight().await != Some(true) {
        assert!(started.elapsed() < Duration::from_secs(10), "the call never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    call.abort();
    let stopped = Instant::now();
    while in_flight().await != Some(false) {
        assert!(
            stopped.elapsed() < Duration::from_secs(5),
            "the guest kept running after the client left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn mcp_cancellation_stops_a_running_call() {
    let (_dir, server) =
        server("[plugins.hostile.limits]\ndeadline_ms = 60000\n", &["hostile"]).await;
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let reply = http(server.addr, "POST", "/mcp", &[], &init.to_string()).await;
    assert_eq!(reply.json()["result"]["protocolVersion"], "2025-06-18");
    let session = reply.header("mcp-session-id").expect("a session").to_string();
    let addr = server.addr;
    let headers =
        [("mcp-session-id", session.clone()), ("mcp-protocol-version", "2025-06-18".into())];
    let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "hostile.sleep", "arguments": {"ms": 30000}}});
    let started = Instant::now();
    let running = {
        let headers = headers.clone();
        tokio::spawn(async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            http(addr, "POST", "/mcp", &headers, &call.to_string()).await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7, "reason": "user"}});
    let borrowed: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    assert_eq!(http(addr, "POST", "/mcp", &borrowed, &cancel.to_string()).await.status, 202);
    let reply = running.await.unwrap();
    assert_eq!(reply.json()["error"]["code"], -32800, "{}", reply.body);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(http(addr, "DELETE", "/mcp", &borrowed, "").await.status, 204);
    assert_eq!(
        http(
            addr,
            "POST",
            "/mcp",
            &borrowed,
            &json!({"jsonrpc":"2.0","id":1,"method":"ping"}).to_string()
        )
        .await
        .status,
        404
    );
}

#[test]
fn sigterm_lets_50_in_flight_calls_finish_and_refuses_new_connections() {
    let dir = test_plugins_dir(&["hostile"]);
    let config = dir.path().join("autoglm.toml");
    std::fs::write(
        &config,
        format!(
            "cache_dir = {:?}\n[plugins.hostile.limits]\nconcurrency = 64\ndeadline_ms = 30000\n",
            target_dir().join("test-component-cache")
        ),
    )
    .unwrap();
    let mut server = ServeProcess::start([
        "--plugins".as_ref(),
        dir.path().as_os_str(),
        "--config".as_ref(),
        config.as_os_str(),
    ]);
    let addr = server.addr;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        server.ready().await;
        let calls: Vec<_> = (0..50)
            .map(|i| {
                tokio::spawn(async move {
                    let body = format!(r#"{{"ms":{}}}"#, 1500 + i * 10);
                    http(addr, "POST", "/v1/tools/hostile.sleep/call", &[], &body).await
                })
            })
            .collect();
        let started = Instant::now();
        loop {
            let metrics = http(addr, "GET", "/metrics", &[], "").await.body;
            if metrics.lines().any(|l| l == "autoglm_tool_calls_in_flight 50") {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "the 50 calls never ran together");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let terminated =
            Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
        assert!(terminated.success());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "new connections are refused while draining"
        );
        for call in calls {
            let reply = call.await.unwrap();
            assert_eq!(reply.status, 200, "{}", reply.body);
            assert_eq!(reply.json()["result"], "awake");
        }
    });
    let status = server.child.wait().unwrap();
    assert!(status.success(), "exits cleanly after draining: {status}");
}

/// W3C trace context: the caller's trace id is continued, answered in `traceparent`, and
/// carried by the plugin-call log line of the request (JSON logs).
#[test]
fn a_requests_trace_id_is_on_its_plugin_call_log_line_and_in_the_response() {
    let dir = plugins_dir(&["weather"]);
    let server = ServeProcess::start_with_env(
        &[("RUST_LOG", "autoglm::request=info,autoglm::call=info")],
        ["--log-format".as_ref(), "json".as_ref(), "--plugins".as_ref(), dir.path().as_os_str()],
    );
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reply = rt.block_on(async {
        server.ready().await;
        let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
        http(
            server.addr,
            "POST",
            "/v1/tools/weather.get_weather/call",
            &[("traceparent", traceparent.as_str())],
            r#"{"location": "Oslo"}"#,
        )
        .await
    });
    assert_eq!(reply.status, 200, "{}", reply.body);
    let answered = reply.header("traceparent").unwrap_or_default();
    assert!(
        answered.starts_with(&format!("00-{trace_id}-")) && !answered.contains("00f067aa0ba902b7"),
        "{answered}"
    );

    // A request without a traceparent gets a fresh trace id of its own.
    let fresh = rt.block_on(http(server.addr, "GET", "/v1/tools", &[], ""));
    let fresh = fresh.header("traceparent").unwrap_or_default().to_string();
    assert!(fresh.len() == 55 && !fresh.contains(trace_id), "{fresh}");

    let started = Instant::now();
    let line = loop {
        let found =
            server.log.lock().unwrap().iter().find(|l| l.contains("\"tool call\"")).cloned();
        if let Some(line) = found {
            break line;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no tool call log line");
        std::thread::sleep(Duration::from_millis(20));
    };
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["fields"]["tool"], "weather.get_weather", "{line}");
    assert_eq!(entry["fields"]["outcome"], "ok", "{line}");
    assert_eq!(entry["spans"][0]["trace_id"], trace_id, "{line}");
}
