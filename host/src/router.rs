//! Tool names to plugins: resolve a name, validate the arguments against the tool's
//! schema, check the grants, and dispatch the call to the plugin's sandbox.
//!
//! One naming rule for every surface: the canonical id is `plugin.tool`; where dots
//! are not allowed (OpenAI function names, model prompts) a tool is called by its
//! bare name when that is unique among loaded plugins, else `plugin__tool`. The
//! router accepts all three.

use std::sync::Arc;

use serde_json::Value;

use crate::error::{CallError, ErrorKind};
use crate::registry::{Plugin, Registry, Tool};
use crate::runtime::sandbox::{Traced, Usage};

/// Resolves names and dispatches calls over one snapshot of the registry.
#[derive(Clone, Default)]
pub struct Router {
    registry: Registry,
}

/// A resolved tool: its plugin and its index in the plugin's tool list.
#[derive(Clone)]
pub struct Target {
    /// The plugin offering the tool.
    pub plugin: Arc<Plugin>,
    index: usize,
}

impl Target {
    /// The tool.
    pub fn tool(&self) -> &Tool {
        &self.plugin.tools[self.index]
    }

    /// The canonical id, `plugin.tool`.
    pub fn id(&self) -> String {
        format!("{}.{}", self.plugin.name, self.tool().spec.name)
    }
}

impl Router {
    /// A router over `registry`.
    pub fn new(registry: Registry) -> Self {
        Self { registry }
    }

    /// The registry this router dispatches to.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Every tool, ordered by plugin then by the plugin's own order.
    pub fn targets(&self) -> Vec<Target> {
        (self.registry.plugins())
            .flat_map(|p| (0..p.tools.len()).map(|index| Target { plugin: p.clone(), index }))
            .collect()
    }

    /// The name a model or an OpenAI client uses for `target`: the bare tool name
    /// when unique, else `plugin__tool`.
    pub fn short_name(&self, target: &Target) -> String {
        let name = &target.tool().spec.name;
        match self.with_bare_name(name).len() {
            1 => name.clone(),
            _ => format!("{}__{name}", target.plugin.name),
        }
    }

    /// Every tool as a language model is offered it (short name, description, input schema
    /// without `$schema`), beside its canonical id.
    pub fn tool_defs(&self) -> Vec<(String, crate::engine::ToolDef)> {
        self.targets()
            .into_iter()
            .map(|target| {
                let mut parameters = target.tool().input_schema.clone();
                if let Some(schema) = parameters.as_object_mut() {
                    schema.remove("$schema");
                }
                let def = crate::engine::ToolDef {
                    name: self.short_name(&target),
                    description: target.tool().spec.description.clone(),
                    parameters,
                };
                (target.id(), def)
            })
            .collect()
    }

    /// Find the tool called `name` (`plugin.tool`, `plugin__tool` or a unique bare name).
    pub fn resolve(&self, name: &str) -> Result<Target, CallError> {
        let split = name.split_once('.').or_else(|| name.split_once("__"));
        if let Some((plugin, tool)) = split {
            let Some(p) = self.registry.plugin(plugin) else {
                return Err(self.unknown(name, format!("no plugin named `{plugin}` is loaded")));
            };
            return match p.tools.iter().position(|t| t.spec.name == tool) {
                Some(index) => Ok(Target { plugin: p.clone(), index }),
                None => {
                    let offered: Vec<&str> = p.tools.iter().map(|t| t.spec.name.as_str()).collect();
                    Err(self.unknown(
                        name,
                        format!(
                            "plugin `{plugin}` has no tool `{tool}`; it offers {}",
                            offered.join(", ")
                        ),
                    ))
                }
            };
        }
        let mut matches = self.with_bare_name(name);
        match matches.len() {
            0 => Err(self.unknown(name, format!("no loaded plugin offers a tool named `{name}`"))),
            1 => Ok(matches.remove(0)),
            _ => {
                let ids: Vec<String> = matches.iter().map(Target::id).collect();
                Err(CallError::new(
                    ErrorKind::AmbiguousTool,
                    format!(
                        "`{name}` is offered by several plugins; call one of {}",
                        ids.join(", ")
                    ),
                ))
            }
        }
    }

    /// Resolve `name`, validate `args`, check grants and run the call.
    pub async fn call(&self, name: &str, args: &Value) -> Result<Value, CallError> {
        self.call_traced(name, args).await.outcome
    }

    /// [`Router::call`], also reporting the fuel, memory and time the call used.
    /// One log line per call (`autoglm::call`, info), inside the caller's span: an HTTP
    /// request's line carries its trace id.
    pub async fn call_traced(&self, name: &str, args: &Value) -> Traced<Value> {
        use tracing::Instrument;
        let span = tracing::info_span!(target: "autoglm::call", "tool_call", tool = name);
        let traced = self.run(name, args).instrument(span).await;
        let outcome = match &traced.outcome {
            Ok(_) => "ok",
            Err(e) => e.kind.as_str(),
        };
        let micros = u64::try_from(traced.elapsed.as_micros()).unwrap_or(u64::MAX);
        tracing::info!(target: "autoglm::call", tool = name, outcome, fuel = traced.usage.fuel, micros, "tool call");
        traced
    }

    async fn run(&self, name: &str, args: &Value) -> Traced<Value> {
        let started = std::time::Instant::now();
        let untraced =
            |outcome| Traced { outcome, usage: Usage::default(), elapsed: started.elapsed() };
        let target = match self.resolve(name) {
            Ok(target) => target,
            Err(error) => return untraced(Err(error)),
        };
        let plugin = &target.plugin;
        let tool = target.tool();
        let at = |e: CallError| e.at(&plugin.name, &tool.spec.name);
        if !args.is_object() {
            let message = "arguments must be a JSON object";
            return untraced(Err(at(CallError::new(ErrorKind::InvalidArguments, message))));
        }
        if let Err(problems) = tool.validate(args) {
            let message = format!("arguments do not match the schema: {problems}");
            return untraced(Err(at(CallError::new(ErrorKind::InvalidArguments, message))));
        }
        if let Some(missing) = plugin.sandbox.policy().missing_grant(&tool.spec) {
            return untraced(Err(at(CallError::new(ErrorKind::PermissionDenied, missing))));
        }
        let traced = plugin.sandbox.call(&tool.spec, &args.to_string()).await;
        let outcome = traced.outcome.and_then(|text| {
            serde_json::from_str(&text).map_err(|e| {
                at(CallError::new(
                    ErrorKind::ToolError,
                    format!("the tool returned invalid JSON: {e}"),
                ))
            })
        });
        Traced { outcome, usage: traced.usage, elapsed: started.elapsed() }
    }

    fn with_bare_name(&self, name: &str) -> Vec<Target> {
        (self.registry.plugins())
            .filter_map(|p| {
                let index = p.tools.iter().position(|t| t.spec.name == name)?;
                Some(Target { plugin: p.clone(), index })
            })
            .collect()
    }

    fn unknown(&self, name: &str, why: String) -> CallError {
        CallError::new(ErrorKind::UnknownTool, format!("unknown tool `{name}`: {why}"))
    }
}
