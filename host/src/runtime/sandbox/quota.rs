//! Quotas enforced as the guest writes: every filesystem operation that can grow a
//! writable directory charges its growth to the directory's running total before it
//! runs ([`wasi_0_2_filesystem`](super::wasi_0_2_filesystem) routes them here), and
//! operations that free space refund it. A charge that would pass the quota is refused
//! with `insufficient-space` (ENOSPC to the guest's libc) and recorded as a denial, so
//! the call reports which directory and which setting to change.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use wasmtime_wasi::p2::bindings::filesystem::types::ErrorCode;
use wasmtime_wasi::p2::{DynOutputStream, OutputStream, Pollable, StreamError, StreamResult};

use super::denials::Denials;
use crate::policy::quota::{DiskUsage, footprint};

/// ENOSPC, the errno a full quota reads as (the same number on Linux and macOS).
const ENOSPC: i32 = 28;

/// The quota of one writable directory mounted for a call.
#[derive(Clone)]
pub(crate) struct Quota {
    guest: Arc<str>,
    plugin: Arc<str>,
    limit: u64,
    usage: Arc<DiskUsage>,
    denials: Denials,
}

impl Quota {
    /// Charge `bytes`, or refuse with the error the guest sees and a recorded denial.
    pub(super) fn charge(&self, bytes: u64) -> Result<u64, ErrorCode> {
        self.usage.charge(bytes, self.limit).map(|()| bytes).map_err(|used| {
            self.denials.record(format!(
                "a write of {} KiB to {} was refused: the directory holds {} KiB of its {} MiB \
                 quota (files count in 4 KiB blocks, at least one each); delete files or raise \
                 quota_mib in [[plugins.{}.dirs]]",
                bytes.div_ceil(1024),
                self.guest,
                used.div_ceil(1024),
                self.limit >> 20,
                self.plugin
            ));
            ErrorCode::InsufficientSpace
        })
    }

    /// Give back what a charge took, or what an operation freed.
    pub(super) fn refund(&self, bytes: u64) {
        self.usage.refund(bytes);
    }

    /// Correct `charged` to what a change really did (see [`DiskUsage::settle`]).
    pub(super) fn settle(&self, charged: u64, before: u64, after: u64) {
        self.usage.settle(charged, before, after);
    }

    /// The directory's turn (see [`DiskUsage::turn`]).
    pub(super) async fn turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.usage.turn().await
    }

    /// The directory's shared total.
    pub(super) fn usage(&self) -> &Arc<DiskUsage> {
        &self.usage
    }

    /// Whether `self` and `other` charge the same directory.
    pub(super) fn same(&self, other: &Quota) -> bool {
        Arc::ptr_eq(&self.usage, &other.usage)
    }

    /// An output stream writing `file` at `at` (at its end when `None`), each write
    /// charged, made and measured under the directory's turn.
    pub(super) fn writer(&self, file: Arc<std::fs::File>, at: Option<u64>) -> DynOutputStream {
        Box::new(MeteredWriter { file, at, quota: self.clone(), state: WriterState::Ready })
    }

    /// Write `bytes` at `at` (or the end): the position after it.
    async fn write(
        &self,
        file: Arc<std::fs::File>,
        at: Option<u64>,
        bytes: Bytes,
    ) -> std::io::Result<u64> {
        use std::os::unix::fs::FileExt;
        let _turn = self.turn().await;
        let quota = self.clone();
        let written = tokio::task::spawn_blocking(move || {
            let before = file.metadata()?.len();
            let at = at.unwrap_or(before);
            let end = at.saturating_add(bytes.len() as u64);
            let charged = quota
                .charge(footprint(before.max(end)) - footprint(before))
                .map_err(|_| std::io::Error::from_raw_os_error(ENOSPC))?;
            let written = file.write_all_at(&bytes, at);
            let after = file.metadata().map_or(before.max(end), |m| m.len());
            quota.settle(charged, footprint(before), footprint(after));
            written.map(|()| end)
        });
        written.await.map_err(std::io::Error::other)?
    }
}

/// Which descriptors of one call write into which quota. A descriptor is mapped when
/// it is made (a preopen, or `open-at` under a mapped directory), so a resource index
/// reused after a drop is always mapped afresh.
#[derive(Default)]
pub(crate) struct Quotas {
    dirs: HashMap<String, Quota>,
    descriptors: HashMap<u32, Quota>,
}

impl Quotas {
    /// The quota of the writable directory mounted at `guest`.
    pub(super) fn mount(
        &mut self,
        guest: &str,
        plugin: &str,
        limit: u64,
        usage: Arc<DiskUsage>,
        denials: &Denials,
    ) {
        let quota = Quota {
            guest: guest.into(),
            plugin: plugin.into(),
            limit,
            usage,
            denials: denials.clone(),
        };
        self.dirs.insert(guest.to_string(), quota);
    }

    /// The guest was handed the preopen at `guest` as descriptor `rep`.
    pub(crate) fn preopened(&mut self, rep: u32, guest: &str) {
        self.inherit(rep, self.dirs.get(guest).cloned());
    }

    /// Descriptor `child` was opened under descriptor `parent`.
    pub(crate) fn opened(&mut self, parent: u32, child: u32) {
        self.inherit(child, self.of(parent));
    }

    fn inherit(&mut self, rep: u32, quota: Option<Quota>) {
        match quota {
            Some(quota) => self.descriptors.insert(rep, quota),
            None => self.descriptors.remove(&rep),
        };
    }

    /// The quota that descriptor `rep` writes into, if any.
    pub(crate) fn of(&self, rep: u32) -> Option<Quota> {
        self.descriptors.get(&rep).cloned()
    }
}

/// How much one queued write may carry, as wasmtime-wasi's file streams allow.
const WRITE_CAPACITY: usize = 64 << 10;

/// A file's output stream that writes under its directory's quota. wasmtime-wasi's own
/// file stream writes on a background task after `write` returns, past any check made
/// then; this one makes the write when the guest waits for it, under the turn.
struct MeteredWriter {
    file: Arc<std::fs::File>,
    at: Option<u64>,
    quota: Quota,
    state: WriterState,
}

enum WriterState {
    Ready,
    Queued(Bytes),
    Failed(std::io::Error),
    Closed,
}

impl MeteredWriter {
    /// Make the queued write, if any; its failure is reported by the next operation.
    async fn land(&mut self) {
        if let WriterState::Queued(bytes) = std::mem::replace(&mut self.state, WriterState::Ready) {
            match self.quota.write(self.file.clone(), self.at, bytes).await {
                Ok(end) => self.at = self.at.map(|_| end),
                Err(error) => self.state = WriterState::Failed(error),
            }
        }
    }

    /// The stream's standing: `Ok` when it may write, else the error to report (once).
    fn standing(&mut self) -> StreamResult<()> {
        match std::mem::replace(&mut self.state, WriterState::Closed) {
            WriterState::Failed(error) => Err(StreamError::LastOperationFailed(error.into())),
            WriterState::Closed => Err(StreamError::Closed),
            other => {
                self.state = other;
                Ok(())
            }
        }
    }
}

#[async_trait::async_trait]
impl OutputStream for MeteredWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.standing()?;
        if !matches!(self.state, WriterState::Ready) || bytes.len() > WRITE_CAPACITY {
            return Err(StreamError::trap("write not permitted: check-write not called first"));
        }
        self.state = WriterState::Queued(bytes);
        Ok(())
    }

    async fn blocking_write_and_flush(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.land().await;
        self.standing()?;
        self.state = WriterState::Queued(bytes);
        self.land().await;
        self.standing()
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.standing()
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.standing()?;
        Ok(match self.state {
            WriterState::Ready => WRITE_CAPACITY,
            _ => 0,
        })
    }
}

#[async_trait::async_trait]
impl Pollable for MeteredWriter {
    async fn ready(&mut self) {
        self.land().await
    }
}
