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
    /// For a message in a file, what [`Incoming::edit`] asked for: header fields to put
    /// in front, and the ranges of the file to leave out (ascending, disjoint), applied
    /// when the queue files are written.
    pub(super) edit: Option<(Vec<u8>, Vec<std::ops::Range<u64>>)>,
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

    /// The whole message when it is in memory (`None` once it went to a file).
    pub fn in_memory(&self) -> Option<&[u8]> {
        self.file.is_none().then_some(&self.buf[..])
    }

    /// The whole message read back from its file (`None` when it is in memory, or could
    /// not be stored anyway). Blocking.
    pub fn read_back(&mut self, spool: &Spool) -> io::Result<Option<Vec<u8>>> {
        use std::io::{Read, Seek};
        if self.file.is_none() || self.failed.is_some() {
            return Ok(None);
        }
        self.write_out(spool);
        if let Some(e) = self.failed.take() {
            self.failed = Some(io::Error::new(e.kind(), e.to_string()));
            return Err(e);
        }
        let Some(mut file) = self.file.as_ref() else {
            return Ok(None);
        };
        file.seek(io::SeekFrom::Start(0))?;
        let mut all = Vec::with_capacity(self.len as usize);
        file.take(self.len).read_to_end(&mut all)?;
        Ok(Some(all))
    }

    /// Puts `prepend` in front of the message and leaves the octet ranges `remove`
    /// (ascending, disjoint, within the message) out of it: how header fields are added
    /// and removed before the message is queued, so that the queue file still holds the
    /// octets exactly as they will be sent. Call once, after the last [`Incoming::push`].
    pub fn edit(&mut self, prepend: &[u8], remove: Vec<std::ops::Range<u64>>) {
        if self.failed.is_some() || (prepend.is_empty() && remove.is_empty()) {
            return;
        }
        let removed: u64 = remove.iter().map(|r| r.end - r.start).sum();
        if self.file.is_none() {
            let mut edited = Vec::with_capacity(prepend.len() + self.buf.len());
            edited.extend_from_slice(prepend);
            let mut at = 0usize;
            for r in &remove {
                edited.extend_from_slice(&self.buf[at..r.start as usize]);
                at = r.end as usize;
            }
            edited.extend_from_slice(&self.buf[at..]);
            self.buf = edited;
        } else {
            self.edit = Some((prepend.to_vec(), remove));
        }
        self.len = self.len + prepend.len() as u64 - removed;
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
