//! Every sample plugin, built from source by `just plugins`, loaded in the host and
//! called with valid and invalid arguments through the router.

use std::io::{Read, Write};
use std::net::TcpListener;

use autoglm_host::error::{CallError, ErrorKind};
use autoglm_test_support::host::{
    ServeProcess, call, config, fails, host, http, plugins_dir, target_dir,
};
use serde_json::json;

#[tokio::test]
async fn weather_is_deterministic_for_any_place_and_refuses_a_blank_one() {
    let dir = plugins_dir(&["weather"]);
    let host = host(&config(""), dir.path()).await;
    let beijing =
        call(&host, "weather.get_weather", &json!({"location": "Beijing"})).await.unwrap();
    assert_eq!(beijing["city"], "Beijing");
    let t = beijing["temperature"].as_i64().expect("temperature is an integer");
    assert!((-10..=35).contains(&t), "{t}");
    assert!(beijing["condition"].is_string());
    // The same place gets the same weather, through every accepted name form.
    assert_eq!(call(&host, "get_weather", &json!({"location": "Beijing"})).await.unwrap(), beijing);
    assert_eq!(
        call(&host, "weather__get_weather", &json!({"location": "beijing"})).await.unwrap()["temperature"],
        t
    );
    let nowhere = call(&host, "get_weather", &json!({"location": "Xq-7 Nowhere"})).await.unwrap();
    assert_eq!(nowhere["city"], "Xq-7 Nowhere");

    let CallError { kind, message, .. } =
        fails(&host, "get_weather", json!({"location": "   "})).await;
    assert_eq!(kind, ErrorKind::InvalidArguments);
    assert!(message.contains("location"), "{message}");
    let CallError { kind, message, .. } =
        fails(&host, "get_weather", json!({"city": "Paris"})).await;
    assert_eq!(kind, ErrorKind::InvalidArguments, "schema validation runs before the guest");
    assert!(message.contains("location"), "{message}");
    let kind = fails(&host, "get_weather", json!({"location": 42})).await.kind;
    assert_eq!(kind, ErrorKind::InvalidArguments);
}

#[tokio::test]
async fn unknown_names_are_reported_with_what_exists() {
    let dir = plugins_dir(&["weather"]);
    let host = host(&config(""), dir.path()).await;
    let e = call(&host, "weather.get_forecast", &json!({})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::UnknownTool);
    assert!(e.message.contains("get_weather"), "lists what the plugin offers: {}", e.message);
    let e = call(&host, "nope", &json!({})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::UnknownTool);
}

#[tokio::test]
async fn notes_live_in_the_granted_directory_and_names_cannot_leave_it() {
    let dir = plugins_dir(&["notes"]);
    let data = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "do not read").unwrap();
    let config = config(&format!(
        "[[plugins.notes.dirs]]\nhost = {:?}\nguest = \"/notes\"\nmode = \"rw\"\n",
        data.path()
    ));
    let host = host(&config, dir.path()).await;

    let written = call(&host, "notes.write", &json!({"name": "shopping", "text": "milk, 鸡蛋"}))
        .await
        .unwrap();
    assert_eq!(written["name"], "shopping");
    assert_eq!(std::fs::read_to_string(data.path().join("shopping")).unwrap(), "milk, 鸡蛋");
    call(&host, "notes.write", &json!({"name": "a note", "text": "first"})).await.unwrap();
    let listed = call(&host, "notes.list", &json!({})).await.unwrap();
    let names: Vec<&str> =
        listed["notes"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a note", "shopping"]);
    assert_eq!(
        call(&host, "notes.read", &json!({"name": "shopping"})).await.unwrap()["text"],
        "milk, 鸡蛋"
    );
    assert_eq!(
        call(&host, "notes.delete", &json!({"name": "a note"})).await.unwrap()["deleted"],
        true
    );
    assert!(!data.path().join("a note").exists());

    let kind = fails(&host, "notes.read", json!({"name": "a note"})).await.kind;
    assert_eq!(kind, ErrorKind::ToolError, "a missing note is a tool failure");
    let escape = format!("../{}/secret", outside.path().file_name().unwrap().to_str().unwrap());
    for name in [escape.as_str(), "/etc/passwd", "..", ".hidden", ""] {
        let kind = fails(&host, "notes.read", json!({"name": name})).await.kind;
        assert_eq!(kind, ErrorKind::InvalidArguments, "name {name:?}");
        let kind = fails(&host, "notes.write", json!({"name": name, "text": "x"})).await.kind;
        assert_eq!(kind, ErrorKind::InvalidArguments, "name {name:?}");
    }
    assert_eq!(std::fs::read_to_string(outside.path().join("secret")).unwrap(), "do not read");
}

#[tokio::test]
async fn notes_without_a_grant_are_refused_before_the_guest_runs() {
    let dir = plugins_dir(&["notes"]);
    let host = host(&config(""), dir.path()).await;
    let CallError { kind, message, .. } = fails(&host, "notes.list", json!({})).await;
    assert_eq!(kind, ErrorKind::PermissionDenied);
    assert!(message.contains("[[plugins.notes.dirs]]"), "says what to grant: {message}");
}

/// A one-shot HTTP/1.1 server on 127.0.0.1 answering every request with `body`.
fn serve_http(body: &'static str, requests: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(requests) {
            let mut stream = stream.unwrap();
            let mut request = [0u8; 4096];
            let n = stream.read(&mut request).unwrap_or(0);
            let path =
                String::from_utf8_lossy(&request[..n]).split(' ').nth(1).unwrap_or("").to_string();
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-path: {path}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    addr
}

#[tokio::test]
async fn http_reaches_allowed_hosts_only() {
    let addr = serve_http("hello from the test server", 2);
    let dir = plugins_dir(&["http"]);
    let config = config(&format!(
        "[plugins.http]\nallow_hosts = [{addr:?}]\nallow_private_addresses = true\nconfig = {{ max_body_bytes = \"10\" }}\n"
    ));
    let host = host(&config, dir.path()).await;
    let response = call(&host, "http.get", &json!({"url": format!("http://{addr}/some/path?q=1")}))
        .await
        .unwrap();
    assert_eq!(response["status"], 200);
    assert_eq!(response["headers"]["x-path"], "/some/path?q=1");
    assert_eq!(response["body"], "hello from", "body capped by the plugin's max_body_bytes config");
    assert_eq!(response["truncated"], true);

    let CallError { kind, message, .. } =
        fails(&host, "http.get", json!({"url": "http://example.com/"})).await;
    assert_eq!(kind, ErrorKind::PermissionDenied, "{message}");
    assert!(message.contains("example.com"), "{message}");
    let kind = fails(&host, "http.get", json!({"url": "ftp://example.com/"})).await.kind;
    assert_eq!(kind, ErrorKind::InvalidArguments);
}

#[tokio::test]
async fn http_refuses_private_addresses_unless_granted() {
    let addr = serve_http("unreachable", 1);
    let dir = plugins_dir(&["http"]);
    let config = config(&format!("[plugins.http]\nallow_hosts = [{addr:?}]\n"));
    let host = host(&config, dir.path()).await;
    let CallError { kind, message, .. } =
        fails(&host, "http.get", json!({"url": format!("http://{addr}/")})).await;
    assert_eq!(kind, ErrorKind::PermissionDenied);
    assert!(message.contains("allow_private_addresses"), "{message}");
}

#[tokio::test]
async fn calculator_parses_real_expressions_and_reports_bad_ones() {
    let dir = plugins_dir(&["calculator"]);
    let host = host(&config(""), dir.path()).await;
    for (expression, expected) in [
        ("2 * (3 + 4)", 14.0),
        ("1 + 2 * 3 ^ 2", 19.0),
        ("-2 ^ 2", -4.0),
        ("2 ^ 3 ^ 2", 512.0),
        ("sqrt(16) + abs(-3)", 7.0),
        ("max(1, 5, 3) / 2", 2.5),
    ] {
        let value =
            call(&host, "calculator.evaluate", &json!({ "expression": expression })).await.unwrap();
        assert_eq!(value.as_f64(), Some(expected), "{expression}");
    }
    let CallError { kind, message, .. } =
        fails(&host, "evaluate", json!({"expression": "1 / (2 - 2)"})).await;
    assert_eq!((kind, message.as_str()), (ErrorKind::ToolError, "division by zero"));
    let CallError { kind, message, .. } =
        fails(&host, "evaluate", json!({"expression": "2 * (3 + "})).await;
    assert_eq!(kind, ErrorKind::ToolError);
    assert!(message.contains("column"), "{message}");
    let kind = fails(&host, "evaluate", json!({"expression": " "})).await.kind;
    assert_eq!(kind, ErrorKind::InvalidArguments);
    let deep = format!("{}1{}", "(".repeat(5000), ")".repeat(5000));
    let kind = fails(&host, "evaluate", json!({ "expression": deep })).await.kind;
    assert_eq!(kind, ErrorKind::ToolError, "deep nesting is refused, not a stack overflow");
}

#[tokio::test]
async fn units_convert_within_a_dimension_only() {
    let dir = plugins_dir(&["units"]);
    let host = host(&config(""), dir.path()).await;
    for (value, from, to, expected, unit) in [
        (100.0, "C", "F", 212.0, "F"),
        (1.0, "mile", "km", 1.609344, "km"),
        (2.0, "kg", "lb", 4.40924524379, "lb"),
        (1.0, "gal", "L", 3.785411784, "L"),
        (90.0, "min", "h", 1.5, "h"),
    ] {
        let out = call(&host, "units.convert", &json!({"value": value, "from": from, "to": to}))
            .await
            .unwrap();
        let got = out["value"].as_f64().unwrap();
        assert!(
            (got - expected).abs() < 1e-9 * expected.abs().max(1.0),
            "{value} {from} -> {to}: {got}"
        );
        assert_eq!(out["unit"], unit);
    }
    let CallError { kind, message, .. } =
        fails(&host, "convert", json!({"value": 1, "from": "kg", "to": "m"})).await;
    assert_eq!(kind, ErrorKind::InvalidArguments);
    assert!(message.contains("mass") && message.contains("length"), "{message}");
    let kind =
        fails(&host, "convert", json!({"value": 1, "from": "furlongs", "to": "m"})).await.kind;
    assert_eq!(kind, ErrorKind::InvalidArguments);
    let kind = fails(&host, "convert", json!({"value": -500, "from": "C", "to": "K"})).await.kind;
    assert_eq!(kind, ErrorKind::InvalidArguments);
}

#[tokio::test]
async fn text_tools_count_slugify_encode_and_hash() {
    let dir = plugins_dir(&["text"]);
    let host = host(&config(""), dir.path()).await;
    let counts = call(&host, "text.word_count", &json!({"text": "Hello big world\nsecond line"}))
        .await
        .unwrap();
    assert_eq!((counts["words"].as_u64(), counts["lines"].as_u64()), (Some(5), Some(2)));
    assert_eq!(
        call(&host, "slugify", &json!({"text": "  Héllo, Wörld! 2026 "})).await.unwrap(),
        "hello-world-2026"
    );
    assert_eq!(
        call(&host, "base64_encode", &json!({"text": "agent tools"})).await.unwrap(),
        "YWdlbnQgdG9vbHM="
    );
    assert_eq!(
        call(&host, "base64_decode", &json!({"data": "YWdlbnQgdG9vbHM="})).await.unwrap(),
        "agent tools"
    );
    assert_eq!(
        call(&host, "sha256", &json!({"text": "abc"})).await.unwrap(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let kind = fails(&host, "base64_decode", json!({"data": "not base64!"})).await.kind;
    assert_eq!(kind, ErrorKind::InvalidArguments);
    let kind = fails(&host, "base64_decode", json!({"data": "//79"})).await.kind;
    assert_eq!(kind, ErrorKind::ToolError, "bytes that are not UTF-8");
    let kind = fails(&host, "slugify", json!({"text": "!!!"})).await.kind;
    assert_eq!(kind, ErrorKind::InvalidArguments);
}

#[tokio::test]
async fn http_response_bodies_are_capped_by_the_host() {
    let addr = serve_http("a body longer than the host's cap", 1);
    let dir = plugins_dir(&["http"]);
    let config = config(&format!(
        "[plugins.http]\nallow_hosts = [{addr:?}]\nallow_private_addresses = true\n[plugins.http.limits]\nhttp_body_bytes = 8\n"
    ));
    let host = host(&config, dir.path()).await;
    let CallError { kind, message, .. } =
        fails(&host, "http.get", json!({"url": format!("http://{addr}/")})).await;
    assert_eq!(kind, ErrorKind::ToolError);
    assert!(message.contains("body size exceeds limit: 8 bytes"), "{message}");
}

/// A guest that passes on a host I/O error passes on what failed, not the host's internals:
/// with backtraces switched on, a real server's answer carries no stack frame.
#[tokio::test]
async fn host_errors_reach_clients_without_host_backtraces() {
    let addr = serve_http("a body longer than the host's cap", 1);
    let dir = plugins_dir(&["http"]);
    let config_file = dir.path().join("autoglm.toml");
    let cache = target_dir().join("test-component-cache");
    std::fs::write(
        &config_file,
        format!(
            "cache_dir = {:?}\n[plugins.http]\nallow_hosts = [{addr:?}]\nallow_private_addresses = true\n\
             [plugins.http.limits]\nhttp_body_bytes = 8\n",
            cache.display().to_string()
        ),
    )
    .unwrap();
    let env = [("RUST_BACKTRACE", "full"), ("RUST_LIB_BACKTRACE", "1")];
    let server = ServeProcess::start_with_env(
        &env,
        [
            "--plugins".as_ref(),
            dir.path().as_os_str(),
            "--config".as_ref(),
            config_file.as_os_str(),
        ],
    );
    server.ready().await;
    let body = json!({"url": format!("http://{addr}/")}).to_string();
    let reply = http(server.addr, "POST", "/v1/tools/http.get/call", &[], &body).await;
    assert_eq!(reply.status, 422, "{}", reply.body);
    let message = reply.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("body size exceeds limit: 8 bytes"), "{message}");
    for internal in ["backtrace", "Backtrace", ".rs:", "rustc", "wasmtime::"] {
        assert!(!message.contains(internal), "{internal:?} reached the client: {message}");
    }
}
