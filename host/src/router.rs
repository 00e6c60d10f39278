//! Tool names to plugins: resolve a name to a [`Target`] once; a target validates the
//! arguments against its schema, checks the grants and runs the call in its sandbox.
//!
//! One naming rule for every surface: the canonical id is `plugin.tool`; where dots
//! are not allowed (OpenAI function names, model prompts) a tool is called by its
//! bare name when that is unique among loaded plugins, else `plugin__tool`. The
//! router accepts all three.

use std::sync::Arc;

use serde_json::Value;

use crate::error::{CallError, ErrorKind};
use crate::metered::Metered;
use crate::registry::{LiveRegistry, Plugin, Registry, Tool};
use crate::runtime::sandbox::CallOptions;

/// Resolves names over one snapshot of the registry.
#[derive(Clone, Default)]
pub struct Router {
    registry: Arc<Registry>,
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

    /// Validate `args`, check the grants and run the call in a fresh sandbox, reporting the
    /// fuel, memory and time it used. Callers go through the invocation path (`invoke`), which
    /// checks the caller's allowlist first.
    pub(crate) async fn call(&self, args: &Value, options: &CallOptions) -> Metered<Value> {
        let started = std::time::Instant::now();
        let (plugin, tool) = (&self.plugin, self.tool());
        let refuse = |kind, message: String| {
            let mut metered =
                Metered::refused(CallError::new(kind, message).at(&plugin.name, &tool.spec.name));
            metered.elapsed = started.elapsed();
            metered
        };
        if !args.is_object() {
            return refuse(ErrorKind::InvalidArguments, "arguments must be a JSON object".into());
        }
        if let Err(problems) = tool.validate(args) {
            let message = format!("arguments do not match the schema: {problems}");
            return refuse(ErrorKind::InvalidArguments, message);
        }
        if let Some(missing) = plugin.sandbox.policy().missing_grant(&tool.spec) {
            return refuse(ErrorKind::PermissionDenied, missing);
        }
        let metered = plugin.sandbox.call(&tool.spec, args, options).await;
        let broken = |message: String| {
            CallError::new(ErrorKind::ToolError, message).at(&plugin.name, &tool.spec.name)
        };
        let outcome = metered.outcome.and_then(|text| {
            let value: Value = serde_json::from_str(&text)
                .map_err(|e| broken(format!("the tool returned invalid JSON: {e}")))?;
            tool.check_output(&value).map_err(|problems| {
                broken(format!("the tool's result does not match its output schema: {problems}"))
            })?;
            Ok(value)
        });
        Metered { outcome, usage: metered.usage, elapsed: started.elapsed() }
    }
}

impl Router {
    /// A router over the snapshot `registry`.
    pub fn new(registry: Arc<Registry>) -> Self {
        Self { registry }
    }

    /// A router over the plugins `live` serves now.
    pub fn current(live: &LiveRegistry) -> Self {
        Self::new(live.registry())
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
    pub fn tool_defs(&self) -> Vec<(Target, autoglm_engine::ToolDef)> {
        self.targets()
            .into_iter()
            .map(|target| {
                let mut parameters = target.tool().input_schema.clone();
                if let Some(schema) = parameters.as_object_mut() {
                    schema.remove("$schema");
                }
                let def = autoglm_engine::ToolDef {
                    name: self.short_name(&target),
                    description: target.tool().spec.description.clone(),
                    parameters,
                };
                (target, def)
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
