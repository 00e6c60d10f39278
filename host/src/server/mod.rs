//! The HTTP endpoint (hyper 1.x): the tool API, the OpenAI-compatible API, MCP
//! over Streamable HTTP, and health, readiness and metrics.
//!
//! Every request passes the same gate — Origin check, API key, rate and
//! concurrency limits, body limit, request timeout — before it reaches a route.

pub mod access;
mod connection;
mod console;
pub mod mcp;
mod notify;
mod openai;
pub mod respond;
mod state;
pub mod stdio;
mod tasks;
mod tools;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::TcpListener;

use crate::error::{CallError, ErrorKind};
use crate::trace::TraceContext;
use connection::{Activity, Guarded, Tracked};
use respond::{Body, Problem, full, json_response, parse_json, percent_decode, read_body};
pub use state::AppState;

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
    // At the cap the loop stops accepting: new clients wait in the kernel's backlog, and the
    // server keeps the file descriptors it needs for its plugins and cache.
    let slots = Arc::new(tokio::sync::Semaphore::new(state.settings.max_connections.max(1)));
    let idle = Duration::from_millis(state.settings.idle_timeout_ms.max(1));
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
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
                let activity = Activity::new();
                let state = state.clone();
                let open = state.invoker.metrics().open_connection();
                let requests = activity.clone();
                let service = hyper::service::service_fn(move |request| {
                    let (state, in_flight) = (state.clone(), requests.request());
                    async move {
                        let response = handle(state, peer, request).await;
                        Ok::<_, Infallible>(response.map(|body| Guarded::new(body, in_flight)))
                    }
                });
                let io = TokioIo::new(Tracked::new(stream, activity.clone()));
                let connection = builder.serve_connection(io, service).into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    let _held = (slot, open);
                    tokio::pin!(connection);
                    let tick = (idle / 4).max(Duration::from_millis(20));
                    loop {
                        tokio::select! {
                            result = &mut connection => {
                                if let Err(error) = result {
                                    tracing::debug!(%error, %peer, "connection ended with an error");
                                }
                                return;
                            }
                            () = tokio::time::sleep(tick) => {
                                // Nothing is in flight, so dropping the connection loses nothing.
                                if activity.idle_for() >= idle {
                                    tracing::debug!(%peer, "closing an idle connection");
                                    return;
                                }
                            }
                        }
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
    let dispatched = dispatch(&state, peer, request).instrument(span);
    let mut response = match tokio::time::timeout(timeout, dispatched).await {
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
    state.invoker.metrics().record_http(route, response.status().as_u16());
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
        (&Method::GET, p) if p == "/" || p.starts_with("/ui") => "console",
        (_, "/v1/plugins") => "plugins",
        (_, "/mcp") => "mcp",
        (&Method::GET, "/v1/tools") => "tools",
        (_, p) if p.starts_with("/v1/tools/") => "tool_call",
        (_, "/v1/models") => "models",
        (_, "/v1/chat/completions") => "chat",
        (_, p) if p == "/v1/tasks" || p.starts_with("/v1/tasks/") => "tasks",
        _ => "other",
    }
}

async fn dispatch(
    state: &Arc<AppState>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Body>, Problem> {
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
    let origins: Vec<&str> = (request.headers().get_all(header::ORIGIN).iter())
        .map(|v| v.to_str().unwrap_or("(not text)"))
        .collect();
    if !state.access.origin_allowed(origins.iter().copied(), host) {
        return Err(CallError::new(
            ErrorKind::ForbiddenOrigin,
            format!(
                "origin {} is not allowed: only the server's own origin and those in \
                 server.allowed_origins (scheme, host and port exactly) may call it",
                origins.join(", ")
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
        // The console's files hold no data; what the page asks for next is checked below.
        (&Method::GET, p) => {
            if let Some(page) = console::asset(p) {
                return Ok(page);
            }
        }
        _ => {}
    }
    let authorization = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let client = state.access.authenticate(authorization, Some(peer.ip()))?;
    // The body first, under its own timeout, and only then a concurrency slot: a client
    // that uploads slowly holds no slot that other requests of its key need.
    let (parts, body) = request.into_parts();
    let body = match parts.method {
        Method::POST => {
            let settings = &state.settings;
            let timeout = Duration::from_millis(settings.body_read_timeout_ms);
            read_body(&parts.headers, body, settings.body_limit_bytes, timeout).await?
        }
        _ => Default::default(),
    };
    let admitted = client.enter()?;
    let trace = parts.extensions.get::<TraceContext>().cloned();
    let trace_id = trace.as_ref().map(|t| t.trace_id.clone());
    match (parts.method.clone(), path.as_str()) {
        (Method::GET, "/metrics") => Ok(Response::builder()
            .header(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")
            .body(full({
                if let Some(stats) = &state.model_stats {
                    state.invoker.metrics().observe_model(&crate::model::counters(stats));
                }
                if let Ok(tasks) = &state.tasks {
                    tasks.observe().await;
                }
                state.invoker.metrics().render()
            }))
            .expect("static headers are valid")),
        (Method::GET, "/v1/tools") => Ok(tools::list(state, &admitted)),
        (Method::GET, "/v1/plugins") => Ok(console::plugins(state, &admitted)),
        (Method::POST, p) if tool_call_name(p).is_some() => {
            let name = percent_decode(tool_call_name(p).unwrap_or_default());
            tools::call(state, &admitted, &name, parse_json(&body)?, trace_id).await
        }
        (Method::GET, "/v1/models") => Ok(openai::models(state)),
        (Method::POST, "/v1/chat/completions") => {
            let key = parts.headers.get("idempotency-key").and_then(|v| v.to_str().ok());
            openai::chat(state, admitted, parse_json(&body)?, trace, key).await
        }
        (method, p) if p == "/v1/tasks" || p.starts_with("/v1/tasks/") => {
            let query = parts.uri.query();
            tasks::handle(state, admitted, &method, p, query, &body, trace_id).await
        }
        (_, "/mcp") => mcp::http(state, admitted, &parts, body, trace_id).await,
        _ => Err(CallError::new(
            ErrorKind::NotFound,
            format!("no route for {} {path}", parts.method),
        )
        .into()),
    }
}

/// The `{name}` of `/v1/tools/{name}/call`, when the path has that shape.
fn tool_call_name(path: &str) -> Option<&str> {
    path.strip_prefix("/v1/tools/")?.strip_suffix("/call").filter(|name| !name.is_empty())
}

/// Ready once every plugin found at start-up has loaded; says which kind of engine answers
/// chat (`local`, `remote` or `none`). Unauthenticated, so the model's name is left to
/// `/v1/models`.
fn readiness(state: &AppState) -> Response<Body> {
    let plugins = state.invoker.plugins();
    let ready = plugins.is_ready();
    let count = plugins.registry().plugins().count();
    let engine = match (&state.agent, &state.model_stats) {
        (None, _) => "none",
        (Some(_), Some(_)) => "local",
        (Some(_), None) => "remote",
    };
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    json_response(status, &json!({"ready": ready, "plugins": count, "engine": engine}))
}
