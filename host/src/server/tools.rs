//! `GET /v1/tools` and `POST /v1/tools/{name}/call`.

use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::access::Admitted;
use super::{AppState, Body, Problem, json_response, run_tool};
use crate::router::{Router, Target};

/// Every tool the caller may use, in OpenAI tool format plus its plugin,
/// declared needs and what the operator granted.
pub fn list(state: &AppState, admitted: &Admitted) -> Response<Body> {
    let router = state.plugins.router();
    let tools: Vec<Value> = (router.targets().iter())
        .filter(|t| admitted.client.may_call(&t.id()))
        .map(|t| describe(&router, t))
        .collect();
    json_response(StatusCode::OK, &json!({"object": "list", "data": tools}))
}

/// One tool as the tool API lists it.
fn describe(router: &Router, target: &Target) -> Value {
    let tool = target.tool();
    let policy = target.plugin.sandbox.policy();
    let needs = &tool.spec.capabilities;
    json!({
        "type": "function",
        "function": {
            "name": router.short_name(target),
            "description": tool.spec.description,
            "parameters": tool.input_schema,
        },
        "id": target.id(),
        "plugin": target.plugin.name,
        "tool": tool.spec.name,
        "output_schema": tool.output_schema,
        "annotations": super::mcp::annotations(tool.spec.hints),
        "capabilities": {
            "needs": {
                "directories": needs.directories.iter().map(|d| json!({
                    "path": d.guest_path,
                    "access": if d.access == crate::runtime::bindings::Access::ReadWrite { "rw" } else { "ro" },
                })).collect::<Vec<_>>(),
                "outbound_hosts": needs.outbound_hosts,
                "env": needs.env,
            },
            "granted": policy.describe(),
        },
    })
}

/// Call one tool with the request body as its arguments.
pub async fn call(
    state: &AppState,
    admitted: &Admitted,
    name: &str,
    args: Value,
) -> Result<Response<Body>, Problem> {
    let traced = run_tool(state, admitted, name, &args).await;
    let result = traced.outcome?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "result": result,
            "usage": {
                "fuel": traced.usage.fuel,
                "memory_bytes": traced.usage.memory_bytes,
                "elapsed_us": traced.elapsed.as_micros() as u64,
            },
        }),
    ))
}
