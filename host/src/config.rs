//! The operator's configuration file (`autoglm.toml`) as typed values with defaults.
//!
//! Everything a plugin may reach is granted here and only here; see
//! `autoglm.example.toml` at the repository root for every key with its meaning.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory of plugin components (`*.wasm`).
    pub plugins_dir: Option<PathBuf>,
    /// Directory for compiled components, so a restart does not recompile.
    pub cache_dir: Option<PathBuf>,
    /// Settings of wasmtime, which runs the plugins (`[wasm]`).
    #[serde(default)]
    pub wasm: WasmSettings,
    /// `[engine]`, the old name of `[wasm]`: still read, with a warning.
    #[serde(default, rename = "engine")]
    legacy_wasm: Option<WasmSettings>,
    /// Limits applied to every plugin unless its own section overrides them.
    #[serde(default)]
    pub limits: LimitOverrides,
    /// `[plugins]`: signature policy, registry sources, and grants per plugin.
    #[serde(default)]
    pub plugins: PluginsSection,
    /// Settings of `autoglm serve`.
    #[serde(default)]
    pub server: ServerSettings,
    /// The language model: a local checkpoint or a remote OpenAI-compatible server.
    #[serde(default)]
    pub model: ModelSettings,
    /// Where spans are exported (OpenTelemetry), if anywhere.
    #[serde(default)]
    pub telemetry: TelemetrySettings,
    /// Directory for the host's own durable data (the tasks' SQLite journal).
    pub data_dir: Option<PathBuf>,
    /// Multi-stage tasks: their journal, templates and leases (`[tasks]`).
    #[serde(default)]
    pub tasks: TasksSettings,
    /// What the file says that still works but should change (deprecated keys), for the
    /// command to report once logging is set up.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// The `[telemetry]` section: where spans are exported.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    /// Base URL of an OTLP/HTTP collector (`http://127.0.0.1:4318`); spans go to
    /// `<url>/v1/traces`. Needs a build with the `otlp` feature.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` the spans carry (default `autoglm`).
    pub service_name: Option<String>,
}

/// The `[tasks]` section: where tasks are journaled and how replicas share them.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TasksSettings {
    /// `sqlite:PATH` or `postgres://USER@HOST:PORT/DB` (default: `tasks.db` in the data
    /// directory).
    pub database: Option<String>,
    /// Directory of task templates (`NAME.toml`; default `tasks`, when it exists).
    pub dir: Option<PathBuf>,
    /// Days finished tasks are kept.
    pub retain_days: u64,
    /// How long a replica's claim on a task lasts without a heartbeat; another replica
    /// resumes the task once it expires.
    pub lease_ms: u64,
    /// Tasks one replica runs at once.
    pub concurrency: usize,
    /// How often a replica looks for tasks to run that it was not told about (submitted to
    /// another replica, resumed by an operator there, or left by a dead one).
    pub poll_ms: u64,
}

impl Default for TasksSettings {
    fn default() -> Self {
        Self {
            database: None,
            dir: None,
            retain_days: 7,
            lease_ms: 15_000,
            concurrency: 64,
            poll_ms: 500,
        }
    }
}

impl TasksSettings {
    fn check(&self) -> anyhow::Result<()> {
        check_range("[tasks]", "lease_ms", Some(self.lease_ms), 100, 3_600_000)?;
        check_range("[tasks]", "poll_ms", Some(self.poll_ms), 10, 60_000)?;
        check_range("[tasks]", "retain_days", Some(self.retain_days), 1, 36_500)?;
        check_range("[tasks]", "concurrency", Some(self.concurrency as u64), 1, 10_000)
    }
}

/// Where the host keeps its durable data unless the config says otherwise.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(std::env::temp_dir)
        .join("autoglm")
}

/// The plugins directory used when neither the command line nor the config names one.
pub const DEFAULT_PLUGINS_DIR: &str = "target/plugins";

/// Turns the agent loop may take when the config does not say.
pub const DEFAULT_MAX_STEPS: usize = 5;

/// Where compiled components are cached unless the config says otherwise.
pub fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("autoglm")
        .join("components")
}

/// Which language model answers chat requests, and how.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSettings {
    /// A local checkpoint (relative to the working directory): a GLM-4 family safetensors
    /// directory, a .gguf file, or a directory holding one .gguf.
    pub path: Option<PathBuf>,
    /// A PEFT LoRA adapter directory applied to the local checkpoint.
    pub adapter: Option<PathBuf>,
    /// `cpu`, `cuda` or `cuda:N` for the local checkpoint.
    pub device: String,
    /// Most model turns per request in the agent loop.
    pub max_steps: usize,
    /// How the local engine batches concurrent requests.
    pub batching: autoglm_engine::scheduler::BatchSettings,
    /// A remote OpenAI-compatible server to use instead of a local checkpoint.
    pub remote: Option<autoglm_engine::remote::RemoteSettings>,
    /// MiB of keys and values the local engine keeps of prompt beginnings that requests
    /// share (the system text and tools block); 0 turns the prefix cache off.
    pub prefix_cache_mib: u64,
}

impl Default for ModelSettings {
    fn default() -> Self {
        Self {
            path: None,
            adapter: None,
            device: "cpu".into(),
            max_steps: DEFAULT_MAX_STEPS,
            batching: Default::default(),
            remote: None,
            prefix_cache_mib: autoglm_engine::DEFAULT_PREFIX_CACHE_BYTES >> 20,
        }
    }
}

/// Settings of the HTTP endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address to listen on.
    pub addr: String,
    /// Largest request body accepted, in bytes.
    pub body_limit_bytes: usize,
    /// Longest a request may take before it is answered with `timeout`.
    pub request_timeout_ms: u64,
    /// Browser origins allowed besides loopback ones (`https://app.example.com`).
    pub allowed_origins: Vec<String>,
    /// Requests per minute per API key (or per server when no keys are set).
    pub rate_per_minute: u32,
    /// Requests in flight per API key.
    pub concurrency: usize,
    /// How long a shutdown waits for in-flight requests.
    pub shutdown_grace_ms: u64,
    /// Longest a client may take to send a request body. The body is read before the
    /// request takes one of its key's concurrency slots, so slow uploads hold no slot.
    pub body_read_timeout_ms: u64,
    /// Connections open at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// A connection with no request in flight and no bytes moving for this long is closed.
    pub idle_timeout_ms: u64,
    /// MCP sessions (session-based revisions) one key may hold; past this its least recently
    /// used session ends.
    pub sessions_per_key: usize,
    /// An MCP session unused for this long ends; its client initializes again.
    pub session_ttl_ms: u64,
    /// Event streams (MCP notification streams, streamed chat) a key may hold open at once;
    /// each also holds one of the key's `concurrency` slots while it is open.
    pub streams_per_key: usize,
    /// Failed logins (wrong or missing API key) allowed per client address per minute;
    /// past that the address is refused with `rate_limited` until its allowance refills.
    pub login_failures_per_minute: u32,
    /// API keys; required when `addr` is not a loopback address.
    pub keys: Vec<ApiKeyConfig>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:8080".into(),
            body_limit_bytes: 1 << 20,
            // Agent requests run several model turns and tool calls.
            request_timeout_ms: 300_000,
            allowed_origins: Vec::new(),
            rate_per_minute: 600,
            concurrency: 64,
            shutdown_grace_ms: 30_000,
            // A browser or SDK sends a 1 MiB body in well under a second on any real link.
            body_read_timeout_ms: 10_000,
            // Well under the usual 1024 open files, which also hold plugins and the cache.
            max_connections: 512,
            // A request in flight (an event stream too) keeps its connection; this only
            // reaps connections that hold nothing and say nothing.
            idle_timeout_ms: 60_000,
            login_failures_per_minute: 10,
            sessions_per_key: 100,
            session_ttl_ms: 3_600_000,
            // A browser console holds a few streams; an agent framework one per session.
            streams_per_key: 16,
            keys: Vec::new(),
        }
    }
}

/// One API key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// A name for logs and metrics.
    pub name: String,
    /// The bearer token itself ...
    pub token: Option<String>,
    /// ... or the environment variable holding it (keeps secrets out of the file).
    pub token_env: Option<String>,
    /// Tools this key may call (`plugin.tool` or `plugin.*`); all when absent.
    pub tools: Option<Vec<String>>,
    /// Overrides `server.rate_per_minute` for this key.
    pub rate_per_minute: Option<u32>,
    /// Overrides `server.concurrency` for this key.
    pub concurrency: Option<usize>,
}

/// Settings of the one wasmtime engine shared by all plugins.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WasmSettings {
    /// Pre-reserve instance slots (pooling allocator); falls back to on-demand
    /// allocation when the address space cannot be reserved.
    pub pooling: bool,
    /// How many component instances may be live at once across all plugins.
    pub pool_instances: u32,
}

impl Default for WasmSettings {
    fn default() -> Self {
        Self { pooling: true, pool_instances: 1000 }
    }
}

/// The `[plugins]` section. Its own keys are `require_signatures`, `trusted_keys` and
/// `sources`; every other key is a plugin's name with its grants (`[plugins.notes]`), so no
/// plugin can be called `sources`, `trusted_keys` or `require_signatures`.
#[derive(Debug, Clone, Default)]
pub struct PluginsSection {
    /// Refuse components without a signature by a trusted key: a registry's, or a
    /// `FILE.sig` beside a file in the directory.
    pub require_signatures: bool,
    /// Public keys (SPKI PEM files, relative to the config file) whose signatures are
    /// trusted for every plugin.
    pub trusted_keys: Vec<PathBuf>,
    /// Components pulled from OCI registries into the plugins directory (`[[plugins.sources]]`).
    pub sources: Vec<PluginSource>,
    /// Grants and limits per plugin, keyed by plugin name.
    pub grants: BTreeMap<String, PluginGrants>,
}

// By hand rather than with `#[serde(flatten)]`: flattening buffers the values, and a bad
// value deep in `[plugins.NAME.limits]` would then be reported without its key.
impl<'de> Deserialize<'de> for PluginsSection {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Section;
        impl<'de> serde::de::Visitor<'de> for Section {
            type Value = PluginsSection;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a [plugins] table: require_signatures, trusted_keys, sources, and grants per plugin")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut section = PluginsSection::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "require_signatures" => section.require_signatures = map.next_value()?,
                        "trusted_keys" => section.trusted_keys = map.next_value()?,
                        "sources" => section.sources = map.next_value()?,
                        _ => {
                            let grants = map.next_value()?;
                            section.grants.insert(key, grants);
                        }
                    }
                }
                Ok(section)
            }
        }
        deserializer.deserialize_map(Section)
    }
}

/// A component in an OCI registry that `serve` (and `autoglm plugin pull`) installs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSource {
    /// `oci://HOST/REPOSITORY:TAG` or `oci://HOST/REPOSITORY@sha256:DIGEST`.
    pub reference: String,
    /// The plugin's name (default: the repository's last component).
    pub name: Option<String>,
    /// The manifest digest it must resolve to (`sha256:...`).
    pub digest: Option<String>,
    /// Public keys trusted for this source besides `[plugins] trusted_keys`; when any key
    /// applies, its signature is checked.
    #[serde(default)]
    pub keys: Vec<PathBuf>,
    /// Allow plain HTTP to a registry that is not on this machine.
    #[serde(default)]
    pub insecure: bool,
}

impl PluginsSection {
    /// The keys trusted for plugin `name`: `trusted_keys` and those of its sources.
    pub fn keys_for(&self, name: &str) -> Vec<PathBuf> {
        let sources = (self.sources.iter()).filter(|s| s.plugin_name() == name);
        self.trusted_keys
            .iter()
            .cloned()
            .chain(sources.flat_map(|s| s.keys.iter().cloned()))
            .collect()
    }
}

impl PluginSource {
    /// The plugin it installs: `name`, else the repository's last component.
    pub fn plugin_name(&self) -> &str {
        self.name.as_deref().unwrap_or_else(|| source_stem(&self.reference))
    }
}

/// The last path component of a reference's repository (`oci://h/a/echo:v1` -> `echo`).
fn source_stem(reference: &str) -> &str {
    let path = reference.split(['@']).next().unwrap_or_default();
    let last = path.rsplit('/').next().unwrap_or_default();
    last.split(':').next().unwrap_or_default()
}

/// What the operator grants one plugin. Deny by default: an empty section grants nothing.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginGrants {
    /// Directories preopened for the guest.
    #[serde(default)]
    pub dirs: Vec<DirGrant>,
    /// Hosts the plugin may send HTTP requests to (`example.com`, `127.0.0.1:8080`).
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    /// Allow requests to private, loopback and link-local addresses of the allowed hosts.
    #[serde(default)]
    pub allow_private_addresses: bool,
    /// Names of host environment variables passed to the guest.
    #[serde(default)]
    pub env: Vec<String>,
    /// Values the plugin reads with the host `get-config` import.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Limits overriding the defaults for this plugin.
    #[serde(default)]
    pub limits: LimitOverrides,
}

/// One granted directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirGrant {
    /// The directory on the host (relative paths are relative to the config file).
    pub host: PathBuf,
    /// Where the guest sees it, e.g. `/notes`.
    pub guest: String,
    /// `ro` (read only, the default) or `rw`.
    #[serde(default)]
    pub mode: DirMode,
    /// For `rw` directories: the most the directory may hold, in MiB (default 100).
    pub quota_mib: Option<u64>,
}

/// Access granted to a directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum DirMode {
    /// Read only.
    #[default]
    #[serde(rename = "ro")]
    ReadOnly,
    /// Read and write.
    #[serde(rename = "rw")]
    ReadWrite,
}

/// Limits as written in the file: every key optional, missing keys inherit.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    /// Wall-clock deadline per call, in milliseconds.
    pub deadline_ms: Option<u64>,
    /// Fuel (roughly, wasm instructions) per call.
    pub fuel: Option<u64>,
    /// Linear memory cap per call, in MiB.
    pub memory_mib: Option<u64>,
    /// Largest accepted result, in bytes.
    pub result_bytes: Option<usize>,
    /// Captured stdout and stderr kept per call (each), in bytes.
    pub log_bytes: Option<usize>,
    /// Largest outbound HTTP response body a guest may receive, in bytes.
    pub http_body_bytes: Option<usize>,
    /// Calls of this plugin running at once.
    pub concurrency: Option<usize>,
    /// Calls waiting for a slot before new ones are refused as `overloaded`.
    pub queue: Option<usize>,
    /// Host resources (file descriptors, streams, HTTP requests) one call may hold at once.
    pub resources: Option<usize>,
    /// Treat the plugin as an interpreted guest (larger default memory).
    pub interpreted: Option<bool>,
}

/// Resolved limits of one plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock deadline per call.
    pub deadline: Duration,
    /// Fuel per call.
    pub fuel: u64,
    /// Linear memory cap per call, in bytes.
    pub memory_bytes: usize,
    /// Largest accepted result, in bytes.
    pub result_bytes: usize,
    /// Captured stdout/stderr per call, in bytes each.
    pub log_bytes: usize,
    /// Largest outbound HTTP response body, in bytes.
    pub http_body_bytes: usize,
    /// Calls running at once.
    pub concurrency: usize,
    /// Calls allowed to wait.
    pub queue: usize,
    /// Host resources one call may hold at once.
    pub resources: usize,
}

/// The largest linear memory cap a plugin can be given, in MiB: the size of one slot of the
/// pooling allocator, which caps every instance whatever the config says.
pub const MAX_MEMORY_MIB: u64 = 512;

/// Components larger than this are taken to embed an interpreter (Python, JS).
pub const INTERPRETED_SIZE_THRESHOLD: usize = 4 << 20;

const MIB: u64 = 1 << 20;

impl LimitOverrides {
    /// Resolve against `defaults` (the file's `[limits]`) and the built-in defaults.
    pub fn resolve(&self, defaults: &LimitOverrides, component_size: usize) -> Limits {
        let pick =
            |own: Option<u64>, common: Option<u64>, builtin: u64| own.or(common).unwrap_or(builtin);
        let interpreted = self
            .interpreted
            .or(defaults.interpreted)
            .unwrap_or(component_size > INTERPRETED_SIZE_THRESHOLD);
        // Interpreters (CPython, SpiderMonkey) keep tens of MB of heap before the
        // first line of user code runs; compiled guests rarely need more than a few.
        let memory_mib = if interpreted { 256 } else { 64 };
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Limits {
            // A tool that a model waits on should answer within seconds.
            deadline: Duration::from_millis(pick(self.deadline_ms, defaults.deadline_ms, 5_000)),
            // About one second of guest work on a current core.
            fuel: pick(self.fuel, defaults.fuel, 1_000_000_000),
            memory_bytes: (pick(self.memory_mib, defaults.memory_mib, memory_mib) * MIB) as usize,
            // A result goes into a model's context: 1 MiB is already far more than it can use.
            result_bytes: self.result_bytes.or(defaults.result_bytes).unwrap_or(1 << 20),
            // Enough for diagnostics, small enough that a chatty guest cannot flood the log.
            log_bytes: self.log_bytes.or(defaults.log_bytes).unwrap_or(64 << 10),
            // Bounds host memory per fetch; a tool that needs more should stream less.
            http_body_bytes: self.http_body_bytes.or(defaults.http_body_bytes).unwrap_or(16 << 20),
            // Wasm calls are CPU-bound: more than two per core only adds latency.
            concurrency: self.concurrency.or(defaults.concurrency).unwrap_or(2 * cores).max(1),
            queue: self.queue.or(defaults.queue).unwrap_or(256),
            // Far above what a tool opens (a few files, a request or two), far below the
            // million entries wasmtime allows, each of which holds host memory.
            resources: self.resources.or(defaults.resources).unwrap_or(10_000),
        }
    }

    /// Refuse values that would make no sense or overflow (a deadline of centuries, a memory
    /// cap above what an instance slot holds); `place` names the section for the message.
    fn check(&self, place: &str) -> anyhow::Result<()> {
        let checks: [(&str, Option<u64>, u64, u64); 9] = [
            // A tool call a model waits on; longer work belongs in a task.
            ("deadline_ms", self.deadline_ms, 1, 3_600_000),
            ("fuel", self.fuel, 1, u64::MAX),
            ("memory_mib", self.memory_mib, 1, MAX_MEMORY_MIB),
            ("result_bytes", self.result_bytes.map(|v| v as u64), 1, 1 << 30),
            ("log_bytes", self.log_bytes.map(|v| v as u64), 0, 1 << 30),
            ("http_body_bytes", self.http_body_bytes.map(|v| v as u64), 1, 1 << 32),
            ("concurrency", self.concurrency.map(|v| v as u64), 1, 100_000),
            ("queue", self.queue.map(|v| v as u64), 0, 1_000_000),
            ("resources", self.resources.map(|v| v as u64), 1, 1_000_000),
        ];
        for (key, value, low, high) in checks {
            check_range(place, key, value, low, high)?;
        }
        Ok(())
    }
}

impl ServerSettings {
    /// Refuse settings that would make no sense or overflow a timer.
    fn check(&self) -> anyhow::Result<()> {
        const DAY_MS: u64 = 86_400_000;
        let checks: [(&str, u64, u64, u64); 10] = [
            ("body_limit_bytes", self.body_limit_bytes as u64, 1, 1 << 30),
            ("request_timeout_ms", self.request_timeout_ms, 1, DAY_MS),
            ("shutdown_grace_ms", self.shutdown_grace_ms, 0, DAY_MS),
            ("body_read_timeout_ms", self.body_read_timeout_ms, 1, DAY_MS),
            ("max_connections", self.max_connections as u64, 1, 1_000_000),
            ("idle_timeout_ms", self.idle_timeout_ms, 1, DAY_MS),
            ("concurrency", self.concurrency as u64, 1, 100_000),
            ("streams_per_key", self.streams_per_key as u64, 1, 100_000),
            ("sessions_per_key", self.sessions_per_key as u64, 1, 100_000),
            ("session_ttl_ms", self.session_ttl_ms, 1, 30 * DAY_MS),
        ];
        for (key, value, low, high) in checks {
            check_range("[server]", key, Some(value), low, high)?;
        }
        // A key's name is who owns its tasks: two keys of one name would share them.
        let mut names = std::collections::BTreeSet::new();
        for key in &self.keys {
            anyhow::ensure!(
                !matches!(key.name.as_str(), "operator" | "anonymous"),
                "[[server.keys]] name = \"{}\" is reserved (the command line's and a keyless \
                 server's caller): choose another name",
                key.name
            );
            anyhow::ensure!(
                names.insert(key.name.as_str()),
                "[[server.keys]] name = \"{}\" is used twice: each key needs a name of its own",
                key.name
            );
        }
        Ok(())
    }
}

/// `value` of `key` in `place`, when set, within `low..=high`.
fn check_range(
    place: &str,
    key: &str,
    value: Option<u64>,
    low: u64,
    high: u64,
) -> anyhow::Result<()> {
    match value {
        Some(v) if v < low || v > high => {
            anyhow::bail!("{place} {key} = {v} is out of range: use {low} to {high}")
        }
        _ => Ok(()),
    }
}

impl Config {
    /// Read and validate `path`; relative directories become relative to the file.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let mut config = Config::from_toml(&text)
            .with_context(|| format!("invalid config {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.rebase(base);
        Ok(config)
    }

    /// Parse and validate config text; relative paths stay as written.
    pub fn from_toml(text: &str) -> anyhow::Result<Config> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            // The toml crate names a misplaced date-time by its own internal field.
            anyhow::anyhow!(
                "{}",
                e.to_string().replace("unknown field `$__toml_private_datetime`", "a date-time")
            )
        })?;
        if let Some(old) = config.legacy_wasm.take() {
            anyhow::ensure!(
                !toml::from_str::<toml::Table>(text)?.contains_key("wasm"),
                "both [engine] and [wasm] are set; [engine] is the old name of [wasm]: keep only [wasm]"
            );
            config.wasm = old;
            config.warnings.push(
                "the config section [engine] is now called [wasm] (it configures wasmtime, not the \
                 language model); rename it, the old name will stop working"
                    .into(),
            );
        }
        config.validate()?;
        Ok(config)
    }

    /// The plugins directory: `flag` if given, else the config's, else the default.
    pub fn plugins_dir_or(&self, flag: Option<&Path>) -> PathBuf {
        (flag.map(Path::to_path_buf))
            .or_else(|| self.plugins_dir.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PLUGINS_DIR))
    }

    /// Where compiled components are cached: the config's directory, else the default.
    pub fn cache_dir_or_default(&self) -> PathBuf {
        self.cache_dir.clone().unwrap_or_else(default_cache_dir)
    }

    /// The tasks' journal: `[tasks] database`, else `tasks.db` in the data directory.
    pub fn tasks_database(&self) -> String {
        self.tasks.database.clone().unwrap_or_else(|| {
            let dir = self.data_dir.clone().unwrap_or_else(default_data_dir);
            format!("sqlite:{}", dir.join("tasks.db").display())
        })
    }

    /// The task templates' directory: `[tasks] dir`, else `tasks`.
    pub fn tasks_dir(&self) -> PathBuf {
        self.tasks.dir.clone().unwrap_or_else(|| PathBuf::from("tasks"))
    }

    /// `./autoglm.toml` when it exists, else the built-in defaults.
    pub fn load_default_or(path: Option<&Path>) -> anyhow::Result<Config> {
        match path {
            Some(path) => Config::load(path),
            None if Path::new("autoglm.toml").exists() => Config::load(Path::new("autoglm.toml")),
            None => Ok(Config::default()),
        }
    }

    fn rebase(&mut self, base: &Path) {
        let rebase = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        self.plugins_dir.as_mut().map(rebase);
        self.cache_dir.as_mut().map(rebase);
        self.data_dir.as_mut().map(rebase);
        self.tasks.dir.as_mut().map(rebase);
        let database = self.tasks.database.as_deref();
        if let Some(path) = database.and_then(|d| d.strip_prefix("sqlite:"))
            && Path::new(path).is_relative()
        {
            self.tasks.database = Some(format!("sqlite:{}", base.join(path).display()));
        }
        for grants in self.plugins.grants.values_mut() {
            for dir in &mut grants.dirs {
                rebase(&mut dir.host);
            }
        }
        self.plugins.trusted_keys.iter_mut().for_each(rebase);
        for source in &mut self.plugins.sources {
            source.keys.iter_mut().for_each(rebase);
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.limits.check("[limits]")?;
        self.server.check()?;
        self.tasks.check()?;
        let mut names = std::collections::BTreeSet::new();
        for source in &self.plugins.sources {
            anyhow::ensure!(
                source.reference.starts_with("oci://"),
                "[[plugins.sources]] reference `{}` must start with oci://",
                source.reference
            );
            let name = source.plugin_name();
            anyhow::ensure!(
                names.insert(name),
                "[[plugins.sources]]: two sources install the plugin `{name}`; give one a \
                 different `name`"
            );
        }
        for (plugin, grants) in &self.plugins.grants {
            grants.limits.check(&format!("[plugins.{plugin}.limits]"))?;
            for dir in &grants.dirs {
                anyhow::ensure!(
                    dir.quota_mib.is_none() || dir.mode == DirMode::ReadWrite,
                    "[plugins.{plugin}] dirs: quota_mib applies to mode = \"rw\" directories only"
                );
                anyhow::ensure!(
                    dir.guest.starts_with('/') && !dir.guest.split('/').any(|c| c == ".."),
                    "[plugins.{plugin}] dirs: guest path `{}` must be absolute without `..`",
                    dir.guest
                );
            }
            for host in &grants.allow_hosts {
                anyhow::ensure!(
                    !host.is_empty() && !host.contains(['/', '@', ' ']),
                    "[plugins.{plugin}] allow_hosts: `{host}` must be a host or host:port, \
                     without scheme or path"
                );
            }
        }
        Ok(())
    }

    /// The grants of `plugin` (empty, deny-all, when it has no section).
    pub fn grants(&self, plugin: &str) -> PluginGrants {
        self.plugins.grants.get(plugin).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_limits_override_file_defaults_which_override_builtins() {
        let config: Config =
            toml::from_str("[limits]\ndeadline_ms = 100\nfuel = 7\n[plugins.a.limits]\nfuel = 9\n")
                .unwrap();
        let a = config.grants("a").limits.resolve(&config.limits, 1000);
        assert_eq!(a.deadline, Duration::from_millis(100));
        assert_eq!(a.fuel, 9);
        assert_eq!(a.memory_bytes, 64 << 20);
        let big = config.grants("b").limits.resolve(&config.limits, 18 << 20);
        assert_eq!(big.fuel, 7);
        assert_eq!(big.memory_bytes, 256 << 20, "an 18 MB component is an interpreter");
    }

    #[test]
    fn unknown_keys_and_bad_grants_are_rejected_with_their_place() {
        let err = toml::from_str::<Config>("[plugins.a]\nallow_host = []\n").unwrap_err();
        assert!(err.to_string().contains("allow_host"), "{err}");
        let err = Config::from_toml("[[plugins.a.dirs]]\nhost = \"x\"\nguest = \"../etc\"\n")
            .unwrap_err();
        assert!(err.to_string().contains("[plugins.a]"), "{err}");
    }

    #[test]
    fn the_old_engine_section_still_configures_wasmtime_with_a_warning() {
        let config = Config::from_toml("[engine]\npooling = false\n").unwrap();
        assert!(!config.wasm.pooling);
        assert!(config.warnings[0].contains("[wasm]"), "{:?}", config.warnings);
        let both = Config::from_toml("[engine]\npooling = false\n[wasm]\npooling = true\n");
        assert!(both.unwrap_err().to_string().contains("keep only [wasm]"));
        assert!(Config::from_toml("[wasm]\npooling = false\n").unwrap().warnings.is_empty());
    }

    #[test]
    fn limits_and_timeouts_out_of_range_are_refused_with_their_place() {
        for (text, place) in [
            ("[limits]\ndeadline_ms = 18446744073709551615\n", "[limits] deadline_ms"),
            ("[plugins.a.limits]\nmemory_mib = 4096\n", "[plugins.a.limits] memory_mib"),
            ("[plugins.a.limits]\nconcurrency = 0\n", "[plugins.a.limits] concurrency"),
            ("[server]\nrequest_timeout_ms = 0\n", "[server] request_timeout_ms"),
        ] {
            let error = Config::from_toml(text).unwrap_err().to_string();
            assert!(error.contains(place) && error.contains("out of range"), "{error}");
        }
        assert!(Config::from_toml("[limits]\ndeadline_ms = 3600000\n").is_ok());
    }

    #[test]
    fn the_example_config_parses_with_every_section() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../autoglm.example.toml");
        let config = Config::load(&path).unwrap();
        assert_eq!(config.model.batching.max_batch, 8);
        assert_eq!(config.model.max_steps, 5);
        assert!(config.plugins.grants.contains_key("notes"));
    }
}
