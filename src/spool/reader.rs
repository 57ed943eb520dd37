//! Reading a spool that a running relay may have open (`srs-relay queue list` and
//! `queue show` when the relay does not answer): no lock, no recovery, no writes. Each
//! file is read whole or not at all (the relay replaces files by rename), so a reader
//! sees each envelope as it was before or after a change, never a mix.

use std::io;
use std::path::Path;

use super::envelope::Envelope;
use super::store::Spool;

/// A spool opened for reading only.
#[derive(Debug, Clone)]
pub struct SpoolReader(Spool);

impl SpoolReader {
    /// Opens the spool at `dir`, which must exist.
    pub fn open(dir: &Path) -> io::Result<SpoolReader> {
        Spool::unlocked(dir).map(SpoolReader)
    }

    /// The envelopes in the spool, by id. Messages removed while this reads are left out;
    /// one that cannot be read is an error naming it.
    pub fn envelopes(&self) -> io::Result<Vec<Envelope>> {
        let mut out = Vec::new();
        for id in self.0.ids()? {
            match self.0.envelope(&id) {
                Ok(Some(env)) => out.push(env),
                Ok(None) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io::Error::new(e.kind(), format!("{id}: {e}"))),
            }
        }
        Ok(out)
    }

    /// The envelope of `id`, `None` if it is not in the spool.
    pub fn envelope(&self, id: &str) -> io::Result<Option<Envelope>> {
        self.0.envelope(id)
    }

    /// At most the first `max` octets of the stored message of `id`.
    pub fn read_message_prefix(&self, id: &str, max: u64) -> io::Result<Vec<u8>> {
        self.0.read_message_prefix(id, max)
    }
}
