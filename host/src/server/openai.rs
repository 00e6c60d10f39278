//! The OpenAI-compatible API: `GET /v1/models` and `POST /v1/chat/completions`.
//!
//! Without `tools` in the request, a chat completion runs the agent loop over the loaded
//! plugins and answers with the final message (the trace rides along under `autoglm`);
//! with `tools`, it is one model turn and tool calls go back to the client, as OpenAI does.
//! Without a model the chat route answers 503 `engine_unavailable`.

use std::sync::Arc;
use std::time::Duration;

use http::{Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::access::{Admitted, Streaming};
use super::respond::{Body, Problem, json_response, sse_response};
use super::state::AppState;
use crate::agent::{Agent, AgentEvent, AgentRequest, Finish, Transcript};
use crate::error::{CallError, ErrorKind};
use crate::model::engine_error;
use crate::trace::TraceContext;
use autoglm_engine::Priority;
use autoglm_engine::TurnRequest;
use autoglm_engine::chat::TurnReply;
use autoglm_engine::template::python_json;
use autoglm_engine::{ChatMessage, Role, SamplingParams, ToolCall, ToolDef};

/// The models this server answers with.
pub fn models(state: &AppState) -> Response<Body> {
    let data: Vec<Value> = state
        .agent
        .iter()
        .map(|a| json!({"id": a.model().name(), "object": "model", "created": 0, "owned_by": "autoglm"}))
        .collect();
    json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
}

fn bad(message: impl Into<String>) -> CallError {
    CallError::new(ErrorKind::BadRequest, message)
}

/// Chat completions.
pub async fn chat(
    state: &AppState,
    admitted: Admitted,
    request: Value,
    trace: Option<TraceContext>,
    idempotency_key: Option<&str>,
) -> Result<Response<Body>, Problem> {
    if !request.is_object() || !request["messages"].is_array() {
        return Err(bad("the body must be an object with a `messages` array").into());
    }
    let Some(agent) = state.agent.clone() else {
        return Err(CallError::new(
            ErrorKind::EngineUnavailable,
            "no language model is loaded on this server: start `autoglm serve` with --model DIR or \
             --upstream URL. Tools stay available at /v1/tools and /mcp",
        )
        .into());
    };
    let messages = parse_messages(&request["messages"])?;
    let mut params = parse_params(&request, agent.model().defaults())?;
    let priority = match request["priority"].as_str() {
        None | Some("interactive") => Priority::Interactive,
        Some("batch") => Priority::Batch,
        Some(other) => {
            return Err(bad(format!("priority must be interactive or batch, not {other:?}")).into());
        }
    };
    let stream = request["stream"].as_bool().unwrap_or(false);
    let model = agent.model().name().to_string();
    let reply = CompletionId {
        id: format!("chatcmpl-{:016x}", rand::random::<u64>()),
        model,
        created: now(),
    };

    let client_tools = parse_tools(&request["tools"])?;
    if client_tools.is_some() && !request["autoglm"]["durable"].is_null() {
        return Err(bad(
            "autoglm.durable journals the agent loop over this server's tools; a request that \
             brings its own `tools` is one model turn, with nothing to resume: leave one out",
        )
        .into());
    }
    if let Some(mut tools) = client_tools {
        match &request["tool_choice"] {
            Value::Null => {}
            Value::String(s) if s == "auto" => {}
            Value::String(s) if s == "none" => tools.clear(),
            Value::String(s) if s == "required" => params.require_tool_call = true,
            choice => {
                let name = choice["function"]["name"]
                    .as_str()
                    .ok_or_else(|| bad("tool_choice must be auto, none, required or a function"))?;
                tools.retain(|t| t.name == name);
                if tools.is_empty() {
                    return Err(bad(format!(
                        "tool_choice names {name:?}, which is not among the tools"
                    ))
                    .into());
                }
                params.require_tool_call = true;
            }
        }
        let traceparent = trace.as_ref().map(|t| t.child().header());
        let turn = TurnRequest { messages, tools, params, priority, traceparent };
        return client_turn(&agent, turn, reply, stream).await;
    }

    let durable = match &request["autoglm"]["durable"] {
        Value::Null | Value::Bool(false) => None,
        Value::Bool(true) => {
            Some(durable(state, &admitted, &request, &trace, idempotency_key).await?)
        }
        _ => return Err(bad("autoglm.durable must be true or false").into()),
    };
    let show_prompt = match &request["autoglm"]["show_prompt"] {
        Value::Null => false,
        Value::Bool(show) => *show,
        _ => return Err(bad("autoglm.show_prompt must be true or false").into()),
    };
    let run = AgentRequest {
        messages,
        params,
        priority,
        allowlist: admitted.client.allowlist.clone(),
        trace,
        durable,
        show_prompt,
    };
    if stream {
        let streaming = admitted.into_stream()?;
        let timeout = Duration::from_millis(state.settings.request_timeout_ms);
        return Ok(stream_agent(agent, run, reply, streaming, timeout));
    }
    let outcome = agent.run(run, None).await?;
    let message = json!({"role": "assistant", "content": outcome.answer});
    Ok(json_response(
        StatusCode::OK,
        &reply.completion(message, finish_reason(outcome.finish), &outcome),
    ))
}

/// The journal of a durable request (`"autoglm": {"durable": true}`): resumed when an
/// earlier attempt with the same `Idempotency-Key` began one.
async fn durable(
    state: &AppState,
    admitted: &Admitted,
    request: &Value,
    trace: &Option<TraceContext>,
    key: Option<&str>,
) -> Result<Arc<crate::tasks::DurableChat>, CallError> {
    let key = key.ok_or_else(|| {
        bad("a durable request needs an Idempotency-Key header: the key its retries send to resume it")
    })?;
    let tasks = state.tasks.as_ref().map_err(|reason| {
        CallError::new(
            ErrorKind::JournalUnavailable,
            format!("durable chat needs the tasks journal, which is unavailable: {reason}"),
        )
    })?;
    let trace_id = trace.as_ref().map(|t| t.trace_id.clone());
    let journal = tasks.durable_chat(&admitted.client.allowlist, key, request, trace_id).await?;
    Ok(Arc::new(journal))
}

/// Identity of one completion.
#[derive(Clone)]
struct CompletionId {
    id: String,
    model: String,
    created: u64,
}

impl CompletionId {
    fn completion(&self, message: Value, finish: &str, outcome: &Transcript) -> Value {
        json!({
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage(outcome.prompt_tokens, outcome.completion_tokens),
            "autoglm": {"finish": outcome.finish, "trace": outcome.steps},
        })
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    }
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

fn finish_reason(finish: Finish) -> &'static str {
    match finish {
        Finish::Stop => "stop",
        Finish::Length | Finish::MaxSteps => "length",
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// One model turn with the client's tools; calls go back to the client.
async fn client_turn(
    agent: &Arc<Agent>,
    turn: TurnRequest,
    reply: CompletionId,
    stream: bool,
) -> Result<Response<Body>, Problem> {
    let result = agent.model().turn(turn, None).await.map_err(engine_error)?;
    let (message, finish) = match &result.reply {
        TurnReply::Calls(calls) => {
            let calls: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(index, call)| {
                    json!({
                        "index": index, "id": format!("call_{:012x}", rand::random::<u64>() >> 16), "type": "function",
                        "function": {"name": call.name, "arguments": python_json(&Value::Object(call.arguments.clone()), None)},
                    })
                })
                .collect();
            (json!({"role": "assistant", "content": null, "tool_calls": calls}), "tool_calls")
        }
        TurnReply::Text(text) => (
            json!({"role": "assistant", "content": text}),
            if result.truncated { "length" } else { "stop" },
        ),
        TurnReply::Invalid { raw, .. } => (json!({"role": "assistant", "content": raw}), "stop"),
    };
    let outcome = Transcript {
        answer: String::new(),
        finish: Finish::Stop,
        steps: Vec::new(),
        prompt_tokens: result.prompt_tokens,
        completion_tokens: result.completion_tokens,
    };
    if !stream {
        return Ok(json_response(StatusCode::OK, &reply.completion(message, finish, &outcome)));
    }
    let mut delta = message;
    if let Some(map) = delta.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    let chunks = vec![reply.chunk(delta, None), reply.chunk(json!({}), Some(finish))];
    let (tx, rx) = mpsc::channel(chunks.len() + 1);
    for chunk in chunks {
        let _ = tx.try_send(chunk.to_string());
    }
    Ok(sse_response(rx, None))
}

/// Stream the agent loop: answer text as content deltas, each finished step as a chunk
/// carrying it under `autoglm.step` (clients that do not know it see an empty delta).
/// The stream holds its key's concurrency slot and stream place (`streaming`) until it ends,
/// and ends with a `timeout` error once `timeout` (`server.request_timeout_ms`) has passed.
fn stream_agent(
    agent: Arc<Agent>,
    request: AgentRequest,
    reply: CompletionId,
    streaming: Streaming,
    timeout: Duration,
) -> Response<Body> {
    use tracing::Instrument;
    let (tx, rx) = mpsc::channel::<String>(64);
    let span = tracing::Span::current();
    let deadline = tokio::time::Instant::now() + timeout;
    let timed_out = json!({"error": {"type": "timeout", "code": "timeout", "message": format!(
        "the request took longer than server.request_timeout_ms = {}", timeout.as_millis()
    )}});
    tokio::spawn(async move {
        let _streaming = streaming;
        let send = |value: Value| {
            let tx = tx.clone();
            async move { tx.send(value.to_string()).await.is_ok() }
        };
        if !send(reply.chunk(json!({"role": "assistant", "content": ""}), None)).await {
            return;
        }
        let (events, mut received) = mpsc::unbounded_channel();
        let mut running = tokio::spawn(async move { agent.run(request, Some(events)).await }.in_current_span());
        loop {
            let event = tokio::select! {
                event = received.recv() => event,
                () = tokio::time::sleep_until(deadline) => None,
            };
            let Some(event) = event else { break };
            let chunk = match event {
                AgentEvent::Text(text) => reply.chunk(json!({"content": text}), None),
                AgentEvent::Step(step) => {
                    let mut chunk = reply.chunk(json!({}), None);
                    chunk["autoglm"] = json!({"step": step});
                    chunk
                }
            };
            if !send(chunk).await {
                running.abort();
                return;
            }
        }
        let last = match tokio::time::timeout_at(deadline, &mut running).await {
            Err(_) => {
                running.abort();
                timed_out
            }
            Ok(Ok(Ok(outcome))) => {
                let mut chunk = reply.chunk(json!({}), Some(finish_reason(outcome.finish)));
                chunk["usage"] = usage(outcome.prompt_tokens, outcome.completion_tokens);
                chunk["autoglm"] = json!({"finish": outcome.finish});
                chunk
            }
            Ok(Ok(Err(e))) => {
                json!({"error": {"type": e.kind.as_str(), "code": e.kind.as_str(), "message": e.message}})
            }
            Ok(Err(_)) => {
                json!({"error": {"type": "engine_error", "message": "the request's task ended abnormally"}})
            }
        };
        if send(last).await {
            let _ = tx.send("[DONE]".to_string()).await;
        }
    }.instrument(span));
    sse_response(rx, None)
}

/// OpenAI messages as engine messages: assistant `tool_calls` become tool-call turns and
/// `tool` messages observations.
fn parse_messages(value: &Value) -> Result<Vec<ChatMessage>, CallError> {
    let mut out = Vec::new();
    for (i, m) in value.as_array().into_iter().flatten().enumerate() {
        let content = text_of(&m["content"]).ok_or_else(|| {
            bad(format!("messages[{i}].content must be a string or a list of text parts"))
        })?;
        match m["role"].as_str() {
            Some("system" | "developer") => out.push(ChatMessage::new(Role::System, content)),
            Some("user") => out.push(ChatMessage::new(Role::User, content)),
            Some("tool" | "observation") => out.push(ChatMessage::new(Role::Observation, content)),
            Some("assistant") => {
                let calls = m["tool_calls"].as_array().map(Vec::as_slice).unwrap_or_default();
                if !content.is_empty() || calls.is_empty() {
                    out.push(ChatMessage::new(Role::Assistant, content));
                }
                for call in calls {
                    let name = call["function"]["name"].as_str().ok_or_else(|| {
                        bad(format!("messages[{i}].tool_calls needs function.name"))
                    })?;
                    let arguments = match &call["function"]["arguments"] {
                        Value::String(s) => serde_json::from_str::<Value>(s).ok(),
                        other => Some(other.clone()),
                    };
                    let Some(Value::Object(arguments)) = arguments else {
                        return Err(bad(format!(
                            "messages[{i}].tool_calls: the arguments of {name} are not a JSON object"
                        )));
                    };
                    out.push(ChatMessage::tool_call(ToolCall {
                        name: name.to_string(),
                        arguments,
                    }));
                }
            }
            other => {
                return Err(bad(format!(
                    "messages[{i}].role {other:?} is not system, user, assistant or tool"
                )));
            }
        }
    }
    if out.is_empty() {
        return Err(bad("messages is empty"));
    }
    Ok(out)
}

/// A message's text: a string, null, or a list of `{"type": "text", "text": ...}` parts.
fn text_of(content: &Value) -> Option<String> {
    match content {
        Value::Null => Some(String::new()),
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => parts
            .iter()
            .map(|p| p["text"].as_str().map(String::from))
            .collect::<Option<Vec<_>>>()
            .map(|t| t.concat()),
        _ => None,
    }
}

/// `tools` of the request: None when absent, else OpenAI function tools.
fn parse_tools(value: &Value) -> Result<Option<Vec<ToolDef>>, CallError> {
    let Some(list) = value.as_array() else {
        return if value.is_null() { Ok(None) } else { Err(bad("tools must be a list")) };
    };
    list.iter()
        .enumerate()
        .map(|(i, tool)| {
            let function = &tool["function"];
            let name = function["name"]
                .as_str()
                .ok_or_else(|| bad(format!("tools[{i}].function.name is missing")))?;
            Ok(ToolDef {
                name: name.to_string(),
                description: function["description"].as_str().unwrap_or_default().to_string(),
                parameters: if function["parameters"].is_null() {
                    json!({"type": "object", "properties": {}})
                } else {
                    function["parameters"].clone()
                },
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Sampling settings from the request over the model's defaults.
fn parse_params(request: &Value, mut params: SamplingParams) -> Result<SamplingParams, CallError> {
    let number = |key: &str| -> Result<Option<f64>, CallError> {
        match &request[key] {
            Value::Null => Ok(None),
            v => v.as_f64().map(Some).ok_or_else(|| bad(format!("{key} must be a number"))),
        }
    };
    if let Some(t) = number("temperature")? {
        params.temperature = t;
        params.do_sample = t > 0.0;
    }
    if let Some(p) = number("top_p")? {
        params.top_p = p;
    }
    if let Some(k) = number("top_k")? {
        params.top_k = k as usize;
    }
    if let Some(r) = number("repetition_penalty")? {
        params.repetition_penalty = r as f32;
    }
    if let Some(n) = number("max_completion_tokens")?.or(number("max_tokens")?) {
        params.max_new_tokens = n as usize;
    }
    if let Some(seed) = number("seed")? {
        params.seed = Some(seed as u64);
    }
    params.check().map_err(|e| bad(e.to_string()))?;
    Ok(params)
}
