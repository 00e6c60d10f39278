//! Span export. Without the `otlp` feature a configured collector is refused with an error
//! that says how to get it; with the feature (`cargo test -p autoglm-host --features otlp
//! --test telemetry`, which `just test` runs) a request's spans reach a real OTLP/HTTP
//! endpoint under the caller's trace id.

#[cfg(not(feature = "otlp"))]
#[test]
fn a_collector_in_the_config_needs_the_otlp_feature() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("autoglm.toml");
    std::fs::write(&config, "[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_autoglm"))
        .args(["serve", "--addr", "127.0.0.1:0", "--plugins"])
        .arg(dir.path())
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success(), "serve must not start without the exporter it was asked for");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--features otlp") && stderr.contains("127.0.0.1:4318"), "{stderr}");
}

#[cfg(feature = "otlp")]
#[test]
fn spans_reach_an_otlp_collector_under_the_callers_trace_id() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    // The collector: an HTTP/1.1 server on 127.0.0.1 keeping every body posted to /v1/traces.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let collector = listener.local_addr().unwrap();
    let received: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let sink = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let sink = sink.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut stream = stream;
                loop {
                    let mut head = Vec::new();
                    let mut line = String::new();
                    while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                        head.push(line.to_ascii_lowercase());
                        line.clear();
                    }
                    let Some(request) = head.first() else { return };
                    let length: usize = head
                        .iter()
                        .find_map(|h| h.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    if request.starts_with("post /v1/traces") {
                        sink.lock().unwrap().push(body);
                    }
                    let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if stream.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });

    let dir = autoglm_test_support::host::plugins_dir(&["weather"]);
    let config = dir.path().join("autoglm.toml");
    std::fs::write(
        &config,
        format!("[telemetry]\notlp_endpoint = \"http://{collector}\"\nservice_name = \"autoglm-under-test\"\n"),
    )
    .unwrap();
    let server = autoglm_test_support::host::ServeProcess::start_with_env(
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
        ["--plugins".as_ref(), dir.path().as_os_str(), "--config".as_ref(), config.as_os_str()],
    );
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reply = rt.block_on(async {
        server.ready().await;
        autoglm_test_support::host::http(
            server.addr,
            "POST",
            "/v1/tools/weather.get_weather/call",
            &[("traceparent", &format!("00-{trace_id}-b7ad6b7169203331-01"))],
            r#"{"location": "Oslo"}"#,
        )
        .await
    });
    assert_eq!(reply.status, 200, "{}", reply.body);
    let answered = reply.header("traceparent").unwrap_or_default().to_string();
    assert!(answered.starts_with(&format!("00-{trace_id}-")), "{answered}");

    // OTLP protobuf carries ids as raw bytes: look for the trace id and the span answered.
    let bytes = |hex: &str| -> Vec<u8> {
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
    };
    let (trace, span) = (bytes(trace_id), bytes(&answered[36..52]));
    let contains = |body: &[u8], needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    let started = Instant::now();
    loop {
        let bodies = received.lock().unwrap().clone();
        let exported = bodies.iter().any(|b| {
            contains(b, &trace) && contains(b, &span) && contains(b, b"autoglm-under-test")
        });
        if exported {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no span of trace {trace_id} reached the collector: {} bodies, with the trace id: \
             {}, with the span answered ({answered}): {}, with the service name: {}",
            bodies.len(),
            bodies.iter().filter(|b| contains(b, &trace)).count(),
            bodies.iter().filter(|b| contains(b, &span)).count(),
            bodies.iter().filter(|b| contains(b, b"autoglm-under-test")).count(),
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
