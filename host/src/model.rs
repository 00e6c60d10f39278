//! The language model as the host uses it: opened from `[model]` (a remote server wins over a
//! local checkpoint), its failures mapped into the error taxonomy, its batching counters
//! read for the metrics.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use autoglm_engine::EngineError;
use autoglm_engine::chat::{LocalModel, OpenedModel};
use autoglm_engine::remote::RemoteModel;
use autoglm_engine::scheduler::SchedulerStats;

use crate::config::ModelSettings;
use crate::error::{CallError, ErrorKind};
use crate::metrics::ModelCounters;

/// The chat model `settings` name, with the local engine's batching counters; None when
/// neither a checkpoint nor a remote server is configured. `on_layer` reports the loading
/// progress of a local checkpoint.
pub fn open(
    settings: &ModelSettings,
    on_layer: impl FnMut(usize, usize),
) -> anyhow::Result<Option<OpenedModel>> {
    use anyhow::Context;
    if let Some(remote) = &settings.remote {
        let model = RemoteModel::new(remote.clone())?;
        return Ok(Some(OpenedModel { model: Arc::new(model), stats: None }));
    }
    let Some(path) = &settings.path else { return Ok(None) };
    let device = settings.device.parse().map_err(anyhow::Error::msg)?;
    let adapter = settings.adapter.as_deref();
    let mut engine = autoglm_engine::Engine::load_adapted(path, adapter, device, on_layer)
        .with_context(|| format!("cannot load the model in {}", path.display()))?;
    engine.set_prefix_cache_budget(settings.prefix_cache_mib.saturating_mul(1 << 20));
    let local = LocalModel::new(engine, settings.batching.clone());
    let stats = local.stats().clone();
    Ok(Some(OpenedModel { model: Arc::new(local), stats: Some(stats) }))
}

/// An engine failure as the taxonomy's error: what the caller can fix is `bad_request`,
/// a full queue `overloaded`, a remote failure `upstream_error` or `timeout`.
pub fn engine_error(error: EngineError) -> CallError {
    let kind = match &error {
        EngineError::ContextOverflow { .. }
        | EngineError::InvalidParameter { .. }
        | EngineError::Template(_) => ErrorKind::BadRequest,
        EngineError::Overloaded { .. } | EngineError::UpstreamBusy(_) => ErrorKind::Overloaded,
        EngineError::UpstreamTimeout { .. } => ErrorKind::Timeout,
        EngineError::Upstream(_) => ErrorKind::UpstreamError,
        _ => ErrorKind::EngineError,
    };
    CallError::new(kind, error.to_string())
}

/// The scheduler's counters now, for `/metrics`.
pub fn counters(stats: &SchedulerStats) -> ModelCounters {
    ModelCounters {
        queued: stats.queued.load(Relaxed),
        running: stats.running.load(Relaxed),
        passes: stats.passes.load(Relaxed),
        sequence_steps: stats.sequence_steps.load(Relaxed),
        tokens: stats.tokens.load(Relaxed),
        refused: stats.refused.load(Relaxed),
        prefix: stats.prefix.as_ref().map(|p| p.stats()).unwrap_or_default(),
    }
}
