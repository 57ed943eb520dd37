//! The free files: queue files of removed messages, kept to be overwritten by later stores.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Queue files of removed messages, renamed `<n>.free` and overwritten by later stores
/// (as databases recycle their log segments): creating and deleting a file costs an inode
/// allocation and release, which under load took more time than the fsyncs. Only files
/// up to [`RECYCLE_MAX_LEN`] are kept, at most [`MAX_FREE_FILES`] of them.
///
/// A free file is overwritten only once a directory fsync that started after its rename
/// has finished: until then a power cut could bring back the old name, now on new bytes.
#[derive(Debug, Default)]
pub(super) struct FreeFiles {
    /// (number, the `queue/` fsync that must have finished before reuse)
    pub(super) numbers: Mutex<Vec<(u64, u64)>>,
    pub(super) next: AtomicU64,
}

pub(super) const MAX_FREE_FILES: usize = 256;
pub(super) const RECYCLE_MAX_LEN: u64 = 256 * 1024;
pub(super) const FREE_EXT: &str = "free";

impl FreeFiles {
    /// A free file whose rename is durable (`synced`: the last `queue/` fsync that
    /// succeeded), the most recently freed first.
    pub(super) fn take(&self, synced: u64) -> Option<u64> {
        let mut numbers = self.numbers.lock().unwrap_or_else(|e| e.into_inner());
        let i = numbers.iter().rposition(|&(_, ticket)| ticket <= synced)?;
        Some(numbers.remove(i).0)
    }

    /// A number for a new free file, if the pool has room.
    pub(super) fn reserve(&self) -> Option<u64> {
        let numbers = self.numbers.lock().unwrap_or_else(|e| e.into_inner());
        (numbers.len() < MAX_FREE_FILES).then(|| self.next.fetch_add(1, Ordering::Relaxed))
    }

    pub(super) fn put(&self, n: u64, ticket: u64) {
        self.numbers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((n, ticket));
    }
}
