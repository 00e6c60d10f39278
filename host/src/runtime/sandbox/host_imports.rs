//! The `autoglm:plugin/host` interface a guest imports, in both revisions: structured logging
//! under the call's log budget, the operator's config values for its plugin, and (0.2.0)
//! the call's context and progress reports.

use std::time::Instant;

use super::CallState;
use super::context::CallEvent;
use crate::contract::{CallContext, LogLevel, autoglm::plugin::host::Host, v0_1};

/// What a log record or progress report costs of the log budget besides its text: the
/// budget is what bounds how much a guest can make the host write and forward, so even an
/// empty record costs something.
const RECORD_COST: usize = 32;

impl CallState {
    /// Take `size` bytes of the call's log budget; false (and the budget spent) when
    /// they do not fit.
    fn spend(&mut self, size: usize) -> bool {
        if size > self.log_budget {
            self.log_budget = 0;
            return false;
        }
        self.log_budget -= size;
        true
    }

    fn write_log(&mut self, level: LogLevel, message: String, fields: Vec<(String, String)>) {
        let shown = if fields.is_empty() { String::new() } else { format!("{fields:?}") };
        // Guest log records share the call's log budget with its stdout and stderr.
        if !self.spend(RECORD_COST + message.len() + shown.len()) {
            return;
        }
        // Debug-escaped: a guest cannot forge log lines with newlines or terminal codes.
        let escaped = format!("{message:?}");
        let plugin = self.policy.plugin.as_str();
        let tool = self.tool.as_str();
        match level {
            LogLevel::Trace => {
                tracing::trace!(target: "autoglm::guest", plugin, tool, fields = shown, "{escaped}")
            }
            LogLevel::Debug => {
                tracing::debug!(target: "autoglm::guest", plugin, tool, fields = shown, "{escaped}")
            }
            LogLevel::Info => {
                tracing::info!(target: "autoglm::guest", plugin, tool, fields = shown, "{escaped}")
            }
            LogLevel::Warn => {
                tracing::warn!(target: "autoglm::guest", plugin, tool, fields = shown, "{escaped}")
            }
            LogLevel::Error => {
                tracing::error!(target: "autoglm::guest", plugin, tool, fields = shown, "{escaped}")
            }
        }
        self.scope.emit(CallEvent::Log { level, message, fields });
    }
}

impl Host for CallState {
    async fn log(
        &mut self,
        level: LogLevel,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        self.write_log(level, message, fields);
        Ok(())
    }

    async fn get_config(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.policy.config.get(&key).cloned())
    }

    async fn context(&mut self) -> wasmtime::Result<CallContext> {
        let left = self.scope.deadline.saturating_duration_since(Instant::now());
        Ok(CallContext {
            idempotency_key: self.scope.idempotency_key.clone(),
            trace_id: self.scope.trace_id.clone(),
            deadline_ms: u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
        })
    }

    async fn report_progress(
        &mut self,
        progress: f64,
        total: Option<f64>,
        message: Option<String>,
    ) -> wasmtime::Result<()> {
        let finite = progress.is_finite() && total.is_none_or(f64::is_finite);
        if finite && self.spend(RECORD_COST + message.as_ref().map_or(0, String::len)) {
            self.scope.emit(CallEvent::Progress { progress, total, message });
        }
        Ok(())
    }
}

/// Components built against 0.1.0 import its `host`: the same functions, its own types.
impl v0_1::autoglm::plugin::host::Host for CallState {
    async fn log(
        &mut self,
        level: v0_1::autoglm::plugin::host::LogLevel,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        use v0_1::autoglm::plugin::host::LogLevel as Old;
        let level = match level {
            Old::Trace => LogLevel::Trace,
            Old::Debug => LogLevel::Debug,
            Old::Info => LogLevel::Info,
            Old::Warn => LogLevel::Warn,
            Old::Error => LogLevel::Error,
        };
        self.write_log(level, message, fields);
        Ok(())
    }

    async fn get_config(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Host::get_config(self, key).await
    }
}
