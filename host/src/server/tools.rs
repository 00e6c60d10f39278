//! `GET /v1/tools` and `POST /v1/tools/{name}/call`.

use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::access::Admitted;
use super::respond::{Body, Problem, json_response};
use super::state::AppState;
use crate::describe::ToolDescription;
use crate::runtime::sandbox::CallOptions;

/// Every tool the caller may use, in OpenAI tool format plus its plugin,
/// declared needs and what the operator granted.
pub fn list(state: &AppState, admitted: &Admitted) -> Response<Body> {
    let router = state.invoker.router();
    let tools: Vec<Value> = (router.targets().iter())
        .filter(|t| admitted.client.allowlist.permits(&t.id()))
        .map(|t| ToolDescription::new(&router, t).rest())
        .collect();
    json_response(StatusCode::OK, &json!({"object": "list", "data": tools}))
}

/// Call one tool with the request body as its arguments; the request's trace id reaches the
/// plugin's `context()` so its own logs join the caller's trace.
pub async fn call(
    state: &AppState,
    admitted: &Admitted,
    name: &str,
    args: Value,
    trace_id: Option<String>,
) -> Result<Response<Body>, Problem> {
    let options = CallOptions { trace_id, ..CallOptions::default() };
    let metered = state.invoker.call_with(&admitted.client.allowlist, name, &args, &options).await;
    let result = metered.outcome?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "result": result,
            "usage": {
                "fuel": metered.usage.fuel,
                "memory_bytes": metered.usage.memory_bytes,
                "elapsed_us": metered.elapsed.as_micros() as u64,
            },
        }),
    ))
}
