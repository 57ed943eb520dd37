//! A message on its way in: kept in memory while it is small, in an unnamed file in the
//! spool's `queue/` once it is not, so a session holds a bounded buffer whatever size the
//! client sends. [`Spool::store_incoming`] then writes the queue files from it.

use std::fs::File;
use std::io::{self, Write};

use super::Spool;

/// Up to this many octets a message stays in memory (most mail: stored with one write).
pub const SPILL_AT: usize = 64 * 1024;
/// Once in a file, buffered octets are written out at this size.
const WRITE_AT: usize = 16 * 1024;

/// The octets of a message being received, in order.
#[derive(Debug, Default)]
pub struct Incoming {
    /// Octets not written to `file` yet (all of them while `file` is `None`).
    buf: Vec<u8>,
    /// Created once the message outgrows [`SPILL_AT`]; its name is removed at once, so
    /// nothing is left behind whatever happens to the process.
    pub(super) file: Option<File>,
    len: u64,
    /// Writing the file failed: the message cannot be stored, the rest is discarded.
    failed: Option<io::Error>,
}

impl Incoming {
    pub fn new() -> Incoming {
        Incoming::default()
    }

    /// Appends octets (to memory only: see [`Incoming::wants_write`]).
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        let needed = self.buf.len() + bytes.len();
        if needed > self.buf.capacity() {
            // Grow by doubling, but not past what one step beyond the spill size needs.
            let cap = (self.buf.capacity() * 2)
                .clamp(4096, SPILL_AT + 8192)
                .max(needed);
            self.buf.reserve_exact(cap - self.buf.len());
        }
        self.buf.extend_from_slice(bytes);
        self.len += bytes.len() as u64;
    }

    /// Octets pushed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when [`Incoming::write_out`] should run: memory holds more than it should.
    pub fn wants_write(&self) -> bool {
        self.failed.is_none()
            && match self.file {
                None => self.buf.len() > SPILL_AT,
                Some(_) => self.buf.len() >= WRITE_AT,
            }
    }

    /// Moves the buffered octets to the file (made on first use). Blocking. A failure is
    /// kept: the message is then refused when it is stored.
    pub fn write_out(&mut self, spool: &Spool) {
        if self.failed.is_some() || self.buf.is_empty() {
            return;
        }
        let result = match &mut self.file {
            Some(f) => f.write_all(&self.buf),
            None => spool.unnamed_file().and_then(|mut f| {
                f.write_all(&self.buf)?;
                self.file = Some(f);
                Ok(())
            }),
        };
        match result {
            Ok(()) => {
                self.buf.clear();
                if self.buf.capacity() > WRITE_AT + 8192 {
                    self.buf = Vec::with_capacity(WRITE_AT + 8192);
                }
            }
            Err(e) => {
                self.buf = Vec::new();
                self.file = None;
                self.failed = Some(e);
            }
        }
    }

    /// The octets still in memory: the whole message while it has no file.
    pub(super) fn buffered(&self) -> &[u8] {
        &self.buf
    }

    pub(super) fn take_failure(&mut self) -> Option<io::Error> {
        self.failed.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_stays_in_memory_large_goes_to_an_unnamed_file() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let mut m = Incoming::new();
        m.push(&[b'a'; 1000]);
        assert!(!m.wants_write());
        let mut total = 1000u64;
        while total <= 3 * SPILL_AT as u64 {
            m.push(&[b'b'; 4096]);
            total += 4096;
            if m.wants_write() {
                m.write_out(&spool);
            }
            assert!(m.buf.capacity() <= SPILL_AT + 8192, "{}", m.buf.capacity());
        }
        assert!(m.file.is_some());
        assert_eq!(m.len(), total);
        // The file has no name: nothing but the lock and the two directories.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("queue"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }
}
