//! MCP (Model Context Protocol) over Streamable HTTP at `/mcp` and over stdio.
//!
//! Revisions 2025-06-18 and 2025-11-25 use `initialize` and an optional session
//! (`Mcp-Session-Id`) with a GET stream for `notifications/tools/list_changed`.
//! The stateless 2026-07-28 revision uses `server/discover`, needs no session,
//! and delivers list changes on a `subscriptions/listen` stream. The server keeps
//! no per-session state that a request depends on, so both work side by side.
//!
//! JSON-RPC errors are answered with HTTP 200: the 1.x Python client drops the
//! whole connection on any other 4xx/5xx than 404.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, Response, StatusCode, header};
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};

use super::access::{Admitted, Streaming};
use super::notify::{LOG_LEVEL_META, Level, Notifier};
use super::respond::{Body, Problem, full, json_response, sse_response};
use super::state::AppState;
use crate::describe::ToolDescription;
use crate::error::{CallError, ErrorKind};
use crate::runtime::sandbox::CallOptions;

/// Revisions served with `initialize` and sessions.
pub const SESSION_REVISIONS: [&str; 2] = ["2025-06-18", "2025-11-25"];
/// The stateless revision.
pub const STATELESS_REVISION: &str = "2026-07-28";

/// The JSON-RPC error codes this server answers with.
pub mod code {
    /// The message is not JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// The message is not a single JSON-RPC request, or names no method.
    pub const INVALID_REQUEST: i64 = -32600;
    /// No such method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// The params are wrong: no tool name, or a tool that does not exist.
    pub const INVALID_PARAMS: i64 = -32602;
    /// The client asked for a protocol revision this server does not speak (MCP).
    pub const UNSUPPORTED_VERSION: i64 = -32022;
    /// The client cancelled the request (`notifications/cancelled`).
    pub const REQUEST_CANCELLED: i64 = -32800;
}

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";

/// Live sessions of the session-based revisions, and their cancellable requests. A session
/// belongs to the key that opened it: no other key can use or end it, each key holds at
/// most `per_key`, and one unused for `ttl` ends.
pub struct Sessions {
    sessions: Mutex<HashMap<String, Cancels>>,
    per_key: usize,
    ttl: Duration,
}

/// One session: its key, when it was last used, the log level it chose, and its in-flight
/// requests that `notifications/cancelled` can stop, by request id.
pub struct Cancels {
    owner: String,
    last_used: Instant,
    level: Option<Level>,
    pending: HashMap<String, oneshot::Sender<()>>,
}

/// Sessions kept at most over all keys; beyond this the least recently used one is ended,
/// so keys added through AUTOGLM_API_KEYS cannot together grow the server without bound.
const MAX_SESSIONS: usize = 10_000;

/// Where a message came from: its session (if any) and revision, where its notifications
/// go, and the trace it belongs to.
pub struct Context<'a> {
    /// The session id of a session-based client.
    pub session: Option<&'a str>,
    /// Whether the request speaks the stateless revision.
    pub stateless: bool,
    /// Where notifications about the request go (its SSE response, stdout); None where
    /// the answer is one JSON body and nothing else.
    pub notify: Option<mpsc::Sender<String>>,
    /// The trace id of the HTTP request.
    pub trace_id: Option<String>,
}

impl Sessions {
    /// Sessions of at most `per_key` per key, each ending after `ttl` unused.
    pub fn new(per_key: usize, ttl: Duration) -> Self {
        Self { sessions: Mutex::default(), per_key: per_key.max(1), ttl }
    }

    /// Open a session for the key named `owner` (for `initialize`, or one per stdio
    /// connection), ending that key's least recently used one when it holds `per_key`.
    pub fn create(&self, owner: &str) -> String {
        // From the thread-local CSPRNG: a session id is a bearer secret for its session.
        let id = format!("{:032x}", rand::random::<u128>());
        let mut sessions = self.lock();
        let now = Instant::now();
        sessions.retain(|_, s| now.duration_since(s.last_used) < self.ttl);
        let owned = sessions.values().filter(|s| s.owner == owner).count();
        let oldest = |sessions: &HashMap<String, Cancels>, only_owner: bool| {
            (sessions.iter())
                .filter(|(_, s)| !only_owner || s.owner == owner)
                .min_by_key(|(_, s)| s.last_used)
                .map(|(id, _)| id.clone())
        };
        if owned >= self.per_key
            && let Some(oldest) = oldest(&sessions, true)
        {
            sessions.remove(&oldest);
        }
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = oldest(&sessions, false)
        {
            sessions.remove(&oldest);
        }
        let session = Cancels {
            owner: owner.to_string(),
            last_used: now,
            level: None,
            pending: HashMap::new(),
        };
        sessions.insert(id.clone(), session);
        id
    }

    /// Whether session `id` is live and belongs to `owner`; marks it used. An expired one
    /// ends here.
    fn exists(&self, id: &str, owner: &str) -> bool {
        let mut sessions = self.lock();
        let Some(session) = sessions.get_mut(id) else { return false };
        if session.last_used.elapsed() >= self.ttl {
            sessions.remove(id);
            return false;
        }
        if session.owner != owner {
            return false;
        }
        session.last_used = Instant::now();
        true
    }

    /// End session `id` of `owner`; false when there is none (or it is another key's).
    fn remove(&self, id: &str, owner: &str) -> bool {
        self.exists(id, owner) && self.lock().remove(id).is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cancels>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The log level session `id` chose, if any.
    fn level(&self, id: Option<&str>) -> Option<Level> {
        self.lock().get(id?)?.level
    }

    /// Choose the level session `id` hears logs at; false when there is no such session.
    fn set_level(&self, id: Option<&str>, level: Level) -> bool {
        let mut sessions = self.lock();
        let Some(session) = id.and_then(|id| sessions.get_mut(id)) else { return false };
        session.level = Some(level);
        true
    }

    /// Register request `id` of `session` as cancellable; the receiver fires on cancel.
    pub(crate) fn track(&self, session: Option<&str>, id: &Value) -> Option<oneshot::Receiver<()>> {
        let (tx, rx) = oneshot::channel();
        self.lock().get_mut(session?)?.pending.insert(id.to_string(), tx);
        Some(rx)
    }

    pub(crate) fn untrack(&self, session: Option<&str>, id: &Value) {
        if let Some(cancels) =
            session.and_then(|s| self.lock().get_mut(s).map(|c| c.pending.remove(&id.to_string())))
        {
            drop(cancels);
        }
    }

    pub(crate) fn cancel(&self, session: Option<&str>, id: &Value) {
        let sender = session.and_then(|s| self.lock().get_mut(s)?.pending.remove(&id.to_string()));
        if let Some(sender) = sender {
            let _ = sender.send(());
        }
    }
}

/// Handle an HTTP request to `/mcp`.
pub async fn http(
    state: &Arc<AppState>,
    admitted: Admitted,
    request: &http::request::Parts,
    body: bytes::Bytes,
    trace_id: Option<String>,
) -> Result<Response<Body>, Problem> {
    let session = header_str(request, SESSION_HEADER).map(str::to_string);
    if let Some(id) = &session
        && !state.mcp.exists(id, &admitted.client.name)
    {
        // The spec's answer to an unknown or ended session: start a new one.
        return Ok(json_response(
            StatusCode::NOT_FOUND,
            &error_response(
                Value::Null,
                code::INVALID_REQUEST,
                "unknown or expired MCP session; initialize again",
            ),
        ));
    }
    match request.method.clone() {
        Method::GET => match session {
            Some(_) => {
                let streaming = admitted.into_stream()?;
                Ok(list_changed_stream(state, None, streaming))
            }
            None => Ok(Response::builder()
                .status(StatusCode::METHOD_NOT_ALLOWED)
                .header(header::ALLOW, "POST, DELETE")
                .body(full("this server streams notifications to sessions only"))
                .expect("static headers are valid")),
        },
        Method::DELETE => match session {
            Some(id) if state.mcp.remove(&id, &admitted.client.name) => Ok(Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(full(""))
                .expect("valid")),
            _ => Err(CallError::new(
                ErrorKind::BadRequest,
                "DELETE /mcp needs an Mcp-Session-Id header",
            )
            .into()),
        },
        Method::POST => {
            let header_version = header_str(request, VERSION_HEADER).map(str::to_string);
            let message: Value = match serde_json::from_slice(&body) {
                Ok(message) => message,
                Err(e) => {
                    return Ok(json_response(
                        StatusCode::OK,
                        &error_response(
                            Value::Null,
                            code::PARSE_ERROR,
                            &format!("parse error: {e}"),
                        ),
                    ));
                }
            };
            let from =
                From { session: session.as_deref(), version: header_version.as_deref(), trace_id };
            post(state, admitted, from, message).await
        }
        _ => Err(CallError::new(ErrorKind::NotFound, "MCP accepts POST, GET and DELETE").into()),
    }
}

/// Where a POST came from: its session, the revision its header names, its trace.
struct From<'a> {
    session: Option<&'a str>,
    version: Option<&'a str>,
    trace_id: Option<String>,
}

async fn post(
    state: &Arc<AppState>,
    admitted: Admitted,
    from: From<'_>,
    message: Value,
) -> Result<Response<Body>, Problem> {
    let (session, header_version) = (from.session, from.version);
    let Some(object) = message.as_object() else {
        return Ok(json_response(StatusCode::OK, &not_one_message()));
    };
    let method = object.get("method").and_then(Value::as_str).unwrap_or_default();
    let stateless = header_version == Some(STATELESS_REVISION) || is_stateless(&message);
    if let Some(version) = header_version
        && version != STATELESS_REVISION
        && !SESSION_REVISIONS.contains(&version)
        && method != "initialize"
    {
        let id = object.get("id").cloned().unwrap_or(Value::Null);
        let mut error = error_response(
            id,
            code::UNSUPPORTED_VERSION,
            &format!("unsupported protocol version {version}"),
        );
        error["error"]["data"] = json!({"supported": supported_versions(), "requested": version});
        return Ok(json_response(StatusCode::OK, &error));
    }
    let Some(id) = object.get("id").cloned() else {
        // A notification or a response: nothing to answer.
        if method == "notifications/cancelled"
            && let Some(request) = message.pointer("/params/requestId")
        {
            state.mcp.cancel(session, request);
        }
        return Ok(Response::builder().status(StatusCode::ACCEPTED).body(full("")).expect("valid"));
    };
    if method == "subscriptions/listen" {
        let streaming = admitted.into_stream()?;
        return Ok(listen(state, id, &message, streaming));
    }
    if method == "tools/call" && hears_call(state, session, stateless, &message) {
        // No stream place: the stream ends with its call, which holds the request's slot
        // and its deadline like any call.
        let trace_id = from.trace_id;
        return Ok(answer_streamed(state, admitted, session, stateless, trace_id, id, message));
    }
    let new_session = (method == "initialize").then(|| state.mcp.create(&admitted.client.name));
    let session = new_session.as_deref().or(session);
    let context = Context { session, stateless, notify: None, trace_id: from.trace_id };
    let answer = respond_cancellable(state, &admitted, &context, id, &message).await;
    let mut response = json_response(StatusCode::OK, &answer);
    if let Some(session) = new_session
        && let Ok(value) = header::HeaderValue::from_str(&session)
    {
        response.headers_mut().insert(SESSION_HEADER, value);
    }
    Ok(response)
}

/// Whether the client of a `tools/call` hears something while it runs: a progress token,
/// or a log level (its session's, or in a stateless request's `_meta`). A malformed one
/// does not count: [`call_tool`] refuses it in a plain answer.
fn hears_call(state: &AppState, session: Option<&str>, stateless: bool, message: &Value) -> bool {
    let meta = &message["params"]["_meta"];
    progress_token(meta).is_ok_and(|t| t.is_some())
        || match stateless {
            true => meta
                .get(LOG_LEVEL_META)
                .and_then(Value::as_str)
                .is_some_and(|l| Level::parse(l).is_ok()),
            false => state.mcp.level(session).is_some(),
        }
}

/// The request's progress token, which MCP allows to be a string or an integer.
fn progress_token(meta: &Value) -> Result<Option<Value>, (i64, String)> {
    match meta.get("progressToken") {
        None => Ok(None),
        Some(token @ Value::String(_)) => Ok(Some(token.clone())),
        Some(token @ Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Some(token.clone())),
        Some(other) => Err((
            code::INVALID_PARAMS,
            format!("_meta.progressToken must be a string or an integer, not {other}"),
        )),
    }
}

/// Answer request `id` as an SSE stream: the call's notifications as they happen, then the
/// answer. A client that leaves stops the call.
fn answer_streamed(
    state: &Arc<AppState>,
    admitted: Admitted,
    session: Option<&str>,
    stateless: bool,
    trace_id: Option<String>,
    id: Value,
    message: Value,
) -> Response<Body> {
    use tracing::Instrument;
    let (tx, rx) = mpsc::channel(64);
    let (state, session) = (state.clone(), session.map(str::to_string));
    let task = async move {
        let notify = Some(tx.clone());
        let context = Context { session: session.as_deref(), stateless, notify, trace_id };
        tokio::select! {
            answer = respond_cancellable(&state, &admitted, &context, id, &message) => {
                let _ = tx.send(answer.to_string()).await;
            }
            () = tx.closed() => {}
        }
    };
    tokio::spawn(task.instrument(tracing::Span::current()));
    sse_response(rx, Some("message"))
}

/// [`respond`], stopped early (answering [`code::REQUEST_CANCELLED`]) when the client sends
/// `notifications/cancelled` for this request in the same session.
pub async fn respond_cancellable(
    state: &AppState,
    admitted: &Admitted,
    context: &Context<'_>,
    id: Value,
    message: &Value,
) -> Value {
    let cancelled = state.mcp.track(context.session, &id);
    let answer = match cancelled {
        Some(cancelled) => tokio::select! {
            answer = respond(state, admitted, context, id.clone(), message) => answer,
            // Only an explicit cancel counts: a dropped sender (a newer request
            // reusing the id, a closed session) leaves this one running.
            Ok(()) = cancelled => error_response(id.clone(), code::REQUEST_CANCELLED, "request cancelled"),
        },
        None => respond(state, admitted, context, id.clone(), message).await,
    };
    state.mcp.untrack(context.session, &id);
    answer
}

/// Answer one JSON-RPC request (any transport).
pub async fn respond(
    state: &AppState,
    admitted: &Admitted,
    context: &Context<'_>,
    id: Value,
    message: &Value,
) -> Value {
    let method = message["method"].as_str().unwrap_or_default();
    let params = &message["params"];
    let result = match method {
        "initialize" => {
            let asked = params["protocolVersion"].as_str().unwrap_or_default();
            let version =
                if SESSION_REVISIONS.contains(&asked) { asked } else { SESSION_REVISIONS[1] };
            Ok(json!({
                "protocolVersion": version,
                "capabilities": {"tools": {"listChanged": true}, "logging": {}},
                "serverInfo": server_info(),
                "instructions": "Tools run in per-call WebAssembly sandboxes; names are plugin.tool.",
            }))
        }
        "server/discover" => Ok(json!({
            "supportedVersions": [STATELESS_REVISION],
            "capabilities": {"tools": {"listChanged": true}, "logging": {}},
            "ttlMs": 0,
            "cacheScope": "private",
            "_meta": {"io.modelcontextprotocol/serverInfo": server_info()},
        })),
        "ping" => Ok(json!({})),
        "tools/list" => Ok(list_tools(state, admitted, context.stateless)),
        "tools/call" => call_tool(state, admitted, context, params).await,
        "logging/setLevel" if context.stateless => Err((
            code::METHOD_NOT_FOUND,
            format!(
                "the stateless revision has no logging/setLevel: name the level in each request's _meta[\"{LOG_LEVEL_META}\"]"
            ),
        )),
        "logging/setLevel" => match Level::parse(params["level"].as_str().unwrap_or_default()) {
            Ok(level) if state.mcp.set_level(context.session, level) => Ok(json!({})),
            Ok(_) => Err((
                code::INVALID_REQUEST,
                "logging/setLevel needs a session; initialize first".into(),
            )),
            Err(message) => Err((code::INVALID_PARAMS, message)),
        },
        "" => Err((code::INVALID_REQUEST, "the message has no method".to_string())),
        other => Err((code::METHOD_NOT_FOUND, format!("method not found: {other}"))),
    };
    match result {
        Ok(mut result) => {
            if context.stateless
                && let Some(object) = result.as_object_mut()
            {
                object.insert("resultType".into(), json!("complete"));
            }
            json!({"jsonrpc": "2.0", "id": id, "result": result})
        }
        Err((code, message)) => error_response(id, code, &message),
    }
}

fn list_tools(state: &AppState, admitted: &Admitted, stateless: bool) -> Value {
    let router = state.invoker.router();
    let tools: Vec<Value> = (router.targets().iter())
        .filter(|t| admitted.client.allowlist.permits(&t.id()))
        .map(|t| ToolDescription::new(&router, t).mcp())
        .chain(super::tasks::mcp_tools(state, &admitted.client.allowlist))
        .collect();
    let mut result = json!({ "tools": tools });
    if stateless {
        result["ttlMs"] = json!(0);
        result["cacheScope"] = json!("private");
    }
    result
}

async fn call_tool(
    state: &AppState,
    admitted: &Admitted,
    context: &Context<'_>,
    params: &Value,
) -> Result<Value, (i64, String)> {
    let Some(name) = params["name"].as_str() else {
        return Err((code::INVALID_PARAMS, "tools/call needs a `name`".into()));
    };
    let args = match &params["arguments"] {
        Value::Null => json!({}),
        args => args.clone(),
    };
    let allowlist = &admitted.client.allowlist;
    let trace = context.trace_id.clone();
    if let Some(ran) = super::tasks::mcp_call(state, allowlist, name, &args, trace).await {
        return ran.or_else(|error| match error.kind {
            ErrorKind::NotFound => Err((code::INVALID_PARAMS, error.message)),
            _ => Ok(error_result(&error)),
        });
    }
    let meta = &params["_meta"];
    let level = match (context.stateless, meta.get(LOG_LEVEL_META)) {
        (true, Some(Value::String(level))) => Level::parse(level).map(Some),
        (true, Some(other)) => {
            Err(format!("_meta[\"{LOG_LEVEL_META}\"] must be a level name, not {other}"))
        }
        (true, None) => Ok(None),
        (false, _) => Ok(state.mcp.level(context.session)),
    };
    let level = level.map_err(|message| (code::INVALID_PARAMS, message))?;
    let token = progress_token(meta)?;
    let mut options = CallOptions { trace_id: context.trace_id.clone(), ..CallOptions::default() };
    let metered = match &context.notify {
        Some(out) if level.is_some() || token.is_some() => {
            let (listened, mut events) = CallOptions::listened();
            options.events = listened.events;
            let mut notifier = Notifier::new(out.clone(), level, token);
            notifier.started(name);
            let call = state.invoker.call_with(allowlist, name, &args, &options);
            tokio::pin!(call);
            let metered = loop {
                tokio::select! {
                    metered = &mut call => break metered,
                    Some(event) = events.recv() => notifier.event(name, event),
                }
            };
            while let Ok(event) = events.try_recv() {
                notifier.event(name, event);
            }
            notifier.finished(name, &metered);
            metered
        }
        _ => state.invoker.call_with(allowlist, name, &args, &options).await,
    };
    match metered.outcome {
        Ok(value) => {
            let text = match &value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            // The schema the listing advertised decides the shape, as it did there.
            let target = state.invoker.router().resolve(name).ok();
            let schema = target.as_ref().and_then(|t| t.tool().output_schema.as_ref());
            let structured = crate::describe::structured(schema, value);
            Ok(json!({
                "content": [{"type": "text", "text": text}],
                "structuredContent": structured,
                "isError": false,
            }))
        }
        Err(error) if matches!(error.kind, ErrorKind::UnknownTool | ErrorKind::AmbiguousTool) => {
            Err((code::INVALID_PARAMS, error.message))
        }
        // Bad arguments and tool failures go back as results so the model can correct itself.
        Err(error) => Ok(error_result(&error)),
    }
}

/// A failed call as a `tools/call` result the model reads.
fn error_result(error: &crate::error::CallError) -> Value {
    json!({
        "content": [{"type": "text", "text": format!("{}: {}", error.kind, error.message)}],
        "isError": true,
    })
}

fn server_info() -> Value {
    json!({"name": "autoglm", "version": env!("CARGO_PKG_VERSION")})
}

fn supported_versions() -> Vec<&'static str> {
    let mut versions = SESSION_REVISIONS.to_vec();
    versions.push(STATELESS_REVISION);
    versions
}

/// The answer to a message that is not one JSON-RPC object, most often a batch (an
/// array): the MCP revisions served dropped JSON-RPC batching, on every transport.
pub fn not_one_message() -> Value {
    error_response(
        Value::Null,
        code::INVALID_REQUEST,
        "send one JSON-RPC message per request (batches are not supported)",
    )
}

/// A JSON-RPC error response.
pub fn error_response(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// `subscriptions/listen` (stateless revision): acknowledge, then one
/// `notifications/tools/list_changed` per change, until the client leaves.
fn listen(state: &AppState, id: Value, message: &Value, streaming: Streaming) -> Response<Body> {
    let wanted = message
        .pointer("/params/notifications/toolsListChanged")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    list_changed_stream(state, Some(acknowledge(&id, wanted)), streaming)
}

/// The acknowledgement of `subscriptions/listen` request `id`, and the `_meta`
/// every notification of that subscription carries.
pub fn acknowledge(id: &Value, tools_list_changed: bool) -> (Value, Value) {
    let meta = json!({"io.modelcontextprotocol/subscriptionId": id});
    let ack = json!({
        "jsonrpc": "2.0",
        "method": "notifications/subscriptions/acknowledged",
        "params": {"_meta": meta, "notifications": {"toolsListChanged": tools_list_changed}},
    });
    (ack, meta)
}

/// Whether `message` declares the stateless revision in its `_meta`.
pub fn is_stateless(message: &Value) -> bool {
    let pointer = format!("/params/_meta/{}", META_VERSION.replace('/', "~1"));
    message.pointer(&pointer).and_then(Value::as_str) == Some(STATELESS_REVISION)
}

/// A stream that sends `first` (if any) and then a list-changed notification on
/// every change of the tool set, ending when the server stops or the client leaves. It is a
/// subscription, so no request timeout ends it; `streaming` (held to its end) counts it
/// against its key's concurrency and `server.streams_per_key`.
fn list_changed_stream(
    state: &AppState,
    subscription: Option<(Value, Value)>,
    streaming: Streaming,
) -> Response<Body> {
    let (tx, rx) = mpsc::channel(16);
    let mut changes = state.invoker.plugins().changes();
    let mut stopping = state.stopping.subscribe();
    let params = match &subscription {
        Some((_, meta)) => json!({"_meta": meta}),
        None => json!({}),
    };
    let first = subscription.map(|(ack, _)| ack.to_string());
    tokio::spawn(async move {
        let _streaming = streaming;
        if *stopping.borrow_and_update() {
            return;
        }
        if let Some(first) = first
            && tx.send(first).await.is_err()
        {
            return;
        }
        changes.mark_unchanged();
        let notification = json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed", "params": params}).to_string();
        loop {
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() || tx.send(notification.clone()).await.is_err() {
                        return;
                    }
                }
                // `stopping` only ever turns true.
                _ = stopping.changed() => return,
                () = tx.closed() => return,
            }
        }
    });
    sse_response(rx, Some("message"))
}

fn header_str<'a>(request: &'a http::request::Parts, name: &str) -> Option<&'a str> {
    request.headers.get(name).and_then(|v| v.to_str().ok())
}

/// `_meta`-free params, for the stdio transport's notifications.
pub fn notification(method: &str) -> Value {
    json!({"jsonrpc": "2.0", "method": method, "params": Map::new()})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_session_makes_room_for_a_new_one() {
        let sessions = Sessions::new(MAX_SESSIONS, Duration::from_secs(3600));
        let key = |i: usize| format!("key-{}", i % 7);
        let first = sessions.create(&key(0));
        let second = sessions.create(&key(1));
        for i in 2..MAX_SESSIONS {
            sessions.create(&key(i));
        }
        assert!(sessions.exists(&first, &key(0)), "touching the first makes the second the oldest");
        sessions.create(&key(2));
        assert_eq!(sessions.lock().len(), MAX_SESSIONS);
        assert!(sessions.exists(&first, &key(0)));
        assert!(!sessions.exists(&second, &key(1)));
    }

    #[test]
    fn sessions_belong_to_their_key_are_capped_per_key_and_expire() {
        let sessions = Sessions::new(2, Duration::from_millis(200));
        let a1 = sessions.create("a");
        let b1 = sessions.create("b");
        assert!(!sessions.exists(&a1, "b") && !sessions.remove(&a1, "b"), "b cannot use a's");
        assert!(sessions.exists(&a1, "a"), "and a's is still there");
        let a2 = sessions.create("a");
        let a3 = sessions.create("a");
        assert!(!sessions.exists(&a1, "a"), "a's oldest ended at its cap of 2");
        assert!(
            sessions.exists(&a2, "a") && sessions.exists(&a3, "a") && sessions.exists(&b1, "b")
        );
        std::thread::sleep(Duration::from_millis(250));
        assert!(!sessions.exists(&b1, "b"), "unused past its ttl");
    }
}
