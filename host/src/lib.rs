//! Open-AutoGLM host: loads agent tools compiled to WebAssembly components and runs
//! every call in a fresh, limited sandbox under the operator's policy.
//!
//! Requests flow one way, from the edge inward: CLI / HTTP -> [`router`] ->
//! [`runtime`] (sandbox per call) under [`policy`].

pub mod agent;
pub mod config;
pub mod engine;
pub mod error;
pub mod eval;
pub mod metrics;
pub mod policy;
pub mod registry;
pub mod router;
pub mod runtime;
pub mod scaffold;
pub mod server;
pub mod telemetry;
pub mod trace;

use std::path::{Path, PathBuf};

use std::sync::Arc;

use config::Config;
use registry::{LiveRegistry, LoadError};
use runtime::Runtime;

/// The plugins directory used when neither the command line nor the config names one.
pub const DEFAULT_PLUGINS_DIR: &str = "target/plugins";

/// Where compiled components are cached unless the config says otherwise.
pub fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("autoglm")
        .join("components")
}

/// Start the runtime and load every plugin in `plugins_dir` under `config`.
/// Plugins that fail to load are returned beside the registry; the others serve.
pub async fn open(
    config: &Config,
    plugins_dir: &Path,
) -> anyhow::Result<(Arc<LiveRegistry>, Vec<LoadError>)> {
    let cache = config.cache_dir.clone().unwrap_or_else(default_cache_dir);
    let runtime = Runtime::new(&config.engine, Some(cache))?;
    LiveRegistry::open(runtime, config.clone(), plugins_dir.to_path_buf()).await
}

/// The chat model `settings` name (a remote server wins over a local checkpoint), with the
/// local engine's batching counters; None when neither is configured. `on_layer` reports
/// loading progress of a local checkpoint.
pub fn open_model(
    settings: &config::ModelSettings,
    on_layer: impl FnMut(usize, usize),
) -> anyhow::Result<Option<engine::chat::OpenedModel>> {
    use anyhow::Context;
    if let Some(remote) = &settings.remote {
        let model = engine::remote::RemoteModel::new(remote.clone())?;
        return Ok(Some(engine::chat::OpenedModel { model: Arc::new(model), stats: None }));
    }
    let Some(path) = &settings.path else { return Ok(None) };
    let device = settings.device.parse().map_err(anyhow::Error::msg)?;
    let engine = engine::Engine::load(path, device, on_layer)
        .with_context(|| format!("cannot load the model in {}", path.display()))?;
    let local = engine::chat::LocalModel::new(engine, settings.batching.clone());
    let stats = local.stats().clone();
    Ok(Some(engine::chat::OpenedModel { model: Arc::new(local), stats: Some(stats) }))
}
