//! The per-plugin admission gate: a concurrency limit with a bounded queue, so a flood of
//! calls to one plugin is refused as `overloaded` instead of queueing without bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A per-plugin concurrency limit with a bounded queue.
pub(super) struct Gate {
    slots: Arc<tokio::sync::Semaphore>,
    admitted: Arc<AtomicUsize>,
    capacity: usize,
}

/// A place in a plugin's gate; holds a queue position until it acquires a slot.
pub(super) struct Admission {
    slots: Arc<tokio::sync::Semaphore>,
    admitted: Arc<AtomicUsize>,
}

impl Gate {
    pub(super) fn new(concurrency: usize, queue: usize) -> Self {
        Self {
            slots: Arc::new(tokio::sync::Semaphore::new(concurrency)),
            admitted: Arc::default(),
            capacity: concurrency + queue,
        }
    }

    /// A place among running and queued calls, or `None` when both are full.
    pub(super) fn enter(&self) -> Option<Admission> {
        let capacity = self.capacity;
        (self.admitted.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < capacity).then_some(n + 1)
        }))
        .ok()?;
        Some(Admission { slots: self.slots.clone(), admitted: self.admitted.clone() })
    }
}

impl Admission {
    pub(super) async fn acquire(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.slots.acquire().await.ok()
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}
