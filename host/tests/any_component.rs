//! Components without our contract (tests/plugins/typed, its own WIT world): their typed
//! exports are tools, every WIT type round-trips through JSON, bad arguments and `err`
//! results are clear errors, resources are refused by name; and a component built against
//! the previous contract revision (tests/plugins/legacy) still loads and is served.

use autoglm_host::app::{Host, Settings};
use autoglm_host::error::ErrorKind;
use autoglm_test_support::host::{
    TestServer, call, config, dir_with, fails, host, http, test_plugin, test_plugins_dir,
};
use serde_json::{Value, json};

async fn typed() -> (tempfile::TempDir, Host) {
    let dir = test_plugins_dir(&["typed"]);
    let host = host(&config(""), dir.path()).await;
    (dir, host)
}

fn tool_names(host: &Host) -> Vec<String> {
    let mut names: Vec<String> = host.invoker.router().targets().iter().map(|t| t.id()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn typed_exports_are_tools_and_resources_are_refused_by_name() {
    let (_dir, host) = typed().await;
    assert_eq!(
        tool_names(&host),
        [
            "typed.add",
            "typed.crash",
            "typed.divide",
            "typed.echo",
            "typed.pick",
            "typed.shapes-area"
        ]
    );
    let plugin = host.invoker.plugins().registry().plugin("typed").cloned().unwrap();
    assert_eq!(plugin.contract, "functions");
    let refused = plugin.refused.join("\n");
    assert!(refused.contains("make-counter") && refused.contains("resource"), "{refused}");
    assert!(refused.contains("[constructor]counter"), "{refused}");

    let add = plugin.tools.iter().find(|t| t.spec.name == "add").unwrap();
    assert_eq!(add.input_schema["required"], json!(["a", "b"]));
    assert_eq!(add.input_schema["properties"]["a"]["maximum"], json!(i32::MAX));
    assert_eq!(add.output_schema.as_ref().unwrap()["type"], "integer");
    assert!(
        add.spec.description.contains("add(a: s32, b: s32) -> s32"),
        "{}",
        add.spec.description
    );
    let divide = plugin.tools.iter().find(|t| t.spec.name == "divide").unwrap();
    assert!(divide.output_schema.as_ref().unwrap()["anyOf"][0]["type"] == "number");
}

#[tokio::test]
async fn every_wit_type_round_trips_through_json() {
    let (_dir, host) = typed().await;
    let everything = json!({
        "flag": true, "tiny": -128, "byte": 255, "short": -32768, "ushort": 65535,
        "int": -2147483648i64, "uint": 4294967295u64,
        "long": "-9223372036854775808", "ulong": "18446744073709551615",
        "single": 0.1, "double": "-Infinity", "letter": "é", "text": "línea\n\"quoted\"",
        "bytes": "AAEC/w==", "numbers": [1, 2, 3], "pair": ["a", 7],
        "color": "green", "perms": ["read", "exec"], "maybe": null,
        "nested": {"some": null}, "outcome": {"err": "bad"},
        "items": [{"number": 1}, {"text": "two"}, {"point": {"x": 2.0, "y": 3.0}}, {"nothing": null}],
    });
    let echoed = call(&host, "typed.echo", &json!({"value": everything})).await.unwrap();
    assert_eq!(echoed, everything);

    // The other side of each choice: small 64-bit integers as numbers, a `some` inside a
    // `some`, an `ok`, an empty list of bytes, NaN, an absent option field.
    let mut other = everything.clone();
    let changes = json!({"long": 42, "ulong": 9007199254740991u64, "double": "NaN",
        "maybe": "here", "nested": {"some": 5}, "outcome": {"ok": 3}, "bytes": "", "perms": []});
    for (key, value) in changes.as_object().unwrap() {
        other[key] = value.clone();
    }
    let echoed = call(&host, "typed.echo", &json!({"value": other})).await.unwrap();
    assert_eq!(echoed, other);

    let mut absent = everything.clone();
    absent.as_object_mut().unwrap().remove("maybe");
    let echoed = call(&host, "typed.echo", &json!({"value": absent})).await.unwrap();
    assert_eq!(echoed["maybe"], Value::Null, "an absent option is none");

    let big = json!({"long": "9007199254740993"});
    let mut wide = everything.clone();
    wide["long"] = big["long"].clone();
    let echoed = call(&host, "typed.echo", &json!({"value": wide})).await.unwrap();
    assert_eq!(echoed["long"], "9007199254740993", "beyond 2^53 stays exact, as a string");
}

#[tokio::test]
async fn bad_arguments_err_results_and_traps_are_clear_errors() {
    let (_dir, host) = typed().await;
    assert_eq!(call(&host, "typed.add", &json!({"a": 40, "b": 2})).await.unwrap(), 42);
    let whole = call(&host, "typed.add", &json!({"a": 40.0, "b": 2})).await;
    assert_eq!(whole.unwrap(), 42, "an integral float is an integer, as in the schema");
    assert_eq!(call(&host, "typed.divide", &json!({"a": 1, "b": 4})).await.unwrap(), 0.25);
    let area = call(&host, "typed.shapes-area", &json!({"shape": {"circle": 1.0}})).await.unwrap();
    assert!((area.as_f64().unwrap() - std::f64::consts::PI).abs() < 1e-12);

    for (tool, args, names) in [
        ("typed.add", json!({"a": 2147483648i64, "b": 0}), "a"),
        ("typed.add", json!({"a": 1}), "b"),
        ("typed.add", json!({"a": 1, "b": 2, "c": 3}), "c"),
        ("typed.shapes-area", json!({"shape": {"triangle": 1.0}}), "shape"),
        ("typed.shapes-area", json!({"shape": {"circle": 1.0, "empty": null}}), "shape"),
    ] {
        let error = fails(&host, tool, args.clone()).await;
        assert_eq!(error.kind, ErrorKind::InvalidArguments, "{tool} {args}: {error}");
        assert!(error.message.contains(names), "{tool} {args}: names {names}: {error}");
    }
    let mut everything =
        call(&host, "typed.echo", &json!({"value": sample_value()})).await.unwrap();
    everything["bytes"] = json!("not base64!");
    let error = fails(&host, "typed.echo", json!({"value": everything})).await;
    assert_eq!(error.kind, ErrorKind::InvalidArguments, "{error}");
    assert!(error.message.contains("value.bytes") && error.message.contains("base64"), "{error}");

    let error = fails(&host, "typed.divide", json!({"a": 1, "b": 0})).await;
    assert_eq!(error.kind, ErrorKind::ToolError, "{error}");
    assert!(error.message.contains("cannot divide 1 by zero"), "the err value is in it: {error}");

    let error = fails(&host, "typed.crash", json!({})).await;
    assert_eq!(error.kind, ErrorKind::Trap, "{error}");
    assert_eq!(call(&host, "typed.add", &json!({"a": 1, "b": 1})).await.unwrap(), 2);
}

fn sample_value() -> Value {
    json!({
        "flag": false, "tiny": 0, "byte": 0, "short": 0, "ushort": 0, "int": 0, "uint": 0,
        "long": 0, "ulong": 0, "single": 0.0, "double": 0.0, "letter": "x", "text": "",
        "bytes": "", "numbers": [], "pair": ["", 0], "color": "red", "perms": [],
        "nested": null, "outcome": {"ok": 0}, "items": [],
    })
}

#[tokio::test]
async fn a_component_with_no_usable_export_fails_with_what_it_exports() {
    let empty = tempfile::tempdir().unwrap();
    let path = empty.path().join("empty.wasm");
    std::fs::write(&path, wasm_encoder::Component::new().finish()).unwrap();
    let dir = dir_with([path, test_plugin("typed")]);
    let (host, errors) = Host::open(&Settings::new(config(""), dir.path())).await.unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].kind, ErrorKind::IncompatiblePlugin);
    let message = errors[0].to_string();
    assert!(
        message.contains("exports: nothing") && message.contains("autoglm:plugin/tools"),
        "{message}"
    );
    assert_eq!(call(&host, "typed.add", &json!({"a": 1, "b": 2})).await.unwrap(), 3);
}

#[tokio::test]
async fn a_component_built_against_the_previous_revision_is_still_served() {
    let dir = test_plugins_dir(&["legacy"]);
    let host = host(&config("[plugins.legacy.config]\ngreeting = \"Hi\"\n"), dir.path()).await;
    let plugin = host.invoker.plugins().registry().plugin("legacy").cloned().unwrap();
    assert_eq!(plugin.contract, "autoglm:plugin/tools@0.1.0");
    assert!(
        plugin.imports.iter().any(|i| i == "autoglm:plugin/host@0.1.0"),
        "{:?}",
        plugin.imports
    );
    assert_eq!(call(&host, "legacy.greet", &json!({"name": "Ada"})).await.unwrap(), "Hi, Ada!");
}

#[tokio::test]
async fn typed_tools_are_served_over_rest_and_mcp() {
    let dir = test_plugins_dir(&["typed"]);
    let server = TestServer::start(config(""), dir.path()).await;
    let listed = http(server.addr, "GET", "/v1/tools", &[], "").await;
    let tools = listed.json()["data"].as_array().unwrap().clone();
    assert!(tools.iter().any(|t| t["id"] == "typed.shapes-area"), "{tools:?}");
    let reply =
        http(server.addr, "POST", "/v1/tools/typed.add/call", &[], r#"{"a":2,"b":3}"#).await;
    assert_eq!((reply.status, reply.json()["result"].clone()), (200, json!(5)), "{}", reply.body);
    let reply =
        http(server.addr, "POST", "/v1/tools/typed__divide/call", &[], r#"{"a":1,"b":0}"#).await;
    assert_eq!((reply.status, reply.json()["error"]["kind"].clone()), (422, json!("tool_error")));

    let mcp = |message: Value| {
        let headers = [
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("mcp-protocol-version", "2026-07-28"),
        ];
        async move { http(server.addr, "POST", "/mcp", &headers, &message.to_string()).await.json() }
    };
    let list = mcp(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}})).await;
    let add = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "typed.add")
        .cloned();
    assert_eq!(add.unwrap()["inputSchema"]["properties"]["b"]["type"], "integer");
    let called = mcp(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "typed.shapes-area", "arguments": {"shape": {"rect": {"x": 2, "y": 4}}}}})).await;
    assert_eq!(called["result"]["structuredContent"], json!({"result": 8.0}), "{called}");
    let bad = mcp(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "typed.add", "arguments": {"a": "two", "b": 1}}}))
    .await;
    assert_eq!(bad["result"]["isError"], true, "{bad}");
    assert!(bad["result"]["content"][0]["text"].as_str().unwrap().contains("invalid_arguments"));

    // A variant is a JSON object but its schema is not `type: object`: both are wrapped.
    let pick = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "typed.pick")
        .cloned();
    assert_eq!(pick.unwrap()["outputSchema"]["required"], json!(["result"]));
    let picked = mcp(json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
        "params": {"name": "typed.pick", "arguments": {"n": 3}}}))
    .await;
    assert_eq!(picked["result"]["structuredContent"], json!({"result": {"number": 3}}), "{picked}");

    let token = mcp(json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
        "params": {"name": "typed.add", "arguments": {"a": 1, "b": 1}, "_meta": {"progressToken": {"no": 1}}}})).await;
    assert_eq!(token["error"]["code"], -32602, "{token}");
}

#[test]
fn plugin_inspect_prints_reflected_tools_and_what_was_refused() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_autoglm"))
        .args(["plugin", "inspect"])
        .arg(test_plugin("typed"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["world"], "functions");
    let echo = summary["tools"].as_array().unwrap().iter().find(|t| t["name"] == "echo").cloned();
    let schema = &echo.expect("echo listed")["input_schema"]["properties"]["value"];
    assert_eq!(schema["properties"]["color"]["enum"], json!(["red", "green", "blue"]));
    assert_eq!(schema["properties"]["bytes"]["contentEncoding"], "base64");
    let refused = summary["refused"].to_string();
    assert!(refused.contains("make-counter"), "{refused}");
}
