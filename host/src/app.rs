//! A host assembled from settings that are already resolved: the command line laid over
//! the config file, then the runtime, the plugins, the invocation path and the agent built
//! from them. The binary parses flags into [`Overrides`] and [`ModelOverrides`]; everything
//! after that lives here, so tests and benches build hosts the way `autoglm` does.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use autoglm_engine::remote::RemoteSettings;
use autoglm_engine::scheduler::SchedulerStats;

use crate::agent::Agent;
use crate::config::{Config, ModelSettings};
use crate::distribution;
use crate::invoke::{Allowlist, Invoker};
use crate::metered::Metered;
use crate::metrics::Metrics;
use crate::registry::{LiveRegistry, LoadError, Watch};
use crate::runtime::Runtime;

/// Where the host's settings come from, as the command line gives them.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// The config file (default: ./autoglm.toml when present).
    pub config: Option<PathBuf>,
    /// The plugins directory (default: the config's, else target/plugins).
    pub plugins: Option<PathBuf>,
    /// Pull plugin sources at the lockfile's digests only.
    pub locked: bool,
}

/// The config file with the command line laid over it.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The whole config.
    pub config: Config,
    /// The plugins directory to load.
    pub plugins_dir: PathBuf,
    /// The lockfile of plugin sources: autoglm.lock beside the config file.
    pub lock_path: PathBuf,
    /// Pull plugin sources at the lockfile's digests only.
    pub locked: bool,
}

impl Settings {
    /// Read the config `overrides` names (once) and settle the plugins directory.
    pub fn resolve(overrides: &Overrides) -> anyhow::Result<Self> {
        let config = Config::load_default_or(overrides.config.as_deref())?;
        let plugins_dir = config.plugins_dir_or(overrides.plugins.as_deref());
        let config_dir = (overrides.config.as_deref())
            .and_then(Path::parent)
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Ok(Self {
            config,
            plugins_dir,
            lock_path: config_dir.join(distribution::LOCK_FILE),
            locked: overrides.locked,
        })
    }

    /// Settings for `config` serving the plugins in `plugins_dir`.
    pub fn new(config: Config, plugins_dir: &Path) -> Self {
        Self {
            config,
            plugins_dir: plugins_dir.to_path_buf(),
            lock_path: PathBuf::from(distribution::LOCK_FILE),
            locked: false,
        }
    }
}

/// Which model answers, as the command line gives it (over the config's `[model]`).
#[derive(Debug, Clone, Default)]
pub struct ModelOverrides {
    /// A local checkpoint directory; replaces any configured remote.
    pub path: Option<PathBuf>,
    /// An OpenAI-compatible server to use instead.
    pub upstream: Option<String>,
    /// The model name to ask the upstream for.
    pub upstream_model: Option<String>,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: Option<String>,
    /// A LoRA adapter directory for the local checkpoint.
    pub adapter: Option<PathBuf>,
}

impl ModelOverrides {
    /// `settings` with these overrides applied; a remote's key variable and timeout are
    /// kept from the config.
    pub fn apply(&self, mut settings: ModelSettings) -> ModelSettings {
        if let Some(path) = &self.path {
            settings.path = Some(path.clone());
            settings.remote = None;
        }
        if let Some(url) = &self.upstream {
            settings.remote = Some(RemoteSettings {
                url: url.clone(),
                model: self.upstream_model.clone().unwrap_or_else(|| "default".into()),
                api_key_env: settings.remote.as_ref().and_then(|r| r.api_key_env.clone()),
                timeout_secs: settings.remote.as_ref().map_or(120, |r| r.timeout_secs),
            });
        }
        if let Some(device) = &self.device {
            settings.device = device.clone();
        }
        if let Some(adapter) = &self.adapter {
            settings.adapter = Some(adapter.clone());
        }
        settings
    }
}

/// The plugins being served and the one path calls take into them.
pub struct Host {
    /// The plugins, reloaded as their directory changes when watched.
    pub plugins: Arc<LiveRegistry>,
    /// Runs every call and counts it.
    pub invoker: Arc<Invoker>,
    /// Keeps the directory watched (for `start`ed hosts).
    _watch: Option<Watch>,
}

/// An agent ready to answer, with the local engine's batching counters.
pub struct ServedModel {
    /// The agent over the host's tools.
    pub agent: Arc<Agent>,
    /// Batching counters, for a local engine.
    pub stats: Option<Arc<SchedulerStats>>,
}

impl Host {
    /// Load every plugin before returning, for one-shot commands and tests. Plugins that
    /// fail to load are returned beside the host; the others serve.
    pub async fn open(settings: &Settings) -> anyhow::Result<(Self, Vec<LoadError>)> {
        let runtime = runtime(&settings.config)?;
        let (plugins, errors) =
            LiveRegistry::open(runtime, settings.config.clone(), settings.plugins_dir.clone())
                .await?;
        Ok((Self::over(plugins, None), errors))
    }

    /// Start serving at once, pulling the configured plugin sources and compiling plugins
    /// in the background and watching the directory for changes, for `serve` and `mcp`.
    pub fn start(settings: &Settings) -> anyhow::Result<Self> {
        let runtime = runtime(&settings.config)?;
        let plugins = LiveRegistry::open_in_background(
            runtime,
            settings.config.clone(),
            settings.plugins_dir.clone(),
            pull_sources(settings.clone()),
        )?;
        let watch = plugins.watch()?;
        Ok(Self::over(plugins, Some(watch)))
    }

    fn over(plugins: Arc<LiveRegistry>, watch: Option<Watch>) -> Self {
        let invoker = Arc::new(Invoker::new(plugins.clone(), Arc::new(Metrics::default())));
        Self { plugins, invoker, _watch: watch }
    }

    /// Call tool `name` as the operator (every tool allowed), through the same path as
    /// every other caller.
    pub async fn call(&self, name: &str, args: &serde_json::Value) -> Metered<serde_json::Value> {
        self.invoker.call(&Allowlist::operator(), name, args).await
    }

    /// Load the model `settings` name and put an agent between it and this host's tools;
    /// None when no model is configured. `on_layer` reports a local checkpoint's loading.
    pub fn agent(
        &self,
        settings: &ModelSettings,
        on_layer: impl FnMut(usize, usize),
    ) -> anyhow::Result<Option<ServedModel>> {
        agent(self.invoker.clone(), settings, on_layer)
    }
}

/// Load the model `settings` name and put an agent between it and the tools `invoker`
/// runs; None when no model is configured. Blocks while a local checkpoint loads.
pub fn agent(
    invoker: Arc<Invoker>,
    settings: &ModelSettings,
    on_layer: impl FnMut(usize, usize),
) -> anyhow::Result<Option<ServedModel>> {
    let Some(opened) = crate::model::open(settings, on_layer)? else { return Ok(None) };
    if let Some(prefix) = opened.stats.as_ref().and_then(|s| s.prefix.clone()) {
        forget_prefixes_on_change(&invoker, prefix);
    }
    let agent = Agent::new(opened.model, invoker, settings.max_steps);
    Ok(Some(ServedModel { agent: Arc::new(agent), stats: opened.stats }))
}

/// Empty the engine's prefix cache whenever the plugins change: the tools blocks its
/// entries began are not rendered any more. Without a runtime (a one-shot command) nothing
/// reloads, and there is nothing to watch.
fn forget_prefixes_on_change(invoker: &Invoker, prefix: Arc<autoglm_engine::PrefixCache>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    let mut changes = invoker.plugins().changes();
    runtime.spawn(async move {
        while changes.changed().await.is_ok() {
            prefix.clear();
        }
    });
}

/// Open the tasks' journal `config` names and start running tasks; when it cannot be
/// opened, why (logged), so the server answers `/v1/tasks` with it and serves tool calls.
pub async fn start_tasks(
    config: &Config,
    invoker: Arc<Invoker>,
    callers: crate::tasks::CallerCheck,
) -> Result<Arc<crate::tasks::Tasks>, String> {
    match crate::tasks::Tasks::open(config, invoker, callers).await {
        Ok(tasks) => {
            tasks.start();
            tracing::info!(journal = %tasks.store(), templates = tasks.templates().len(), "tasks ready");
            Ok(tasks)
        }
        Err(error) => {
            let reason = format!("{error:#}");
            tracing::error!(%reason, "tasks unavailable; tool calls still serve");
            eprintln!("autoglm: tasks unavailable: {reason}");
            Err(reason)
        }
    }
}

/// How long `serve` waits for one plugin source at start.
const SOURCE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// Pull every `[[plugins.sources]]` entry into the plugins directory (one at a time, each
/// logged), recording digests in the lockfile. A source that fails is logged and skipped:
/// what the directory already holds keeps serving.
async fn pull_sources(settings: Settings) {
    let plugins = &settings.config.plugins;
    if plugins.sources.is_empty() {
        return;
    }
    let mut lock = match distribution::Lock::load(&settings.lock_path) {
        Ok(lock) => lock,
        Err(error) => {
            tracing::error!(%error, "plugin sources not pulled");
            return;
        }
    };
    let credentials = distribution::Credentials::default();
    for source in &plugins.sources {
        let name = source.plugin_name();
        let keys = match crate::signing::TrustedKey::load_all(&plugins.keys_for(name)) {
            Ok(keys) => keys,
            Err(error) => {
                tracing::error!(source = %source.reference, %error, "plugin source not pulled");
                continue;
            }
        };
        let request = distribution::PullRequest {
            source,
            dir: &settings.plugins_dir,
            keys: &keys,
            require_signature: plugins.require_signatures,
            locked: settings.locked,
            credentials: &credentials,
        };
        // A registry that trickles bytes must not hold readiness forever.
        let pulled = tokio::time::timeout(SOURCE_TIMEOUT, distribution::pull(&request, &mut lock));
        match pulled.await.unwrap_or_else(|_| {
            Err(distribution::DistributionError::Unreachable {
                reference: source.reference.clone(),
                reason: format!("no answer within {} s", SOURCE_TIMEOUT.as_secs()),
            })
        }) {
            Ok(pulled) => tracing::info!(
                source = %source.reference,
                digest = %pulled.digest,
                downloaded = pulled.downloaded,
                "plugin source ready"
            ),
            Err(error) => {
                tracing::error!(source = %source.reference, %error, "plugin source not pulled")
            }
        }
    }
    if let Err(error) = lock.save() {
        tracing::error!(%error, "cannot write the lockfile");
    }
}

/// The wasmtime runtime `config` describes, caching compiled components where it says.
pub fn runtime(config: &Config) -> anyhow::Result<Runtime> {
    Runtime::new(&config.wasm, Some(config.cache_dir_or_default()))
}
