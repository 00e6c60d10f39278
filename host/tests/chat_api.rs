//! `/v1/chat/completions` over HTTP with the demo model: request validation, backpressure,
//! an API key's tool allowance, and the model's figures in `/metrics`.

use autoglm_engine::scheduler::BatchSettings;
use autoglm_host::config::ModelSettings;
use autoglm_test_support::host::{
    AGENT_PLUGINS, HttpReply, TestServer, demo_model, http, notes_config, plugins_dir,
};
use serde_json::json;

fn model(batching: BatchSettings) -> Option<ModelSettings> {
    Some(ModelSettings { path: Some(demo_model()), batching, ..Default::default() })
}

/// A server with the weather plugin and the demo model, batching as `batching`; the
/// directories it reads last as long as the returned guards.
async fn weather_server(batching: BatchSettings) -> (TestServer, [tempfile::TempDir; 2]) {
    let plugins = plugins_dir(&["weather"]);
    let notes = tempfile::tempdir().unwrap();
    let server =
        TestServer::start_with_model(notes_config(notes.path()), plugins.path(), model(batching))
            .await;
    (server, [plugins, notes])
}

async fn chat(server: &TestServer, headers: &[(&str, &str)], body: serde_json::Value) -> HttpReply {
    http(server.addr, "POST", "/v1/chat/completions", headers, &body.to_string()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_chat_requests_are_400_with_what_to_fix() {
    let (server, _dirs) = weather_server(BatchSettings::default()).await;
    for (body, expect) in [
        (json!({"messages": []}), "messages is empty"),
        (json!({"messages": [{"role": "robot", "content": "hi"}]}), "messages[0].role"),
        (json!({"messages": [{"role": "user", "content": 5}]}), "messages[0].content"),
        (
            json!({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}),
            "temperature must be a number",
        ),
        (json!({"messages": [{"role": "user", "content": "hi"}], "top_p": 0}), "top_p"),
        (
            json!({"messages": [{"role": "user", "content": "hi"}], "tools": {}}),
            "tools must be a list",
        ),
        (
            json!({"messages": [{"role": "user", "content": "hi"}], "priority": "urgent"}),
            "priority",
        ),
        (
            json!({"messages": [{"role": "user", "content": "hi"}], "autoglm": {"show_prompt": "yes"}}),
            "autoglm.show_prompt must be true or false",
        ),
        (
            json!({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function", "function": {"name": "g"}}}),
            "not among the tools",
        ),
    ] {
        let reply = chat(&server, &[], body.clone()).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.body);
        let error = &reply.json()["error"];
        assert_eq!(error["kind"], "bad_request");
        assert!(error["message"].as_str().unwrap().contains(expect), "{body}: {error}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_answers_429_overloaded_with_retry_after() {
    let batching = BatchSettings { max_batch: 1, max_wait_ms: 0, queue: 0 };
    let (server, _dirs) = weather_server(batching).await;
    let reply =
        chat(&server, &[], json!({"messages": [{"role": "user", "content": "Hello!"}]})).await;
    assert_eq!(reply.status, 429, "{}", reply.body);
    assert_eq!(reply.json()["error"]["kind"], "overloaded");
    assert_eq!(reply.header("retry-after"), Some("1"));
    let metrics = http(server.addr, "GET", "/metrics", &[], "").await.body;
    assert!(metrics.lines().any(|l| l == "autoglm_model_refused_requests 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_allowed_only_the_calculator_is_never_offered_the_weather() {
    let plugins = plugins_dir(AGENT_PLUGINS);
    let notes = tempfile::tempdir().unwrap();
    let mut config = notes_config(notes.path());
    config.server.keys = vec![autoglm_host::config::ApiKeyConfig {
        name: "math".into(),
        token: Some("m4th".into()),
        tools: Some(vec!["calculator.*".into()]),
        ..Default::default()
    }];
    let server =
        TestServer::start_with_model(config, plugins.path(), model(BatchSettings::default())).await;
    let auth = [("authorization", "Bearer m4th")];
    let reply = chat(&server, &auth, json!({"temperature": 0, "messages": [{"role": "user", "content": "What's the weather in Beijing?"}]})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let trace = reply.json()["autoglm"]["trace"].clone();
    let tools: Vec<&str> =
        trace.as_array().unwrap().iter().filter_map(|s| s["tool"].as_str()).collect();
    assert!(tools.iter().all(|t| t.starts_with("calculator.")), "{trace}");

    let reply = chat(
        &server,
        &auth,
        json!({"temperature": 0, "messages": [{"role": "user", "content": "Calculate 6*7"}]}),
    )
    .await;
    let body = reply.json();
    assert_eq!(body["autoglm"]["trace"][1]["tool"], "calculator.evaluate", "{body}");
    assert_eq!(body["autoglm"]["trace"][1]["result"], 42.0, "{body}");

    let metrics = http(server.addr, "GET", "/metrics", &auth, "").await.body;
    let passes = metrics
        .lines()
        .find_map(|l| l.strip_prefix("autoglm_model_forward_passes "))
        .unwrap_or("0");
    assert!(passes.parse::<u64>().unwrap() > 0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_prefix_cache_counts_what_it_reused_in_metrics() {
    let (server, _dirs) = weather_server(BatchSettings::default()).await;
    let system = "You answer questions about the weather, briefly and politely. ".repeat(3);
    for question in ["Weather in Oslo?", "Weather in Lima?"] {
        let body = json!({"max_tokens": 8, "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": question},
        ]});
        assert_eq!(chat(&server, &[], body).await.status, 200);
    }
    let metrics = http(server.addr, "GET", "/metrics", &[], "").await.body;
    let value = |name: &str| {
        let line = metrics.lines().find(|l| l.starts_with(&format!("autoglm_{name} ")));
        line.and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse::<u64>().ok())
    };
    // Only the first turn of the first request finds nothing: every later turn (a tool's
    // result goes back as a new prompt) and the second request begin with cached blocks.
    assert_eq!(value("model_prefix_cache_misses"), Some(1), "{metrics}");
    assert!(value("model_prefix_cache_hits").unwrap_or(0) >= 1, "{metrics}");
    assert!(value("model_prefix_cache_reused_tokens").unwrap_or(0) >= 32, "{metrics}");
    assert!(value("model_prefix_cache_bytes").unwrap_or(0) > 0, "{metrics}");
}
