//! Building blocks of every HTTP answer: bodies, JSON and SSE responses, error answers,
//! and reading a request body under the size limit.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};

use crate::error::{CallError, ErrorKind};

/// The body of every response: a full buffer or a stream of SSE frames.
pub type Body = BoxBody<Bytes, Infallible>;

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

/// How often a quiet event stream sends a comment, so proxies between the client and the
/// server do not take it for a dead connection and cut it.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// A Server-Sent Events response fed by `events` (each item one `data:` payload); it ends
/// when `events` does, and sends a keep-alive comment while it is quiet.
pub fn sse_response(
    events: tokio::sync::mpsc::Receiver<String>,
    event: Option<&'static str>,
) -> Response<Body> {
    use tokio_stream::StreamExt;
    enum Item {
        Data(String),
        KeepAlive,
        End,
    }
    // MCP names its events; OpenAI streams bare `data:` lines.
    let prefix = event.map(|name| format!("event: {name}\n")).unwrap_or_default();
    let data = tokio_stream::wrappers::ReceiverStream::new(events)
        .map(Item::Data)
        .chain(tokio_stream::once(Item::End));
    let start = tokio::time::Instant::now() + KEEP_ALIVE;
    let ticks =
        tokio_stream::wrappers::IntervalStream::new(tokio::time::interval_at(start, KEEP_ALIVE))
            .map(|_| Item::KeepAlive);
    let frames = data.merge(ticks).take_while(|item| !matches!(item, Item::End)).map(move |item| {
        let text = match item {
            Item::Data(data) => format!("{prefix}data: {data}\n\n"),
            _ => ": keep-alive\n\n".to_string(),
        };
        Ok::<_, Infallible>(Frame::data(Bytes::from(text)))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(StreamBody::new(frames).boxed())
        .expect("static headers are valid")
}

/// An error answer: the taxonomy's status and `{"error": {...}}`.
pub struct Problem {
    /// What went wrong.
    pub error: CallError,
    /// For `Retry-After`, in seconds.
    pub retry_after: Option<u64>,
}

impl From<CallError> for Problem {
    fn from(error: CallError) -> Self {
        let retry_after =
            matches!(error.kind, ErrorKind::Overloaded | ErrorKind::RateLimited).then_some(1);
        Self { error, retry_after }
    }
}

impl From<super::access::Refusal> for Problem {
    fn from(refusal: super::access::Refusal) -> Self {
        Self { error: refusal.error, retry_after: refusal.retry_after }
    }
}

impl Problem {
    /// The response: the kind's status, `{"error": ...}` and its headers.
    pub fn into_response(self) -> Response<Body> {
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
        // The rest of the body is still on the wire: the connection cannot carry another
        // request, and a client that is told so does not send one into it.
        if matches!(self.error.kind, ErrorKind::BodyTooLarge | ErrorKind::BodyTimeout) {
            response
                .headers_mut()
                .insert(header::CONNECTION, header::HeaderValue::from_static("close"));
        }
        response
    }
}

/// A body as JSON.
pub fn parse_json(body: &[u8]) -> Result<Value, Problem> {
    serde_json::from_slice(body).map_err(|e| {
        CallError::new(ErrorKind::BadRequest, format!("the body is not valid JSON: {e}")).into()
    })
}

/// Read the whole body, refusing one over `limit` bytes (`server.body_limit_bytes`) or one
/// that takes longer than `timeout` (`server.body_read_timeout_ms`) to arrive.
pub async fn read_body(
    headers: &HeaderMap,
    body: Incoming,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, Problem> {
    let too_large = || {
        Problem::from(CallError::new(
            ErrorKind::BodyTooLarge,
            format!("the body is over server.body_limit_bytes = {limit}"),
        ))
    };
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let Ok(read) = tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await else {
        return Err(CallError::new(
            ErrorKind::BodyTimeout,
            format!(
                "the body did not arrive within server.body_read_timeout_ms = {}",
                timeout.as_millis()
            ),
        )
        .into());
    };
    match read {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(too_large())
        }
        Err(e) => {
            Err(CallError::new(ErrorKind::BadRequest, format!("cannot read the body: {e}")).into())
        }
    }
}

/// `%XX` escapes of a path segment decoded (invalid UTF-8 becomes U+FFFD).
pub fn percent_decode(text: &str) -> String {
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
