//! A key's tool allowlist holds when a model names a tool it was not offered: the call is
//! refused with `permission_denied` before the sandbox starts, the model gets the refusal as
//! its observation, and the tool never runs. Once with a scripted model in this process, once
//! with a real remote upstream process behind `autoglm serve --upstream`.

use std::sync::Arc;

use autoglm_engine::{ChatMessage, Priority, Role, SamplingParams};
use autoglm_host::agent::{Agent, AgentRequest, TraceStep};
use autoglm_host::invoke::Allowlist;
use autoglm_test_support::host::{
    ScriptedUpstream, ServeProcess, config, host, http, plugins_dir, workspace_dir,
};
use autoglm_test_support::scripted::{ScriptedModel, call};
use serde_json::{Value, json};

/// Grants `notes` the directory `notes` read-write: a call of `notes.write` that ran would
/// leave a file there.
fn notes_grant(notes: &std::path::Path) -> String {
    format!(
        "[[plugins.notes.dirs]]\nhost = {:?}\nguest = \"/notes\"\nmode = \"rw\"\n",
        notes.display().to_string()
    )
}

/// Arguments of a `notes.write` call the key may not make.
fn write_arguments() -> Value {
    json!({"name": "stolen", "text": "written by a tool the key may not use"})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tool_the_model_was_not_offered_is_refused_and_never_runs() {
    let plugins = plugins_dir(&["calculator", "notes"]);
    let notes = tempfile::tempdir().unwrap();
    let host = host(&config(&notes_grant(notes.path())), plugins.path()).await;
    // The model calls `notes.write` whatever it was offered.
    let model = Arc::new(ScriptedModel::new(vec![call("notes.write", write_arguments())], "done"));
    let agent = Agent::new(model.clone(), host.invoker.clone(), 3);
    let request = AgentRequest {
        messages: vec![ChatMessage::new(Role::User, "Save a note")],
        params: SamplingParams::greedy(16),
        priority: Priority::Interactive,
        allowlist: Allowlist::new("calculator-only", Some(vec!["calculator.*".into()])),
        trace: None,
        durable: None,
        show_prompt: false,
    };
    let transcript = agent.run(request, None).await.unwrap();

    let requests = model.requests();
    let offered: Vec<&str> = requests[0].tools.iter().map(|t| t.name.as_str()).collect();
    assert!(offered.iter().all(|name| !name.contains("write")), "offered {offered:?}");
    let Some(TraceStep::Tool { tool, error: Some(error), result: None, fuel: 0, .. }) =
        transcript.steps.iter().find(|s| matches!(s, TraceStep::Tool { .. }))
    else {
        panic!("the call was not refused: {transcript:#?}")
    };
    assert_eq!(tool, "notes.write");
    assert_eq!(error.kind.as_str(), "permission_denied", "{error:?}");
    assert!(error.message.contains("calculator-only"), "{}", error.message);
    let observation = &requests[1].messages.last().unwrap();
    assert_eq!(observation.role, Role::Observation);
    assert!(observation.content.contains("permission_denied"), "{}", observation.content);
    assert_eq!(transcript.answer, "done");
    assert_eq!(std::fs::read_dir(notes.path()).unwrap().count(), 0, "the tool ran");
    assert_counted_as_refused(&host.invoker.metrics().render());
}

/// The metrics count the `notes.write` call once, as refused, and nothing of notes as run.
fn assert_counted_as_refused(metrics: &str) {
    let notes: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("autoglm_tool_calls_total{") && l.contains("plugin=\"notes\""))
        .collect();
    assert_eq!(notes.len(), 1, "{metrics}");
    assert!(
        notes[0].contains("outcome=\"permission_denied\"") && notes[0].ends_with(" 1"),
        "{}",
        notes[0]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remote_model_cannot_run_a_tool_outside_the_key_allowlist() {
    let upstream = ScriptedUpstream::start(&[("notes.write", write_arguments())]);
    let plugins = plugins_dir(&["calculator", "notes"]);
    let notes = tempfile::tempdir().unwrap();
    let config_file = plugins.path().join("autoglm.toml");
    let cache = workspace_dir().join("target/test-component-cache");
    std::fs::write(
        &config_file,
        format!(
            "cache_dir = {:?}\n{}[[server.keys]]\nname = \"calc\"\ntoken = \"t-calc\"\n\
             tools = [\"calculator.*\"]\n",
            cache.display().to_string(),
            notes_grant(notes.path())
        ),
    )
    .unwrap();
    let front = ServeProcess::start([
        "--plugins".as_ref(),
        plugins.path().as_os_str(),
        "--config".as_ref(),
        config_file.as_os_str(),
        "--upstream".as_ref(),
        format!("http://{}/v1", upstream.url).as_ref(),
    ]);
    front.ready().await;

    let body = json!({"messages": [{"role": "user", "content": "Save a note"}]}).to_string();
    let auth = [("authorization", "Bearer t-calc")];
    let reply = http(front.addr, "POST", "/v1/chat/completions", &auth, &body).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = reply.json();
    let trace = reply["autoglm"]["trace"].as_array().unwrap();
    let tool = trace.iter().find(|s| s["kind"] == "tool").unwrap_or_else(|| panic!("{reply:#}"));
    assert_eq!(tool["tool"], "notes.write", "{tool:#}");
    assert_eq!(tool["error"]["kind"], "permission_denied", "{tool:#}");
    assert!(tool["result"].is_null(), "{tool:#}");
    assert_eq!(std::fs::read_dir(notes.path()).unwrap().count(), 0, "the tool ran");

    // The upstream was offered only the calculator and got the refusal as the tool result.
    let seen = http(upstream.url.parse().unwrap(), "GET", "/requests", &[], "").await.json();
    let offered: Vec<&str> = seen[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert!(!offered.is_empty() && offered.iter().all(|n| !n.contains("write")), "{offered:?}");
    let result = seen[1]["messages"].as_array().unwrap().last().unwrap();
    assert_eq!(result["role"], "tool", "{result:#}");
    assert!(result["content"].as_str().unwrap().contains("permission_denied"), "{result:#}");
    assert_counted_as_refused(&http(front.addr, "GET", "/metrics", &auth, "").await.body);
}
