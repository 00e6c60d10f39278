//! `/v1/tasks`: submit a task (202 with its id), read its state and stage timeline, list
//! tasks, act on a stopped one, and follow its events as SSE.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Response, StatusCode, header};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::access::Admitted;
use super::respond::{Body, Problem, json_response, parse_json, percent_decode, sse_response};
use super::state::AppState;
use crate::error::{CallError, ErrorKind};
use crate::invoke::Allowlist;
use crate::registry::RESERVED_NAME;
use crate::tasks::journal::Cursor;
use crate::tasks::record::{TaskRecord, TaskState};
use crate::tasks::{Action, Submission, Tasks};

/// Events read from the journal per round while following a task.
const EVENTS_PER_READ: usize = 256;

/// Answer a request under `/v1/tasks`.
pub async fn handle(
    state: &AppState,
    admitted: Admitted,
    method: &Method,
    path: &str,
    query: Option<&str>,
    body: &[u8],
    trace_id: Option<String>,
) -> Result<Response<Body>, Problem> {
    let tasks = state.tasks.as_ref().map_err(|reason| {
        CallError::new(ErrorKind::JournalUnavailable, format!("tasks are unavailable: {reason}"))
    })?;
    let caller = &admitted.client.allowlist;
    let rest = path.strip_prefix("/v1/tasks").unwrap_or_default();
    let segments: Vec<String> =
        rest.split('/').filter(|s| !s.is_empty()).map(percent_decode).collect();
    let params = query_params(query);
    match (method, segments.as_slice()) {
        (&Method::POST, []) => {
            let submission = submission(parse_json(body)?, trace_id)?;
            let record = tasks.submit(caller, submission).await?;
            let mut response = json_response(StatusCode::ACCEPTED, &view(&record));
            if let Ok(location) = format!("/v1/tasks/{}", record.id).parse() {
                response.headers_mut().insert(header::LOCATION, location);
            }
            Ok(response)
        }
        (&Method::GET, []) => {
            let state_filter = match params.get("state") {
                None => None,
                Some(name) => Some(TaskState::parse(name).ok_or_else(|| {
                    let names: Vec<&str> = TaskState::ALL.iter().map(|s| s.as_str()).collect();
                    bad(format!("state `{name}` is not one of {}", names.join(", ")))
                })?),
            };
            let limit = match params.get("limit") {
                None => 50,
                Some(n) => n.parse().map_err(|_| bad(format!("limit `{n}` is not a number")))?,
            };
            let before =
                match params.get("cursor") {
                    None => None,
                    Some(text) => Some(Cursor::decode(text).ok_or_else(|| {
                        bad(format!("cursor `{text}` is not one this server gave"))
                    })?),
                };
            let (page, next) = tasks.list(caller, state_filter, limit, before).await?;
            let data: Vec<Value> = page.iter().map(summary).collect();
            Ok(json_response(
                StatusCode::OK,
                &json!({"object": "list", "data": data, "next_cursor": next.map(|c| c.encode())}),
            ))
        }
        (&Method::GET, [id]) => {
            Ok(json_response(StatusCode::OK, &view(&tasks.get(caller, id).await?)))
        }
        (&Method::GET, [id, events]) if events == "events" => {
            let from = match params.get("from") {
                None => 0,
                Some(n) => n.parse().map_err(|_| bad(format!("from `{n}` is not a number")))?,
            };
            tasks.get(caller, id).await?;
            let streaming = admitted.into_stream()?;
            Ok(follow(state, tasks.clone(), id.clone(), from, streaming))
        }
        (&Method::POST, [id, action]) => {
            let skip = action_body(action, body)?;
            let action = Action::parse(action, skip).ok_or_else(|| {
                CallError::new(
                    ErrorKind::NotFound,
                    format!("no task action `{action}`: use resume, retry or abort"),
                )
            })?;
            let record = tasks.act(caller, id, action).await?;
            Ok(json_response(StatusCode::OK, &view(&record)))
        }
        _ => {
            Err(CallError::new(ErrorKind::NotFound, format!("no route for {method} {path}")).into())
        }
    }
}

/// The body of an action: empty, or `{"skip": true|false}` for `resume`.
fn action_body(action: &str, body: &[u8]) -> Result<bool, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(false);
    }
    let Value::Object(fields) = parse_json(body)? else {
        return Err(bad("the body of an action is empty or an object".into()));
    };
    let mut skip = false;
    for (key, value) in fields {
        match (key.as_str(), value, action) {
            ("skip", Value::Bool(value), "resume") => skip = value,
            ("skip", _, "resume") => return Err(bad("`skip`: must be true or false".into())),
            _ => {
                return Err(bad(format!(
                    "`{key}`: unknown field; only resume takes one, `skip` (true to skip the failed stage)"
                )));
            }
        }
    }
    Ok(skip)
}

fn bad(message: String) -> Problem {
    CallError::new(ErrorKind::BadRequest, message).into()
}

/// The body of `POST /v1/tasks`: `{"spec": {...}}` or `{"template": NAME}`, with `inputs`.
fn submission(body: Value, trace_id: Option<String>) -> Result<Submission, Problem> {
    let Value::Object(mut body) = body else {
        return Err(bad("the body must be an object: {\"spec\": {...}} or {\"template\": NAME, \"inputs\": {...}}".into()));
    };
    for key in body.keys() {
        if !matches!(key.as_str(), "spec" | "template" | "inputs") {
            return Err(bad(format!(
                "`{key}`: unknown field; the body has spec, template and inputs"
            )));
        }
    }
    let template = match body.remove("template") {
        None => None,
        Some(Value::String(name)) => Some(name),
        Some(_) => return Err(bad("`template`: must be a template's name".into())),
    };
    let inputs = match body.remove("inputs") {
        None => Map::new(),
        Some(Value::Object(inputs)) => inputs,
        Some(_) => return Err(bad("`inputs`: must be an object".into())),
    };
    Ok(Submission { spec: body.remove("spec"), template, inputs, trace_id })
}

/// A task as the API shows it: the record, each stage with its elapsed time.
pub fn view(record: &TaskRecord) -> Value {
    let mut value = serde_json::to_value(record).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.insert("object".into(), "task".into());
        object.insert("caller".into(), record.caller.caller().into());
        object.insert("events_url".into(), format!("/v1/tasks/{}/events", record.id).into());
    }
    if let Some(stages) = value.get_mut("stages").and_then(Value::as_array_mut) {
        for (stage, entry) in stages.iter_mut().zip(&record.stages) {
            if let (Some(start), Some(end)) = (entry.started_ms, entry.finished_ms) {
                stage["elapsed_ms"] = end.saturating_sub(start).into();
            }
        }
    }
    value
}

/// A task in a listing: no spec, results or timeline.
fn summary(record: &TaskRecord) -> Value {
    json!({
        "id": record.id,
        "name": record.name,
        "state": record.state,
        "caller": record.caller.caller(),
        "created_ms": record.created_ms,
        "updated_ms": record.updated_ms,
        "error": record.error,
    })
}

/// Stream the task's events from `from` on, then end once it is settled.
fn follow(
    state: &AppState,
    tasks: Arc<Tasks>,
    id: String,
    from: u64,
    streaming: super::access::Streaming,
) -> Response<Body> {
    let (tx, rx) = mpsc::channel(64);
    let mut stopping = state.stopping.subscribe();
    tokio::spawn(async move {
        let _streaming = streaming;
        let everyone = Allowlist::operator();
        let mut next = from;
        loop {
            let events = match tasks.events(&everyone, &id, next, EVENTS_PER_READ).await {
                Ok(events) => events,
                Err(error) => {
                    let _ = tx.send(json!({"error": error}).to_string()).await;
                    return;
                }
            };
            let settled = events.last().is_some_and(|e| e.state.is_settled());
            for event in &events {
                next = event.seq + 1;
                if tx.send(serde_json::to_string(event).unwrap_or_default()).await.is_err() {
                    return;
                }
            }
            if settled && events.len() < EVENTS_PER_READ {
                return;
            }
            if events.is_empty() {
                // Nothing new: a settled task whose last event was sent earlier ends here.
                match tasks.get(&everyone, &id).await {
                    Ok(record) if record.state.is_settled() && next >= record.events => return,
                    Ok(_) => {}
                    Err(_) => return,
                }
                tokio::select! {
                    () = tasks.changed(Duration::from_millis(200)) => {}
                    _ = stopping.changed() => return,
                    () = tx.closed() => return,
                }
            }
        }
    });
    sse_response(rx, Some("task"))
}

fn query_params(query: Option<&str>) -> std::collections::BTreeMap<String, String> {
    (query.unwrap_or_default().split('&'))
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(&v.replace('+', " ")))
        })
        .collect()
}

/// The task templates as MCP tools (`task.NAME`), for a caller that may make every call
/// the template names.
pub fn mcp_tools(state: &AppState, caller: &Allowlist) -> Vec<Value> {
    let Ok(tasks) = &state.tasks else { return Vec::new() };
    let router = state.invoker.router();
    (tasks.templates().iter())
        .filter(|(_, spec)| {
            spec.calls().all(|(_, call)| {
                (state.invoker.resolve_for(caller, &router, &call.tool))
                    .is_ok_and(|target| caller.permits(&target.id()))
            })
        })
        .map(|(name, spec)| {
            let required: Vec<&String> = spec.inputs.keys().collect();
            json!({
                "name": format!("{RESERVED_NAME}.{name}"),
                "description": spec.description.clone().unwrap_or_else(|| {
                    format!("Run the task `{name}` ({} stages) and answer with its final state", spec.stages().count())
                }),
                "inputSchema": {"type": "object", "properties": spec.inputs, "required": required},
            })
        })
        .collect()
}

/// Run template `name` (`task.NAME` or `task__NAME`) with `args` as its inputs until it
/// settles, as an MCP `tools/call` result; None when `name` is not a task's.
pub async fn mcp_call(
    state: &AppState,
    caller: &Allowlist,
    name: &str,
    args: &Value,
    trace_id: Option<String>,
) -> Option<Result<Value, CallError>> {
    let template = (name.strip_prefix(RESERVED_NAME))
        .and_then(|rest| rest.strip_prefix('.').or_else(|| rest.strip_prefix("__")))?;
    let run = async {
        let tasks = state.tasks.as_ref().map_err(|reason| {
            CallError::new(
                ErrorKind::JournalUnavailable,
                format!("tasks are unavailable: {reason}"),
            )
        })?;
        let inputs = match args {
            Value::Object(inputs) => inputs.clone(),
            _ => {
                return Err(CallError::new(
                    ErrorKind::InvalidArguments,
                    "the arguments must be an object",
                ));
            }
        };
        let submission = Submission {
            template: Some(template.to_string()),
            inputs,
            trace_id,
            ..Default::default()
        };
        let record = tasks.submit(caller, submission).await?;
        let record = tasks.settled(caller, &record.id).await?;
        let shown = view(&record);
        Ok(json!({
            "content": [{"type": "text", "text": shown.to_string()}],
            "structuredContent": shown,
            "isError": record.state != TaskState::Succeeded,
        }))
    };
    Some(run.await)
}
