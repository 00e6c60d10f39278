//! One tool call in a fresh sandbox: a new Store with fuel, an epoch deadline and a
//! tokio timeout, a memory cap, an output cap, captured stdio, and only the WASI
//! capabilities the plugin's [`Policy`] grants.

//!
//! Split by capability, each concern in a module of its own: [`limits`] (memory cap, fuel,
//! deadline), [`host_imports`] (the `autoglm:plugin/host` interface), [`wasi_0_2_filesystem`]
//! (the audit of `open-at` and the write-time hooks of [`quota`], pinned to the WASI version
//! they shadow), [`wasi_0_2_io`] (what a
//! guest learns of host I/O errors), [`outbound`] (HTTP and
//! its DNS check), [`capture`] (stdout/stderr), [`denials`] and [`admission`] (the
//! per-plugin concurrency gate). [`warm`] is a benchmark baseline, never a serving path.

mod admission;
mod capture;
mod context;
mod denials;
mod host_imports;
mod limits;
mod outbound;
mod quota;
pub mod warm;
pub(crate) mod wasi_0_2_filesystem;
pub(crate) mod wasi_0_2_io;

use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use wasmtime::component::{
    ComponentExportIndex, Instance, InstancePre, ResourceTable, TypedFunc, Val,
};
use wasmtime::{Store, Trap, WasmBacktrace};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::config::{DirMode, Limits};
use crate::contract::{self as bindings, Access, Capabilities, ToolSpec};
use crate::error::{CallError, ErrorKind};
use crate::metered::{Metered, Usage};
use crate::policy::Policy;
use crate::runtime::reflect;
use admission::Gate;
use capture::Capture;
use denials::Denials;
use limits::MemoryCap;
use outbound::Outbound;
use quota::Quotas;

use context::Scope;
pub use context::{CallEvent, CallOptions};

/// A plugin ready to be called: its linked component, what it exports, grants and limits.
pub struct Sandbox {
    pre: InstancePre<CallState>,
    entry: Entry,
    policy: Arc<Policy>,
    limits: Limits,
    gate: Gate,
}

/// What the host calls in a plugin's component.
pub enum Entry {
    /// The `list-tools` and `call` functions of its `autoglm:plugin/tools` export (either
    /// revision: their types are the same).
    Contract {
        /// `list-tools`.
        list_tools: ComponentExportIndex,
        /// `call`.
        call: ComponentExportIndex,
    },
    /// Its own exported functions, one tool each.
    Functions(Vec<reflect::Function>),
}

type ListTools = TypedFunc<(), (Vec<ToolSpec>,)>;
type Call = TypedFunc<(String, String), (Result<String, bindings::CallError>,)>;

/// What a sandboxed run does once the component is instantiated.
enum Invocation<'a> {
    ListTools,
    Call { tool: &'a str, args: String },
    Function { function: &'a reflect::Function, params: Vec<Val> },
}

/// What the guest answered.
enum Answered {
    Tools(Vec<ToolSpec>),
    Called(Result<String, bindings::CallError>),
    Returned(Vec<Val>),
}

/// The per-call data of a Store: WASI state, HTTP hooks, the memory limiter and the
/// plugin's identity for the `host` import.
pub struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    outbound: Outbound,
    memory: MemoryCap,
    denials: Denials,
    quotas: Quotas,
    log_budget: usize,
    policy: Arc<Policy>,
    tool: String,
    scope: Scope,
}

impl Sandbox {
    /// A sandbox for the component behind `pre`, under `policy` and `limits`.
    pub fn new(pre: InstancePre<CallState>, entry: Entry, policy: Policy, limits: Limits) -> Self {
        let gate = Gate::new(limits.concurrency, limits.queue);
        Self { pre, entry, policy: Arc::new(policy), limits, gate }
    }

    /// The plugin's name.
    pub fn plugin(&self) -> &str {
        &self.policy.plugin
    }

    /// The plugin's grants.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Ask a contract component for its tools, under the same limits as a call; a
    /// component of functions lists none (its tools are reflected from its types).
    pub async fn list_tools(&self) -> Result<Vec<ToolSpec>, CallError> {
        let (options, mut usage) = (CallOptions::default(), Usage::default());
        match self.run("list-tools", Invocation::ListTools, None, &options, &mut usage).await? {
            Answered::Tools(tools) => Ok(tools),
            Answered::Called(_) | Answered::Returned(_) => Ok(Vec::new()),
        }
    }

    /// Run `tool` with `args` (a JSON object), as `options` asks: its result (JSON text)
    /// and what it used.
    pub async fn call(
        &self,
        tool: &ToolSpec,
        args: &Value,
        options: &CallOptions,
    ) -> Metered<String> {
        let started = Instant::now();
        let mut usage = Usage::default();
        let outcome = self.call_in(tool, args, options, &mut usage).await;
        Metered { outcome, usage, elapsed: started.elapsed() }
    }

    async fn call_in(
        &self,
        spec: &ToolSpec,
        args: &Value,
        options: &CallOptions,
        usage: &mut Usage,
    ) -> Result<String, CallError> {
        let tool = spec.name.as_str();
        let invocation = match &self.entry {
            Entry::Contract { .. } => Invocation::Call { tool, args: args.to_string() },
            Entry::Functions(functions) => {
                let function = functions.iter().find(|f| f.tool == tool).ok_or_else(|| {
                    self.error(
                        tool,
                        ErrorKind::UnknownTool,
                        "the component exports no such function",
                    )
                })?;
                let params = (function.params_from_json(args))
                    .map_err(|m| self.error(tool, ErrorKind::InvalidArguments, m))?;
                Invocation::Function { function, params }
            }
        };
        let needs = Some(&spec.capabilities);
        let outcome = match self.run(tool, invocation, needs, options, usage).await? {
            Answered::Called(outcome) => outcome,
            Answered::Returned(results) => self.returned(tool, &results),
            Answered::Tools(_) => unreachable!("call answers with a result"),
        };
        match outcome {
            Ok(json) if json.len() > self.limits.result_bytes => Err(self.error(
                tool,
                ErrorKind::OutputTooLarge,
                format!(
                    "the result is {} bytes, over the {}-byte cap; raise \
                     plugins.{}.limits.result_bytes if larger results are expected",
                    json.len(),
                    self.limits.result_bytes,
                    self.plugin()
                ),
            )),
            Ok(json) => Ok(json),
            Err(bindings::CallError::InvalidArguments(m)) => {
                Err(self.error(tool, ErrorKind::InvalidArguments, m))
            }
            Err(bindings::CallError::Failed(m)) => Err(self.error(tool, ErrorKind::ToolError, m)),
        }
    }

    /// What an exported function returned, as a contract call's answer: a `result`'s
    /// `err` is the tool's failure, with the error value in its message.
    fn returned(&self, tool: &str, results: &[Val]) -> Result<String, bindings::CallError> {
        let Entry::Functions(functions) = &self.entry else { unreachable!("functions return") };
        let function = functions.iter().find(|f| f.tool == tool).expect("resolved before the call");
        match function.result_to_json(results) {
            Ok(value) => Ok(value.to_string()),
            Err(error) => Err(bindings::CallError::Failed(format!("{tool} returned err: {error}"))),
        }
    }

    /// Instantiate a fresh Store and run `body` in it under every limit.
    async fn run(
        &self,
        what: &str,
        invocation: Invocation<'_>,
        needs: Option<&Capabilities>,
        options: &CallOptions,
        usage: &mut Usage,
    ) -> Result<Answered, CallError> {
        let admission = self.gate.enter().ok_or_else(|| {
            self.error(
                what,
                ErrorKind::Overloaded,
                format!(
                    "{} calls are running and {} are queued; retry later or raise \
                     plugins.{}.limits.concurrency / queue",
                    self.limits.concurrency,
                    self.limits.queue,
                    self.plugin()
                ),
            )
        })?;
        let _slot = admission.acquire().await;
        let stdout = Capture::new(self.limits.log_bytes);
        let stderr = Capture::new(self.limits.log_bytes);
        let deadline = Instant::now() + self.limits.deadline;
        let scope = Scope::new(options, deadline);
        let mut store = self.store(what, &stdout, &stderr, needs, Some(deadline), scope)?;

        let work = async {
            let instance = self.pre.instantiate_async(&mut store).await?;
            match invocation {
                Invocation::ListTools => match self.contract(&instance, &mut store)? {
                    Some((list_tools, _)) => {
                        list_tools.call_async(&mut store, ()).await.map(|(t,)| Answered::Tools(t))
                    }
                    None => Ok(Answered::Returned(Vec::new())),
                },
                Invocation::Call { tool, args } => {
                    let (_, call) =
                        self.contract(&instance, &mut store)?.expect("a contract plugin");
                    call.call_async(&mut store, (tool.to_string(), args))
                        .await
                        .map(|(r,)| Answered::Called(r))
                }
                Invocation::Function { function, params } => {
                    let func = (instance.get_func(&mut store, function.index))
                        .ok_or_else(|| wasmtime::format_err!("no export {}", function.export))?;
                    let mut results = vec![Val::Bool(false); function.result.iter().count()];
                    func.call_async(&mut store, &params, &mut results).await?;
                    Ok(Answered::Returned(results))
                }
            }
        };
        // The epoch deadline only fires while wasm runs; a guest blocked in a host
        // call (a slow HTTP request, a sleep) is stopped by this timeout instead.
        let outcome = tokio::time::timeout(self.limits.deadline, work).await;
        usage.fuel = self.limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        usage.memory_bytes = store.data().memory.peak;
        self.drain_output(what, &stdout, "stdout");
        self.drain_output(what, &stderr, "stderr");
        match outcome {
            Err(_elapsed) => Err(self.timeout(what)),
            Ok(Ok(value)) => {
                let denied = store.data().denials.take();
                match denied.is_empty() {
                    true => Ok(value),
                    false => Err(self.error(what, ErrorKind::PermissionDenied, denied.join("; "))),
                }
            }
            Ok(Err(error)) => Err(self.classify(what, error, store.data())),
        }
    }

    /// The contract's `list-tools` and `call` in `instance`, typed (the check that the
    /// component's functions have the contract's types); None for a component of functions.
    fn contract(
        &self,
        instance: &Instance,
        store: &mut Store<CallState>,
    ) -> wasmtime::Result<Option<(ListTools, Call)>> {
        let Entry::Contract { list_tools, call } = &self.entry else { return Ok(None) };
        let mut typed = |index: &ComponentExportIndex, name: &str| {
            (instance.get_func(&mut *store, index))
                .ok_or_else(|| wasmtime::format_err!("the component does not export `{name}`"))
        };
        let (list_tools, call) = (typed(list_tools, "list-tools")?, typed(call, "call")?);
        let wrong = |name: &'static str| {
            move |e: wasmtime::Error| e.context(format!("`{name}` has the wrong type"))
        };
        Ok(Some((
            list_tools.typed(&*store).map_err(wrong("list-tools"))?,
            call.typed(&*store).map_err(wrong("call"))?,
        )))
    }

    /// A Store for one call, its budgets armed (see [`limits::arm`]), with what `needs`
    /// declares of the grants (nothing when None).
    fn store(
        &self,
        what: &str,
        stdout: &Capture,
        stderr: &Capture,
        needs: Option<&Capabilities>,
        deadline: Option<Instant>,
        scope: Scope,
    ) -> Result<Store<CallState>, CallError> {
        let state = self.state(what, stdout, stderr, needs, scope)?;
        let mut store = Store::new(self.pre.engine(), state);
        limits::arm(&mut store, self.limits.fuel, deadline).map_err(|e| self.trap(what, e))?;
        Ok(store)
    }

    /// The Store's data for one call: what `needs` declares of the grants (nothing when
    /// None), writable directories under their quotas.
    fn state(
        &self,
        tool: &str,
        stdout: &Capture,
        stderr: &Capture,
        needs: Option<&Capabilities>,
        scope: Scope,
    ) -> Result<CallState, CallError> {
        // A call sees only what its tool declares of the plugin's grants (the declaration
        // was checked against the grants before the call), at the lower of declared and
        // granted access: `notes.read` cannot write, an undeclared directory is not there.
        let declared_env = |key: &str| needs.is_some_and(|n| n.env.iter().any(|k| k == key));
        let env: Vec<&(String, String)> =
            self.policy.env.iter().filter(|(key, _)| declared_env(key)).collect();
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdout.clone()).stderr(stderr.clone());
        for (key, value) in env {
            wasi.env(key, value);
        }
        let denials = Denials::default();
        let mut quotas = Quotas::default();
        for dir in &self.policy.dirs {
            let declared =
                needs.and_then(|n| n.directories.iter().find(|d| d.guest_path == dir.guest));
            let Some(declared) = declared else { continue };
            let writable = declared.access == Access::ReadWrite && dir.mode == DirMode::ReadWrite;
            if let (true, Some(limit), Some(usage)) = (writable, dir.quota_bytes, &dir.usage) {
                quotas.mount(&dir.guest, self.plugin(), limit, usage.clone(), &denials);
            }
            let perms = if writable { FsPerms::ReadWrite } else { FsPerms::ReadOnly };
            wasi.preopened_dir(&dir.host, &dir.guest, perms).map_err(|e| {
                self.error(
                    tool,
                    ErrorKind::PermissionDenied,
                    format!(
                        "the directory granted at {} ({}) cannot be opened: {e}; fix \
                         plugins.{}.dirs in the config",
                        dir.guest,
                        dir.host.display(),
                        self.plugin()
                    ),
                )
            })?;
        }
        Ok(CallState {
            wasi: wasi.build(),
            table: {
                let mut table = ResourceTable::new();
                table.set_max_capacity(self.limits.resources);
                table
            },
            http: WasiHttpCtx::new(),
            outbound: Outbound {
                allow: self.policy.hosts.narrowed_to(needs.map_or(&[], |n| &n.outbound_hosts)),
                body_cap: self.limits.http_body_bytes,
                denied: denials.clone(),
            },
            denials,
            quotas,
            memory: MemoryCap { max: self.limits.memory_bytes, total: 0, peak: 0, hit: None },
            log_budget: self.limits.log_bytes,
            policy: self.policy.clone(),
            tool: tool.to_string(),
            scope,
        })
    }

    fn drain_output(&self, tool: &str, capture: &Capture, stream: &'static str) {
        let (kept, dropped) = capture.take();
        let plugin = self.plugin();
        for line in String::from_utf8_lossy(&kept).lines().filter(|l| !l.is_empty()) {
            tracing::info!(target: "autoglm::guest", plugin, tool, stream, "{line}");
        }
        if dropped > 0 {
            tracing::warn!(
                target: "autoglm::guest",
                plugin,
                tool,
                stream,
                dropped,
                "guest output over plugins.{plugin}.limits.log_bytes was dropped"
            );
        }
    }

    fn classify(&self, tool: &str, error: wasmtime::Error, state: &CallState) -> CallError {
        let plugin = self.plugin();
        if let Some((current, desired)) = state.memory.hit {
            return self.error(
                tool,
                ErrorKind::MemoryLimit,
                format!(
                    "the guest tried to grow its memory from {} to {} MiB, over the {} MiB cap; \
                     raise plugins.{plugin}.limits.memory_mib if it needs more",
                    current >> 20,
                    desired.div_ceil(1 << 20),
                    self.limits.memory_bytes >> 20
                ),
            );
        }
        if error.downcast_ref::<wasmtime::component::ResourceTableError>().is_some() {
            return self.error(
                tool,
                ErrorKind::ResourceLimit,
                format!(
                    "the guest held {} host resources (open files, streams, requests) at once, \
                     its cap; raise plugins.{plugin}.limits.resources if it needs more",
                    self.limits.resources
                ),
            );
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => self.error(
                tool,
                ErrorKind::OutOfFuel,
                format!(
                    "the guest used all {} units of fuel; raise plugins.{plugin}.limits.fuel \
                     if the work is legitimate",
                    self.limits.fuel
                ),
            ),
            Some(Trap::Interrupt) => self.timeout(tool),
            _ => self.trap(tool, error),
        }
    }

    fn trap(&self, tool: &str, error: wasmtime::Error) -> CallError {
        let mut message = format!("the guest stopped abnormally: {error}");
        if let Some(trap) = error.downcast_ref::<Trap>() {
            message = format!("the guest trapped: {trap}");
        }
        if let Some(trace) = error.downcast_ref::<WasmBacktrace>() {
            let frames: Vec<String> = (trace.frames().iter().take(8))
                .map(|f| {
                    f.func_name()
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("func[{}]", f.func_index()))
                })
                .collect();
            if !frames.is_empty() {
                message.push_str(&format!(" (backtrace: {})", frames.join(" <- ")));
            }
        }
        self.error(tool, ErrorKind::Trap, message)
    }

    fn timeout(&self, tool: &str) -> CallError {
        self.error(
            tool,
            ErrorKind::Timeout,
            format!(
                "the call ran past its {} ms deadline; raise plugins.{}.limits.deadline_ms \
                 if it needs longer",
                self.limits.deadline.as_millis(),
                self.plugin()
            ),
        )
    }

    fn error(&self, tool: &str, kind: ErrorKind, message: impl Into<String>) -> CallError {
        CallError::new(kind, message).at(self.plugin(), tool)
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.outbound }
    }
}
