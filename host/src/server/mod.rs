//! The HTTP endpoint (hyper 1.x): the tool API, the OpenAI-compatible API, MCP
//! over Streamable HTTP, and health, readiness and metrics.
//!
//! Every request passes the same gate — Origin check, API key, rate and
//! concurrency limits, body limit, request timeout — before it reaches a route.

pub mod access;
pub mod mcp;
mod openai;
pub mod stdio;
mod tools;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::agent::Agent;
use crate::config::ServerSettings;
use crate::engine::scheduler::SchedulerStats;
use crate::error::{CallError, ErrorKind};
use crate::metrics::Metrics;
use crate::registry::LiveRegistry;
use crate::trace::TraceContext;
use access::{Access, Admitted};

/// The body of every response: a full buffer or a stream of SSE frames.
pub type Body = BoxBody<Bytes, Infallible>;

/// Everything a request handler can reach.
pub struct AppState {
    /// The plugins, reloaded as their directory changes.
    pub plugins: Arc<LiveRegistry>,
    /// Exported metrics.
    pub metrics: Arc<Metrics>,
    /// Keys, origins and limits.
    pub access: Access,
    /// Body limit, timeouts.
    pub settings: ServerSettings,
    /// MCP sessions (legacy revisions) and in-flight requests.
    pub mcp: mcp::Sessions,
    /// Turns true when the server starts shutting down; long-lived streams end.
    pub stopping: watch::Sender<bool>,
    /// The agent behind `/v1/chat/completions`, when a model is configured.
    pub agent: Option<Arc<Agent>>,
    /// The local engine's batching counters, for `/metrics`.
    pub model_stats: Option<Arc<SchedulerStats>>,
}

impl AppState {
    /// State for serving `plugins` under `settings`; `loopback` says whether the
    /// listening address is local (keys are required otherwise).
    pub fn new(
        plugins: Arc<LiveRegistry>,
        settings: ServerSettings,
        loopback: bool,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            plugins,
            metrics: Arc::new(Metrics::default()),
            access: Access::new(&settings, loopback)?,
            settings,
            mcp: mcp::Sessions::default(),
            stopping: watch::Sender::new(false),
            agent: None,
            model_stats: None,
        })
    }

    /// Answer chat requests with `agent`; `stats` are the local engine's counters.
    pub fn with_agent(mut self, agent: Arc<Agent>, stats: Option<Arc<SchedulerStats>>) -> Self {
        self.agent = Some(agent);
        self.model_stats = stats;
        self
    }
}

/// Serve connections from `listener` until `shutdown` resolves, then stop
/// accepting and let in-flight requests finish (up to the configured grace).
pub async fn serve(
    state: Arc<AppState>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // A timer lets hyper close connections that never finish sending their headers.
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    builder.http2().timer(hyper_util::rt::TokioTimer::new());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors, typically: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let state = state.clone();
                let service = hyper::service::service_fn(move |request| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(state, peer, request).await) }
                });
                let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%error, %peer, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    state.stopping.send_replace(true);
    let grace = Duration::from_millis(state.settings.shutdown_grace_ms);
    tracing::info!("shutting down: no new connections; draining in-flight requests");
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "in-flight requests did not finish in time"
        );
    }
    Ok(())
}

async fn handle(
    state: Arc<AppState>,
    peer: SocketAddr,
    mut request: Request<Incoming>,
) -> Response<Body> {
    use tracing::Instrument;
    let route = route_name(request.method(), request.uri().path());
    let traceparent = request.headers().get("traceparent").and_then(|v| v.to_str().ok());
    let span = tracing::info_span!(target: "autoglm::request", "request", trace_id = tracing::field::Empty, method = %request.method(), path = %request.uri().path(), %peer);
    let trace = crate::telemetry::adopt(&span, TraceContext::from_header(traceparent));
    span.record("trace_id", tracing::field::display(&trace.trace_id));
    request.extensions_mut().insert(trace.clone());
    let timeout = Duration::from_millis(state.settings.request_timeout_ms);
    let mut response =
        match tokio::time::timeout(timeout, dispatch(&state, request).instrument(span)).await {
            Ok(Ok(response)) => response,
            Ok(Err(refusal)) => refusal.into_response(),
            Err(_) => Problem::from(CallError::new(
                ErrorKind::Timeout,
                format!(
                    "the request took longer than server.request_timeout_ms = {}",
                    timeout.as_millis()
                ),
            ))
            .into_response(),
        };
    state.metrics.record_http(route, response.status().as_u16());
    if let Ok(value) = http::HeaderValue::from_str(&trace.header()) {
        response.headers_mut().insert("traceparent", value);
    }
    response
}

/// A stable label for metrics: the route, not the raw path.
fn route_name(method: &Method, path: &str) -> &'static str {
    match (method, path) {
        (_, "/healthz") => "healthz",
        (_, "/readyz") => "readyz",
        (_, "/metrics") => "metrics",
        (_, "/mcp") => "mcp",
        (&Method::GET, "/v1/tools") => "tools",
        (_, p) if p.starts_with("/v1/tools/") => "tool_call",
        (_, "/v1/models") => "models",
        (_, "/v1/chat/completions") => "chat",
        _ => "other",
    }
}

async fn dispatch(state: &AppState, request: Request<Incoming>) -> Result<Response<Body>, Problem> {
    let host = request.headers().get(header::HOST).and_then(|v| v.to_str().ok());
    let host = host.or_else(|| request.uri().authority().map(|a| a.as_str()));
    if !state.access.host_allowed(host) {
        return Err(CallError::new(
            ErrorKind::ForbiddenOrigin,
            format!(
                "this server listens on loopback and answers only to localhost, 127.0.0.1 and [::1] \
                 (Host: {}); add the origin to server.allowed_origins to use another name",
                host.unwrap_or("")
            ),
        )
        .into());
    }
    let origin = request.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if !state.access.origin_allowed(origin) {
        return Err(CallError::new(
            ErrorKind::ForbiddenOrigin,
            format!(
                "origin {} is not allowed; add it to server.allowed_origins",
                origin.unwrap_or("")
            ),
        )
        .into());
    }
    let path = request.uri().path().to_string();
    match (request.method(), path.as_str()) {
        (&Method::GET, "/healthz") => {
            return Ok(json_response(StatusCode::OK, &json!({"status": "ok"})));
        }
        (&Method::GET, "/readyz") => return Ok(readiness(state)),
        _ => {}
    }
    let authorization = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let admitted = state
        .access
        .admit(authorization)
        .map_err(|r| Problem { error: r.error, retry_after: r.retry_after })?;
    match (request.method().clone(), path.as_str()) {
        (Method::GET, "/metrics") => Ok(Response::builder()
            .header(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")
            .body(full({
                if let Some(stats) = &state.model_stats {
                    state.metrics.observe_scheduler(stats);
                }
                state.metrics.render()
            }))
            .expect("static headers are valid")),
        (Method::GET, "/v1/tools") => Ok(tools::list(state, &admitted)),
        (Method::POST, p) if tool_call_name(p).is_some() => {
            let name = percent_decode(tool_call_name(p).unwrap_or_default());
            let body = read_json(state, request).await?;
            tools::call(state, &admitted, &name, body).await
        }
        (Method::GET, "/v1/models") => Ok(openai::models(state)),
        (Method::POST, "/v1/chat/completions") => {
            let trace = request.extensions().get::<TraceContext>().cloned();
            let body = read_json(state, request).await?;
            openai::chat(state, &admitted, body, trace).await
        }
        (_, "/mcp") => mcp::http(state, admitted, request).await,
        _ => Err(CallError::new(
            ErrorKind::NotFound,
            format!("no route for {} {path}", request.method()),
        )
        .into()),
    }
}

/// The `{name}` of `/v1/tools/{name}/call`, when the path has that shape.
fn tool_call_name(path: &str) -> Option<&str> {
    path.strip_prefix("/v1/tools/")?.strip_suffix("/call").filter(|name| !name.is_empty())
}

fn readiness(state: &AppState) -> Response<Body> {
    let ready = state.plugins.is_ready();
    let plugins = state.plugins.router().registry().plugins().count();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    json_response(status, &json!({"ready": ready, "plugins": plugins, "engine": "none"}))
}

/// Read the whole body (up to the limit) and parse it as JSON.
async fn read_json(state: &AppState, request: Request<Incoming>) -> Result<Value, Problem> {
    let bytes = read_body(state, request).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        CallError::new(ErrorKind::BadRequest, format!("the body is not valid JSON: {e}")).into()
    })
}

async fn read_body(state: &AppState, request: Request<Incoming>) -> Result<Bytes, Problem> {
    let limit = state.settings.body_limit_bytes;
    let too_large = || {
        Problem::from(CallError::new(
            ErrorKind::BodyTooLarge,
            format!("the body is over server.body_limit_bytes = {limit}"),
        ))
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    match Limited::new(request.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(too_large())
        }
        Err(e) => {
            Err(CallError::new(ErrorKind::BadRequest, format!("cannot read the body: {e}")).into())
        }
    }
}

/// An error answer: the taxonomy's status and `{"error": {...}}`.
pub struct Problem {
    error: CallError,
    retry_after: Option<u64>,
}

impl From<CallError> for Problem {
    fn from(error: CallError) -> Self {
        let retry_after =
            matches!(error.kind, ErrorKind::Overloaded | ErrorKind::RateLimited).then_some(1);
        Self { error, retry_after }
    }
}

impl Problem {
    fn into_response(self) -> Response<Body> {
        let status = StatusCode::from_u16(self.error.kind.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = json_response(status, &json!({ "error": self.error }));
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, seconds.into());
        }
        if self.error.kind == ErrorKind::Unauthorized {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// A JSON response with `status`.
pub fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(value.to_string()))
        .expect("static headers are valid")
}

/// A complete body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

/// A Server-Sent Events response fed by `events` (each item one `data:` payload).
pub fn sse_response(
    events: tokio::sync::mpsc::Receiver<String>,
    event: Option<&'static str>,
) -> Response<Body> {
    use tokio_stream::StreamExt;
    // MCP names its events; OpenAI streams bare `data:` lines.
    let prefix = event.map(|name| format!("event: {name}\n")).unwrap_or_default();
    let frames = tokio_stream::wrappers::ReceiverStream::new(events).map(move |data| {
        Ok::<_, Infallible>(Frame::data(Bytes::from(format!("{prefix}data: {data}\n\n"))))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(StreamBody::new(frames).boxed())
        .expect("static headers are valid")
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, ..) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `admitted` may call the tool `id`, as an error when not.
fn check_allowed(admitted: &Admitted, id: &str) -> Result<(), CallError> {
    if admitted.client.may_call(id) {
        return Ok(());
    }
    Err(CallError::new(
        ErrorKind::PermissionDenied,
        format!(
            "API key `{}` may not call {id}; add it to the key's tools list",
            admitted.client.name
        ),
    ))
}

/// Run tool `name` for `admitted`: resolve it (a plugin still compiling answers
/// `loading`), check the key's allowlist, call it, and record the metrics.
pub async fn run_tool(
    state: &AppState,
    admitted: &Admitted,
    name: &str,
    args: &Value,
) -> crate::runtime::sandbox::Traced<Value> {
    let router = state.plugins.router();
    let refused = |error| crate::runtime::sandbox::Traced {
        outcome: Err(error),
        usage: Default::default(),
        elapsed: Duration::ZERO,
    };
    let target = match router.resolve(name) {
        Ok(target) => target,
        Err(error) => {
            let still_loading = match name.split_once('.').or_else(|| name.split_once("__")) {
                Some((plugin, _)) => state.plugins.is_loading(plugin),
                // A bare name may belong to a plugin that has not finished compiling.
                None => error.kind == ErrorKind::UnknownTool && !state.plugins.is_ready(),
            };
            if still_loading {
                return refused(CallError::new(
                    ErrorKind::Loading,
                    format!(
                        "`{name}` is not available yet: plugins are still being compiled; retry in a moment"
                    ),
                ));
            }
            return refused(error);
        }
    };
    let id = target.id();
    if let Err(error) = check_allowed(admitted, &id) {
        return refused(error);
    }
    let _in_flight = state.metrics.start_call();
    let traced = router.call_traced(&id, args).await;
    state.metrics.record_call(&target.plugin.name, &target.tool().spec.name, &traced);
    traced
}
