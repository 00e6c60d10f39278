//! What a tool call used: the result types that the sandbox produces and the router,
//! the invocation path and the metrics pass on.

use std::time::Duration;

use crate::error::CallError;

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
pub struct Metered<T> {
    /// The result or the error.
    pub outcome: Result<T, CallError>,
    /// Fuel and memory used; zero when the guest never ran.
    pub usage: Usage,
    /// Wall-clock time from admission to answer, queueing included.
    pub elapsed: Duration,
}

impl<T> Metered<T> {
    /// A call refused before any guest ran: nothing used, no time spent.
    pub fn refused(error: CallError) -> Self {
        Self { outcome: Err(error), usage: Usage::default(), elapsed: Duration::ZERO }
    }
}
