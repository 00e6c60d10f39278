//! One tool call in a fresh sandbox: a new Store with fuel, an epoch deadline and a
//! tokio timeout, a memory cap, an output cap, captured stdio, and only the WASI
//! capabilities the plugin's [`Policy`] grants.

use std::future::Future;
use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::component::{InstancePre, ResourceTable};
use wasmtime::{ResourceLimiter, Store, Trap, UpdateDeadline, WasmBacktrace};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::bindings::{self, Access, LogLevel, ToolSpec};
use super::capture::Capture;
use crate::config::{DirMode, Limits};
use crate::error::{CallError, ErrorKind};
use crate::policy::{GrantedDir, HostAllowlist, Policy};

/// A plugin ready to be called: its linked component, grants and limits.
pub struct Sandbox {
    pre: bindings::PluginPre<CallState>,
    policy: Arc<Policy>,
    limits: Limits,
    gate: Gate,
}

/// What one call used of its budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// Fuel consumed (roughly, wasm instructions executed).
    pub fuel: u64,
    /// The largest linear memory the guest had, in bytes.
    pub memory_bytes: usize,
}

/// The outcome of a call with what it used and how long it took.
#[derive(Debug, Clone)]
pub struct Traced<T> {
    /// The result or the error.
    pub outcome: Result<T, CallError>,
    /// Fuel and memory used; zero when the guest never ran.
    pub usage: Usage,
    /// Wall-clock time from admission to answer, queueing included.
    pub elapsed: std::time::Duration,
}

/// An instance kept across calls (see [`Sandbox::warm_instance`]).
pub struct WarmInstance {
    store: Store<CallState>,
    plugin: bindings::Plugin,
    fuel: u64,
}

impl WarmInstance {
    /// Call `tool` with `args` (JSON text) in the kept instance, its fuel topped up first.
    pub async fn call(&mut self, tool: &str, args: &str) -> anyhow::Result<String> {
        self.store.set_fuel(self.fuel)?;
        let tools = self.plugin.autoglm_plugin_tools();
        match tools.call_call(&mut self.store, tool, args).await? {
            Ok(json) => Ok(json),
            Err(e) => anyhow::bail!("{tool} failed: {e:?}"),
        }
    }
}

/// What a sandboxed run does once the component is instantiated.
enum Invocation<'a> {
    ListTools,
    Call { tool: &'a str, args: &'a str },
}

/// What the guest answered.
enum Outcome {
    Tools(Vec<ToolSpec>),
    Called(Result<String, bindings::CallError>),
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
    log_budget: usize,
    policy: Arc<Policy>,
    tool: String,
}

impl Sandbox {
    /// A sandbox for the component behind `pre`, under `policy` and `limits`.
    pub fn new(
        pre: InstancePre<CallState>,
        policy: Policy,
        limits: Limits,
    ) -> wasmtime::Result<Self> {
        let gate = Gate::new(limits.concurrency, limits.queue);
        let pre = bindings::PluginPre::new(pre)?;
        Ok(Self { pre, policy: Arc::new(policy), limits, gate })
    }

    /// The plugin's name.
    pub fn plugin(&self) -> &str {
        &self.policy.plugin
    }

    /// The plugin's grants.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The limits every call runs under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Ask the component for its tools, under the same limits as a call.
    pub async fn list_tools(&self) -> Result<Vec<ToolSpec>, CallError> {
        match self.run("list-tools", Invocation::ListTools, &[], &mut Usage::default()).await? {
            Outcome::Tools(tools) => Ok(tools),
            Outcome::Called(_) => unreachable!("list-tools answers with tools"),
        }
    }

    /// Run `tool` with `args` (JSON text): its result (JSON text) and what it used.
    pub async fn call(&self, tool: &ToolSpec, args: &str) -> Traced<String> {
        let started = Instant::now();
        let mut usage = Usage::default();
        let outcome = self.call_in(tool, args, &mut usage).await;
        Traced { outcome, usage, elapsed: started.elapsed() }
    }

    async fn call_in(
        &self,
        tool: &ToolSpec,
        args: &str,
        usage: &mut Usage,
    ) -> Result<String, CallError> {
        let name = tool.name.as_str();
        let full = self.full_dirs();
        if let Some((dir, quota, used)) = (full.iter()).find(|(d, ..)| {
            tool.capabilities
                .directories
                .iter()
                .any(|n| n.guest_path == d.guest && n.access == Access::ReadWrite)
        }) {
            return Err(self.error(
                name,
                ErrorKind::PermissionDenied,
                format!(
                    "directory {} holds {} MiB, at its {} MiB quota; delete files or raise \
                     quota_mib in [[plugins.{}.dirs]]",
                    dir.guest,
                    used >> 20,
                    quota >> 20,
                    self.plugin()
                ),
            ));
        }
        let tool = name;
        let full: Vec<&str> = full.iter().map(|(d, ..)| d.guest.as_str()).collect();
        let outcome = match self.run(tool, Invocation::Call { tool, args }, &full, usage).await? {
            Outcome::Called(outcome) => outcome,
            Outcome::Tools(_) => unreachable!("call answers with a result"),
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

    /// Instantiate once and keep the instance, as hosts that reuse instances do: the
    /// baseline the benchmark report sets fresh sandboxes against. Calls through
    /// [`Sandbox::call`] never share an instance (one call's state would leak into the next).
    pub async fn warm_instance(&self) -> Result<WarmInstance, CallError> {
        const WHAT: &str = "warm-instance";
        let stdout = Capture::new(self.limits.log_bytes);
        let stderr = Capture::new(self.limits.log_bytes);
        let mut store = self.store(WHAT, &stdout, &stderr, &[], None)?;
        let plugin =
            self.pre.instantiate_async(&mut store).await.map_err(|e| self.trap(WHAT, e))?;
        Ok(WarmInstance { store, plugin, fuel: self.limits.fuel })
    }

    /// Writable directories that are at their quota, with quota and usage.
    fn full_dirs(&self) -> Vec<(&GrantedDir, u64, u64)> {
        (self.policy.dirs.iter())
            .filter_map(|d| d.full().map(|(quota, used)| (d, quota, used)))
            .collect()
    }

    /// Instantiate a fresh Store and run `body` in it under every limit.
    /// Directories in `full` are at their quota and mounted read-only.
    async fn run(
        &self,
        what: &str,
        invocation: Invocation<'_>,
        full: &[&str],
        usage: &mut Usage,
    ) -> Result<Outcome, CallError> {
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
        let mut store = self.store(what, &stdout, &stderr, full, Some(deadline))?;

        let work = async {
            let plugin = self.pre.instantiate_async(&mut store).await?;
            let tools = plugin.autoglm_plugin_tools();
            match invocation {
                Invocation::ListTools => {
                    tools.call_list_tools(&mut store).await.map(Outcome::Tools)
                }
                Invocation::Call { tool, args } => {
                    tools.call_call(&mut store, tool, args).await.map(Outcome::Called)
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

    /// A Store with the memory cap and the fuel armed, yielding at every epoch tick (so the
    /// executor can run other tasks and cancel this one) and stopping the guest once
    /// `deadline`, if any, has passed. Directories in `full` are mounted read-only.
    fn store(
        &self,
        what: &str,
        stdout: &Capture,
        stderr: &Capture,
        full: &[&str],
        deadline: Option<Instant>,
    ) -> Result<Store<CallState>, CallError> {
        let state = self.state(what, stdout, stderr, full)?;
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|s| &mut s.memory);
        store.set_fuel(self.limits.fuel).map_err(|e| self.trap(what, e))?;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| match deadline {
            Some(deadline) if Instant::now() >= deadline => Err(Trap::Interrupt.into()),
            _ => Ok(UpdateDeadline::Yield(1)),
        });
        Ok(store)
    }

    /// The Store's data for one call; directories in `full` are mounted read-only.
    fn state(
        &self,
        tool: &str,
        stdout: &Capture,
        stderr: &Capture,
        full: &[&str],
    ) -> Result<CallState, CallError> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdout.clone()).stderr(stderr.clone()).envs(&self.policy.env);
        for dir in &self.policy.dirs {
            let perms = match dir.mode {
                DirMode::ReadWrite if !full.contains(&dir.guest.as_str()) => FsPerms::ReadWrite,
                _ => FsPerms::ReadOnly,
            };
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
        let denials = Denials::default();
        Ok(CallState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            outbound: Outbound {
                allow: self.policy.hosts.clone(),
                body_cap: self.limits.http_body_bytes,
                denied: denials.clone(),
            },
            denials,
            memory: MemoryCap { max: self.limits.memory_bytes, total: 0, peak: 0, hit: None },
            log_budget: self.limits.log_bytes,
            policy: self.policy.clone(),
            tool: tool.to_string(),
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

impl bindings::autoglm::plugin::host::Host for CallState {
    async fn log(
        &mut self,
        level: LogLevel,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        let fields = if fields.is_empty() { String::new() } else { format!("{fields:?}") };
        // Guest log records share the call's log budget with its stdout and stderr.
        let size = message.len() + fields.len();
        if size > self.log_budget {
            self.log_budget = 0;
            return Ok(());
        }
        self.log_budget -= size;
        // Debug-escaped: a guest cannot forge log lines with newlines or terminal codes.
        let message = format!("{message:?}");
        let plugin = self.policy.plugin.as_str();
        let tool = self.tool.as_str();
        match level {
            LogLevel::Trace => {
                tracing::trace!(target: "autoglm::guest", plugin, tool, fields, "{message}")
            }
            LogLevel::Debug => {
                tracing::debug!(target: "autoglm::guest", plugin, tool, fields, "{message}")
            }
            LogLevel::Info => {
                tracing::info!(target: "autoglm::guest", plugin, tool, fields, "{message}")
            }
            LogLevel::Warn => {
                tracing::warn!(target: "autoglm::guest", plugin, tool, fields, "{message}")
            }
            LogLevel::Error => {
                tracing::error!(target: "autoglm::guest", plugin, tool, fields, "{message}")
            }
        }
        Ok(())
    }

    async fn get_config(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.policy.config.get(&key).cloned())
    }
}

/// The WASI filesystem version whose `open-at` the host audits (wasmtime-wasi 48's).
const FILESYSTEM: &str = "wasi:filesystem/types@0.2.12";

/// Route `descriptor.open-at` through the host's audit: the call itself is
/// wasmtime-wasi's, and a refusal (a path that leaves a granted directory, a
/// write to a read-only one) is recorded as a denial. Paths outside every grant
/// never reach the host: the guest's libc finds no directory to resolve them in.
pub(crate) fn audit_filesystem(
    linker: &mut wasmtime::component::Linker<CallState>,
) -> wasmtime::Result<()> {
    use wasmtime::component::Resource;
    use wasmtime_wasi::filesystem::WasiFilesystemView;
    use wasmtime_wasi::p2::bindings::filesystem::types::{
        Descriptor, DescriptorFlags, ErrorCode, Host, HostDescriptor, OpenFlags, PathFlags,
    };
    type Params = (Resource<Descriptor>, PathFlags, String, OpenFlags, DescriptorFlags);
    linker.allow_shadowing(true);
    linker.instance(FILESYSTEM)?.func_wrap_async(
        "[method]descriptor.open-at",
        |mut store: wasmtime::StoreContextMut<'_, CallState>, (fd, path_flags, path, open, flags): Params| {
            Box::new(async move {
                let state = store.data_mut();
                let mut view = state.filesystem();
                let opened = HostDescriptor::open_at(&mut view, fd, path_flags, path.clone(), open, flags).await;
                let outcome = match opened {
                    Ok(descriptor) => Ok(descriptor),
                    Err(error) => Err(Host::convert_error_code(&mut view, error)?),
                };
                if let Err(code @ (ErrorCode::NotPermitted | ErrorCode::Access | ErrorCode::ReadOnly)) = &outcome {
                    state.denials.record(format!(
                        "opening `{path}` was refused ({code:?}): it is outside the directories granted to plugin \
                         `{}` or needs write access it was not granted",
                        state.policy.plugin
                    ));
                }
                Ok((outcome,))
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Caps linear memory growth and remembers the attempt that hit the cap, so the
/// resulting trap is reported as `memory_limit` rather than a bare trap.
struct MemoryCap {
    max: usize,
    total: usize,
    peak: usize,
    hit: Option<(usize, usize)>,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // The cap covers all of a call's memories together, not each one.
        let total = self.total - current + desired;
        if total > self.max {
            self.hit = Some((self.total, total));
            wasmtime::bail!("memory limit of {} bytes reached", self.max);
        }
        self.total = total;
        self.peak = self.peak.max(total);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _: usize,
        desired: usize,
        _: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a million entries is far past any real guest.
        Ok(desired <= 1_000_000)
    }
}

/// The wasi:http send hook: only allowlisted hosts, only public addresses unless
/// private ones are granted. Denials are recorded so the call reports
/// `permission_denied` even when the guest turns them into its own error.
struct Outbound {
    allow: HostAllowlist,
    body_cap: usize,
    denied: Denials,
}

/// What the host refused a guest during one call. Recorded where the host
/// enforces a grant, so the call reports `permission_denied` even when the guest
/// turns the refusal into its own error message.
#[derive(Clone, Default)]
pub struct Denials(Arc<Mutex<Vec<String>>>);

impl Denials {
    /// Keep the first few refusals, each cut short: a guest that loops on refused
    /// requests must not grow host memory with them.
    fn record(&self, mut reason: String) {
        const KEPT: usize = 8;
        const LENGTH: usize = 512;
        if let Some((cut, _)) = reason.char_indices().nth(LENGTH) {
            reason.truncate(cut);
            reason.push('…');
        }
        let mut denials = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if denials.len() < KEPT {
            denials.push(reason);
        }
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

type SendFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<wasmtime_wasi_http::WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendFuture {
        let allow = self.allow.clone();
        let denied = self.denied.clone();
        let body_cap = self.body_cap;
        Box::new(async move {
            let deny = |reason: String| {
                denied.record(reason);
                Err(wasmtime_wasi_http::Error::HttpRequestDenied)
            };
            let authority =
                request.uri().authority().map(|a| a.as_str().to_string()).unwrap_or_default();
            if !allow.allows_authority(&authority) {
                return deny(format!(
                    "HTTP request to `{authority}` refused: it is not in this plugin's allow_hosts"
                ));
            }
            let port = request.uri().port_u16().unwrap_or(
                if request.uri().scheme() == Some(&http::uri::Scheme::HTTPS) { 443 } else { 80 },
            );
            let host =
                request.uri().host().unwrap_or_default().trim_matches(['[', ']']).to_string();
            let addresses = tokio::task::spawn_blocking(move || {
                (host.as_str(), port).to_socket_addrs().map(|a| a.collect::<Vec<_>>())
            })
            .await
            .map_err(|_| wasmtime_wasi_http::Error::DnsTimeout)?
            .map_err(|_| wasmtime_wasi_http::Error::DestinationNotFound)?;
            if let Some(blocked) = addresses.iter().find(|a| !allow.allows_address(a.ip())) {
                return deny(format!(
                    "HTTP request to `{authority}` refused: it resolves to the non-public address \
                     {}; set allow_private_addresses = true for this plugin to permit it",
                    blocked.ip()
                ));
            }
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            // A response larger than the cap ends in an error instead of filling memory.
            let capped = response.map(|body| {
                http_body_util::Limited::new(body, body_cap)
                    .map_err(move |e| match e.downcast::<wasmtime_wasi_http::Error>() {
                        Ok(inner) => *inner,
                        Err(_) => {
                            wasmtime_wasi_http::Error::HttpResponseBodySize(Some(body_cap as u64))
                        }
                    })
                    .boxed_unsync()
            });
            Ok((capped, Box::new(io) as Box<dyn Future<Output = _> + Send>))
        })
    }
}

/// A per-plugin concurrency limit with a bounded queue.
struct Gate {
    slots: Arc<tokio::sync::Semaphore>,
    admitted: Arc<AtomicUsize>,
    capacity: usize,
}

/// A place in a plugin's gate; holds a queue position until it acquires a slot.
struct Admission {
    slots: Arc<tokio::sync::Semaphore>,
    admitted: Arc<AtomicUsize>,
}

impl Gate {
    fn new(concurrency: usize, queue: usize) -> Self {
        Self {
            slots: Arc::new(tokio::sync::Semaphore::new(concurrency)),
            admitted: Arc::default(),
            capacity: concurrency + queue,
        }
    }

    /// A place among running and queued calls, or `None` when both are full.
    fn enter(&self) -> Option<Admission> {
        let capacity = self.capacity;
        (self.admitted.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < capacity).then_some(n + 1)
        }))
        .ok()?;
        Some(Admission { slots: self.slots.clone(), admitted: self.admitted.clone() })
    }
}

impl Admission {
    async fn acquire(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.slots.acquire().await.ok()
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}
