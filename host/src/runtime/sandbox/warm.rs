//! A kept instance, as hosts that reuse instances run: the baseline the benchmark report sets
//! fresh sandboxes against. Nothing in the serving path uses it: one call's state would leak
//! into the next.

use wasmtime::Store;

use super::capture::Capture;
use super::{Call, CallOptions, CallState, Sandbox, Scope};
use crate::error::CallError;

/// An instance kept across calls (see [`Sandbox::warm_instance`]).
pub struct WarmInstance {
    store: Store<CallState>,
    call: Call,
    fuel: u64,
}

impl WarmInstance {
    /// Call `tool` with `args` (JSON text) in the kept instance, its fuel topped up first.
    pub async fn call(&mut self, tool: &str, args: &str) -> anyhow::Result<String> {
        self.store.set_fuel(self.fuel)?;
        let (outcome,) =
            self.call.call_async(&mut self.store, (tool.to_string(), args.to_string())).await?;
        match outcome {
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
        let scope = Scope::new(&CallOptions::default(), std::time::Instant::now());
        let mut store = self.store(WHAT, &stdout, &stderr, None, None, scope)?;
        let instance =
            self.pre.instantiate_async(&mut store).await.map_err(|e| self.trap(WHAT, e))?;
        let contract = self.contract(&instance, &mut store).map_err(|e| self.trap(WHAT, e))?;
        let Some((_, call)) = contract else {
            return Err(self.error(
                WHAT,
                crate::error::ErrorKind::IncompatiblePlugin,
                "not a contract plugin",
            ));
        };
        Ok(WarmInstance { store, call, fuel: self.limits.fuel })
    }
}
