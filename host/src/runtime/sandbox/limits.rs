//! The budgets of one call's Store: fuel, an epoch deadline, and a memory cap over all of
//! the call's memories (the attempt that hit it remembered, so the trap is reported as
//! `memory_limit`).

use std::time::Instant;

use wasmtime::{ResourceLimiter, Store, Trap, UpdateDeadline};

use super::CallState;

/// Arm `store` with the memory cap and `fuel`, yielding at every epoch tick (so the executor
/// can run other tasks and cancel this one) and stopping the guest once `deadline`, if any,
/// has passed.
pub(super) fn arm(
    store: &mut Store<CallState>,
    fuel: u64,
    deadline: Option<Instant>,
) -> wasmtime::Result<()> {
    store.limiter(|s| &mut s.memory);
    store.set_fuel(fuel)?;
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| match deadline {
        Some(deadline) if Instant::now() >= deadline => Err(Trap::Interrupt.into()),
        _ => Ok(UpdateDeadline::Yield(1)),
    });
    Ok(())
}

/// Caps linear memory growth and remembers the attempt that hit the cap, so the
/// resulting trap is reported as `memory_limit` rather than a bare trap.
pub(super) struct MemoryCap {
    pub(super) max: usize,
    pub(super) total: usize,
    pub(super) peak: usize,
    pub(super) hit: Option<(usize, usize)>,
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
