//! One description of a tool for every surface that lists tools: `GET /v1/tools`,
//! `autoglm tools --json`, `autoglm plugin inspect` and MCP's `tools/list`.

use serde_json::{Value, json};

use crate::contract::{Access, Capabilities, Hints};
use crate::router::{Router, Target};

/// A loaded tool as clients and operators see it.
pub struct ToolDescription {
    /// The canonical id, `plugin.tool`.
    pub id: String,
    /// The name a model or an OpenAI client calls it by.
    pub name: String,
    /// The plugin offering it.
    pub plugin: String,
    /// The tool's own name.
    pub tool: String,
    /// What it does.
    pub description: String,
    /// The JSON Schema of its arguments.
    pub input_schema: Value,
    /// The JSON Schema of its result, when it promises one.
    pub output_schema: Option<Value>,
    /// Its WIT hints as MCP annotations.
    pub annotations: Value,
    /// What it declares it needs.
    pub needs: Value,
    /// What the operator granted its plugin.
    pub granted: Value,
}

impl ToolDescription {
    /// The description of `target`, named as `router` names it.
    pub fn new(router: &Router, target: &Target) -> Self {
        let tool = target.tool();
        Self {
            id: target.id(),
            name: router.short_name(target),
            plugin: target.plugin.name.clone(),
            tool: tool.spec.name.clone(),
            description: tool.spec.description.clone(),
            input_schema: tool.input_schema.clone(),
            output_schema: tool.output_schema.clone(),
            annotations: annotations(tool.spec.hints),
            needs: needs(&tool.spec.capabilities),
            granted: target.plugin.sandbox.policy().describe(),
        }
    }

    /// The tool API's shape (also the CLI's): an OpenAI function tool with the rest beside it.
    pub fn rest(&self) -> Value {
        json!({
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.input_schema,
            },
            "id": self.id,
            "plugin": self.plugin,
            "tool": self.tool,
            "output_schema": self.output_schema,
            "annotations": self.annotations,
            "capabilities": {"needs": self.needs, "granted": self.granted},
        })
    }

    /// MCP's `tools/list` entry: named by canonical id, outputs as object schemas.
    pub fn mcp(&self) -> Value {
        let mut entry = json!({
            "name": self.id,
            "description": self.description,
            "inputSchema": self.input_schema,
            "annotations": self.annotations,
        });
        if let Some(schema) = &self.output_schema {
            entry["outputSchema"] = object_schema(schema);
        }
        entry
    }
}

/// What a tool declares it needs, with directory access as `ro`/`rw` like the grants.
pub fn needs(capabilities: &Capabilities) -> Value {
    json!({
        "directories": capabilities.directories.iter().map(|d| json!({
            "path": d.guest_path,
            "access": if d.access == Access::ReadWrite { "rw" } else { "ro" },
        })).collect::<Vec<_>>(),
        "outbound_hosts": capabilities.outbound_hosts,
        "env": capabilities.env,
    })
}

/// The WIT hints as MCP tool annotations (every hint explicit: MCP's defaults
/// assume destructive, open-world tools).
pub fn annotations(hints: Hints) -> Value {
    json!({
        "readOnlyHint": hints.contains(Hints::READ_ONLY),
        "destructiveHint": hints.contains(Hints::DESTRUCTIVE),
        "idempotentHint": hints.contains(Hints::IDEMPOTENT),
        "openWorldHint": hints.contains(Hints::OPEN_WORLD),
    })
}

/// A tool's result as MCP's `structuredContent`, wrapped as `{"result": value}` exactly when
/// [`object_schema`] wraps its output schema (a variant's `{"case": v}` is an object whose
/// schema is not `type: object`, so the value alone cannot decide). Without a schema, a
/// value that is not an object is wrapped.
pub fn structured(output_schema: Option<&Value>, value: Value) -> Value {
    let wrap = match output_schema {
        Some(schema) => !is_object_schema(schema),
        None => !value.is_object(),
    };
    match wrap {
        true => json!({ "result": value }),
        false => value,
    }
}

fn is_object_schema(schema: &Value) -> bool {
    schema["type"] == "object"
}

/// MCP wants object schemas for outputs: other results are wrapped as `{"result": value}`.
fn object_schema(schema: &Value) -> Value {
    if is_object_schema(schema) {
        return schema.clone();
    }
    let mut inner = schema.clone();
    if let Some(object) = inner.as_object_mut() {
        object.remove("$schema");
    }
    json!({"type": "object", "properties": {"result": inner}, "required": ["result"]})
}
