//! Property-based tests on stable Rust (proptest), each against the real part: tool names and
//! the router over loaded plugins, REST arguments against a tool's schema and MCP's JSON-RPC
//! over a real server on 127.0.0.1, config files, and upstream URLs.
//!
//! `PROPTEST_CASES` scales every property. Without it (`just test`) the defaults keep this file
//! to about a second and draw the same inputs every run; `just fuzz` runs thousands of new
//! ones. A failing case is shrunk and printed, and proptest keeps its seed in
//! `host/tests/properties.proptest-regressions` so the next run tries it first.
//!

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use autoglm_engine::remote::{RemoteModel, RemoteSettings};
use autoglm_host::app::Host;
use autoglm_host::config::Config;
use autoglm_host::error::ErrorKind;
use autoglm_host::registry::{Registry, is_valid_name};
use autoglm_host::router::Router;
use autoglm_test_support::host::{TestServer, config, host, plugins_dir, sample};
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, RngSeed, TestCaseError};
use serde_json::{Map, Number, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every sample plugin: the tools the properties call and name.
const PLUGINS: &[&str] = &["weather", "calculator", "units", "notes", "text", "http"];

/// Cases for one property: `default` unless `PROPTEST_CASES` is set, then that divided by
/// `cost` (the properties that load plugins or make HTTP requests run fewer). The bounded run
/// (`PROPTEST_CASES` unset) draws the same inputs every time unless `PROPTEST_RNG_SEED` says
/// otherwise; `just fuzz` draws new ones.
fn cases(default: u32, cost: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    let asked = std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse::<u32>().ok());
    config.cases = asked.map_or(default, |n| (n / cost).max(1));
    if asked.is_none() && std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(0x0a07_0617_f022);
    }
    if config.failure_persistence.is_some() {
        // Beside this file: integration tests have no lib.rs for the default to find.
        config.failure_persistence =
            Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions")));
    }
    config
}

/// One runtime for the whole file: the shared host and server live on it between cases.
static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
});

/// A host over every sample plugin, loaded once.
static HOST: LazyLock<(tempfile::TempDir, Host)> = LazyLock::new(|| {
    let dir = plugins_dir(PLUGINS);
    let host = RT.block_on(host(&config(""), dir.path()));
    (dir, host)
});

/// A server over every sample plugin, started once; rate limits out of the way.
static SERVER: LazyLock<(tempfile::TempDir, TestServer)> = LazyLock::new(|| {
    let dir = plugins_dir(PLUGINS);
    let config = config("[server]\nrate_per_minute = 1000000\nconcurrency = 1024\n");
    let server = RT.block_on(TestServer::start(config, dir.path()));
    (dir, server)
});

fn server_addr() -> SocketAddr {
    SERVER.1.addr
}

// ---------------------------------------------------------------------------------------
// Strategies.

/// Arbitrary JSON: every kind of scalar (big integers, finite floats, any Unicode) nested
/// up to 4 deep, at most ~48 nodes.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        any::<String>().prop_map(Value::String),
        "[a-z0-9 +*/().-]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((json_key(), inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Object keys: the ones the host and tools look at, and anything else.
fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "expression",
            "location",
            "name",
            "arguments",
            "id",
            "method",
            "params",
            "jsonrpc",
            "_meta",
            "text",
            "value",
            "from",
            "to",
            "url",
            "$schema",
        ])
        .prop_map(str::to_string),
        any::<String>(),
    ]
}

/// Candidate plugin and tool names: near-valid ones, real ones with one thing wrong, and
/// anything at all.
fn name_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9_-]{0,70}",
        "[a-z0-9_]{1,3}(_{1,3}[a-z0-9-]{1,3}){0,3}_?",
        "[a-zA-Z0-9_.\\- é]{0,12}",
        any::<String>(),
        prop::sample::select(vec![
            "get_weather",
            "evaluate",
            "weather",
            "calculator",
            "-",
            "_",
            "__",
            "a__b",
            "a-",
            "-a",
            "0",
            "é",
            "A",
            "a b",
            "a.b",
        ])
        .prop_map(str::to_string),
    ]
}

/// What `is_valid_name` must accept, written out from the rule in its documentation.
fn valid_by_rule(name: &str) -> bool {
    let len = name.chars().count();
    (1..=64).contains(&len)
        && name.chars().all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'))
        && !name.contains("__")
        && !name.starts_with('_')
        && !name.ends_with('_')
}

// ---------------------------------------------------------------------------------------
// Names and the router.

proptest! {
    #![proptest_config(cases(512, 1))]

    #[test]
    fn a_valid_name_is_1_to_64_of_lowercase_digits_dash_underscore_without_double_underscore(
        name in name_like(),
    ) {
        prop_assert_eq!(is_valid_name(&name), valid_by_rule(&name), "name {:?}", name);
    }

    /// The separator `__` between plugin and tool is never ambiguous for valid names.
    #[test]
    fn plugin_double_underscore_tool_splits_back_into_plugin_and_tool(
        plugin in "[a-z0-9-]{1,3}(_?[a-z0-9-]{1,3}){0,4}",
        tool in "[a-z0-9-]{1,3}(_?[a-z0-9-]{1,3}){0,4}",
    ) {
        prop_assert!(is_valid_name(&plugin) && is_valid_name(&tool), "{plugin} {tool}");
        let joined = format!("{plugin}__{tool}");
        prop_assert_eq!(joined.split_once("__"), Some((plugin.as_str(), tool.as_str())));
    }

    /// Any string given to the router of a real host: a target only for one of the three name
    /// forms of that target, else `unknown_tool` or `ambiguous_tool` with a message.
    #[test]
    fn the_router_resolves_any_string_to_its_tool_or_a_typed_error(
        name in prop_oneof![name_like(), known_name_variant()],
    ) {
        let router = HOST.1.invoker.router();
        check_resolution(&router, &name)?;
    }
}

/// Real names of the sample plugins' tools, whole or with a piece changed.
fn known_name_variant() -> impl Strategy<Value = String> {
    let names: Vec<String> = {
        let router = HOST.1.invoker.router();
        (router.targets().iter())
            .flat_map(|t| {
                let (p, tool) = (t.plugin.name.clone(), t.tool().spec.name.clone());
                [t.id(), router.short_name(t), format!("{p}__{tool}"), p, tool]
            })
            .collect()
    };
    (prop::sample::select(names), 0..8usize, "[a-z._A-Z]{0,3}").prop_map(|(name, how, bit)| {
        match how {
            0 => name,
            1 => format!("{bit}{name}"),
            2 => format!("{name}{bit}"),
            3 => name.to_uppercase(),
            4 => name.replacen('.', "__", 1),
            5 => name.replacen("__", ".", 1),
            6 => format!("{name}.{name}"),
            _ => name.chars().rev().collect(),
        }
    })
}

fn check_resolution(router: &Router, name: &str) -> Result<(), TestCaseError> {
    match router.resolve(name) {
        Ok(target) => {
            let (plugin, tool) = (&target.plugin.name, &target.tool().spec.name);
            let bare_and_unique = name == tool
                && (router.targets().iter()).filter(|t| t.tool().spec.name == *tool).count() == 1;
            prop_assert!(
                name == target.id() || name == format!("{plugin}__{tool}") || bare_and_unique,
                "{name:?} resolved to {}",
                target.id()
            );
        }
        Err(error) => {
            prop_assert!(
                matches!(error.kind, ErrorKind::UnknownTool | ErrorKind::AmbiguousTool),
                "{name:?}: {error:?}"
            );
            prop_assert!(!error.message.is_empty());
            if error.kind == ErrorKind::AmbiguousTool {
                let offering =
                    (router.targets().iter()).filter(|t| t.tool().spec.name == name).count();
                prop_assert!(offering > 1, "{name:?} is ambiguous but offered {offering} times");
            }
        }
    }
    Ok(())
}

/// Every target of `router` is found again by its id, its short name and `plugin__tool`.
fn check_every_name_form(router: &Router) -> Result<(), TestCaseError> {
    for target in router.targets() {
        let id = target.id();
        let short = router.short_name(&target);
        let double = format!("{}__{}", target.plugin.name, target.tool().spec.name);
        for name in [&id, &short, &double] {
            match router.resolve(name) {
                Ok(found) => prop_assert_eq!(found.id(), id.clone(), "resolving {:?}", name),
                Err(e) => prop_assert!(false, "{name:?} (for {id}) does not resolve: {e:?}"),
            }
        }
        prop_assert!(is_valid_name(&target.plugin.name) && is_valid_name(&target.tool().spec.name));
    }
    Ok(())
}

#[test]
fn every_tool_of_the_sample_host_resolves_by_its_id_short_name_and_double_underscore_name() {
    let router = HOST.1.invoker.router();
    assert!(router.targets().len() >= PLUGINS.len());
    check_every_name_form(&router).unwrap();
}

/// The runtime for loading plugin sets, with the compile cache the other tests share.
static RUNTIME: LazyLock<autoglm_host::runtime::Runtime> =
    LazyLock::new(|| autoglm_host::app::runtime(&config("")).unwrap());

proptest! {
    #![proptest_config(cases(8, 100))]

    /// Plugin sets with copies of one component under other file names (so bare tool names
    /// collide and the router must fall back to `plugin__tool`) and invalid file names (which
    /// the loader must refuse by name): every loaded target is found by each of its names.
    #[test]
    fn in_any_set_of_plugins_every_tool_resolves_by_every_name_form(
        files in prop::collection::btree_map(
            prop_oneof!["[a-z0-9_-]{1,10}", "[a-zA-Z0-9_.-]{1,10}"],
            prop::sample::select(PLUGINS.to_vec()),
            1..6,
        ),
        probes in prop::collection::vec(name_like(), 8),
    ) {
        let dir = tempfile::tempdir().unwrap();
        for (stem, component) in &files {
            std::fs::copy(sample(component), dir.path().join(format!("{stem}.wasm"))).unwrap();
        }
        let cfg = config("");
        let (registry, errors) =
            RT.block_on(Registry::load_dir(&RUNTIME, &cfg, dir.path())).unwrap();
        for error in &errors {
            let (plugin, reason) = (&error.plugin, &error.reason);
            prop_assert!(!is_valid_name(plugin), "{plugin} failed: {reason}");
            prop_assert_eq!(error.kind, ErrorKind::IncompatiblePlugin);
            prop_assert!(error.reason.contains("rename the file"), "{}", error.reason);
        }
        let loaded: Vec<&String> = files.keys().filter(|stem| is_valid_name(stem)).collect();
        prop_assert_eq!(registry.plugins().count(), loaded.len());
        let router = Router::new(Arc::new(registry));
        check_every_name_form(&router)?;
        for target in router.targets() {
            let dup = (router.targets().iter())
                .filter(|t| t.tool().spec.name == target.tool().spec.name)
                .count();
            let short = router.short_name(&target);
            prop_assert_eq!(short.contains("__"), dup > 1, "{}: short name {}", target.id(), short);
        }
        for probe in probes {
            check_resolution(&router, &probe)?;
        }
    }
}

// ---------------------------------------------------------------------------------------
// HTTP: a raw client with a deadline, so a dropped connection or a hang is a failure.

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Result<Value, TestCaseError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            TestCaseError::fail(format!(
                "status {} body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            ))
        })
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Send one HTTP/1.1 request and read its response: the whole body, or for an event stream
/// only the first event (streams stay open). Any failure to get an answer is an `Err`.
async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Reply, String> {
    let work = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\
             content-length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        stream.write_all(&request).await.map_err(|e| format!("sending: {e}"))?;
        let mut raw = Vec::new();
        let mut buf = [0u8; 16 << 10];
        let end_of_head = loop {
            if let Some(at) = find(&raw, b"\r\n\r\n") {
                break at;
            }
            let n = stream.read(&mut buf).await.map_err(|e| format!("reading: {e}"))?;
            if n == 0 {
                return Err(format!("connection closed without an answer (got {raw:?})"));
            }
            raw.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&raw[..end_of_head]).into_owned();
        let mut lines = head.lines();
        let status = (lines.next().and_then(|l| l.split(' ').nth(1)))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no status line in {head:?}"))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut body = raw[end_of_head + 4..].to_vec();
        let stream_of_events = (headers.iter())
            .any(|(n, v)| n == "content-type" && v.starts_with("text/event-stream"));
        loop {
            if stream_of_events && find(&body, b"\n\n").is_some() {
                break;
            }
            let n = stream.read(&mut buf).await.map_err(|e| format!("reading the body: {e}"))?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&buf[..n]);
        }
        let chunked = (headers.iter())
            .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
        if chunked && !stream_of_events {
            body = dechunk(&body).ok_or("a malformed chunked body")?;
        }
        Ok(Reply { status, headers, body })
    };
    tokio::time::timeout(Duration::from_secs(30), work)
        .await
        .map_err(|_| "no answer within 30 s".to_string())?
}

fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(raw, b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&raw[..line_end]).ok()?.trim(), 16).ok()?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
}

fn send(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Reply, TestCaseError> {
    let addr = server_addr();
    RT.block_on(exchange(addr, method, path, headers, body)).map_err(TestCaseError::fail)
}

/// A REST error answer: `{"error": {"kind": K, "message": M}}` with `K` the status's kind.
fn check_error_body(reply: &Reply, kinds: &[&str]) -> Result<(), TestCaseError> {
    let body = reply.json()?;
    let kind = body["error"]["kind"].as_str().unwrap_or_default();
    prop_assert!(
        kinds.contains(&kind),
        "status {} kind {kind:?} (expected one of {kinds:?}): {body}",
        reply.status
    );
    let message = body["error"]["message"].as_str().unwrap_or_default();
    prop_assert!(!message.is_empty(), "no message: {body}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// REST arguments against the tool's schema.

/// Arguments for `calculator.evaluate`: anything, objects with an `expression` of any JSON,
/// expressions from the calculator's grammar and from its alphabet, and deep nestings.
fn calculator_args() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => json_value(),
        1 => (json_value(), prop::collection::vec((json_key(), json_value()), 0..3)).prop_map(
            |(expression, extra)| {
                let mut args: Map<String, Value> = extra.into_iter().collect();
                args.insert("expression".into(), expression);
                Value::Object(args)
            }
        ),
        4 => expression().prop_map(|expression| json!({ "expression": expression })),
        1 => "[0-9+*/%^(). ,e-]{0,60}|[a-z0-9(), .+*-]{0,40}"
            .prop_map(|expression| json!({ "expression": expression })),
        1 => (0..3000usize, 0..3000usize, prop::sample::select(vec!["(", "-", "sqrt(", "+", "2^"]))
            .prop_map(|(open, close, prefix)| {
                let expression = format!("{}1{}", prefix.repeat(open), ")".repeat(close));
                json!({ "expression": expression })
            }),
    ]
}

/// Expressions of the calculator's grammar (numbers, constants, the operators, functions,
/// `min`/`max`), with the edges of floating point: huge powers, 0/0, logs of negatives.
fn expression() -> impl Strategy<Value = String> {
    let atom = prop_oneof![
        "[0-9]{1,4}(\\.[0-9]{1,3})?",
        prop::sample::select(vec!["pi", "e", "0", "1e308", "0.0000001", "9007199254740993"])
            .prop_map(str::to_string),
    ];
    let functions = vec![
        "sqrt", "abs", "sin", "cos", "tan", "asin", "acos", "atan", "ln", "log", "log2", "exp",
        "floor", "ceil", "round",
    ];
    atom.prop_recursive(6, 48, 3, move |inner| {
        prop_oneof![
            (
                inner.clone(),
                prop::sample::select(vec!["+", "-", "*", "/", "%", "^", " ^ ", " * "]),
                inner.clone()
            )
                .prop_map(|(a, op, b)| format!("{a}{op}{b}")),
            inner.clone().prop_map(|a| format!("({a})")),
            inner.clone().prop_map(|a| format!("-{a}")),
            (prop::sample::select(functions.clone()), inner.clone())
                .prop_map(|(f, a)| format!("{f}({a})")),
            (prop::sample::select(vec!["min", "max"]), prop::collection::vec(inner, 1..4))
                .prop_map(|(f, args)| format!("{f}({})", args.join(", "))),
        ]
    })
}

/// Statuses a call of a loaded, ungranted sample tool may answer with, and their kinds.
/// Nothing in the 5xx range: a 500 here is a trap or a host bug, not the tool's documented
/// behaviour (invalid arguments or a failure it reports).
const CALL_OUTCOMES: &[(u16, &[&str])] = &[
    (400, &["invalid_arguments", "bad_request"]),
    (403, &["permission_denied"]),
    // `not_found` for an empty name: `/v1/tools//call` is no tool's route.
    (404, &["unknown_tool", "not_found"]),
    (409, &["ambiguous_tool"]),
    (422, &["tool_error"]),
];

fn check_call_reply(reply: &Reply, allowed: &[u16]) -> Result<(), TestCaseError> {
    if reply.status == 200 {
        let body = reply.json()?;
        prop_assert!(body.get("result").is_some() && body["usage"].is_object(), "{body}");
        return Ok(());
    }
    let kinds = (CALL_OUTCOMES.iter()).find(|(status, _)| *status == reply.status).map(|(_, k)| *k);
    let body = String::from_utf8_lossy(&reply.body);
    match kinds {
        Some(kinds) if allowed.contains(&reply.status) => check_error_body(reply, kinds),
        _ => Err(TestCaseError::fail(format!("unexpected status {}: {body}", reply.status))),
    }
}

proptest! {
    #![proptest_config(cases(96, 10))]

    /// Any JSON posted as `calculator.evaluate`'s arguments: a result, 400 `invalid_arguments`
    /// (the schema or the tool refused it), 422 `tool_error` (the maths failed), never 5xx.
    #[test]
    fn any_json_arguments_get_a_result_or_a_typed_client_error(args in calculator_args()) {
        let body = args.to_string();
        let reply = send("POST", "/v1/tools/calculator.evaluate/call", &[], body.as_bytes())?;
        check_call_reply(&reply, &[400, 422])?;
        if !args.is_object() {
            prop_assert_eq!(reply.status, 400);
            check_error_body(&reply, &["invalid_arguments"])?;
        }
    }

    /// Bodies that are not JSON, or JSON cut short: 400 `bad_request` unless they happen to
    /// be JSON after all.
    #[test]
    fn any_bytes_as_arguments_get_bad_request_or_a_call(body in json_bytes()) {
        let reply = send("POST", "/v1/tools/calculator.evaluate/call", &[], &body)?;
        if serde_json::from_slice::<Value>(&body).is_err() {
            prop_assert_eq!(reply.status, 400, "{}", String::from_utf8_lossy(&reply.body));
            check_error_body(&reply, &["bad_request"])?;
        } else {
            check_call_reply(&reply, &[400, 422])?;
        }
    }

    /// Any tool name in the path, percent-encoded: the tool's answer, or 404/409 for names
    /// that do not resolve, never 5xx.
    #[test]
    fn any_tool_name_in_the_path_gets_an_answer_or_a_typed_error(
        name in prop_oneof![name_like(), known_name_variant()],
        args in prop_oneof![Just(json!({})), calculator_args()],
    ) {
        let encoded: String = (name.bytes())
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let path = format!("/v1/tools/{encoded}/call");
        let reply = send("POST", &path, &[], args.to_string().as_bytes())?;
        check_call_reply(&reply, &[400, 403, 404, 409, 422])?;
    }
}

/// What was done to arguments generated from a tool's input schema.
#[derive(Debug, Clone)]
enum Change {
    /// Nothing: the arguments match the schema, as far as [`args_for`] can tell (`exact`).
    None { exact: bool },
    /// A required property was left out.
    DropRequired(String),
    /// A property was given a value of another JSON type.
    WrongType(String),
    /// A property the schema does not list was added; `refused` when the schema says
    /// `additionalProperties: false`.
    Unknown { key: String, refused: bool },
}

/// Every tool of the server with its input schema, read from the loaded plugins.
static TOOLS: LazyLock<Vec<(String, Value, Option<Value>)>> = LazyLock::new(|| {
    let router = SERVER.1.state.invoker.router();
    (router.targets().iter())
        .map(|t| (t.id(), t.tool().input_schema.clone(), t.tool().output_schema.clone()))
        .collect()
});

/// Strings a tool might be given: realistic ones for the sample tools, and anything.
fn some_string() -> BoxedStrategy<String> {
    prop_oneof![
        2 => any::<String>(),
        1 => "[a-zA-Z0-9 ._-]{0,16}",
        2 => prop::sample::select(vec![
            "km", "miles", "mi", "C", "F", "k", "kg", "lb", "gal", "l", "h", "min", "Beijing",
            "Paris", "", "  ", "shopping list", "../x", "a/b", "aGVsbG8=", "===", "not base64!",
            "https://example.com/", "http://127.0.0.1:1/", "file:///etc/passwd", "1+2",
        ])
        .prop_map(str::to_string),
    ]
    .boxed()
}

/// A value for `schema` and whether it surely matches: the keywords `type`, `properties`,
/// `required`, `additionalProperties`, `items` and `enum` are followed; others (`pattern`,
/// `minimum`, ...) make the result a guess.
fn value_for(schema: &Value, depth: u32) -> (BoxedStrategy<Value>, bool) {
    const UNDERSTOOD: &[&str] = &[
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "enum",
        "description",
        "title",
        "$schema",
        "default",
        "examples",
        "format",
    ];
    let exact =
        schema.as_object().is_some_and(|o| o.keys().all(|k| UNDERSTOOD.contains(&k.as_str())))
            && !(schema["type"] == "string" && schema.get("format").is_some());
    if let Some(options) = schema["enum"].as_array().filter(|o| !o.is_empty()) {
        return (prop::sample::select(options.clone()).boxed(), exact);
    }
    let ty = match &schema["type"] {
        Value::String(t) => t.clone(),
        Value::Array(types) => types.first().and_then(Value::as_str).unwrap_or("").to_string(),
        _ => String::new(),
    };
    match ty.as_str() {
        "string" => (some_string().prop_map(Value::String).boxed(), exact),
        "integer" => (any::<i64>().prop_map(Value::from).boxed(), exact),
        "number" => (
            prop_oneof![
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
                (-1000.0..1000.0f64)
                    .prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
            ]
            .boxed(),
            exact,
        ),
        "boolean" => (any::<bool>().prop_map(Value::Bool).boxed(), exact),
        "null" => (Just(Value::Null).boxed(), exact),
        "array" if depth < 3 => {
            let (item, item_exact) = value_for(&schema["items"], depth + 1);
            (prop::collection::vec(item, 0..4).prop_map(Value::Array).boxed(), exact && item_exact)
        }
        "object" if depth < 3 => {
            let (object, object_exact) = object_for(schema, depth);
            (object.prop_map(Value::Object).boxed(), exact && object_exact)
        }
        _ => (json_value().boxed(), false),
    }
}

/// An object for an object `schema`: every required property, some of the optional ones.
fn object_for(schema: &Value, depth: u32) -> (BoxedStrategy<Map<String, Value>>, bool) {
    let required: Vec<&str> =
        schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let mut exact = true;
    let fields: Vec<BoxedStrategy<Option<(String, Value)>>> = (schema["properties"].as_object())
        .into_iter()
        .flatten()
        .map(|(key, property)| {
            let (value, field_exact) = value_for(property, depth + 1);
            exact &= field_exact;
            let key = key.clone();
            match required.contains(&key.as_str()) {
                true => value.prop_map(move |v| Some((key.clone(), v))).boxed(),
                false => prop::option::of(value.prop_map(move |v| (key.clone(), v))).boxed(),
            }
        })
        .collect();
    let strategy = fields.prop_map(|fields| fields.into_iter().flatten().collect()).boxed();
    (strategy, exact)
}

/// A value of another JSON type than `schema` allows.
fn other_type(schema: &Value) -> BoxedStrategy<Value> {
    let allowed: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(types) => types.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let mut candidates: Vec<Value> = Vec::new();
    for (ty, value) in [
        ("string", json!("x")),
        ("boolean", json!(true)),
        ("object", json!({})),
        ("array", json!([1])),
        ("null", Value::Null),
    ] {
        if !allowed.contains(&ty) {
            candidates.push(value);
        }
    }
    if !allowed.contains(&"number") && !allowed.contains(&"integer") {
        candidates.push(json!(1.5));
    }
    prop::sample::select(candidates).boxed()
}

/// A call of one of the server's tools: its id, arguments generated from its input schema,
/// and what was changed in them.
fn tool_call() -> BoxedStrategy<(String, Value, Change)> {
    let cases: Vec<BoxedStrategy<(String, Value, Change)>> = (TOOLS.iter())
        .map(|(id, schema, _)| {
            let (object, exact) = object_for(schema, 0);
            let id = id.clone();
            let keys: Vec<String> = (schema["properties"].as_object())
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default();
            let required: Vec<String> = (schema["required"].as_array().into_iter().flatten())
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect();
            let refuses_others = schema["additionalProperties"] == false;
            let schema = schema.clone();
            (object, 0..4u8, any::<prop::sample::Index>(), "[a-z]{1,8}", any::<u64>())
                .prop_map(move |(mut args, how, pick, extra, seed)| {
                    let change = match how {
                        1 if !required.is_empty() => {
                            let key = pick.get(&required).clone();
                            args.remove(&key);
                            Change::DropRequired(key)
                        }
                        2 if !keys.is_empty() => {
                            let key = pick.get(&keys).clone();
                            let wrong = other_type(&schema["properties"][&key]);
                            args.insert(key.clone(), pick_value(&wrong, seed));
                            Change::WrongType(key)
                        }
                        3 if !keys.contains(&extra) => {
                            args.insert(extra.clone(), json!(seed));
                            Change::Unknown { key: extra, refused: refuses_others }
                        }
                        _ => Change::None { exact },
                    };
                    (id.clone(), Value::Object(args), change)
                })
                .boxed()
        })
        .collect();
    prop::strategy::Union::new(cases).boxed()
}

/// One value of a `select` strategy, chosen by `seed`.
fn pick_value(strategy: &BoxedStrategy<Value>, seed: u64) -> Value {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
    let mut runner = TestRunner::new_with_rng(ProptestConfig::default(), rng);
    strategy.new_tree(&mut runner).expect("a value").current()
}

proptest! {
    #![proptest_config(cases(96, 10))]

    /// Arguments generated from each tool's own input schema, some with one thing changed:
    /// matching ones are never refused by the schema (and a result matches the tool's output
    /// schema); a missing, mistyped or refused extra property is a 400 naming it; never 5xx.
    #[test]
    fn arguments_from_each_tools_schema_are_judged_by_that_schema(
        (id, args, change) in tool_call(),
    ) {
        let path = format!("/v1/tools/{id}/call");
        let reply = send("POST", &path, &[], args.to_string().as_bytes())?;
        check_call_reply(&reply, &[400, 403, 422])?;
        let body = reply.json()?;
        let message = body["error"]["message"].as_str().unwrap_or_default();
        let context = format!("{id} {args} ({change:?}): {} {body}", reply.status);
        match &change {
            Change::None { exact } => {
                if *exact {
                    prop_assert!(!message.contains("do not match the schema"), "{context}");
                }
                if reply.status == 200
                    && let Some((_, _, Some(output))) = TOOLS.iter().find(|(t, _, _)| *t == id)
                {
                    let validator = jsonschema::validator_for(output).expect("a valid schema");
                    let problems: Vec<String> =
                        validator.iter_errors(&body["result"]).map(|e| e.to_string()).collect();
                    prop_assert!(
                        problems.is_empty(),
                        "result breaks the output schema: {problems:?}; {context}"
                    );
                }
            }
            Change::DropRequired(key)
            | Change::WrongType(key)
            | Change::Unknown { key, refused: true } => {
                prop_assert_eq!(reply.status, 400, "{}", context);
                prop_assert_eq!(&body["error"]["kind"], "invalid_arguments", "{}", context);
                prop_assert!(
                    message.contains(key.as_str()),
                    "the message names `{key}`: {context}"
                );
            }
            Change::Unknown { refused: false, .. } => {}
        }
    }
}

#[test]
fn an_unexpected_property_of_a_tool_without_arguments_is_named() {
    let host = &HOST.1;
    let error = RT.block_on(autoglm_test_support::host::fails(host, "notes.list", json!({"i": 0})));
    assert_eq!(error.kind, ErrorKind::InvalidArguments);
    assert!(error.message.contains("`i`") || error.message.contains("'i'"), "{}", error.message);
}

/// Bytes for a request body: anything, and serialised JSON cut short or with a byte changed.
fn json_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        (json_value(), any::<prop::sample::Index>(), any::<u8>(), any::<bool>()).prop_map(
            |(value, at, byte, cut)| {
                let mut bytes = value.to_string().into_bytes();
                if !bytes.is_empty() {
                    let i = at.index(bytes.len());
                    match cut {
                        true => bytes.truncate(i),
                        false => bytes[i] = byte,
                    }
                }
                bytes
            }
        ),
    ]
}

// ---------------------------------------------------------------------------------------
// MCP's JSON-RPC on POST /mcp.

/// A JSON-RPC message: a real or random method, any id (or none: a notification), params
/// that are anything or a `tools/call` of a real tool with any arguments; sometimes the
/// stateless revision's `_meta`, sometimes not `jsonrpc: "2.0"`.
fn jsonrpc_message() -> impl Strategy<Value = Value> {
    let method = prop_oneof![
        8 => prop::sample::select(vec![
            "initialize",
            "ping",
            "tools/list",
            "tools/call",
            "tools/call",
            "tools/call",
            "server/discover",
            "subscriptions/listen",
            "notifications/initialized",
            "notifications/cancelled",
            "resources/list",
            "",
        ])
        .prop_map(|m| json!(m)),
        1 => any::<String>().prop_map(Value::String),
        1 => json_value(),
    ];
    let id = prop_oneof![
        3 => any::<i64>().prop_map(|i| Some(json!(i))),
        2 => "[a-z0-9-]{0,12}".prop_map(|s| Some(json!(s))),
        1 => Just(None),
        1 => Just(Some(Value::Null)),
        1 => json_value().prop_map(Some),
    ];
    let params = prop_oneof![
        1 => Just(None),
        1 => json_value().prop_map(Some),
        2 => (tool_name(), json_value())
            .prop_map(|(name, arguments)| Some(json!({"name": name, "arguments": arguments}))),
        4 => tool_call()
            .prop_map(|(id, arguments, _)| Some(json!({"name": id, "arguments": arguments}))),
        1 => json_value().prop_map(|request| Some(json!({"requestId": request}))),
    ];
    let version = prop_oneof![
        Just(None),
        Just(Some(json!("2.0"))),
        Just(Some(json!("2.0"))),
        json_value().prop_map(Some),
    ];
    (method, id, params, version, any::<bool>()).prop_map(
        |(method, id, params, version, stateless)| {
            let mut message = Map::new();
            if let Some(version) = version {
                message.insert("jsonrpc".into(), version);
            }
            message.insert("method".into(), method);
            if let Some(id) = id {
                message.insert("id".into(), id);
            }
            let mut params = params;
            if stateless {
                let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28"});
                match &mut params {
                    Some(Value::Object(p)) => {
                        p.insert("_meta".into(), meta);
                    }
                    _ => params = Some(json!({"_meta": meta})),
                }
            }
            if let Some(params) = params {
                message.insert("params".into(), params);
            }
            Value::Object(message)
        },
    )
}

/// Names of the server's tools in their three forms, and near misses.
fn tool_name() -> impl Strategy<Value = String> {
    prop_oneof![3 => known_name_variant(), 1 => name_like()]
}

/// The `mcp-protocol-version` header: absent, each served revision, and others.
fn protocol_header() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        3 => Just(None),
        1 => prop::sample::select(vec!["2025-06-18", "2025-11-25", "2026-07-28"])
            .prop_map(|v| Some(v.to_string())),
        1 => "[A-Za-z0-9._-]{1,16}".prop_map(Some),
    ]
}

/// A JSON-RPC answer to `request` (None when the body was not JSON): HTTP 200 with one
/// object carrying `jsonrpc: "2.0"`, the request's id and a result or an error with an
/// integer code; 202 with no body for a notification; the first event of a stream for
/// `subscriptions/listen`.
fn check_jsonrpc(reply: &Reply, request: Option<&Value>) -> Result<(), TestCaseError> {
    let object = request.and_then(Value::as_object);
    let text = String::from_utf8_lossy(&reply.body);
    if reply.status == 202 {
        prop_assert!(object.is_some_and(|o| !o.contains_key("id")), "202 for a request: {text}");
        prop_assert!(reply.body.is_empty(), "202 with a body: {text}");
        return Ok(());
    }
    prop_assert_eq!(reply.status, 200, "{}", text);
    if reply.header("content-type").is_some_and(|t| t.starts_with("text/event-stream")) {
        let method = object.and_then(|o| o.get("method")).and_then(Value::as_str);
        prop_assert_eq!(method, Some("subscriptions/listen"), "a stream for {}", text);
        let data = (text.lines().find_map(|l| l.strip_prefix("data:")))
            .ok_or_else(|| TestCaseError::fail(format!("a stream without data: {text}")))?;
        let event: Value = serde_json::from_str(data.trim())
            .map_err(|e| TestCaseError::fail(format!("event is not JSON ({e}): {data}")))?;
        prop_assert_eq!(&event["jsonrpc"], "2.0", "{}", event);
        prop_assert_eq!(&event["method"], "notifications/subscriptions/acknowledged");
        return Ok(());
    }
    let answer = reply.json()?;
    prop_assert!(answer.is_object(), "not one object: {answer}");
    prop_assert_eq!(&answer["jsonrpc"], "2.0", "{}", answer);
    let (result, error) = (answer.get("result"), answer.get("error"));
    prop_assert!(result.is_some() != error.is_some(), "result xor error: {answer}");
    if let Some(error) = error {
        prop_assert!(error["code"].is_i64(), "integer code: {answer}");
        prop_assert!(error["message"].is_string(), "message: {answer}");
    } else {
        prop_assert!(answer["result"].is_object(), "result is an object: {answer}");
    }
    if let Some(id) = object.and_then(|o| o.get("id")) {
        prop_assert_eq!(&answer["id"], id, "the answer carries the request's id");
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(128, 10))]

    /// Structured JSON-RPC messages, with or without a protocol-version header.
    #[test]
    fn any_jsonrpc_message_gets_a_jsonrpc_answer(
        message in jsonrpc_message(),
        version in protocol_header(),
    ) {
        let headers: Vec<(&str, &str)> =
            version.iter().map(|v| ("mcp-protocol-version", v.as_str())).collect();
        let reply = send("POST", "/mcp", &headers, message.to_string().as_bytes())?;
        check_jsonrpc(&reply, Some(&message))?;
        if reply.status == 200 && message["method"] == "initialize" && message.get("id").is_some() {
            prop_assert!(reply.header("mcp-session-id").is_some(), "initialize opens a session");
        }
    }

    /// Arbitrary JSON values as the whole message.
    #[test]
    fn any_json_value_gets_a_jsonrpc_answer(message in json_value()) {
        let reply = send("POST", "/mcp", &[], message.to_string().as_bytes())?;
        check_jsonrpc(&reply, Some(&message))?;
    }

    /// Arbitrary bytes: parse errors (-32700) unless they happen to be JSON.
    #[test]
    fn any_bytes_get_a_jsonrpc_answer(body in json_bytes()) {
        let reply = send("POST", "/mcp", &[], &body)?;
        let request: Option<Value> = serde_json::from_slice(&body).ok();
        check_jsonrpc(&reply, request.as_ref())?;
        if request.is_none() {
            prop_assert_eq!(&reply.json()?["error"]["code"], -32700);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Config files.

/// A TOML value as the generator writes it.
#[derive(Debug, Clone)]
enum Tv {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Arr(Vec<Tv>),
}

impl Tv {
    fn render(&self) -> String {
        match self {
            Tv::Str(s) => quote(s),
            Tv::Int(i) => i.to_string(),
            Tv::Float(f) => format!("{f:?}"),
            Tv::Bool(b) => b.to_string(),
            Tv::Arr(items) => {
                format!("[{}]", items.iter().map(Tv::render).collect::<Vec<_>>().join(", "))
            }
        }
    }
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A key, bare when TOML allows it.
fn key(k: &str) -> String {
    let bare =
        !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare { k.to_string() } else { quote(k) }
}

/// What a key holds, for generating right and wrong values.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// An unsigned integer, valid from `.0` to `.1`; the host refuses values past a bound
    /// below `i64::MAX` as out of range.
    Int(i64, i64),
    U32,
    Bool,
    Str,
    StrList,
    HostList,
    Guest,
    Mode,
}

const KINDS: [Kind; 8] = [
    Kind::Int(0, i64::MAX),
    Kind::U32,
    Kind::Bool,
    Kind::Str,
    Kind::StrList,
    Kind::HostList,
    Kind::Guest,
    Kind::Mode,
];

/// A day in milliseconds, the longest timeout the host accepts.
const DAY_MS: i64 = 86_400_000;

const LIMIT_KEYS: &[(&str, Kind)] = &[
    ("deadline_ms", Kind::Int(1, 3_600_000)),
    ("fuel", Kind::Int(1, i64::MAX)),
    ("memory_mib", Kind::Int(1, 512)),
    ("result_bytes", Kind::Int(1, 1 << 20)),
    ("log_bytes", Kind::Int(0, 1 << 20)),
    ("http_body_bytes", Kind::Int(1, 1 << 24)),
    ("concurrency", Kind::Int(1, 1000)),
    ("queue", Kind::Int(0, 10_000)),
    ("resources", Kind::Int(1, 100_000)),
    ("interpreted", Kind::Bool),
];
const ROOT_KEYS: &[(&str, Kind)] = &[("plugins_dir", Kind::Str), ("cache_dir", Kind::Str)];
const WASM_KEYS: &[(&str, Kind)] = &[("pooling", Kind::Bool), ("pool_instances", Kind::U32)];
const SERVER_KEYS: &[(&str, Kind)] = &[
    ("addr", Kind::Str),
    ("body_limit_bytes", Kind::Int(1, 1 << 20)),
    ("request_timeout_ms", Kind::Int(1, DAY_MS)),
    ("allowed_origins", Kind::StrList),
    ("rate_per_minute", Kind::U32),
    ("concurrency", Kind::Int(1, 1000)),
    ("shutdown_grace_ms", Kind::Int(0, DAY_MS)),
    ("body_read_timeout_ms", Kind::Int(1, DAY_MS)),
    ("max_connections", Kind::Int(1, 100_000)),
    ("idle_timeout_ms", Kind::Int(1, DAY_MS)),
    ("sessions_per_key", Kind::Int(1, 1000)),
    ("session_ttl_ms", Kind::Int(1, DAY_MS)),
    ("streams_per_key", Kind::Int(1, 1000)),
    ("login_failures_per_minute", Kind::U32),
];
const KEY_KEYS: &[(&str, Kind)] = &[
    ("name", Kind::Str),
    ("token", Kind::Str),
    ("token_env", Kind::Str),
    ("tools", Kind::StrList),
    ("rate_per_minute", Kind::U32),
    ("concurrency", Kind::Int(0, 1000)),
];
const MODEL_KEYS: &[(&str, Kind)] =
    &[("path", Kind::Str), ("device", Kind::Str), ("max_steps", Kind::Int(0, 1000))];
const BATCHING_KEYS: &[(&str, Kind)] = &[
    ("max_batch", Kind::Int(0, 1000)),
    ("max_wait_ms", Kind::Int(0, 1000)),
    ("queue", Kind::Int(0, 1000)),
];
const REMOTE_KEYS: &[(&str, Kind)] = &[
    ("url", Kind::Str),
    ("model", Kind::Str),
    ("api_key_env", Kind::Str),
    ("timeout_secs", Kind::Int(0, i64::MAX)),
];
const TELEMETRY_KEYS: &[(&str, Kind)] =
    &[("otlp_endpoint", Kind::Str), ("service_name", Kind::Str)];
const GRANT_KEYS: &[(&str, Kind)] = &[
    ("allow_hosts", Kind::HostList),
    ("allow_private_addresses", Kind::Bool),
    ("env", Kind::StrList),
];
const DIR_KEYS: &[(&str, Kind)] = &[
    ("host", Kind::Str),
    ("guest", Kind::Guest),
    ("mode", Kind::Mode),
    ("quota_mib", Kind::Int(0, i64::MAX)),
];

impl Kind {
    /// Kinds that take the same wrong values.
    fn class(self) -> Kind {
        match self {
            Kind::Int(..) => Kind::Int(0, i64::MAX),
            other => other,
        }
    }
}

/// One `[table]` or `[[table]]` of a generated file.
#[derive(Debug, Clone)]
struct Table {
    path: Vec<String>,
    array: bool,
    /// Whether the table refuses keys it does not know (all but `plugins.X.config`).
    strict: bool,
    known: &'static [(&'static str, Kind)],
    entries: Vec<(String, Tv)>,
}

impl Table {
    fn header(&self) -> Option<String> {
        let path = self.path.iter().map(|p| key(p)).collect::<Vec<_>>().join(".");
        match (self.path.is_empty(), self.array) {
            (true, _) => None,
            (false, false) => Some(format!("[{path}]")),
            (false, true) => Some(format!("[[{path}]]")),
        }
    }
}

fn render(tables: &[Table]) -> String {
    let mut text = String::new();
    for table in tables {
        if let Some(header) = table.header() {
            text.push_str(&header);
            text.push('\n');
        }
        for (k, v) in &table.entries {
            text.push_str(&format!("{} = {}\n", key(k), v.render()));
        }
    }
    text
}

fn good_value(kind: Kind) -> BoxedStrategy<Tv> {
    match kind {
        Kind::Int(low, high) => (low..=high).prop_map(Tv::Int).boxed(),
        Kind::U32 => (0..=i64::from(u32::MAX)).prop_map(Tv::Int).boxed(),
        Kind::Bool => any::<bool>().prop_map(Tv::Bool).boxed(),
        Kind::Str => any::<String>().prop_map(Tv::Str).boxed(),
        Kind::StrList => {
            prop::collection::vec(any::<String>().prop_map(Tv::Str), 0..3).prop_map(Tv::Arr).boxed()
        }
        Kind::HostList => prop::collection::vec("[a-z0-9.-]{1,12}(:[0-9]{1,5})?", 0..3)
            .prop_map(|hosts| Tv::Arr(hosts.into_iter().map(Tv::Str).collect()))
            .boxed(),
        Kind::Guest => "(/[a-z0-9._-]{0,8}){1,3}"
            .prop_filter("no ..", |g| !g.split('/').any(|c| c == ".."))
            .prop_map(Tv::Str)
            .boxed(),
        Kind::Mode => {
            prop::sample::select(vec!["ro", "rw"]).prop_map(|m| Tv::Str(m.into())).boxed()
        }
    }
}

/// A value `kind` does not accept.
fn bad_value(kind: Kind) -> BoxedStrategy<Tv> {
    let string = any::<String>().prop_map(Tv::Str);
    let float = any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Tv::Float);
    match kind {
        Kind::Int(..) => prop_oneof![string, float, (i64::MIN..0).prop_map(Tv::Int)].boxed(),
        Kind::U32 => {
            prop_oneof![string, (i64::from(u32::MAX) + 1..=i64::MAX).prop_map(Tv::Int)].boxed()
        }
        Kind::Bool => prop_oneof![string, any::<i64>().prop_map(Tv::Int)].boxed(),
        Kind::Str | Kind::Guest => prop_oneof![
            any::<i64>().prop_map(Tv::Int),
            any::<bool>().prop_map(Tv::Bool),
            Just(Tv::Arr(vec![]))
        ]
        .boxed(),
        Kind::StrList | Kind::HostList => prop_oneof![
            string,
            prop::collection::vec(any::<i64>().prop_map(Tv::Int), 1..3).prop_map(Tv::Arr)
        ]
        .boxed(),
        Kind::Mode => "[a-z]{0,4}"
            .prop_filter("not a mode", |m| m != "ro" && m != "rw")
            .prop_map(Tv::Str)
            .boxed(),
    }
}

/// Some of `keys`, each with a good value.
fn entries(keys: &'static [(&'static str, Kind)]) -> BoxedStrategy<Vec<(String, Tv)>> {
    let each: Vec<BoxedStrategy<Option<(String, Tv)>>> = (keys.iter())
        .map(|&(k, kind)| {
            prop::option::of(good_value(kind).prop_map(move |v| (k.to_string(), v))).boxed()
        })
        .collect();
    each.prop_map(|picked| picked.into_iter().flatten().collect()).boxed()
}

fn table(
    path: &[&str],
    array: bool,
    known: &'static [(&'static str, Kind)],
) -> BoxedStrategy<Table> {
    let path: Vec<String> = path.iter().map(|p| p.to_string()).collect();
    entries(known)
        .prop_map(move |entries| Table { path: path.clone(), array, strict: true, known, entries })
        .boxed()
}

/// The tables of one plugin's grants: its section, limits, config and directories.
fn plugin_tables(name: String) -> BoxedStrategy<Vec<Table>> {
    let n = name.clone();
    let grants = entries(GRANT_KEYS).prop_map(move |entries| Table {
        path: vec!["plugins".into(), n.clone()],
        array: false,
        strict: true,
        known: GRANT_KEYS,
        entries,
    });
    let n = name.clone();
    let limits = prop::option::of(entries(LIMIT_KEYS).prop_map(move |entries| Table {
        path: vec!["plugins".into(), n.clone(), "limits".into()],
        array: false,
        strict: true,
        known: LIMIT_KEYS,
        entries,
    }));
    let n = name.clone();
    let values = prop::option::of(
        prop::collection::btree_map(any::<String>(), any::<String>(), 0..3).prop_map(move |kv| {
            Table {
                path: vec!["plugins".into(), n.clone(), "config".into()],
                array: false,
                strict: false,
                known: &[],
                entries: kv.into_iter().map(|(k, v)| (k, Tv::Str(v))).collect(),
            }
        }),
    );
    let n = name;
    let dir =
        (any::<String>(), good_value(Kind::Guest), any::<bool>(), prop::option::of(0..=i64::MAX))
            .prop_map(move |(host, guest, rw, quota)| {
                let mut entries =
                    vec![("host".to_string(), Tv::Str(host)), ("guest".to_string(), guest)];
                if rw {
                    entries.push(("mode".into(), Tv::Str("rw".into())));
                    if let Some(quota) = quota {
                        entries.push(("quota_mib".into(), Tv::Int(quota)));
                    }
                }
                Table {
                    path: vec!["plugins".into(), n.clone(), "dirs".into()],
                    array: true,
                    strict: true,
                    known: DIR_KEYS,
                    entries,
                }
            });
    let dirs = prop::collection::vec(dir, 0..3);
    (grants, limits, values, dirs)
        .prop_map(|(grants, limits, values, dirs)| {
            let mut tables = vec![grants];
            tables.extend(limits);
            tables.extend(values);
            tables.extend(dirs);
            tables
        })
        .boxed()
}

/// A valid config file, as tables; also the plugin names it grants.
fn valid_config() -> impl Strategy<Value = (Vec<Table>, Vec<String>)> {
    let sections = (
        table(&[], false, ROOT_KEYS),
        prop::option::of(table(&["wasm"], false, WASM_KEYS)),
        prop::option::of(table(&["limits"], false, LIMIT_KEYS)),
        prop::option::of(table(&["server"], false, SERVER_KEYS)),
        prop::collection::vec(
            (any::<String>(), entries(KEY_KEYS)).prop_map(|(name, mut entries)| {
                entries.retain(|(k, _)| k != "name");
                entries.insert(0, ("name".into(), Tv::Str(name)));
                Table {
                    path: vec!["server".into(), "keys".into()],
                    array: true,
                    strict: true,
                    known: KEY_KEYS,
                    entries,
                }
            }),
            0..2,
        ),
        prop::option::of(table(&["model"], false, MODEL_KEYS)),
        prop::option::of(table(&["model", "batching"], false, BATCHING_KEYS)),
        prop::option::of((any::<String>(), entries(REMOTE_KEYS)).prop_map(|(url, mut entries)| {
            entries.retain(|(k, _)| k != "url");
            entries.insert(0, ("url".into(), Tv::Str(url)));
            Table {
                path: vec!["model".into(), "remote".into()],
                array: false,
                strict: true,
                known: REMOTE_KEYS,
                entries,
            }
        })),
        prop::option::of(table(&["telemetry"], false, TELEMETRY_KEYS)),
    );
    let names = prop::collection::btree_set(prop_oneof!["[a-z0-9_-]{1,10}", any::<String>()], 0..3);
    let plugins = names.prop_flat_map(|names| {
        let names: Vec<String> = names.into_iter().collect();
        let tables: Vec<_> = names.iter().cloned().map(plugin_tables).collect();
        (tables, Just(names))
    });
    (sections, plugins).prop_map(|(s, (plugin_tables, names))| {
        let (root, wasm, limits, server, keys, model, batching, remote, telemetry) = s;
        let mut tables = vec![root];
        tables.extend(wasm);
        tables.extend(limits);
        // `[server]` before `[[server.keys]]` so the array does not reopen it.
        tables.extend(server);
        tables.extend(keys);
        tables.extend(model);
        tables.extend(batching);
        tables.extend(remote);
        tables.extend(telemetry);
        tables.extend(plugin_tables.into_iter().flatten());
        (tables, names)
    })
}

/// One thing wrong with a valid config, and a text the error must contain.
#[derive(Debug, Clone)]
enum Fault {
    /// A key the table does not know.
    UnknownKey { table: usize, key: String },
    /// A known key with a value of the wrong type or range (one for each of [`KINDS`]).
    WrongValue { table: usize, entry: usize, values: Vec<Tv> },
    /// A required key left out.
    Missing { table: usize },
    /// A bounded number set far past its bound.
    OutOfRange { entry: usize },
    /// A grant that validation refuses: (kind of refusal, value).
    BadGrant { plugin: usize, what: u8, value: String },
}

fn fault() -> impl Strategy<Value = Fault> {
    let unknown = (any::<usize>(), "[a-z][a-z_]{2,12}")
        .prop_map(|(table, key)| Fault::UnknownKey { table, key });
    let bad: Vec<BoxedStrategy<Tv>> = KINDS.iter().map(|&k| bad_value(k)).collect();
    let wrong = (any::<usize>(), any::<usize>(), bad)
        .prop_map(|(table, entry, values)| Fault::WrongValue { table, entry, values });
    let missing = any::<usize>().prop_map(|table| Fault::Missing { table });
    let range = any::<usize>().prop_map(|entry| Fault::OutOfRange { entry });
    let grant = (any::<usize>(), 0..4u8, "[a-z./@ ]{0,8}")
        .prop_map(|(plugin, what, value)| Fault::BadGrant { plugin, what, value });
    prop_oneof![unknown, wrong, missing, range, grant]
}

/// Apply `fault` to `tables`; the text the error must then name, or None when the fault
/// does not apply to this file (no such table, ...).
fn apply(tables: &mut Vec<Table>, names: &[String], fault: &Fault) -> Option<String> {
    let strict: Vec<usize> = (0..tables.len()).filter(|&i| tables[i].strict).collect();
    match fault {
        Fault::UnknownKey { table, key } => {
            let t = &mut tables[strict[table % strict.len()]];
            let taken = |k: &str| {
                t.known.iter().any(|(known, _)| *known == k)
                    || (t.path.is_empty()
                        && ["wasm", "engine", "limits", "plugins", "server", "model", "telemetry"]
                            .contains(&k))
                    || (t.path == ["model"] && ["batching", "remote"].contains(&k))
                    || (t.path == ["server"] && k == "keys")
                    || (t.path.len() == 2
                        && t.path[0] == "plugins"
                        && ["dirs", "config", "limits"].contains(&k))
            };
            if taken(key) {
                return None;
            }
            t.entries.push((key.clone(), Tv::Int(1)));
            Some(format!("`{key}`"))
        }
        Fault::WrongValue { table, entry, values } => {
            let candidates: Vec<usize> =
                strict.iter().copied().filter(|&i| !tables[i].entries.is_empty()).collect();
            let t = &mut tables[*candidates.get(table % candidates.len().max(1))?];
            let e = entry % t.entries.len();
            let name = t.entries[e].0.clone();
            let kind = t.known.iter().find(|(k, _)| *k == name)?.1;
            let value = values[KINDS.iter().position(|k| k.class() == kind.class())?].clone();
            if let (Kind::Mode, Tv::Str(_)) = (kind, &value) {
                // An unknown mode is named by its value, not its key.
                t.entries[e].1 = value.clone();
                return Some(value.render().trim_matches('"').to_string());
            }
            t.entries[e].1 = value;
            Some(name)
        }
        Fault::OutOfRange { entry } => {
            let bounded: Vec<(usize, usize)> = (0..tables.len())
                .flat_map(|i| (0..tables[i].entries.len()).map(move |e| (i, e)))
                .filter(|&(i, e)| {
                    let name = &tables[i].entries[e].0;
                    let kind = tables[i].known.iter().find(|(k, _)| k == name).map(|(_, k)| *k);
                    // Keys the host checks (`[limits]`, `[server]`, plugins' limits).
                    let checked = tables[i].path == ["limits"]
                        || tables[i].path == ["server"]
                        || tables[i].path.last().is_some_and(|l| l == "limits");
                    checked && matches!(kind, Some(Kind::Int(_, high)) if high < i64::MAX)
                })
                .collect();
            let &(i, e) = bounded.get(entry % bounded.len().max(1))?;
            tables[i].entries[e].1 = Tv::Int(i64::MAX);
            Some(tables[i].entries[e].0.clone())
        }
        Fault::Missing { table } => {
            // The required keys: a key's `name`, the remote's `url`, a directory's `host`
            // and `guest`.
            let required: Vec<(usize, usize)> = (0..tables.len())
                .flat_map(|i| (0..tables[i].entries.len()).map(move |e| (i, e)))
                .filter(|&(i, e)| {
                    let (t, k) = (&tables[i], tables[i].entries[e].0.as_str());
                    (t.path == ["server", "keys"] && k == "name")
                        || (t.path == ["model", "remote"] && k == "url")
                        || (t.path.last().is_some_and(|l| l == "dirs")
                            && t.array
                            && (k == "host" || k == "guest"))
                })
                .collect();
            let &(i, e) = required.get(table % required.len().max(1))?;
            let (name, _) = tables[i].entries.remove(e);
            Some(format!("`{name}`"))
        }
        Fault::BadGrant { plugin, what, value } => {
            let name = names.get(plugin % names.len().max(1))?.clone();
            let grants =
                tables.iter_mut().find(|t| t.path == ["plugins", name.as_str()] && !t.array)?;
            match what {
                0 => {
                    grants.entries.retain(|(k, _)| k != "allow_hosts");
                    let host = format!("{value}/");
                    grants.entries.push(("allow_hosts".into(), Tv::Arr(vec![Tv::Str(host)])));
                }
                1 => {
                    grants.entries.retain(|(k, _)| k != "allow_hosts");
                    grants
                        .entries
                        .push(("allow_hosts".into(), Tv::Arr(vec![Tv::Str(String::new())])));
                }
                what => {
                    let guest = match what {
                        2 => format!("relative{value}"),
                        _ => format!("/a/../{value}"),
                    };
                    tables.push(Table {
                        path: vec!["plugins".into(), name.clone(), "dirs".into()],
                        array: true,
                        strict: true,
                        known: DIR_KEYS,
                        entries: vec![
                            ("host".into(), Tv::Str("x".into())),
                            ("guest".into(), Tv::Str(guest)),
                        ],
                    });
                }
            }
            Some(format!("[plugins.{name}]"))
        }
    }
}

/// Lines that look like TOML: keys of the real schema and others, values well and badly
/// written, table headers, and noise.
fn tomlish() -> impl Strategy<Value = String> {
    let known: Vec<String> = [
        ROOT_KEYS,
        WASM_KEYS,
        LIMIT_KEYS,
        SERVER_KEYS,
        KEY_KEYS,
        MODEL_KEYS,
        REMOTE_KEYS,
        GRANT_KEYS,
        DIR_KEYS,
    ]
    .iter()
    .flat_map(|keys| keys.iter().map(|(k, _)| *k))
    .chain([
        "wasm",
        "engine",
        "limits",
        "plugins",
        "server",
        "model",
        "telemetry",
        "keys",
        "dirs",
        "config",
        "batching",
        "remote",
        "notes",
        "http",
    ])
    .map(str::to_string)
    .collect();
    let segment = prop_oneof![
        3 => prop::sample::select(known),
        1 => "[a-z_]{1,8}",
        1 => any::<String>().prop_map(|s| quote(&s)),
    ];
    let path = prop::collection::vec(segment, 1..4).prop_map(|p| p.join("."));
    let value = prop_oneof![
        any::<i64>().prop_map(|i| i.to_string()),
        Just("99999999999999999999999".to_string()),
        any::<f64>().prop_map(|f| f.to_string()),
        prop::sample::select(vec![
            "inf",
            "-inf",
            "nan",
            "true",
            "false",
            "0x1F",
            "0o17",
            "1_000",
            "1979-05-27T07:32:00Z",
            "07:32:00",
            "\"\"\"a\nb\"\"\"",
            "'''x'''",
            "\"\\q\"",
            "\"unterminated",
            "[",
            "{",
            "[1, \"a\"]",
            "{ a = 1, b = { c = [] } }",
            "[[]]",
            "\"\\uD800\"",
            "rw",
            "\"ro\"",
            "\"rw\""
        ])
        .prop_map(str::to_string),
        any::<String>().prop_map(|s| quote(&s)),
        any::<String>(),
    ];
    let line = prop_oneof![
        4 => (path.clone(), value).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => path.clone().prop_map(|p| format!("[{p}]")),
        1 => path.prop_map(|p| format!("[[{p}]]")),
        1 => any::<String>(),
        1 => Just(String::new()),
        1 => "# .{0,10}",
    ];
    prop::collection::vec(line, 0..12).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #![proptest_config(cases(256, 1))]

    /// Text that looks like TOML, and any text at all: parsed or refused, never a panic.
    #[test]
    fn any_text_is_a_config_or_an_error(text in prop_oneof![tomlish(), any::<String>()]) {
        if let Err(error) = Config::from_toml(&text) {
            let message = format!("{error:#}");
            prop_assert!(!message.trim().is_empty());
            // An unknown key is named: the name in backticks is one the text has.
            if let Some(rest) = message.split("unknown field `").nth(1) {
                let field = rest.split('`').next().unwrap_or_default();
                let escaped = quote(field);
                prop_assert!(
                    text.contains(field)
                        || text.contains(escaped.trim_matches('"')),
                    "{field:?} is not in the text: {message}"
                );
            }
        }
    }

    /// Generated files using every section: they parse, with the values they hold.
    #[test]
    fn generated_valid_configs_parse_with_their_values((tables, names) in valid_config()) {
        let text = render(&tables);
        let config = match Config::from_toml(&text) {
            Ok(config) => config,
            Err(e) => return Err(TestCaseError::fail(format!("{e:#}\n--- in ---\n{text}"))),
        };
        let granted: Vec<&String> = config.plugins.grants.keys().collect();
        prop_assert_eq!(granted, names.iter().collect::<Vec<_>>());
        if let Some(Tv::Int(fuel)) = (tables.iter())
            .find(|t| t.path == ["limits"])
            .and_then(|t| t.entries.iter().find(|(k, _)| k == "fuel"))
            .map(|(_, v)| v)
        {
            prop_assert_eq!(config.limits.fuel, Some(*fuel as u64));
        }
        for name in &names {
            let hosts: Vec<String> = (tables.iter())
                .find(|t| t.path == ["plugins", name.as_str()])
                .and_then(|t| t.entries.iter().find(|(k, _)| k == "allow_hosts"))
                .map(|(_, v)| match v {
                    Tv::Arr(items) => {
                        items.iter().map(|h| h.render().trim_matches('"').to_string()).collect()
                    }
                    _ => vec![],
                })
                .unwrap_or_default();
            prop_assert_eq!(&config.grants(name).allow_hosts, &hosts);
        }
    }

    /// The same files with one thing wrong: refused, and the error names the key (or, for
    /// a refused grant, the plugin's section).
    #[test]
    fn a_config_with_one_fault_is_refused_naming_the_key(
        (tables, names) in valid_config(),
        fault in fault(),
    ) {
        let mut tables = tables;
        let Some(named) = apply(&mut tables, &names, &fault) else {
            return Ok(());
        };
        let text = render(&tables);
        match Config::from_toml(&text) {
            Ok(_) => prop_assert!(false, "{fault:?} was accepted:\n{text}"),
            Err(error) => {
                let message = format!("{error:#}");
                prop_assert!(
                    message.contains(&named),
                    "{fault:?}: {named:?} not in {message}\n--- in ---\n{text}"
                );
            }
        }
    }
}

#[test]
fn a_date_time_where_a_section_belongs_is_refused_in_the_operators_words() {
    let error = format!("{:#}", Config::from_toml("wasm = 1979-05-27T07:32:00Z\n").unwrap_err());
    assert!(!error.contains("$__toml_private"), "{error}");
}

#[test]
fn deeply_nested_config_values_are_refused_without_overflowing_the_stack() {
    for depth in [64, 1_000, 100_000] {
        for (open, close) in [("[", "]"), ("{ a = ", " }")] {
            let text = format!("[limits]\nfuel = {}1{}\n", open.repeat(depth), close.repeat(depth));
            assert!(Config::from_toml(&text).is_err(), "depth {depth} {open}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Upstream URLs.

/// URLs built from pieces (schemes, credentials, hosts, ports, paths, queries) and anything.
fn url_like() -> impl Strategy<Value = String> {
    let scheme = prop::sample::select(vec![
        "http://",
        "https://",
        "HTTP://",
        "HtTpS://",
        "ftp://",
        "",
        "http:",
        "http:/",
        "unix://",
        "//",
        "http://http://",
    ]);
    let userinfo = prop::sample::select(vec!["", "", "", "user@", "user:pw@", "@", ":@"]);
    let host = prop_oneof![
        prop::sample::select(vec![
            "localhost",
            "127.0.0.1",
            "[::1]",
            "[::1",
            "::1",
            "vllm",
            "exa mple.com",
            "例え.jp",
            "",
            "256.256.256.256",
            "a..b",
            "-",
            "%41",
        ])
        .prop_map(str::to_string),
        "[a-z0-9.-]{0,12}",
        any::<String>(),
    ];
    let port = prop_oneof![
        Just(String::new()),
        "[0-9]{1,12}".prop_map(|p| format!(":{p}")),
        Just(":".into())
    ];
    let rest = prop_oneof![
        Just(String::new()),
        Just("/v1".to_string()),
        Just("/v1/".to_string()),
        Just("////".to_string()),
        "/[a-z0-9/?#%&=. -]{0,16}",
        any::<String>(),
    ];
    prop_oneof![
        4 => (scheme, userinfo, host, port, rest)
            .prop_map(|(s, u, h, p, r)| format!("{s}{u}{h}{p}{r}")),
        1 => any::<String>(),
    ]
}

proptest! {
    #![proptest_config(cases(512, 1))]

    /// Any upstream URL and key variable: a client for an absolute http(s) URL without
    /// credentials, else a settings error that says what is wrong; never a panic.
    #[test]
    fn any_upstream_url_is_a_client_or_a_settings_error(
        url in url_like(),
        api_key_env in prop::option::weighted(
            0.2,
            prop_oneof!["AUTOGLM_PROPTEST_UNSET_[A-Z]{1,6}", any::<String>()],
        ),
        timeout_secs in any::<u64>(),
        model in any::<String>(),
    ) {
        let _runtime = RT.enter();
        let api_key = api_key_env.clone();
        let settings =
            RemoteSettings { url: url.clone(), model, api_key_env: api_key, timeout_secs };
        match RemoteModel::new(settings) {
            Ok(_) => {
                let lower = url.to_ascii_lowercase();
                let absolute = lower.starts_with("http://") || lower.starts_with("https://");
                prop_assert!(absolute, "{url:?} accepted");
                if let Some(var) = &api_key_env {
                    prop_assert!(std::env::var(var).is_ok(), "{var:?} is not set but was accepted");
                }
            }
            Err(error) => {
                prop_assert!(!error.to_string().trim().is_empty(), "{url:?}: empty error")
            }
        }
    }
}
