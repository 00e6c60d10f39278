//! Loaded plugins and their tools: a plugins directory becomes a set of
//! [`Plugin`]s, each a compiled component in its [`Sandbox`] with validated tool specs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use wasmtime::component::Component;

use crate::config::Config;
use crate::contract::{self, ToolSpec};
use crate::error::ErrorKind;
use crate::policy::Policy;
use crate::runtime::Runtime;
use crate::runtime::reflect::{self, Reflected};
use crate::runtime::sandbox::{Entry, Sandbox};
use crate::signing;

mod live;
pub use live::{LiveRegistry, Reload, Watch};

/// A loaded plugin: one component offering one or more tools.
pub struct Plugin {
    /// The plugin's name (its file stem), the `plugin` in `plugin.tool`.
    pub name: String,
    /// Where the component was loaded from.
    pub path: PathBuf,
    /// Size of the component file in bytes.
    pub size: usize,
    /// The contract interface it exports, e.g. `autoglm:plugin/tools@0.2.0`; for a
    /// component of its own functions, `functions`.
    pub contract: String,
    /// Exported functions that could not become tools, each with why.
    pub refused: Vec<String>,
    /// The interfaces it imports (WASI and the host interface).
    pub imports: Vec<String>,
    /// The file's size and modification time when it was read: a reload skips
    /// files whose fingerprint has not changed.
    pub fingerprint: Fingerprint,
    /// The tools it offers, in the order it lists them.
    pub tools: Vec<Tool>,
    /// The prepared sandbox every call runs in.
    pub sandbox: Sandbox,
}

/// One tool of a plugin, with its compiled argument validator.
pub struct Tool {
    /// The spec the plugin published.
    pub spec: ToolSpec,
    /// The input schema, parsed.
    pub input_schema: Value,
    /// The output schema, parsed, when the plugin promises one.
    pub output_schema: Option<Value>,
    validator: jsonschema::Validator,
    output_validator: Option<jsonschema::Validator>,
}

/// What identifies one version of a component file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    /// File size in bytes.
    pub len: u64,
    /// Last modification time.
    pub modified: Option<std::time::SystemTime>,
}

impl Fingerprint {
    /// The fingerprint of the file at `path` now.
    pub fn of(path: &Path) -> std::io::Result<Fingerprint> {
        let meta = std::fs::metadata(path)?;
        Ok(Fingerprint { len: meta.len(), modified: meta.modified().ok() })
    }
}

/// The loaded plugins, by name.
#[derive(Default, Clone)]
pub struct Registry {
    plugins: BTreeMap<String, Arc<Plugin>>,
}

/// Why a component file could not become a plugin.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot load plugin `{plugin}` from {}: {reason}", path.display())]
pub struct LoadError {
    /// The plugin's name.
    pub plugin: String,
    /// The file.
    pub path: PathBuf,
    /// The taxonomy kind (`incompatible_plugin` for a bad component).
    pub kind: ErrorKind,
    /// What is wrong and what to do.
    pub reason: String,
}

impl Registry {
    /// Load every `*.wasm` in `dir`. Plugins that fail to load are returned beside the
    /// registry so the caller can report them; the others still serve.
    pub async fn load_dir(
        runtime: &Runtime,
        config: &Config,
        dir: &Path,
    ) -> anyhow::Result<(Registry, Vec<LoadError>)> {
        let mut registry = Registry::default();
        let mut errors = Vec::new();
        for path in component_files(dir)? {
            match load_plugin(runtime, config, &path).await {
                Ok(plugin) => {
                    registry.plugins.insert(plugin.name.clone(), Arc::new(plugin));
                }
                Err(error) => errors.push(error),
            }
        }
        Ok((registry, errors))
    }

    /// The plugin named `name`.
    pub fn plugin(&self, name: &str) -> Option<&Arc<Plugin>> {
        self.plugins.get(name)
    }

    /// All plugins, by name.
    pub fn plugins(&self) -> impl Iterator<Item = &Arc<Plugin>> {
        self.plugins.values()
    }
}

impl Tool {
    /// Check `args` against the tool's input schema; the message names the field.
    pub fn validate(&self, args: &Value) -> Result<(), String> {
        // A schema that forbids other keys and lists none (a tool without arguments) is
        // reported at the root by the validator, without the key: name it here.
        let properties = self.input_schema.get("properties").and_then(Value::as_object);
        if self.input_schema["additionalProperties"] == false
            && let Some(object) = args.as_object()
        {
            let unexpected: Vec<String> = (object.keys())
                .filter(|key| !properties.is_some_and(|p| p.contains_key(*key)))
                .map(|key| format!("`{key}`"))
                .collect();
            if !unexpected.is_empty() {
                let takes: Vec<String> = properties
                    .map(|p| p.keys().map(|k| format!("`{k}`")).collect())
                    .unwrap_or_default();
                let takes = match takes.is_empty() {
                    true => "no arguments".to_string(),
                    false => takes.join(", "),
                };
                return Err(format!(
                    "unexpected argument {}; the tool takes {takes}",
                    unexpected.join(", ")
                ));
            }
        }
        problems(&self.validator, args)
    }

    /// Check a result against the output schema the tool promised, if it promised one:
    /// clients trust that schema (MCP's `outputSchema`), so a result that breaks it is the
    /// tool's error, not theirs.
    pub fn check_output(&self, result: &Value) -> Result<(), String> {
        self.output_validator.as_ref().map_or(Ok(()), |v| problems(v, result))
    }
}

/// What is wrong with `value` under `validator`, the first few problems with their place.
fn problems(validator: &jsonschema::Validator, value: &Value) -> Result<(), String> {
    let problems: Vec<String> = (validator.iter_errors(value))
        .take(5)
        .map(|e| {
            let at = e.instance_path().to_string();
            match at.is_empty() {
                true => e.to_string(),
                false => format!("{at}: {e}"),
            }
        })
        .collect();
    match problems.is_empty() {
        true => Ok(()),
        false => Err(problems.join("; ")),
    }
}

/// Whether `name` may name a plugin or a tool: 1-64 characters of `[a-z0-9_-]`,
/// without `__`, which separates plugin and tool where dots are not allowed, and not
/// starting or ending with `_`, which would blur that separator (`a_` + `b` is `a___b`,
/// which also reads as `a` + `_b`).
pub fn is_valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.contains("__")
        && !name.starts_with('_')
        && !name.ends_with('_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The plugin name no file may take: task templates are offered as its tools.
pub const RESERVED_NAME: &str = "task";

/// The `*.wasm` files of `dir`, sorted by name.
pub fn component_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot read plugins directory {}: {e} (build the samples with `just plugins`)",
            dir.display()
        )
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wasm") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Load one component file as a plugin named after the file.
pub async fn load_plugin(
    runtime: &Runtime,
    config: &Config,
    path: &Path,
) -> Result<Plugin, LoadError> {
    let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
    let fail = |kind, reason: String| LoadError {
        plugin: name.clone(),
        path: path.to_path_buf(),
        kind,
        reason,
    };
    if !is_valid_name(&name) {
        return Err(fail(
            ErrorKind::IncompatiblePlugin,
            "plugin file names must be 1-64 lower-case letters, digits, '_' or '-', without \
             `__` and not starting or ending with '_' (the name becomes the `plugin` in \
             `plugin.tool`); rename the file"
                .into(),
        ));
    }
    if name == RESERVED_NAME {
        return Err(fail(
            ErrorKind::IncompatiblePlugin,
            format!(
                "`{RESERVED_NAME}` is reserved: MCP offers the task templates as `{RESERVED_NAME}.NAME`                  tools; rename the file"
            ),
        ));
    }
    let cannot_read = |e| fail(ErrorKind::IncompatiblePlugin, format!("cannot read: {e}"));
    // Fingerprint first: a file replaced while we read it then differs on the next scan.
    let fingerprint = Fingerprint::of(path).map_err(cannot_read)?;
    // Off the async workers, like the compilation: a component can be tens of MiB.
    let bytes = tokio::fs::read(path).await.map_err(cannot_read)?;
    let size = bytes.len();
    if config.plugins.require_signatures {
        check_signature(config, &name, path, &bytes)
            .map_err(|reason| fail(ErrorKind::UntrustedPlugin, reason))?;
    }
    // Compiling takes seconds for an interpreter-sized component; on the blocking pool
    // the workers keep serving requests (and other plugins' calls) meanwhile.
    let component = runtime.compile_off_thread(&name, bytes).await.map_err(|e| {
        fail(ErrorKind::IncompatiblePlugin, format!("not a valid WebAssembly component: {e:#}"))
    })?;
    // Reflecting a component's types can take a while for a large one: off the workers.
    let reflected = tokio::task::spawn_blocking({
        let (runtime, component) = (runtime.clone(), component.clone());
        move || entry(&runtime, &component)
    })
    .await
    .map_err(|e| fail(ErrorKind::IncompatiblePlugin, format!("reading its exports failed: {e}")))?;
    let (contract, entry, refused) =
        reflected.map_err(|reason| fail(ErrorKind::IncompatiblePlugin, reason))?;
    for why in &refused {
        tracing::warn!(plugin = %name, "{why}");
    }
    let imports = (component.component_type().imports(runtime.engine()))
        .map(|(name, _)| name.to_string())
        .collect();
    let pre = runtime.prepare(&component).map_err(|e| {
        fail(
            ErrorKind::IncompatiblePlugin,
            format!("it imports something this host does not provide: {e:#}"),
        )
    })?;
    let grants = config.grants(&name);
    let limits = grants.limits.resolve(&config.limits, size);
    // Measuring what the plugin's writable directories hold walks them: off the workers.
    let policy = tokio::task::spawn_blocking({
        let (name, grants) = (name.clone(), grants.clone());
        move || Policy::new(&name, &grants)
    })
    .await
    .map_err(|e| {
        fail(ErrorKind::IncompatiblePlugin, format!("measuring its grants failed: {e}"))
    })?;
    let reflected = match &entry {
        Entry::Functions(functions) => Some(reflected_specs(&name, functions, &policy)),
        Entry::Contract { .. } => None,
    };
    let sandbox = Sandbox::new(pre, entry, policy, limits);
    // A component of functions is instantiated once too: one that cannot start (a trap
    // in its start function, an import refused at run time) fails here, not on a call.
    let listed = sandbox.list_tools().await.map_err(|e| {
        let what = if reflected.is_some() { "instantiating it" } else { "list-tools" };
        fail(e.kind, format!("{what} failed: {}", e.message))
    })?;
    let specs = reflected.unwrap_or(listed);
    let tools = specs
        .into_iter()
        .map(Tool::new)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|r| fail(ErrorKind::IncompatiblePlugin, r))?;
    if let Some(dup) = tools.iter().enumerate().find_map(|(i, t)| {
        tools[..i].iter().any(|u| u.spec.name == t.spec.name).then_some(&t.spec.name)
    }) {
        return Err(fail(ErrorKind::IncompatiblePlugin, format!("it lists tool `{dup}` twice")));
    }
    Ok(Plugin {
        name,
        path: path.to_path_buf(),
        size,
        contract,
        refused,
        imports,
        fingerprint,
        tools,
        sandbox,
    })
}

/// Under `require_signatures`: the component at `path` must carry a signature (`FILE.sig`)
/// by a key trusted for plugin `name`.
fn check_signature(config: &Config, name: &str, path: &Path, bytes: &[u8]) -> Result<(), String> {
    let refuse = |e: signing::SigningError| format!("refused by [plugins] require_signatures: {e}");
    let keys = signing::TrustedKey::load_all(&config.plugins.keys_for(name)).map_err(refuse)?;
    let signer = signing::verify_file(&keys, path, bytes).map_err(refuse)?;
    tracing::debug!(plugin = name, %signer, "signature verified");
    Ok(())
}

impl Tool {
    fn new(spec: ToolSpec) -> Result<Tool, String> {
        let name = &spec.name;
        if !is_valid_name(name) {
            return Err(format!(
                "tool name `{name}` must be 1-64 characters of [a-z0-9_-] without `__`, not \
                 starting or ending with '_'"
            ));
        }
        let parse = |what: &str, text: &str| {
            serde_json::from_str::<Value>(text)
                .map_err(|e| format!("tool `{name}` has an {what} schema that is not JSON: {e}"))
        };
        let input_schema = parse("input", &spec.input_schema)?;
        let output_schema =
            spec.output_schema.as_deref().map(|s| parse("output", s)).transpose()?;
        // Clients (MCP's Python SDK among them) reject a whole tool list over one
        // tool whose arguments are not described as an object.
        if input_schema["type"] != "object" {
            return Err(format!(
                "tool `{name}` must describe its arguments as {{\"type\": \"object\", ...}}"
            ));
        }
        let validator = jsonschema::validator_for(&input_schema)
            .map_err(|e| format!("tool `{name}` has an invalid input schema: {e}"))?;
        let output_validator = (output_schema.as_ref())
            .map(|schema| {
                jsonschema::validator_for(schema)
                    .map_err(|e| format!("tool `{name}` has an invalid output schema: {e}"))
            })
            .transpose()?;
        Ok(Tool { spec, input_schema, output_schema, validator, output_validator })
    }
}

/// What the host calls in `component`: the `autoglm:plugin/tools` interface of a revision
/// this host serves, or else the functions it exports (with those refused and why).
/// Refused: a contract of another revision, and a component with neither.
fn entry(runtime: &Runtime, component: &Component) -> Result<(String, Entry, Vec<String>), String> {
    let ty = component.component_type();
    let prefix = format!("{}/tools", contract::PACKAGE);
    let exported: Vec<String> =
        (ty.exports(runtime.engine())).map(|(name, _)| name.to_string()).collect();
    let Some(found) = exported.iter().find(|n| n.starts_with(&format!("{prefix}@"))) else {
        let Reflected { functions, mut refused } = reflect::exports(runtime.engine(), component);
        let mut usable: Vec<reflect::Function> = Vec::new();
        for function in functions {
            if !is_valid_name(&function.tool) {
                refused.push(format!(
                    "function `{}` is not a tool: its tool name `{}` must be 1-64 characters of \
                     [a-z0-9_-]",
                    function.export, function.tool
                ));
            } else if usable.iter().any(|u| u.tool == function.tool) {
                refused.push(format!(
                    "function `{}` is not a tool: another export is also named `{}`",
                    function.export, function.tool
                ));
            } else {
                usable.push(function);
            }
        }
        let functions = usable;
        if functions.is_empty() {
            let exports =
                if exported.is_empty() { "nothing".to_string() } else { exported.join(", ") };
            let refused = match refused.is_empty() {
                true => String::new(),
                false => format!("; {}", refused.join("; ")),
            };
            return Err(format!(
                "it exports neither {prefix}@{} nor a function that can be a tool (it exports: \
                 {exports}{refused}); export functions whose types have a JSON form, or build \
                 it against this host's wit/ files, e.g. with the autoglm SDK",
                contract::VERSION,
            ));
        }
        return Ok(("functions".to_string(), Entry::Functions(functions), refused));
    };
    let version = found.split_once('@').map(|(_, v)| v).unwrap_or("");
    if !contract::VERSIONS.iter().any(|ours| semver_compatible(version, ours)) {
        return Err(format!(
            "it was built for {found}, but this host implements {}@{}; rebuild the plugin \
             against this host's wit/ files or run a host that supports it",
            contract::PACKAGE,
            contract::VERSIONS.join(" and @"),
        ));
    }
    let missing = |name: &str| format!("its {found} export has no `{name}` function");
    let (_, interface) =
        component.get_export(None, found.as_str()).ok_or_else(|| missing(found))?;
    let index = |name: &str| {
        component.get_export(Some(&interface), name).map(|(_, i)| i).ok_or_else(|| missing(name))
    };
    let entry = Entry::Contract { list_tools: index("list-tools")?, call: index("call")? };
    Ok((found.clone(), entry, Vec::new()))
}

/// The tool specs of a component's functions: described by their WIT signature, with the
/// plugin's grants as their needs (they cannot declare any).
fn reflected_specs(
    plugin: &str,
    functions: &[reflect::Function],
    policy: &Policy,
) -> Vec<ToolSpec> {
    (functions.iter())
        .map(|function| ToolSpec {
            name: function.tool.clone(),
            description: format!("`{}`, exported by the component {plugin}", function.signature()),
            input_schema: function.input_schema().to_string(),
            output_schema: Some(function.output_schema().to_string()),
            capabilities: policy.as_needs(),
            hints: contract::Hints::empty(),
        })
        .collect()
}

/// Whether `theirs` can be served by `ours` under semver (0.x: same minor).
fn semver_compatible(theirs: &str, ours: &str) -> bool {
    let parse = |v: &str| -> Option<(u64, u64)> {
        let mut parts = v.split(['.', '-', '+']);
        Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
    };
    match (parse(theirs), parse(ours)) {
        (Some((0, a)), Some((0, b))) => a == b,
        (Some((a, _)), Some((b, _))) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::{is_valid_name, semver_compatible};

    #[test]
    fn names_keep_the_double_underscore_separator_unambiguous() {
        assert!(is_valid_name("get_weather") && is_valid_name("a-b") && is_valid_name("x1"));
        for bad in ["", "a__b", "_a", "a_", "A", "a.b", "ä", &"a".repeat(65)] {
            assert!(!is_valid_name(bad), "{bad:?} must be refused");
        }
    }

    #[test]
    fn zero_major_versions_are_compatible_only_within_a_minor() {
        assert!(semver_compatible("0.1.0", "0.1.0"));
        assert!(semver_compatible("0.1.3", "0.1.0"));
        assert!(!semver_compatible("0.2.0", "0.1.0"));
        assert!(!semver_compatible("1.0.0", "0.1.0"));
        assert!(!semver_compatible("", "0.1.0"));
    }
}
