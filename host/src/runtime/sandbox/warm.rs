//! A kept instance, as hosts that reuse instances run: the baseline the benchmark report sets
//! fresh sandboxes against. Nothing in the serving path uses it: one call's state would leak
//! into the next.

use wasmtime::Store;

use super::capture::Capture;
use super::{CallState, Sandbox, bindings};
use crate::error::CallError;

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

impl Sandbox {
    /// Instantiate once and keep the instance, as hosts that reuse instances do: the
    /// baseline the benchmark report sets fresh sandboxes against. Calls through
    /// [`Sandbox::call`] never share an instance (one call's state would leak into the next).
    pub async fn warm_instance(&self) -> Result<WarmInstance, CallError> {
        const WHAT: &str = "warm-instance";
        let stdout = Capture::new(self.limits.log_bytes);
        let stderr = Capture::new(self.limits.log_bytes);
        let mut store = self.store(WHAT, &stdout, &stderr, None, None)?;
        let plugin =
            self.pre.instantiate_async(&mut store).await.map_err(|e| self.trap(WHAT, e))?;
        Ok(WarmInstance { store, plugin, fuel: self.limits.fuel })
    }
}
