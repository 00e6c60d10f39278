//! A plugin built against the previous contract revision, `autoglm:plugin@0.1.0`, with
//! bindings of its own (the SDK follows the current revision): the host must still load it
//! and serve its `host` import.

wit_bindgen::generate!({ world: "plugin", path: "../../../wit/0.1.0" });

use autoglm::plugin::host::{LogLevel, get_config, log};
use exports::autoglm::plugin::tools::{CallError, Capabilities, Guest, Hints, ToolSpec};

struct Legacy;

impl Guest for Legacy {
    fn list_tools() -> Vec<ToolSpec> {
        vec![ToolSpec {
            name: "greet".into(),
            description: "Greet someone, in the operator's configured greeting.".into(),
            input_schema:
                r#"{"type":"object","properties":{"name":{"type":"string"}},"required":["name"]}"#
                    .into(),
            output_schema: None,
            capabilities: Capabilities { directories: vec![], outbound_hosts: vec![], env: vec![] },
            hints: Hints::READ_ONLY,
        }]
    }

    fn call(tool: String, args_json: String) -> Result<String, CallError> {
        if tool != "greet" {
            return Err(CallError::InvalidArguments(format!("no tool {tool}")));
        }
        log(LogLevel::Info, "greeting", &[]);
        let name = args_json.split('"').nth(3).unwrap_or("you").to_string();
        let greeting = get_config("greeting").unwrap_or_else(|| "Hello".into());
        Ok(format!("\"{greeting}, {name}!\""))
    }
}

export!(Legacy);
