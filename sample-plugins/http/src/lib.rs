//! HTTP GET through the host's `wasi:http/outgoing-handler`; the host's policy
//! decides which destinations are reachable.

use std::collections::BTreeMap;

use autoglm_sdk::prelude::*;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingRequest, Scheme, http_error_code,
};
use wasip2::io::streams::StreamError;

mod url;

/// Body bytes returned when the operator sets no `max_body_bytes`.
const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// The most bytes asked of the host in one read, so one read never allocates much.
const CHUNK: usize = 16 * 1024;

/// Sent with every request: many servers refuse requests without a User-Agent.
const USER_AGENT: &str = concat!("open-autoglm-http/", env!("CARGO_PKG_VERSION"));

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Args {
    /// Absolute http:// or https:// URL to fetch, e.g. "https://example.com/data.json".
    url: String,
}

#[derive(Serialize, JsonSchema)]
struct Response {
    /// HTTP status code, e.g. 200 or 404.
    status: u16,
    /// Response headers by lower-case name; repeated headers are joined with ", ".
    headers: BTreeMap<String, String>,
    /// The response body as text; bytes that are not UTF-8 are replaced by U+FFFD.
    body: String,
    /// True when the body was longer than the allowed size and was cut off.
    truncated: bool,
}

fn get(args: Args) -> Result<Response, ToolError> {
    let target = url::parse(&args.url).map_err(ToolError::invalid)?;
    let max_body = max_body_bytes()?;
    let failed =
        |why: String| ToolError::failed(format!("request to {} failed: {why}", target.authority));

    let request = build_request(&target)?;
    let future = outgoing_handler::handle(request, None).map_err(|e| failed(describe(&e)))?;
    // Wait until the status and headers arrived, or the host gave up.
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(failed(describe(&code))),
        // Not expected after `block`: the response is ready and taken only here.
        Some(Err(())) | None => return Err(failed("the host returned no response".into())),
    };
    let status = response.status();
    let headers = join_headers(response.headers().entries());
    // Declared after `response`, so dropped before it, as wasi:http requires of children.
    let body = response.consume().map_err(|()| failed("the body was not available".into()))?;
    let (bytes, truncated) = read_body(&body, max_body).map_err(failed)?;
    Ok(Response { status, headers, body: decode(bytes, truncated), truncated })
}

/// A GET request for `target` with no body.
fn build_request(target: &url::Target) -> Result<OutgoingRequest, ToolError> {
    let headers = Fields::new();
    headers
        .append("user-agent", USER_AGENT.as_bytes())
        .map_err(|e| ToolError::failed(format!("could not set the User-Agent header: {e:?}")))?;
    let request = OutgoingRequest::new(headers);
    let scheme = if target.https { Scheme::Https } else { Scheme::Http };
    let refused = |part: String| ToolError::invalid(format!("the host does not accept {part}"));
    request.set_method(&Method::Get).map_err(|()| refused("the GET method".into()))?;
    request.set_scheme(Some(&scheme)).map_err(|()| refused("the URL's scheme".into()))?;
    request
        .set_authority(Some(&target.authority))
        .map_err(|()| refused(format!("the host name '{}'", target.authority)))?;
    request
        .set_path_with_query(Some(&target.path_with_query))
        .map_err(|()| refused(format!("the path '{}'", target.path_with_query)))?;
    Ok(request)
}

/// Read at most `max` bytes of `body`; the flag is true when more was left unread.
fn read_body(body: &IncomingBody, max: usize) -> Result<(Vec<u8>, bool), String> {
    // A child of `body`: dropped when this function returns, before `body` is.
    let stream = body.stream().map_err(|()| "the body was not available".to_string())?;
    let mut bytes = Vec::new();
    loop {
        // One byte beyond the limit tells a body of exactly `max` bytes from a longer one.
        let want = (max.saturating_add(1) - bytes.len()).min(CHUNK);
        match stream.blocking_read(want as u64) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => return Ok((bytes, false)),
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(
                    http_error_code(&e).map_or_else(|| e.to_debug_string(), |code| describe(&code))
                );
            }
        }
        if bytes.len() > max {
            bytes.truncate(max);
            return Ok((bytes, true));
        }
    }
}

/// The operator's body limit, or the default when none is set.
fn max_body_bytes() -> Result<usize, ToolError> {
    let Some(value) = config("max_body_bytes") else { return Ok(DEFAULT_MAX_BODY_BYTES) };
    value.trim().parse().map_err(|_| {
        ToolError::failed(format!(
            "the operator's setting max_body_bytes = '{value}' is not a whole number of bytes"
        ))
    })
}

/// The Debug text of a wasi:http error code without the type prefix, e.g. "HttpRequestDenied".
fn describe(code: &ErrorCode) -> String {
    let text = format!("{code:?}");
    text.strip_prefix("ErrorCode::").unwrap_or(&text).to_string()
}

/// Header entries by lower-case name, repeated names joined with ", " (as HTTP allows).
fn join_headers(entries: Vec<(String, Vec<u8>)>) -> BTreeMap<String, String> {
    let mut headers = BTreeMap::<String, String>::new();
    for (name, value) in entries {
        let value = String::from_utf8_lossy(&value);
        headers
            .entry(name.to_ascii_lowercase())
            .and_modify(|joined| {
                joined.push_str(", ");
                joined.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    headers
}

/// `bytes` as text, invalid UTF-8 replaced; a character that truncation cut in half
/// is dropped rather than shown as U+FFFD.
fn decode(mut bytes: Vec<u8>, truncated: bool) -> String {
    if truncated
        && let Err(e) = std::str::from_utf8(&bytes)
        && e.error_len().is_none()
    {
        bytes.truncate(e.valid_up_to());
    }
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn tools() -> Vec<Tool> {
    let about = "Fetch a URL with an HTTP GET request and return the status, headers and body \
                 text (redirects are not followed; long bodies are cut off).";
    vec![
        Tool::new("get", about, get)
            .output::<Response>()
            .outbound_host("*")
            .read_only()
            .open_world(),
    ]
}

export_plugin!(tools);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_repeated_headers_case_insensitively() {
        let entries = vec![
            ("Content-Type".to_string(), b"text/plain".to_vec()),
            ("set-cookie".to_string(), b"a=1".to_vec()),
            ("Set-Cookie".to_string(), b"b=2".to_vec()),
            ("x-bytes".to_string(), vec![0xff, b'!']),
        ];
        let headers = join_headers(entries);
        assert_eq!(headers["content-type"], "text/plain");
        assert_eq!(headers["set-cookie"], "a=1, b=2");
        assert_eq!(headers["x-bytes"], "\u{fffd}!");
        assert_eq!(headers.len(), 3);
    }

    #[test]
    fn decode_drops_a_character_cut_by_truncation() {
        let cut = "né".as_bytes()[..2].to_vec(); // 'n' and the first byte of 'é'
        assert_eq!(decode(cut.clone(), true), "n");
        // Without truncation the broken byte is real data: show it replaced.
        assert_eq!(decode(cut, false), "n\u{fffd}");
        assert_eq!(decode(vec![b'a', 0xff, b'b'], true), "a\u{fffd}b");
        assert_eq!(decode("日本".as_bytes().to_vec(), false), "日本");
    }
}
