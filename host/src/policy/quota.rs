//! Disk quotas of writable directories: what a directory holds, counted the way a
//! filesystem spends space, and kept as a running total that the sandbox charges as
//! the guest writes (the sandbox's `quota` module), so no call walks the directory.
//!
//! One total per host directory, shared by every plugin granted it and by a plugin's
//! old and new versions across a hot reload: two grants of one directory cannot each
//! spend the whole quota. The total is measured when a plugin granted the directory
//! loads (at start and on every reload, which is when a grant can change); what
//! changes outside the sandbox counts from the next measurement.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};

/// Space is charged in whole blocks of this size, and every file, directory and link
/// costs at least one: an empty file holds an inode, so 20,000 of them are not free.
pub const BLOCK_BYTES: u64 = 4096;

/// What an entry of `size` bytes costs against a quota.
pub fn footprint(size: u64) -> u64 {
    size.div_ceil(BLOCK_BYTES).max(1).saturating_mul(BLOCK_BYTES)
}

/// The running total of one directory's footprint, in bytes.
#[derive(Debug, Default)]
pub struct DiskUsage {
    bytes: AtomicU64,
    turn: Arc<tokio::sync::Mutex<()>>,
    /// Files of the directory that guests hold open, with what their deletion freed:
    /// an unlinked file keeps its blocks until its last descriptor closes, and so does
    /// its charge.
    open: Mutex<HashMap<FileId, Held>>,
}

/// A file's identity (its device and inode, hashed), the same for every call.
pub type FileId = (u64, u64);

#[derive(Debug, Default)]
struct Held {
    descriptors: usize,
    freed: u64,
}

impl DiskUsage {
    /// The shared total of the directory at `dir`, measured now.
    ///
    /// Measuring walks the directory: call it off the async workers.
    pub fn measure(dir: &Path) -> Arc<DiskUsage> {
        static TOTALS: LazyLock<Mutex<HashMap<PathBuf, Weak<DiskUsage>>>> =
            LazyLock::new(Default::default);
        let key = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        let total = {
            let mut totals = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
            totals.retain(|_, total| total.strong_count() > 0);
            totals.get(&key).and_then(Weak::upgrade).unwrap_or_else(|| {
                let total = Arc::new(DiskUsage::default());
                totals.insert(key.clone(), Arc::downgrade(&total));
                total
            })
        };
        {
            // Under the turn, so no change a running call measures is overwritten halfway.
            let _turn = total.turn.blocking_lock();
            total.bytes.store(walk(&key), Ordering::Relaxed);
        }
        total
    }

    /// Bytes charged now.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Charge `bytes` if the total stays within `quota`; otherwise charge nothing and
    /// return the total. Atomic, so concurrent writers cannot overshoot together.
    pub fn charge(&self, bytes: u64, quota: u64) -> Result<(), u64> {
        if bytes == 0 {
            return Ok(());
        }
        self.bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|&total| total <= quota)
            })
            .map(drop)
    }

    /// The directory's turn: changes measured before and after hold it, so two of
    /// them never measure one another's half-done work. Owned, so a write handed to
    /// another task keeps it until the write is done.
    pub async fn turn(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.turn.clone().lock_owned().await
    }

    /// A guest opened file `id`.
    pub fn hold(&self, id: FileId) {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).entry(id).or_default().descriptors += 1;
    }

    /// A guest closed file `id`: what its deletion freed is given back with its last
    /// descriptor.
    pub fn release(&self, id: FileId) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let Some(held) = open.get_mut(&id) else { return };
        held.descriptors = held.descriptors.saturating_sub(1);
        if held.descriptors == 0 {
            let freed = open.remove(&id).map_or(0, |h| h.freed);
            drop(open);
            self.refund(freed);
        }
    }

    /// Whether a guest holds file `id` open.
    pub fn is_open(&self, id: FileId) -> bool {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&id)
    }

    /// A name of file `id` that cost `bytes` was deleted: refunded now, or when the
    /// last descriptor of the file closes if a guest holds it open.
    pub fn free(&self, id: Option<FileId>, bytes: u64) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        match id.and_then(|id| open.get_mut(&id)) {
            Some(held) => held.freed = held.freed.saturating_add(bytes),
            None => {
                drop(open);
                self.refund(bytes);
            }
        }
    }

    /// Correct a `charged` amount to what a change really did: the entry it touched
    /// cost `before` and costs `after` now.
    pub fn settle(&self, charged: u64, before: u64, after: u64) {
        let grown = i128::from(after) - i128::from(before) - i128::from(charged);
        match u64::try_from(grown) {
            Ok(more) => {
                let _ = self.bytes.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                    Some(used.saturating_add(more))
                });
            }
            Err(_) => self.refund(u64::try_from(-grown).unwrap_or(u64::MAX)),
        }
    }

    /// Give back `bytes` that were charged (freed space, or a write that failed).
    pub fn refund(&self, bytes: u64) {
        if bytes == 0 {
            return;
        }
        // Never below zero: a refund for space measured before a concurrent
        // re-measurement may exceed what is left.
        let _ = self.bytes.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
            Some(used.saturating_sub(bytes))
        });
    }
}

/// The footprint of everything under `dir`, without following symbolic links. A file
/// with several hard links pays its size once and a block for each further name, as
/// the sandbox charges a link it makes.
fn walk(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    let mut seen = HashSet::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            let first = seen.insert((meta.dev(), meta.ino()));
            let cost = match () {
                _ if meta.is_dir() => {
                    pending.push(entry.path());
                    BLOCK_BYTES
                }
                _ if meta.is_file() && first => footprint(meta.len()),
                _ => BLOCK_BYTES,
            };
            total = total.saturating_add(cost);
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footprints_round_up_to_blocks_and_never_cost_nothing() {
        assert_eq!(footprint(0), BLOCK_BYTES);
        assert_eq!(footprint(1), BLOCK_BYTES);
        assert_eq!(footprint(BLOCK_BYTES), BLOCK_BYTES);
        assert_eq!(footprint(BLOCK_BYTES + 1), 2 * BLOCK_BYTES);
        assert_eq!(footprint(u64::MAX), u64::MAX, "saturates rather than wraps");
    }

    #[test]
    fn a_directory_is_measured_in_blocks_and_links_pay_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("empty"), "").unwrap();
        std::fs::write(dir.path().join("data"), vec![1u8; 5000]).unwrap();
        std::fs::hard_link(dir.path().join("data"), dir.path().join("again")).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("sub/link")).unwrap();
        // empty 1 block, data 2, its second name 1, sub 1, the link 1.
        assert_eq!(DiskUsage::measure(dir.path()).bytes(), 6 * BLOCK_BYTES);
    }

    #[test]
    fn grants_of_one_directory_share_one_total() {
        let dir = tempfile::tempdir().unwrap();
        let one = DiskUsage::measure(dir.path());
        let two = DiskUsage::measure(&dir.path().join("."));
        one.charge(BLOCK_BYTES, u64::MAX).unwrap();
        // A deleted file held open is refunded when its last descriptor closes.
        one.charge(3 * BLOCK_BYTES, u64::MAX).unwrap();
        let file = (1, 2);
        one.hold(file);
        two.hold(file);
        one.free(Some(file), 3 * BLOCK_BYTES);
        one.release(file);
        assert_eq!(one.bytes(), 4 * BLOCK_BYTES);
        two.release(file);
        assert_eq!(two.bytes(), BLOCK_BYTES);
        assert_eq!(two.charge(BLOCK_BYTES, BLOCK_BYTES), Err(BLOCK_BYTES));
        two.refund(10 * BLOCK_BYTES);
        assert_eq!(one.bytes(), 0);
    }
}
