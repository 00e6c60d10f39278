//! The one path every tool call takes, whoever asks: REST, MCP over HTTP and stdio, the
//! agent loop and the CLI. It resolves the name once (a plugin still compiling answers
//! `loading`), checks the caller's allowlist against the resolved tool at call time, runs
//! the call and records its metrics.
//!
//! The allowlist is checked here rather than where tools are offered: a model (local or
//! remote) or a client can name any tool, offered or not, and what it names is what runs.

use std::sync::Arc;

use serde_json::Value;
use tracing::Instrument;

use crate::error::{CallError, ErrorKind};
use crate::metered::Metered;
use crate::metrics::Metrics;
use crate::registry::LiveRegistry;
use crate::router::{Router, Target};
use crate::runtime::sandbox::CallOptions;

/// The caller name of the operator at the command line, who may call every tool.
pub const OPERATOR: &str = "operator";

/// Which tools a caller may run: an API key's `tools` list, or every tool. A task keeps its
/// submitter's list in the journal, so it is serialized.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Allowlist {
    caller: String,
    tools: Option<Vec<String>>,
}

impl Allowlist {
    /// The operator at the command line: every tool.
    pub fn operator() -> Self {
        Self::everything(OPERATOR)
    }

    /// Every tool, for callers the operator trusts (the CLI, a server without keys).
    pub fn everything(caller: impl Into<String>) -> Self {
        Self { caller: caller.into(), tools: None }
    }

    /// Only the tools `patterns` name (`plugin.tool` or `plugin.*`), or all when None.
    pub fn new(caller: impl Into<String>, patterns: Option<Vec<String>>) -> Self {
        Self { caller: caller.into(), tools: patterns }
    }

    /// The caller's name: an API key's, `anonymous` or `operator`.
    pub fn caller(&self) -> &str {
        &self.caller
    }

    /// Whether the list names tools (an unrestricted caller may call everything).
    pub fn is_restricted(&self) -> bool {
        self.tools.is_some()
    }

    /// Whether the tool with canonical id `plugin.tool` is allowed.
    pub fn permits(&self, id: &str) -> bool {
        let Some(allowed) = &self.tools else { return true };
        let plugin = id.split('.').next().unwrap_or(id);
        allowed.iter().any(|a| a == id || a.strip_suffix(".*") == Some(plugin))
    }

    /// [`Allowlist::permits`] as the error a refused caller gets.
    pub fn check(&self, id: &str) -> Result<(), CallError> {
        if self.permits(id) {
            return Ok(());
        }
        Err(CallError::new(
            ErrorKind::PermissionDenied,
            format!("API key `{}` may not call {id}; add it to the key's tools list", self.caller),
        ))
    }
}

/// Runs tool calls over the live plugins and records them in the metrics.
pub struct Invoker {
    plugins: Arc<LiveRegistry>,
    metrics: Arc<Metrics>,
}

impl Invoker {
    /// Calls into `plugins`, counted in `metrics`.
    pub fn new(plugins: Arc<LiveRegistry>, metrics: Arc<Metrics>) -> Self {
        Self { plugins, metrics }
    }

    /// The live plugins.
    pub fn plugins(&self) -> &Arc<LiveRegistry> {
        &self.plugins
    }

    /// Where calls are counted.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// A router over the plugins serving now; hold it for one request.
    pub fn router(&self) -> Router {
        Router::current(&self.plugins)
    }

    /// Find the tool `name` names in `router`. A name that may belong to a plugin still
    /// being compiled answers `loading` rather than `unknown_tool`, so clients retry.
    pub fn resolve(&self, router: &Router, name: &str) -> Result<Target, CallError> {
        router.resolve(name).map_err(|error| {
            let still_loading = match name.split_once('.').or_else(|| name.split_once("__")) {
                Some((plugin, _)) => self.plugins.is_loading(plugin),
                // A bare name may belong to a plugin that has not finished compiling.
                None => error.kind == ErrorKind::UnknownTool && !self.plugins.is_ready(),
            };
            match still_loading {
                true => CallError::new(
                    ErrorKind::Loading,
                    format!(
                        "`{name}` is not available yet: plugins are still being compiled; retry in a moment"
                    ),
                ),
                false => error,
            }
        })
    }

    /// Resolve `name` for the holder of `allowlist`. A caller with a restricted list learns
    /// nothing about tools outside it from a failed lookup: no list of what a plugin offers,
    /// no ambiguity between tools it may not call.
    pub fn resolve_for(
        &self,
        allowlist: &Allowlist,
        router: &Router,
        name: &str,
    ) -> Result<Target, CallError> {
        self.resolve(router, name).map_err(|error| match error.kind {
            ErrorKind::UnknownTool | ErrorKind::AmbiguousTool if allowlist.is_restricted() => {
                CallError::new(
                    ErrorKind::UnknownTool,
                    format!(
                        "unknown tool `{name}`: API key `{}` may call no tool of that name",
                        allowlist.caller
                    ),
                )
            }
            _ => error,
        })
    }

    /// Resolve `name` and run it for the holder of `allowlist`.
    pub async fn call(&self, allowlist: &Allowlist, name: &str, args: &Value) -> Metered<Value> {
        self.call_with(allowlist, name, args, &CallOptions::default()).await
    }

    /// [`Invoker::call`] with what the caller adds to the call: a listener for the guest's
    /// log records and progress, its idempotency key and trace id.
    pub async fn call_with(
        &self,
        allowlist: &Allowlist,
        name: &str,
        args: &Value,
        options: &CallOptions,
    ) -> Metered<Value> {
        match self.resolve_for(allowlist, &self.router(), name) {
            Ok(target) => self.call_target(allowlist, &target, args, options).await,
            Err(error) => Metered::refused(error),
        }
    }

    /// Run the resolved `target` for the holder of `allowlist`: refused with
    /// `permission_denied` before anything runs when the list does not permit it. Every
    /// call, run or refused, gets one metric and one log line (`autoglm::call`, info,
    /// inside the caller's span: an HTTP request's line carries its trace id).
    pub async fn call_target(
        &self,
        allowlist: &Allowlist,
        target: &Target,
        args: &Value,
        options: &CallOptions,
    ) -> Metered<Value> {
        let (id, plugin, tool) = (target.id(), &target.plugin.name, &target.tool().spec.name);
        let metered = match allowlist.check(&id) {
            Err(error) => Metered::refused(error.at(plugin, tool)),
            Ok(()) => {
                let _in_flight = self.metrics.start_call();
                let span = tracing::info_span!(target: "autoglm::call", "tool_call", tool = %id);
                target.call(args, options).instrument(span).await
            }
        };
        self.metrics.record_call(plugin, tool, &metered);
        let outcome = match &metered.outcome {
            Ok(_) => "ok",
            Err(e) => e.kind.as_str(),
        };
        let micros = u64::try_from(metered.elapsed.as_micros()).unwrap_or(u64::MAX);
        let caller = allowlist.caller.as_str();
        tracing::info!(target: "autoglm::call", tool = %id, caller, outcome, fuel = metered.usage.fuel, micros, "tool call");
        metered
    }
}
