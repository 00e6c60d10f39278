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
use crate::policy::quota::{DiskUsage, FileId, footprint};

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
    pub(super) async fn turn(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.usage.turn().await
    }

    /// A name of file `id` that cost `bytes` was deleted (see [`DiskUsage::free`]).
    pub(super) fn free(&self, id: Option<FileId>, bytes: u64) {
        self.usage.free(id, bytes);
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

    /// Write `bytes` at `at` (or the end) on a task of its own, which holds the turn
    /// until the write is made and measured, whoever stops waiting for it: the position
    /// after it.
    fn write(&self, file: Arc<std::fs::File>, at: Option<u64>, bytes: Bytes) -> Landing {
        use std::os::unix::fs::FileExt;
        let quota = self.clone();
        tokio::spawn(async move {
            let turn = quota.turn().await;
            let written = tokio::task::spawn_blocking(move || {
                let _turn = turn;
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
        })
    }
}

/// A write on its way: its task's answer is the position after it.
type Landing = tokio::task::JoinHandle<std::io::Result<u64>>;

/// Which descriptors of one call write into which quota. A descriptor is mapped when
/// it is made (a preopen, or `open-at` under a mapped directory), so a resource index
/// reused after a drop is always mapped afresh.
///
/// It also knows which files of quota'd directories the call holds open, so their
/// directory refunds a deleted file only once it is closed; a call that ends (or is
/// stopped) closes what it held.
#[derive(Default)]
pub(crate) struct Quotas {
    dirs: HashMap<String, Quota>,
    descriptors: HashMap<u32, Quota>,
    files: HashMap<u32, (Arc<DiskUsage>, FileId)>,
}

impl Drop for Quotas {
    fn drop(&mut self) {
        for (usage, id) in self.files.values() {
            usage.release(*id);
        }
    }
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

    /// Descriptor `rep` is file `id` of `quota`'s directory.
    pub(crate) fn holds(&mut self, rep: u32, quota: &Quota, id: FileId) {
        quota.usage.hold(id);
        if let Some((usage, id)) = self.files.insert(rep, (quota.usage.clone(), id)) {
            usage.release(id);
        }
    }

    /// Descriptor `rep` was closed.
    pub(crate) fn closed(&mut self, rep: u32) {
        if let Some((usage, id)) = self.files.remove(&rep) {
            usage.release(id);
        }
    }

    /// The quota that descriptor `rep` writes into, if any.
    pub(crate) fn of(&self, rep: u32) -> Option<Quota> {
        self.descriptors.get(&rep).cloned()
    }
}

/// How much one queued write may carry, as wasmtime-wasi's file streams allow.
const WRITE_CAPACITY: usize = 64 << 10;

/// A file's output stream that writes under its directory's quota. wasmtime-wasi's own
/// file stream checks nothing when its background write lands; this one hands each
/// write to a task that takes the directory's turn, charges, writes and measures, and
/// reports the outcome to whoever asks next.
struct MeteredWriter {
    file: Arc<std::fs::File>,
    at: Option<u64>,
    quota: Quota,
    state: WriterState,
}

enum WriterState {
    Ready,
    Writing(Landing),
    Failed(std::io::Error),
    Closed,
}

impl MeteredWriter {
    /// Wait for the write on its way, if any. Cancel-safe: the write's task runs on
    /// when this wait is dropped, and the next wait picks up its outcome.
    async fn landed(&mut self) {
        if let WriterState::Writing(landing) = &mut self.state {
            let outcome = landing.await;
            self.settle(outcome);
        }
    }

    /// Take the outcome of a write that has landed, without waiting.
    fn poll_landed(&mut self) {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};
        if let WriterState::Writing(landing) = &mut self.state {
            let mut cx = Context::from_waker(Waker::noop());
            if let Poll::Ready(outcome) = std::pin::Pin::new(landing).poll(&mut cx) {
                self.settle(outcome);
            }
        }
    }

    fn settle(&mut self, outcome: Result<std::io::Result<u64>, tokio::task::JoinError>) {
        match outcome.map_err(std::io::Error::other).and_then(|written| written) {
            Ok(end) => {
                self.at = self.at.map(|_| end);
                self.state = WriterState::Ready;
            }
            Err(error) => self.state = WriterState::Failed(error),
        }
    }

    /// `Ok` when the stream may go on, else the error to report (once, then closed).
    fn standing(&mut self) -> StreamResult<()> {
        self.poll_landed();
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
        self.state = WriterState::Writing(self.quota.write(self.file.clone(), self.at, bytes));
        Ok(())
    }

    async fn blocking_write_and_flush(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.landed().await;
        self.standing()?;
        self.state = WriterState::Writing(self.quota.write(self.file.clone(), self.at, bytes));
        self.landed().await;
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

    /// Dropping the stream waits for its write, as wasmtime-wasi's file stream does: a
    /// write the guest queued is made, not lost.
    async fn cancel(&mut self) {
        self.landed().await
    }
}

#[async_trait::async_trait]
impl Pollable for MeteredWriter {
    async fn ready(&mut self) {
        self.landed().await
    }
}
