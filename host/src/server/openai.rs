//! The OpenAI-compatible API: `GET /v1/models` and `POST /v1/chat/completions`.
//!
//! Until a language model is configured (the engine), chat answers 503 with
//! `engine_unavailable` and the models list is empty; tools and MCP still serve.

use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::access::Admitted;
use super::{AppState, Body, Problem, json_response};
use crate::error::{CallError, ErrorKind};

/// The models this server answers with (none without an engine).
pub fn models(_state: &AppState) -> Response<Body> {
    json_response(StatusCode::OK, &json!({"object": "list", "data": []}))
}

/// Chat completions: needs an engine.
pub async fn chat(
    _state: &AppState,
    _admitted: &Admitted,
    request: Value,
) -> Result<Response<Body>, Problem> {
    if !request.is_object() || !request["messages"].is_array() {
        return Err(CallError::new(
            ErrorKind::BadRequest,
            "the body must be an object with a `messages` array",
        )
        .into());
    }
    Err(CallError::new(
        ErrorKind::EngineUnavailable,
        "no language model is loaded on this server: start `autoglm serve` with --model DIR or \
         --upstream URL. Tools stay available at /v1/tools and /mcp",
    )
    .into())
}
