//! Loader robustness on stable Rust: components built from core modules that wasm-smith
//! generates (wrapped by wit-component, whose own component generation lags), and mutations
//! of a real sample component, each written to a plugins directory and loaded by the real
//! loader: compile, contract check, linking, and the guest's `list-tools` in its sandbox.
//! Every outcome must be a plugin or a `LoadError` with a reason; never a panic, never a hang.
//!
//! `AUTOGLM_FUZZ_CASES` sets the cases of each test (small by default, for `just test`;
//! `just fuzz` runs thousands) and `AUTOGLM_FUZZ_SEED` the seed (fixed by default, so a run
//! is reproducible). A failing case is named by seed and index, and its bytes are kept under
//! `target/tmp/loader-fuzz/`. `AUTOGLM_FUZZ_VERBOSE=1` prints every load error's reason.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use autoglm_host::config::Config;
use autoglm_host::describe::ToolDescription;
use autoglm_host::registry::{Registry, is_valid_name, load_plugin};
use autoglm_host::router::Router;
use autoglm_host::runtime::Runtime;
use autoglm_test_support::host::sample;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use wit_parser::{LiftLowerAbi, ManglingAndAbi, Resolve, WasmExport, WasmExportKind, WasmImport};

/// Cases of each test when `AUTOGLM_FUZZ_CASES` is not set.
const DEFAULT_GENERATED: usize = 60;
const DEFAULT_MUTATED: usize = 90;
/// The longest one load may take before it counts as a hang. Guests get far less (the
/// limits below), so only a host that stops making progress reaches it.
const LOAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Tight limits so that generated guests that loop or grow stop quickly.
const LIMITS: &str = "[limits]\nfuel = 20000000\ndeadline_ms = 2000\nmemory_mib = 32\n\
                      [wasm]\npool_instances = 32\n";

fn cases(default: usize) -> usize {
    (std::env::var("AUTOGLM_FUZZ_CASES").ok()).and_then(|n| n.parse().ok()).unwrap_or(default)
}

fn seed() -> u64 {
    (std::env::var("AUTOGLM_FUZZ_SEED").ok())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0x0a07_0617_f022)
}

/// The random bytes of case `index`: the same for the same seed on every machine.
fn case_rng(seed: u64, index: usize) -> StdRng {
    StdRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

// ---------------------------------------------------------------------------------------
// Loading one candidate.

/// What loading one file came to.
#[derive(Debug)]
enum Outcome {
    /// A plugin with this many tools.
    Loaded(usize),
    /// A `LoadError` at this stage.
    Refused(&'static str),
    /// Not acceptable: a panic, a hang, or an error without a reason.
    Failed(String),
}

/// The stage a load error's reason comes from, for the summary.
fn stage(reason: &str) -> &'static str {
    let stages = [
        ("not a valid WebAssembly component", "compile"),
        ("it does not export", "contract"),
        ("it was built for", "contract"),
        ("it imports something", "link"),
        ("list-tools failed", "list-tools"),
        ("tool name", "tool spec"),
        ("tool `", "tool spec"),
        ("it lists tool", "tool spec"),
        ("instance export", "bindings"),
    ];
    (stages.iter().find(|(prefix, _)| reason.starts_with(prefix)))
        .map_or("other", |(_, stage)| stage)
}

/// A loader over a fresh compile cache, with its own runtime and plugins directory.
struct Loader {
    tokio: tokio::runtime::Runtime,
    runtime: Arc<Runtime>,
    config: Arc<Config>,
    dir: tempfile::TempDir,
    _cache: tempfile::TempDir,
}

impl Loader {
    fn new() -> Loader {
        let cache = tempfile::tempdir().unwrap();
        let mut config = Config::from_toml(LIMITS).unwrap();
        config.cache_dir = Some(cache.path().join("components"));
        let runtime = Arc::new(autoglm_host::app::runtime(&config).unwrap());
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        Loader {
            tokio,
            runtime,
            config: Arc::new(config),
            dir: tempfile::tempdir().unwrap(),
            _cache: cache,
        }
    }

    /// Write `bytes` as `case-N.wasm` and load it in a task of its own, under a deadline.
    fn load(&self, index: usize, bytes: &[u8]) -> Outcome {
        let stem = format!("case-{index}");
        let path = self.dir.path().join(format!("{stem}.wasm"));
        std::fs::write(&path, bytes).unwrap();
        let (runtime, config, file) = (self.runtime.clone(), self.config.clone(), path.clone());
        let dir = self.dir.path().to_path_buf();
        let result = self.tokio.block_on(async move {
            let task = tokio::spawn(async move {
                let plugin = match load_plugin(&runtime, &config, &file).await {
                    Ok(plugin) => plugin,
                    Err(error) => return Ok(Err(error)),
                };
                let names: Vec<String> = plugin.tools.iter().map(|t| t.spec.name.clone()).collect();
                serve_once(&runtime, &config, &dir, &names).await?;
                Ok(Ok(names))
            });
            tokio::time::timeout(LOAD_TIMEOUT, task).await
        });
        let _ = std::fs::remove_file(&path);
        match result {
            Err(_) => Outcome::Failed(format!("no outcome within {LOAD_TIMEOUT:?} (a hang)")),
            Ok(Err(join)) => Outcome::Failed(match join.try_into_panic() {
                Ok(panic) => format!("the load panicked: {}", panic_message(&*panic)),
                Err(join) => format!("the load task ended without an outcome: {join}"),
            }),
            Ok(Ok(Err(why))) => Outcome::Failed(why),
            Ok(Ok(Ok(Ok(tools)))) => match tools.iter().find(|t| !is_valid_name(t)) {
                Some(bad) => Outcome::Failed(format!("loaded with an invalid tool name {bad:?}")),
                None => Outcome::Loaded(tools.len()),
            },
            Ok(Ok(Ok(Err(error)))) => {
                if error.reason.trim().is_empty() {
                    Outcome::Failed(format!("a load error without a reason: {error:?}"))
                } else if error.plugin != stem || error.path != path {
                    Outcome::Failed(format!("a load error naming another file: {error:?}"))
                } else {
                    if std::env::var_os("AUTOGLM_FUZZ_VERBOSE").is_some() {
                        eprintln!("  case {index}: {}", error.reason);
                    }
                    Outcome::Refused(stage(&error.reason))
                }
            }
        }
    }
}

/// What serving does with a loaded plugin: load the directory holding it, route to each
/// tool by each of its names, describe it for REST and MCP, and check its grants.
async fn serve_once(
    runtime: &Runtime,
    config: &Config,
    dir: &Path,
    tools: &[String],
) -> Result<(), String> {
    let (registry, errors) =
        Registry::load_dir(runtime, config, dir).await.map_err(|e| format!("{e:#}"))?;
    if !errors.is_empty() || registry.plugins().count() != 1 {
        return Err(format!("loading it again as a directory: {errors:?}"));
    }
    let router = Router::new(Arc::new(registry));
    let targets = router.targets();
    if targets.len() != tools.len() {
        return Err(format!("{} targets for {} tools", targets.len(), tools.len()));
    }
    for target in &targets {
        for name in [target.id(), router.short_name(target)] {
            match router.resolve(&name) {
                Ok(found) if found.id() == target.id() => {}
                _ => return Err(format!("{name} does not resolve to {}", target.id())),
            }
        }
        let description = ToolDescription::new(&router, target);
        let (rest, mcp) = (description.rest(), description.mcp());
        if rest.to_string().is_empty() || mcp.to_string().is_empty() {
            return Err("an empty description".into());
        }
        let _ = target.plugin.sandbox.policy().missing_grant(&target.tool().spec);
    }
    Ok(())
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    (panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(not a string)".into())
}

/// Counts for the summary, and the failures with where their bytes were kept.
#[derive(Default)]
struct Tally {
    counts: std::collections::BTreeMap<String, usize>,
    failures: Vec<String>,
}

impl Tally {
    fn count(&mut self, what: impl Into<String>) {
        *self.counts.entry(what.into()).or_default() += 1;
    }

    fn record(&mut self, test: &str, index: usize, what: &str, bytes: &[u8], outcome: Outcome) {
        match outcome {
            Outcome::Loaded(tools) => self.count(format!("loaded ({} tools)", tools.min(3))),
            Outcome::Refused(stage) => self.count(format!("refused at {stage}")),
            Outcome::Failed(why) => {
                let kept = keep(test, index, bytes);
                self.failures.push(format!(
                    "case {index} ({what}, seed {}): {why}; bytes in {}",
                    seed(),
                    kept.display()
                ));
            }
        }
    }

    fn finish(self, test: &str, started: Instant) {
        eprintln!("{test}: {:.1?}", started.elapsed());
        for (what, n) in &self.counts {
            eprintln!("  {n:5}  {what}");
        }
        assert!(self.failures.is_empty(), "{test}:\n{}", self.failures.join("\n"));
    }
}

/// Keep a failing input where the developer will find it.
fn keep(test: &str, index: usize, bytes: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("loader-fuzz");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{test}-{}-{index}.wasm", seed()));
    std::fs::write(&path, bytes).unwrap();
    path
}

// ---------------------------------------------------------------------------------------
// Components from wasm-smith modules.

/// The plugin world of this host's `wit/`.
fn plugin_world() -> (Resolve, wit_parser::WorldId) {
    let mut resolve = Resolve::default();
    let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
    let (package, _) = resolve.push_dir(&wit).unwrap();
    let world = resolve.select_world(&[package], Some("plugin")).unwrap();
    (resolve, world)
}

/// A core module with exactly the imports and exports the plugin world's canonical ABI
/// needs, bodies `unreachable`: wasm-smith takes its imports as the ones it may use and
/// its exports as the ones it must define, so each generated module fits the contract's
/// shape while its code is random. With an `answer`, `list-tools` instead returns the
/// tool list laid out in the answer's data.
fn abi_shape(resolve: &Resolve, world: wit_parser::WorldId, answer: Option<&Answer>) -> Vec<u8> {
    use wasm_encoder::{
        CodeSection, ConstExpr, DataSection, EntityType, ExportKind, ExportSection, Function,
        FunctionSection, ImportSection, MemorySection, MemoryType, Module, TypeSection, ValType,
    };
    use wit_parser::WorldItem;
    use wit_parser::abi::WasmType;

    let mangling = ManglingAndAbi::Legacy(LiftLowerAbi::Sync);
    let val = |types: &[WasmType]| -> Vec<ValType> {
        (types.iter())
            .map(|t| match t {
                WasmType::I32 | WasmType::Pointer | WasmType::Length => ValType::I32,
                WasmType::I64 | WasmType::PointerOrI64 => ValType::I64,
                WasmType::F32 => ValType::F32,
                WasmType::F64 => ValType::F64,
            })
            .collect()
    };
    let mut types = TypeSection::new();
    let mut imports = ImportSection::new();
    let mut functions = FunctionSection::new();
    let mut exports = ExportSection::new();
    let mut code = CodeSection::new();
    let (mut type_count, mut import_count, mut defined) = (0u32, 0u32, 0u32);
    let mut add_type = |types: &mut TypeSection, params: Vec<ValType>, results: Vec<ValType>| {
        types.ty().function(params, results);
        type_count += 1;
        type_count - 1
    };
    let world = &resolve.worlds[world];
    for (key, item) in &world.imports {
        let WorldItem::Interface { id, .. } = item else { continue };
        for func in resolve.interfaces[*id].functions.values() {
            let sig = resolve.wasm_signature(mangling.import_variant(), func);
            let ty = add_type(&mut types, val(&sig.params), val(&sig.results));
            let (module, name) =
                resolve.wasm_import_name(mangling, WasmImport::Func { interface: Some(key), func });
            imports.import(&module, &name, EntityType::Function(ty));
            import_count += 1;
        }
    }
    let mut define = |name: &str, ty: u32| {
        functions.function(ty);
        let mut body = Function::new([]);
        match answer {
            Some(answer) if name.ends_with("#list-tools") && !name.starts_with("cabi_post") => {
                body.instructions().i32_const(answer.returned as i32).end()
            }
            Some(_) if name.starts_with("cabi_post") => body.instructions().end(),
            _ => body.instructions().unreachable().end(),
        };
        code.function(&body);
        exports.export(name, ExportKind::Func, import_count + defined);
        defined += 1;
    };
    for (key, item) in &world.exports {
        let WorldItem::Interface { id, .. } = item else { continue };
        for func in resolve.interfaces[*id].functions.values() {
            let sig = resolve.wasm_signature(mangling.export_variant(), func);
            let export = |kind| WasmExport::Func { interface: Some(key), func, kind };
            let ty = add_type(&mut types, val(&sig.params), val(&sig.results));
            define(&resolve.wasm_export_name(mangling, export(WasmExportKind::Normal)), ty);
            let post = add_type(&mut types, val(&sig.results), vec![]);
            define(&resolve.wasm_export_name(mangling, export(WasmExportKind::PostReturn)), post);
        }
    }
    let realloc = add_type(&mut types, vec![ValType::I32; 4], vec![ValType::I32]);
    define(&resolve.wasm_export_name(mangling, WasmExport::Realloc), realloc);
    let pages = answer.map_or(0, |a| (u64::from(Answer::BASE) + a.data.len() as u64) / 65536 + 1);
    let mut memories = MemorySection::new();
    memories.memory(MemoryType {
        minimum: pages,
        maximum: None,
        memory64: false,
        shared: false,
        page_size_log2: None,
    });
    exports.export(&resolve.wasm_export_name(mangling, WasmExport::Memory), ExportKind::Memory, 0);
    let mut module = Module::new();
    module
        .section(&types)
        .section(&imports)
        .section(&functions)
        .section(&memories)
        .section(&exports)
        .section(&code);
    if let Some(answer) = answer {
        let mut data = DataSection::new();
        data.active(0, &ConstExpr::i32_const(Answer::BASE as i32), answer.data.iter().copied());
        module.section(&data);
    }
    module.finish()
}

/// What a hand-made `list-tools` returns: a `list<tool-spec>` laid out as the canonical ABI
/// lays it out in linear memory (at [`Answer::BASE`]), and the address of the return area
/// holding the list's pointer and length.
struct Answer {
    data: Vec<u8>,
    returned: u32,
}

impl Answer {
    const BASE: u32 = 0x1000;

    fn alloc(&mut self, align: u32, size: usize) -> u32 {
        while !(Self::BASE as usize + self.data.len()).is_multiple_of(align as usize) {
            self.data.push(0);
        }
        let at = Self::BASE + self.data.len() as u32;
        self.data.resize(self.data.len() + size, 0);
        at
    }

    fn put_u32(&mut self, at: u32, value: u32) {
        let i = (at - Self::BASE) as usize;
        self.data[i..i + 4].copy_from_slice(&value.to_le_bytes());
    }

    fn put_u8(&mut self, at: u32, value: u8) {
        self.data[(at - Self::BASE) as usize] = value;
    }

    /// Bytes somewhere in memory; their (pointer, length).
    fn bytes(&mut self, bytes: &[u8]) -> (u32, u32) {
        let at = self.alloc(1, bytes.len());
        let i = (at - Self::BASE) as usize;
        self.data[i..i + bytes.len()].copy_from_slice(bytes);
        (at, bytes.len() as u32)
    }

    /// A `string` or `list<_>` field at `at`: pointer then length.
    fn put_pair(&mut self, at: u32, (pointer, len): (u32, u32)) {
        self.put_u32(at, pointer);
        self.put_u32(at + 4, len);
    }

    /// A `list<string>`.
    fn strings(&mut self, items: &[Vec<u8>]) -> (u32, u32) {
        let list = self.alloc(4, 8 * items.len());
        for (i, item) in items.iter().enumerate() {
            let string = self.bytes(item);
            self.put_pair(list + 8 * i as u32, string);
        }
        (list, items.len() as u32)
    }
}

/// One tool spec as the guest answers it (strings as raw bytes: they need not be UTF-8).
#[derive(Debug)]
struct RawSpec {
    name: Vec<u8>,
    description: Vec<u8>,
    input_schema: Vec<u8>,
    /// The option's discriminant (0 none, 1 some, anything else invalid) and text.
    output_schema: (u8, Vec<u8>),
    directories: Vec<(Vec<u8>, u8)>,
    outbound_hosts: Vec<Vec<u8>>,
    env: Vec<Vec<u8>>,
    hints: u8,
}

/// Lay out `specs` as `list<tool-spec>`; `break_list` points the list somewhere wrong.
fn lay_out(specs: &[RawSpec], break_list: Option<(u32, u32)>) -> Answer {
    let mut answer = Answer { data: Vec::new(), returned: 0 };
    // record tool-spec: name 0, description 8, input-schema 16, output-schema 24 (u8 tag,
    // string at 28), capabilities 36 (directories 36, outbound-hosts 44, env 52), hints 60;
    // size 64, align 4. record directory-need: guest-path 0, access 8; size 12.
    let list = answer.alloc(4, 64 * specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let at = list + 64 * i as u32;
        let name = answer.bytes(&spec.name);
        answer.put_pair(at, name);
        let description = answer.bytes(&spec.description);
        answer.put_pair(at + 8, description);
        let input = answer.bytes(&spec.input_schema);
        answer.put_pair(at + 16, input);
        answer.put_u8(at + 24, spec.output_schema.0);
        let output = answer.bytes(&spec.output_schema.1);
        answer.put_pair(at + 28, output);
        let dirs = answer.alloc(4, 12 * spec.directories.len());
        for (j, (path, access)) in spec.directories.iter().enumerate() {
            let path = answer.bytes(path);
            answer.put_pair(dirs + 12 * j as u32, path);
            answer.put_u8(dirs + 12 * j as u32 + 8, *access);
        }
        answer.put_pair(at + 36, (dirs, spec.directories.len() as u32));
        let hosts = answer.strings(&spec.outbound_hosts);
        answer.put_pair(at + 44, hosts);
        let env = answer.strings(&spec.env);
        answer.put_pair(at + 52, env);
        answer.put_u8(at + 60, spec.hints);
    }
    let returned = answer.alloc(4, 8);
    answer.put_pair(returned, break_list.unwrap_or((list, specs.len() as u32)));
    answer.returned = returned;
    answer
}

/// Tool specs as a careless or hostile plugin might answer: names valid, duplicated and
/// invalid; input schemas that are real JSON Schemas, odd ones (remote and file `$ref`s,
/// catastrophic regexes, deep nesting), not objects, or not JSON; capabilities of any text.
fn raw_specs(u: &mut Unstructured) -> arbitrary::Result<Vec<RawSpec>> {
    let count = u.int_in_range(0..=5)?;
    let mut specs: Vec<RawSpec> = Vec::new();
    for _ in 0..count {
        let name = match u.int_in_range(0..=5)? {
            0..=2 => {
                let len = u.int_in_range(1..=12)?;
                (0..len)
                    .map(|_| Ok(*u.choose(b"abcdefghijklmnopqrstuvwxyz0123456789-")?))
                    .collect::<arbitrary::Result<Vec<u8>>>()?
            }
            3 if !specs.is_empty() => specs[u.choose_index(specs.len())?].name.clone(),
            4 => u
                .choose(&["", "A", "a__b", "_a", "a_", "a.b", "é", &"a".repeat(65)])?
                .as_bytes()
                .to_vec(),
            _ => u.arbitrary::<Vec<u8>>()?,
        };
        // Layout faults are rare, so that most answers reach the host's own checks.
        let output_schema = match u.int_in_range(0..=31)? {
            0 => (u.arbitrary()?, u.arbitrary()?),
            1..=15 => (0, Vec::new()),
            _ => (1, schema_text(u)?),
        };
        let mut directories = Vec::new();
        for _ in 0..u.int_in_range(0..=2)? {
            let path = u.choose(&["/notes", "/", "relative", "/a/../b", ""])?.as_bytes().to_vec();
            let access = if u.ratio(1, 32)? { u.arbitrary()? } else { u.int_in_range(0..=1)? };
            directories.push((path, access));
        }
        let hosts = (0..u.int_in_range(0..=2)?)
            .map(|_| {
                Ok(u.choose(&["*", "example.com", "127.0.0.1:8080", "", "a b/c@d"])?
                    .as_bytes()
                    .to_vec())
            })
            .collect::<arbitrary::Result<_>>()?;
        let env = (0..u.int_in_range(0..=2)?).map(|_| text(u)).collect::<arbitrary::Result<_>>()?;
        specs.push(RawSpec {
            name,
            description: text(u)?,
            input_schema: schema_text(u)?,
            output_schema,
            directories,
            outbound_hosts: hosts,
            env,
            hints: if u.ratio(1, 32)? { u.arbitrary()? } else { u.int_in_range(0..=15)? },
        });
    }
    Ok(specs)
}

/// Text, now and then bytes that are not UTF-8.
fn text(u: &mut Unstructured) -> arbitrary::Result<Vec<u8>> {
    match u.ratio(1, 64)? {
        true => u.arbitrary(),
        false => Ok(u.arbitrary::<String>()?.into_bytes()),
    }
}

/// The text of a schema a plugin might publish.
fn schema_text(u: &mut Unstructured) -> arbitrary::Result<Vec<u8>> {
    use serde_json::json;
    let property = |u: &mut Unstructured| -> arbitrary::Result<serde_json::Value> {
        Ok(match u.int_in_range(0..=9)? {
            0 => json!({"type": "string"}),
            1 => json!({"type": "number", "minimum": u.arbitrary::<i64>()?}),
            2 => json!({"type": "string", "pattern": u.arbitrary::<String>()?}),
            3 => json!({"type": "string", "pattern": *u.choose(&[
                "(a+)+$", "a{1000000}", "(?<=a)b", "\\p{Nonexistent}", "[", "(", "(?i)é+", "\\1",
                "^(([a-z])+.)+[A-Z]([a-z])+$", "(x+x+)+y",
            ])?}),
            4 => json!({"$ref": *u.choose(&[
                "#", "#/definitions/missing", "http://127.0.0.1:9/schema.json",
                "file:///etc/passwd", "urn:x", "#/properties/a",
            ])?}),
            5 => {
                let format = *u.choose(&["email", "uri", "date-time", "regex", "nonsense"])?;
                json!({"type": "string", "format": format})
            }
            6 => json!({"enum": []}),
            7 => json!({"type": ["string", "null"], "maxLength": u.arbitrary::<u64>()?}),
            8 => json!({"allOf": [{"$ref": "#"}]}),
            _ => json!(u.arbitrary::<String>()?),
        })
    };
    Ok(match u.int_in_range(0..=9)? {
        0..=4 => {
            let mut properties = serde_json::Map::new();
            for _ in 0..u.int_in_range(0..=4)? {
                properties.insert(u.arbitrary::<String>()?, property(u)?);
            }
            let mut schema = json!({"type": "object", "properties": properties});
            if u.ratio(1, 3)? {
                schema["required"] = json!([u.arbitrary::<String>()?]);
            }
            if u.ratio(1, 4)? {
                schema["$schema"] = json!(*u.choose(&[
                    "http://json-schema.org/draft-07/schema#",
                    "https://json-schema.org/draft/2020-12/schema",
                    "http://json-schema.org/draft-04/schema#",
                    "https://example.com/unknown-meta",
                ])?);
            }
            schema.to_string().into_bytes()
        }
        5 => {
            // Nested deeper than a JSON parser's recursion limit, or just under it.
            let depth = *u.choose(&[10usize, 120, 127, 200, 5000])?;
            let mut text = "{\"type\":\"object\",\"properties\":{\"a\":".to_string();
            text.push_str(&"{\"allOf\":[".repeat(depth));
            text.push_str("{}");
            text.push_str(&"]}".repeat(depth));
            text.push_str("}}");
            text.into_bytes()
        }
        6 => json!({"type": "string"}).to_string().into_bytes(),
        7 => {
            let keys = u.int_in_range(0..=5000)?;
            let properties: serde_json::Map<String, serde_json::Value> =
                (0..keys).map(|i| (format!("p{i}"), json!({"type": "integer"}))).collect();
            json!({"type": "object", "properties": properties, "required": ["p0"]})
                .to_string()
                .into_bytes()
        }
        8 => u.arbitrary::<Vec<u8>>()?,
        _ => u.arbitrary::<String>()?.into_bytes(),
    })
}

/// How a generated module is made.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// The contract's imports and exports, features wasmtime and wit-component support.
    Contract,
    /// The contract's shape with features this host's wasmtime lacks, or invalid bodies.
    ContractOddFeatures,
    /// Anything wasm-smith makes: mostly not a plugin at all.
    Free,
    /// Not wasm-smith: a module whose `list-tools` answers hand-made tool specs.
    Answers,
}

fn shape_of(index: usize) -> Shape {
    match index % 10 {
        0..=2 => Shape::Contract,
        3..=5 => Shape::Answers,
        6 | 7 => Shape::ContractOddFeatures,
        _ => Shape::Free,
    }
}

/// A module answering `list-tools` with specs from `u`, now and then laid out wrong.
fn answers_module(
    resolve: &Resolve,
    world: wit_parser::WorldId,
    u: &mut Unstructured,
) -> arbitrary::Result<Vec<u8>> {
    let specs = raw_specs(u)?;
    let broken = match u.int_in_range(0..=15)? {
        0 => Some((0xffff_ff00, 1)),
        1 => Some((Answer::BASE + 1, specs.len() as u32)),
        2 => Some((Answer::BASE, 1_000_000)),
        _ => None,
    };
    Ok(abi_shape(resolve, world, Some(&lay_out(&specs, broken))))
}

/// A core module of `shape` from the bytes in `u`.
fn generate(shape: Shape, template: &[u8], u: &mut Unstructured) -> arbitrary::Result<Vec<u8>> {
    let mut config = match shape {
        Shape::Free => wasm_smith::Config::arbitrary(u)?,
        _ => wasm_smith::Config::default(),
    };
    if !matches!(shape, Shape::Free) {
        config.available_imports = Some(template.to_vec());
        config.exports = Some(template.to_vec());
        config.max_imports = 2;
        // The required `memory` is the one memory a pooled instance may define.
        config.max_memories = 0;
        config.memory64_enabled = false;
        config.custom_page_sizes_enabled = false;
        config.shared_everything_threads_enabled = false;
        config.wide_arithmetic_enabled = false;
        config.disallow_traps = u.ratio(1, 4)?;
        config.allow_start_export = u.ratio(1, 4)?;
    }
    match shape {
        Shape::Contract | Shape::Answers => {
            // Without wasmtime's `gc` feature `externref` is a GC type too: funcref only.
            config.reference_types_enabled = false;
            config.gc_enabled = false;
            config.exceptions_enabled = false;
            config.threads_enabled = false;
            config.simd_enabled = u.arbitrary()?;
            config.relaxed_simd_enabled = config.simd_enabled && u.arbitrary()?;
            config.tail_call_enabled = u.arbitrary()?;
        }
        Shape::ContractOddFeatures => {
            config.gc_enabled = u.arbitrary()?;
            config.exceptions_enabled = u.arbitrary()?;
            config.threads_enabled = u.arbitrary()?;
            config.allow_invalid_funcs = u.ratio(1, 2)?;
        }
        Shape::Free => {
            config.max_imports = config.max_imports.min(8);
            config.max_exports = config.max_exports.min(8);
            config.max_memories = config.max_memories.min(2);
            config.max_tables = config.max_tables.min(2);
            config.max_data_segments = config.max_data_segments.min(8);
            config.max_element_segments = config.max_element_segments.min(8);
            config.max_elements = config.max_elements.min(64);
            config.max_aliases = config.max_aliases.min(8);
            config.max_tags = config.max_tags.min(8);
            config.max_types = config.max_types.min(64);
        }
    }
    // Small modules: the point is the shapes, not Cranelift's throughput.
    config.max_funcs = config.max_funcs.min(24);
    config.max_globals = config.max_globals.min(16);
    config.max_instructions = config.max_instructions.min(300);
    config.max_memory32_bytes = config.max_memory32_bytes.min(64 << 20);
    config.max_type_size = config.max_type_size.min(200);
    let module = wasm_smith::Module::new(config, u)?;
    Ok(module.to_bytes())
}

/// Embed the plugin world's metadata in `module` and make a component of it.
fn componentize(
    resolve: &Resolve,
    world: wit_parser::WorldId,
    mut module: Vec<u8>,
) -> anyhow::Result<Vec<u8>> {
    wit_component::embed_component_metadata(
        &mut module,
        resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )?;
    wit_component::ComponentEncoder::default().validate(true).module(&module)?.encode()
}

#[test]
fn components_from_generated_modules_load_or_fail_with_a_reason() {
    let started = Instant::now();
    let (resolve, world) = plugin_world();
    let template = abi_shape(&resolve, world, None);
    let loader = Loader::new();
    let mut tally = Tally::default();
    let seed = seed();
    for index in 0..cases(DEFAULT_GENERATED) {
        let mut rng = case_rng(seed, index);
        let mut raw = vec![0u8; rng.random_range(1024..16 << 10)];
        rng.fill_bytes(&mut raw);
        let mut u = Unstructured::new(&raw);
        let shape = shape_of(index);
        let module = match shape {
            Shape::Answers => answers_module(&resolve, world, &mut u),
            _ => generate(shape, &template, &mut u),
        };
        let module = match module {
            Ok(module) => module,
            Err(_) => {
                tally.count(format!("{shape:?}: wasm-smith ran out of bytes"));
                continue;
            }
        };
        // wit-component is not what is under test: a panic there is counted, not failed.
        let wrapped = std::panic::catch_unwind(|| componentize(&resolve, world, module.clone()));
        match wrapped {
            Ok(Ok(component)) => {
                tally.count(format!("{shape:?}: wrapped by wit-component"));
                let outcome = loader.load(index, &component);
                tally.record("generated", index, &format!("{shape:?}"), &component, outcome);
            }
            Ok(Err(_)) => {
                tally.count(format!("{shape:?}: refused by wit-component"));
                // The bare core module, which is no component at all.
                let outcome = loader.load(index, &module);
                tally.record("generated-core", index, &format!("{shape:?} core"), &module, outcome);
            }
            Err(_) => tally.count(format!("{shape:?}: wit-component panicked")),
        }
    }
    tally.finish("components_from_generated_modules", started);
}

// ---------------------------------------------------------------------------------------
// Mutations of a real component.

/// A section of a component or core module, with nested modules and components parsed.
#[derive(Debug, Clone)]
struct Section {
    id: u8,
    body: Body,
}

#[derive(Debug, Clone)]
enum Body {
    Raw(Vec<u8>),
    /// A core module (component section 1) or a component (section 4): header and sections.
    Nested([u8; 8], Vec<Section>),
}

fn read_leb(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let (mut value, mut shift) = (0u64, 0);
    loop {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
        shift += 7;
        if shift > 35 {
            return None;
        }
    }
}

fn write_leb(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Parse a module or component (header and sections). Nested bodies are parsed in a
/// component only.
fn parse(bytes: &[u8]) -> Option<([u8; 8], Vec<Section>)> {
    let header: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    let component = header[4..] == [0x0d, 0x00, 0x01, 0x00];
    let mut at = 8;
    let mut sections = Vec::new();
    while at < bytes.len() {
        let id = bytes[at];
        at += 1;
        let size = read_leb(bytes, &mut at)? as usize;
        let payload = bytes.get(at..at + size)?;
        at += size;
        let body = match (component, id) {
            (true, 1 | 4) => {
                let (header, inner) = parse(payload)?;
                Body::Nested(header, inner)
            }
            _ => Body::Raw(payload.to_vec()),
        };
        sections.push(Section { id, body });
    }
    Some((header, sections))
}

fn encode(header: &[u8; 8], sections: &[Section]) -> Vec<u8> {
    let mut out = header.to_vec();
    for section in sections {
        let body = match &section.body {
            Body::Raw(bytes) => bytes.clone(),
            Body::Nested(header, inner) => encode(header, inner),
        };
        out.push(section.id);
        write_leb(&mut out, body.len() as u64);
        out.extend_from_slice(&body);
    }
    out
}

/// Where each list of sections in the tree is (the component's own, each nested module's,
/// ...), as indices of the nested sections leading to it.
fn list_paths(sections: &[Section], prefix: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
    out.push(prefix.clone());
    for (i, section) in sections.iter().enumerate() {
        if let Body::Nested(_, inner) = &section.body {
            prefix.push(i);
            list_paths(inner, prefix, out);
            prefix.pop();
        }
    }
}

fn list_at<'a>(sections: &'a mut Vec<Section>, path: &[usize]) -> &'a mut Vec<Section> {
    match path.split_first() {
        None => sections,
        Some((&i, rest)) => match &mut sections[i].body {
            Body::Nested(_, inner) => list_at(inner, rest),
            Body::Raw(_) => unreachable!("paths lead through nested sections"),
        },
    }
}

/// One of the section lists of `sections`, picked by `rng`.
fn pick_list<'a>(sections: &'a mut Vec<Section>, rng: &mut StdRng) -> &'a mut Vec<Section> {
    let mut paths = Vec::new();
    list_paths(sections, &mut Vec::new(), &mut paths);
    let path = paths.swap_remove(rng.random_range(0..paths.len()));
    list_at(sections, &path)
}

/// The raw sections of a parsed donor, to splice in.
fn raw_sections(sections: &[Section], out: &mut Vec<Section>) {
    for section in sections {
        match &section.body {
            Body::Raw(_) => out.push(section.clone()),
            Body::Nested(_, inner) => raw_sections(inner, out),
        }
    }
}

/// Change `bytes` (a component) in one of a dozen ways; the name of what was done.
fn mutate(bytes: &[u8], donor: &[Section], rng: &mut StdRng) -> (Vec<u8>, String) {
    let mut out = bytes.to_vec();
    let how = rng.random_range(0..12u8);
    let structured = (4..=9).contains(&how);
    if structured && let Some((header, mut sections)) = parse(bytes) {
        let list = pick_list(&mut sections, rng);
        if list.is_empty() {
            return (out, "nothing (an empty section list)".into());
        }
        let i = rng.random_range(0..list.len());
        let what = match how {
            4 => {
                let gone = list.remove(i);
                format!("deleted section {i} (id {})", gone.id)
            }
            5 => {
                let copy = list[i].clone();
                list.insert(i, copy);
                format!("duplicated section {i} (id {})", list[i].id)
            }
            6 => {
                let j = rng.random_range(0..list.len());
                list.swap(i, j);
                format!("swapped sections {i} and {j}")
            }
            7 => {
                let donated = donor[rng.random_range(0..donor.len())].clone();
                let id = donated.id;
                list[i] = donated;
                format!("replaced section {i} by a donor section (id {id})")
            }
            8 => {
                let donated = donor[rng.random_range(0..donor.len())].clone();
                let id = donated.id;
                list.insert(i, donated);
                format!("inserted a donor section (id {id}) at {i}")
            }
            _ => {
                // Flip bits inside one raw section's payload, wherever it is nested.
                let section = &mut list[i];
                match &mut section.body {
                    Body::Raw(payload) if !payload.is_empty() => {
                        for _ in 0..rng.random_range(1..8) {
                            let at = rng.random_range(0..payload.len());
                            payload[at] ^= 1 << rng.random_range(0..8);
                        }
                        format!("flipped bits in section {i} (id {})", section.id)
                    }
                    _ => format!("nothing (section {i} is nested or empty)"),
                }
            }
        };
        return (encode(&header, &sections), what);
    }
    let len = out.len();
    let what = match how {
        0 => {
            let flips = rng.random_range(1..16);
            for _ in 0..flips {
                let at = rng.random_range(0..len);
                out[at] ^= 1 << rng.random_range(0..8);
            }
            format!("flipped {flips} bits")
        }
        1 => {
            let at = rng.random_range(0..len);
            let run = rng.random_range(1..64).min(len - at);
            rng.fill_bytes(&mut out[at..at + run]);
            format!("overwrote {run} bytes at {at}")
        }
        2 => {
            let at = rng.random_range(0..len);
            out.truncate(at);
            format!("truncated to {at} bytes")
        }
        3 => {
            let at = rng.random_range(0..len);
            let run = rng.random_range(1..256);
            let mut noise = vec![0u8; run];
            rng.fill_bytes(&mut noise);
            out.splice(at..at, noise);
            format!("inserted {run} random bytes at {at}")
        }
        10 => {
            // A section size changed, its bytes left: the reader must not trust it.
            let mut at = 8;
            let mut starts = Vec::new();
            while at < len {
                starts.push(at);
                at += 1;
                let Some(size) = read_leb(&out, &mut at) else { break };
                at += size as usize;
            }
            let start = starts[rng.random_range(0..starts.len())] + 1;
            let size: u32 = match rng.random_range(0..3) {
                0 => rng.random(),
                1 => u32::MAX,
                _ => 0,
            };
            let mut leb = Vec::new();
            write_leb(&mut leb, u64::from(size));
            let mut old_end = start;
            read_leb(&out, &mut old_end);
            out.splice(start..old_end, leb);
            format!("set the size of the section at {} to {size}", start - 1)
        }
        _ => {
            let at = rng.random_range(4..8);
            out[at] = rng.random();
            format!("changed header byte {at}")
        }
    };
    (out, what)
}

#[test]
fn mutated_real_components_load_or_fail_with_a_reason() {
    let started = Instant::now();
    // Mostly weather (the smallest, all contract); notes and http import WASI files and
    // HTTP, so their mutations reach the linker. Sections of two others are spliced in.
    let bases: Vec<(&str, Vec<u8>)> = (["weather", "weather", "notes", "http"].into_iter())
        .map(|name| (name, std::fs::read(sample(name)).unwrap()))
        .collect();
    let mut donor = Vec::new();
    for name in ["calculator", "text"] {
        let bytes = std::fs::read(sample(name)).unwrap();
        raw_sections(&parse(&bytes).expect("a sample parses").1, &mut donor);
    }
    let loader = Loader::new();
    let mut tally = Tally::default();
    // The unchanged components load: the harness itself works.
    for (name, bytes) in &bases {
        match loader.load(usize::MAX, bytes) {
            Outcome::Loaded(tools) => assert!(tools > 0),
            other => panic!("the real {name} component must load: {other:?}"),
        }
    }
    let seed = seed();
    for index in 0..cases(DEFAULT_MUTATED) {
        let mut rng = case_rng(seed, index);
        let (name, base) = &bases[index % bases.len()];
        let (mut bytes, mut what) = mutate(base, &donor, &mut rng);
        // Now and then stack a second mutation on the first.
        if rng.random_ratio(1, 4) {
            let (again, second) = mutate(&bytes, &donor, &mut rng);
            bytes = again;
            what = format!("{what}, then {second}");
        }
        let kind = what.split(' ').next().unwrap_or_default().to_string();
        tally.count(format!("mutation: {kind}"));
        let outcome = loader.load(index, &bytes);
        tally.record("mutated", index, &format!("{name}: {what}"), &bytes, outcome);
    }
    tally.finish("mutated_real_components", started);
}
