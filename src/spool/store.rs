//! The [`Spool`] type: opening a spool, and storing, updating, reading and removing
//! its messages.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::envelope::{Envelope, FORMAT_VERSION, encode_line, parse_line, queue_file_header};
use super::files::{
    ensure_dir, exists, overwrite_file, remove_if_exists, rename_noreplace, write_new_file,
};
use super::free::{FREE_EXT, FreeFiles, RECYCLE_MAX_LEN};
use super::group_sync::GroupSync;
use super::id::check_id;
use super::incoming::Incoming;
use super::recovery::Recovered;

pub(super) const QUEUE_EXT: &str = "q";
pub(super) const STATE_EXT: &str = "state";
const QUEUE_DIR: &str = "queue";
const CORRUPT_DIR: &str = "corrupt";
const LOCK_FILE: &str = "lock";

/// An open spool directory. Cheap to clone; the directory stays locked until the last
/// clone is dropped.
#[derive(Debug, Clone)]
pub struct Spool {
    pub(super) dir: PathBuf,
    pub(super) queue: PathBuf,
    pub(super) corrupt: PathBuf,
    /// `None` for a [`SpoolReader`](super::SpoolReader), which neither locks nor writes.
    _lock: Option<Arc<File>>,
    /// Group commit of `queue/`'s directory fsyncs.
    queue_sync: Arc<GroupSync>,
    /// Removed queue files kept for reuse.
    pub(super) free: Arc<FreeFiles>,
}

impl Spool {
    /// Opens (creating if missing) the spool at `dir`, locks it against a second process
    /// and recovers it (see the module documentation).
    pub fn open(dir: &Path) -> io::Result<(Spool, Recovered)> {
        ensure_dir(dir)?;
        let queue = dir.join(QUEUE_DIR);
        let corrupt = dir.join(CORRUPT_DIR);
        ensure_dir(&queue)?;
        ensure_dir(&corrupt)?;

        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)?;
        // A little patience: a child process forked elsewhere in this program holds a
        // copy of a just-closed lock until it execs.
        let mut tries = 0;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if tries < 10 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        format!("spool {} is already open (locked)", dir.display()),
                    ));
                }
                Err(TryLockError::Error(e)) => return Err(e),
            }
        }

        let spool = Spool {
            dir: dir.to_path_buf(),
            queue,
            corrupt,
            _lock: Some(Arc::new(lock)),
            queue_sync: Arc::default(),
            free: Arc::default(),
        };
        let recovered = spool.recover()?;
        Ok((spool, recovered))
    }
    /// The spool at `dir` for reading only: not locked, not recovered. The directory
    /// must exist.
    pub(super) fn unlocked(dir: &Path) -> io::Result<Spool> {
        let queue = dir.join(QUEUE_DIR);
        fs::metadata(&queue)?;
        Ok(Spool {
            dir: dir.to_path_buf(),
            corrupt: dir.join(CORRUPT_DIR),
            queue,
            _lock: None,
            queue_sync: Arc::default(),
            free: Arc::default(),
        })
    }

    /// The ids of the messages in the spool (their queue files), sorted: by arrival for
    /// the ids the relay makes.
    pub fn ids(&self) -> io::Result<Vec<String>> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.queue)? {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(id) = name
                .strip_suffix(QUEUE_EXT)
                .and_then(|n| n.strip_suffix('.'))
                && check_id(id).is_ok()
            {
                ids.push(id.to_owned());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Stores a new message durably: when this returns `Ok`, the message and its envelope
    /// survive a crash. On `Err` nothing of it remains that a later [`Spool::open`] would
    /// take for a message. Fails with `AlreadyExists` if `env.id` is already in the spool.
    pub fn store(&self, env: &Envelope, message: &[u8]) -> io::Result<()> {
        match self.store_once(env, message) {
            // The free files hold disk space: give it back and try once more.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && self.release_free_files() > 0 => {
                self.store_once(env, message)
            }
            other => other,
        }
    }

    /// Deletes every free file; returns how many there were.
    fn release_free_files(&self) -> usize {
        let numbers =
            std::mem::take(&mut *self.free.numbers.lock().unwrap_or_else(|e| e.into_inner()));
        for &(n, _) in &numbers {
            let _ = fs::remove_file(self.free_file(n));
        }
        numbers.len()
    }

    fn store_once(&self, env: &Envelope, message: &[u8]) -> io::Result<()> {
        check_id(&env.id)?;
        let header = encode_line(env, Some(message.len() as u64))?;
        let queue_path = self.file(&env.id, QUEUE_EXT);
        if exists(&queue_path)? {
            return Err(already_exists(&env.id));
        }
        let parts: [&[u8]; 2] = [&header, message];
        let recycled = self.free.take(self.queue_sync.last_ok()).and_then(|n| {
            let path = self.free_file(n);
            match overwrite_file(&path, &parts) {
                Ok(()) => Some((path, Some(n))),
                Err(e) => {
                    // Not worth a refusal: drop that file and write a new one.
                    tracing::debug!(file = %path.display(), error = %e, "free spool file not reused");
                    let _ = fs::remove_file(&path);
                    None
                }
            }
        });
        let (written, free_number) = match recycled {
            Some(r) => r,
            None => {
                let tmp = self.tmp_file(&env.id);
                write_new_file(&tmp, &parts)?;
                (tmp, None)
            }
        };
        self.commit(&env.id, &written, free_number)
    }

    /// Stores the message of `incoming` under every one of `envs` (a copy each), all or
    /// nothing: on `Err` none of them remains. Blocking, like [`Spool::store`].
    pub fn store_incoming(&self, envs: &[Envelope], incoming: &mut Incoming) -> io::Result<()> {
        if let Some(e) = incoming.take_failure() {
            return Err(e);
        }
        if incoming.file.is_some() {
            incoming.write_out(self);
        }
        if let Some(e) = incoming.take_failure() {
            return Err(e);
        }
        let mut stored: Vec<&str> = Vec::new();
        for env in envs {
            let result = match &incoming.file {
                None => self.store(env, incoming.buffered()),
                Some(file) => self.store_copy(env, file, incoming.len(), incoming.edit.as_ref()),
            };
            if let Err(e) = result {
                for id in stored {
                    let _ = self.remove(id);
                }
                return Err(e);
            }
            stored.push(&env.id);
        }
        Ok(())
    }

    /// [`Spool::store`] of `message` copied file to file: `len` octets once edited
    /// (`edit`: octets in front, ranges of the file left out; see [`Incoming::edit`](super::Incoming::edit)).
    fn store_copy(
        &self,
        env: &Envelope,
        message: &File,
        len: u64,
        edit: Option<&Edit>,
    ) -> io::Result<()> {
        match self.store_copy_once(env, message, len, edit) {
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && self.release_free_files() > 0 => {
                self.store_copy_once(env, message, len, edit)
            }
            other => other,
        }
    }

    fn store_copy_once(
        &self,
        env: &Envelope,
        message: &File,
        len: u64,
        edit: Option<&Edit>,
    ) -> io::Result<()> {
        use std::io::{Read, Seek};
        check_id(&env.id)?;
        let header = encode_line(env, Some(len))?;
        if exists(&self.file(&env.id, QUEUE_EXT))? {
            return Err(already_exists(&env.id));
        }
        let tmp = self.tmp_file(&env.id);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        let result = (|| {
            file.write_all(&header)?;
            let mut src = message;
            // The parts of the incoming file that are kept: all of it unless edited.
            let (prefix, kept) = match edit {
                None => (&[][..], std::iter::once(0..len).collect()),
                Some((prefix, removed)) => {
                    let mut kept = Vec::with_capacity(removed.len() + 1);
                    let mut at = 0;
                    for r in removed {
                        kept.push(at..r.start);
                        at = r.end;
                    }
                    // The end of the file: what is left once the prefix and the kept parts
                    // before it are counted.
                    let before: u64 = kept.iter().map(|k| k.end - k.start).sum();
                    kept.push(at..at + (len - prefix.len() as u64 - before));
                    (&prefix[..], kept)
                }
            };
            file.write_all(prefix)?;
            let mut copied = prefix.len() as u64;
            for part in kept {
                src.seek(io::SeekFrom::Start(part.start))?;
                // std copies File to File inside the kernel (copy_file_range).
                copied += io::copy(&mut src.take(part.end - part.start), &mut file)?;
            }
            if copied != len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "incoming message file shorter than received",
                ));
            }
            file.sync_all()
        })();
        drop(file);
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        self.commit(&env.id, &tmp, None)
    }
}

/// See [`Incoming::edit`](super::Incoming::edit).
type Edit = (Vec<u8>, Vec<std::ops::Range<u64>>);

impl Spool {
    /// A new file in `queue/` whose name is removed at once: it lives as long as the
    /// handle, and a crash leaves nothing of it.
    pub(super) fn unnamed_file(&self) -> io::Result<File> {
        let path = self.tmp_file("incoming");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        fs::remove_file(&path)?;
        Ok(file)
    }

    /// Makes the written file `written` (a `.tmp`, or the free file `free_number`) the
    /// queue file of `id`: rename, then the group-committed `queue/` fsync.
    fn commit(&self, id: &str, written: &Path, free_number: Option<u64>) -> io::Result<()> {
        let queue_path = self.file(id, QUEUE_EXT);
        if let Err(e) = rename_noreplace(written, &queue_path) {
            match free_number {
                // Still under its old name, already durable.
                Some(n) => self.free.put(n, 0),
                None => {
                    let _ = fs::remove_file(written);
                }
            }
            return Err(if e.kind() == io::ErrorKind::AlreadyExists {
                already_exists(id)
            } else {
                e
            });
        }
        if let Err(e) = self.queue_sync.sync(&self.queue) {
            // The caller will answer 4xx: take the message back out. If this removal does
            // not reach the disk, a crash brings back a message that was refused: at worst
            // a duplicate, never a loss.
            let _ = fs::remove_file(&queue_path);
            return Err(e);
        }
        Ok(())
    }

    /// Atomically replaces the stored envelope of `env.id` (temporary file, fsync, rename,
    /// directory fsync). Fails with `NotFound` if the id is not in the spool. On `Err`
    /// the old envelope is still in place, unless only the final directory fsync failed,
    /// in which case either may be found after a crash.
    pub fn update(&self, env: &Envelope) -> io::Result<()> {
        check_id(&env.id)?;
        let line = encode_line(env, None)?;
        if !exists(&self.file(&env.id, QUEUE_EXT))? {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("spool id {} not found", env.id),
            ));
        }
        let tmp = self.tmp_file(&env.id);
        write_new_file(&tmp, &[&line])?;
        if let Err(e) = fs::rename(&tmp, self.file(&env.id, STATE_EXT)) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        self.queue_sync.sync(&self.queue)
    }

    /// The envelope of `id` as it stands now (updated or as received), `None` if `id` is
    /// not in the spool.
    pub fn envelope(&self, id: &str) -> io::Result<Option<Envelope>> {
        check_id(id)?;
        let damaged = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("spool id {id}: envelope damaged"),
            )
        };
        match fs::read(self.file(id, STATE_EXT)) {
            Ok(b) => {
                return parse_line(&b, id, FORMAT_VERSION)
                    .map(|(e, _)| Some(e))
                    .ok_or_else(damaged);
            }
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            Err(_) => {}
        }
        match self.load_queue_file(id) {
            Ok(Some(env)) => Ok(Some(env)),
            Ok(None) => Err(damaged()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The stored message octets of `id`, whole (see [`Spool::open_message`] to stream them).
    pub fn read_message(&self, id: &str) -> io::Result<Vec<u8>> {
        self.read_message_prefix(id, u64::MAX)
    }

    /// At most the first `max` octets of the stored message of `id`.
    pub fn read_message_prefix(&self, id: &str, max: u64) -> io::Result<Vec<u8>> {
        use std::io::Read;
        let (file, len) = self.open_message(id)?;
        let want = len.min(max);
        let mut bytes = Vec::with_capacity(usize::try_from(want).unwrap_or(0).min(1 << 20));
        file.take(want).read_to_end(&mut bytes)?;
        if (bytes.len() as u64) < want {
            return Err(damaged_queue_file(id));
        }
        Ok(bytes)
    }

    /// The queue file of `id`, positioned at the start of its message, and the message's
    /// length. The file is whole (its length checked against its envelope line).
    pub fn open_message(&self, id: &str) -> io::Result<(File, u64)> {
        use std::io::{BufRead, Seek};
        check_id(id)?;
        let file = File::open(self.file(id, QUEUE_EXT))?;
        let total = file.metadata()?.len();
        let mut line = Vec::new();
        let mut reader = io::BufReader::new(file);
        reader.read_until(b'\n', &mut line)?;
        queue_file_header(&line, id, total).ok_or_else(|| damaged_queue_file(id))?;
        let mut file = reader.into_inner();
        file.seek(io::SeekFrom::Start(line.len() as u64))?;
        Ok((file, total - line.len() as u64))
    }

    /// Removes `id` from the spool: queue file first, then the updated envelope. Removing
    /// an id that is not there is not an error. The directory is not fsynced: a removal
    /// that a crash undoes only means the message is tried again (a duplicate, never a
    /// loss), and the fsync would cost every delivered message a disk write (Postfix does
    /// not sync its deletes either).
    pub fn remove(&self, id: &str) -> io::Result<()> {
        check_id(id)?;
        let queue_file = self.file(id, QUEUE_EXT);
        if !self.recycle(&queue_file)? {
            remove_if_exists(&queue_file)?;
        }
        remove_if_exists(&self.file(id, STATE_EXT))
    }

    /// Makes the removals done so far durable (fsyncs `queue/`): for removals a crash must
    /// not undo, such as the postmaster's.
    pub fn sync_removals(&self) -> io::Result<()> {
        self.queue_sync.sync(&self.queue)
    }

    /// Renames a queue file that is being removed into the free pool, if it is small
    /// enough and the pool has room. True if the file is gone from its name.
    fn recycle(&self, queue_file: &Path) -> io::Result<bool> {
        let len = match fs::symlink_metadata(queue_file) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
            Err(e) => return Err(e),
        };
        if len > RECYCLE_MAX_LEN {
            return Ok(false);
        }
        let Some(n) = self.free.reserve() else {
            return Ok(false);
        };
        match fs::rename(queue_file, self.free_file(n)) {
            Ok(()) => {
                // Asked after the rename: that sync starts after it.
                self.free.put(n, self.queue_sync.next_ticket());
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Creates, writes and removes a file in the queue directory: whether a message could
    /// be stored now (for `/readyz`). Root is not stopped by permissions, but by a queue
    /// directory gone, replaced, on a read-only file system or a full disk.
    pub fn probe_writable(&self) -> io::Result<()> {
        let path = self.tmp_file("ready");
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let written = file.write_all(b"ready\n");
        drop(file);
        let removed = fs::remove_file(&path);
        written.and(removed)
    }

    /// The spool directory as given to [`Spool::open`].
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(super) fn file(&self, id: &str, ext: &str) -> PathBuf {
        self.queue.join(format!("{id}.{ext}"))
    }

    pub(super) fn free_file(&self, n: u64) -> PathBuf {
        self.queue.join(format!("{n}.{FREE_EXT}"))
    }

    fn tmp_file(&self, id: &str) -> PathBuf {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        self.queue.join(format!("{id}.{n}.tmp"))
    }

    /// The envelope of queue file `id`, `None` if it is not whole (see
    /// [`queue_file_header`]). An error reading it is an error, not damage: recovery
    /// then fails rather than set a good message aside.
    pub(super) fn load_queue_file(&self, id: &str) -> io::Result<Option<Envelope>> {
        use std::io::BufRead;
        let file = File::open(self.file(id, QUEUE_EXT))?;
        let total = file.metadata()?.len();
        let mut line = Vec::new();
        io::BufReader::new(file).read_until(b'\n', &mut line)?;
        Ok(queue_file_header(&line, id, total))
    }
}

fn damaged_queue_file(id: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("spool id {id}: queue file damaged"),
    )
}

fn already_exists(id: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("spool id {id} already exists"),
    )
}
