//! The `autoglm:plugin/host` interface a guest imports: structured logging under the call's
//! log budget, and the operator's config values for its plugin.

use super::CallState;
use crate::contract::{LogLevel, autoglm::plugin::host::Host};

impl Host for CallState {
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
