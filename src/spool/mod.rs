//! The durable message spool: plain blocking `std::fs` code (async callers go through
//! `tokio::task::spawn_blocking`). A message counts as stored only once its files *and*
//! the directory holding them have been fsynced, so a `250` after DATA survives
//! `kill -9` and power loss.
//!
//! # On-disk format (version 2)
//!
//! This comment is the one place the format is described.
//!
//! ```text
//! <dir>/lock                 empty; flock(2)ed exclusively by the process that has the spool open
//! <dir>/queue/<id>.q         the queue file: the envelope as received, one JSON line
//!                            `{"version":2,"message_len":N,"id":...}` and "\n", then the N
//!                            message octets, exactly as they will be sent
//! <dir>/queue/<id>.state     the envelope as updated since: one JSON line `{"version":2,"id":...}`
//!                            and "\n"; when present it supersedes the queue file's
//! <dir>/queue/<id>.<n>.tmp   a queue or state file being written (<n>: a per-process counter)
//! <dir>/queue/<n>.free       the queue file of a removed message, kept to be overwritten by
//!                            a later store (<n>: a number); its contents mean nothing
//! <dir>/corrupt/<name>       files recovery could not use, moved aside for a human
//! ```
//!
//! * `<id>` is 1–64 characters from `[0-9A-Za-z_-]` (see [`Spool::new_id`] for the ids
//!   the relay makes). Ids are never reused, so a file name never changes meaning.
//! * The envelope objects hold every field of [`Envelope`] under its Rust name (an empty
//!   `dsn_owed` is left out) plus
//!   `"version": 2` (and `message_len` in the queue file). JSON has no raw line breaks, so
//!   the first `\n` ends the envelope. Recipient states are `"pending"`, `"delivered"`,
//!   `"failed"`; absent optional fields (`null` or missing) are `None`. Unknown fields
//!   are ignored, a different `version` is not understood (the file is set aside).
//! * One file per message, not two, and removed files are reused: every file created
//!   and deleted costs an inode allocation and release, which is what the spool spent
//!   most of its time on under load. At most 256 free files of up to 256 KiB are kept;
//!   when the disk is full they are deleted to make room.
//! * Files are created with mode 0600, directories with mode 0700.
//! * Version 1 (`<id>.env` holding the envelope, `<id>.msg` the message) is converted to
//!   version 2 on open, so an upgrade keeps the mail that was queued.
//!
//! ## Commit protocol
//!
//! Store: write `<id>.<n>.tmp` (O_EXCL), or overwrite a free file and cut it to length;
//! fsync it, rename it to `<id>.q` (never over an existing one), fsync `queue/`. The rename is the commit point: **a message exists if
//! and only if its `.q` exists**. The directory fsyncs are group commits: stores that
//! rename while one runs share the next one, so concurrent sessions pay one fsync between
//! them. Update writes a `<id>.<n>.tmp` the same way and renames it over `<id>.state`
//! (then fsyncs `queue/`), so a reader sees the old or the new envelope, never a mix.
//! Remove renames the `.q` to a free file or deletes it (un-commit), then deletes the
//! `.state`, and does not fsync
//! `queue/`: a crash may bring a removed message back, to be delivered again (a
//! duplicate, never a loss).
//!
//! ## Recovery (on [`Spool::open`])
//!
//! * any `*.tmp` is deleted (an unfinished store or update; what was there before stands);
//! * free files are kept for reuse (a store cut short while overwriting one leaves a free
//!   file still); those beyond the pool's size, and any that shares its inode with another
//!   name (a crash in the hard-link fallback, a file system check), are deleted;
//! * a file that cannot be read (an I/O error, not damage) fails the open: nothing is set
//!   aside for a disk's passing trouble;
//! * a `.state` without its `.q` is deleted (a remove cut short);
//! * a `.q` whose envelope line cannot be read or parsed, has another `version`, names
//!   another id, or whose length is not that line plus `message_len`, is moved with its
//!   `.state` into `corrupt/`: never dropped;
//! * a `.state` that cannot be used is moved into `corrupt/` and the queue file's own
//!   envelope is used: recipients already delivered may get the message again, none loses it;
//! * a version 1 pair is rewritten as a queue file, then deleted (if a whole queue file
//!   of its id exists, the conversion was done and only the deletion is left); a version 1 `.msg`
//!   alone is deleted (as version 1 recovery did), an unusable `.env` set aside with its `.msg`;
//! * any other file in `queue/` is moved into `corrupt/` too; sub-directories are left alone.
//!
//! A name already taken in `corrupt/` gets a `.1`, `.2`, ... suffix. `queue/` and
//! `corrupt/` are fsynced after recovery changed them.
//!
//! Callers must not run `update` or `remove` on the same id from two threads at once.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::{self, DirBuilder, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

mod incoming;
pub use incoming::{Incoming, SPILL_AT};

/// The `version` written into every envelope line.
const FORMAT_VERSION: u32 = 2;
/// The version before: `<id>.env` + `<id>.msg`, converted on open.
const FORMAT_V1: u32 = 1;
const QUEUE_EXT: &str = "q";
const STATE_EXT: &str = "state";
const QUEUE_DIR: &str = "queue";
const CORRUPT_DIR: &str = "corrupt";
const LOCK_FILE: &str = "lock";
const MAX_ID_LEN: usize = 64;

/// One queued message: who it is from, where it goes, and how delivery is going.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Queue id (from [`Spool::new_id`]).
    pub id: String,
    /// Arrival time, unix seconds.
    pub arrival: u64,
    /// MAIL FROM as given (`""` = null sender).
    pub original_sender: String,
    /// Rewritten (SRS) sender used for delivery (`""` = null sender).
    pub sender: String,
    pub recipients: Vec<Recipient>,
    pub client: ClientInfo,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Next delivery attempt, unix seconds.
    pub next_attempt: u64,
    /// Message size in octets.
    pub size: u64,
    /// DSN ENVID, if given.
    pub env_id: Option<String>,
    /// DSN RET=FULL (otherwise RET=HDRS).
    pub ret_full: bool,
    /// The sender has had its "delayed" DSN (one per message).
    #[serde(default)]
    pub delay_warned: bool,
    /// Reports whose DSN could not be spooled yet (disk full): made again at the next
    /// attempt, before the message may leave the spool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dsn_owed: Vec<OwedDsn>,
}

/// A DSN still to be made: why, and for which recipients (indices into `recipients`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwedDsn {
    pub reason: OwedReason,
    pub recipients: Vec<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OwedReason {
    /// Failed with a 5xx.
    Permanent,
    /// Failed at the end of `max_lifetime`.
    Expired,
    /// Still pending at `delay_warning`.
    Delayed,
}

/// One recipient of a queued message and its delivery state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recipient {
    /// Where to deliver.
    pub address: String,
    /// The RCPT TO address the client gave (alias, SRS bounce address, ...).
    pub original: String,
    pub state: RecipientState,
    /// Last reply or error text.
    pub last_error: Option<String>,
    /// The remote MTA that gave `last_error` (or accepted the message).
    pub remote: Option<String>,
    /// DSN NOTIFY value as given, if any.
    pub notify: Option<String>,
    /// DSN ORCPT address as given (type rfc822, xtext-decoded), if any.
    #[serde(default)]
    pub orcpt: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecipientState {
    Pending,
    Delivered,
    Failed,
}

/// The SMTP client the message came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientInfo {
    pub ip: String,
    pub helo: String,
    /// TLS protocol and cipher, e.g. `"TLSv1.3 TLS13_AES_256_GCM_SHA384"`; `None` = plain text.
    pub tls: Option<String>,
}

impl Envelope {
    /// True when no recipient is pending any more (all delivered or failed) and no DSN
    /// is owed.
    pub fn is_done(&self) -> bool {
        self.pending().next().is_none() && self.dsn_owed.is_empty()
    }

    /// The recipients still waiting for delivery.
    pub fn pending(&self) -> impl Iterator<Item = &Recipient> {
        self.recipients
            .iter()
            .filter(|r| r.state == RecipientState::Pending)
    }
}

/// What [`Spool::open`] found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recovered {
    /// The committed messages, sorted by id (that is, by arrival).
    pub envelopes: Vec<Envelope>,
    /// Files deleted as unfinished: `*.tmp` files and `.msg` files without an `.env`.
    pub removed_incomplete: usize,
    /// Names of the files (as they were called in `queue/`) moved into `corrupt/`.
    pub set_aside: Vec<String>,
}

/// An open spool directory. Cheap to clone; the directory stays locked until the last
/// clone is dropped.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
    queue: PathBuf,
    corrupt: PathBuf,
    _lock: Arc<File>,
    /// Group commit of `queue/`'s directory fsyncs.
    queue_sync: Arc<GroupSync>,
    /// Removed queue files kept for reuse.
    free: Arc<FreeFiles>,
}

/// Queue files of removed messages, renamed `<n>.free` and overwritten by later stores
/// (as databases recycle their log segments): creating and deleting a file costs an inode
/// allocation and release, which under load took more time than the fsyncs. Only files
/// up to [`RECYCLE_MAX_LEN`] are kept, at most [`MAX_FREE_FILES`] of them.
///
/// A free file is overwritten only once a directory fsync that started after its rename
/// has finished: until then a power cut could bring back the old name, now on new bytes.
#[derive(Debug, Default)]
struct FreeFiles {
    /// (number, the `queue/` fsync that must have finished before reuse)
    numbers: Mutex<Vec<(u64, u64)>>,
    next: AtomicU64,
}

const MAX_FREE_FILES: usize = 256;
const RECYCLE_MAX_LEN: u64 = 256 * 1024;
const FREE_EXT: &str = "free";

impl FreeFiles {
    /// A free file whose rename is durable (`synced`: the last `queue/` fsync that
    /// succeeded), the most recently freed first.
    fn take(&self, synced: u64) -> Option<u64> {
        let mut numbers = self.numbers.lock().unwrap_or_else(|e| e.into_inner());
        let i = numbers.iter().rposition(|&(_, ticket)| ticket <= synced)?;
        Some(numbers.remove(i).0)
    }

    /// A number for a new free file, if the pool has room.
    fn reserve(&self) -> Option<u64> {
        let numbers = self.numbers.lock().unwrap_or_else(|e| e.into_inner());
        (numbers.len() < MAX_FREE_FILES).then(|| self.next.fetch_add(1, Ordering::Relaxed))
    }

    fn put(&self, n: u64, ticket: u64) {
        self.numbers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((n, ticket));
    }
}

#[derive(Serialize)]
struct EnvelopeFile<'a> {
    version: u32,
    /// Octets after the envelope line: in queue files only.
    #[serde(skip_serializing_if = "Option::is_none")]
    message_len: Option<u64>,
    #[serde(flatten)]
    envelope: &'a Envelope,
}

#[derive(Deserialize)]
struct VersionProbe {
    version: u32,
    #[serde(default)]
    message_len: Option<u64>,
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
            _lock: Arc::new(lock),
            queue_sync: Arc::default(),
            free: Arc::default(),
        };
        let recovered = spool.recover()?;
        Ok((spool, recovered))
    }

    /// A new queue id: 34 lowercase hex digits, `<time µs:14><sequence:4><pid:8><random:8>`.
    ///
    /// Ids made by one process sort in the order they were made; across processes they
    /// sort by time to the microsecond. The pid and a per-process random value keep ids
    /// from different runs apart even if the clock steps back.
    pub fn new_id() -> String {
        static LAST: Mutex<(u64, u32)> = Mutex::new((0, 0));
        static TAG: OnceLock<u32> = OnceLock::new();

        let tag = *TAG.get_or_init(|| {
            let mut b = [0u8; 4];
            match getrandom::fill(&mut b) {
                Ok(()) => u32::from_le_bytes(b),
                // No randomness: the sub-second clock is still better than nothing.
                Err(_) => SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or(0),
            }
        });
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let (micros, seq) = {
            let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
            if now > last.0 {
                *last = (now, 0);
            } else if last.1 < 0xffff {
                last.1 += 1;
            } else {
                *last = (last.0 + 1, 0);
            }
            *last
        };
        format!(
            "{:014x}{:04x}{:08x}{:08x}",
            micros & 0x00ff_ffff_ffff_ffff,
            seq,
            std::process::id(),
            tag
        )
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
                Some(file) => self.store_copy(env, file, incoming.len()),
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

    /// [`Spool::store`] of the first `len` octets of `message`, copied file to file.
    fn store_copy(&self, env: &Envelope, message: &File, len: u64) -> io::Result<()> {
        match self.store_copy_once(env, message, len) {
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && self.release_free_files() > 0 => {
                self.store_copy_once(env, message, len)
            }
            other => other,
        }
    }

    fn store_copy_once(&self, env: &Envelope, message: &File, len: u64) -> io::Result<()> {
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
            src.seek(io::SeekFrom::Start(0))?;
            // std copies File to File inside the kernel (copy_file_range).
            let copied = io::copy(&mut src.take(len), &mut file)?;
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

    /// A new file in `queue/` whose name is removed at once: it lives as long as the
    /// handle, and a crash leaves nothing of it.
    fn unnamed_file(&self) -> io::Result<File> {
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

    /// The spool directory as given to [`Spool::open`].
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self, id: &str, ext: &str) -> PathBuf {
        self.queue.join(format!("{id}.{ext}"))
    }

    fn free_file(&self, n: u64) -> PathBuf {
        self.queue.join(format!("{n}.{FREE_EXT}"))
    }

    fn tmp_file(&self, id: &str) -> PathBuf {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        self.queue.join(format!("{id}.{n}.tmp"))
    }

    fn recover(&self) -> io::Result<Recovered> {
        let mut out = Recovered::default();
        let mut queued = BTreeSet::new();
        let mut states = BTreeSet::new();
        let mut v1_envs = BTreeSet::new();
        let mut v1_msgs = BTreeSet::new();
        let mut free_numbers = Vec::new();
        let mut queue_changed = false;
        let mut corrupt_changed = false;

        for entry in fs::read_dir(&self.queue)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                continue;
            }
            let name = entry.file_name();
            let id_with = |ext: &str| {
                name.to_str()
                    .and_then(|t| t.strip_suffix(ext))
                    .and_then(|t| t.strip_suffix('.'))
                    .filter(|id| valid_id(id))
                    .map(str::to_owned)
            };
            let free_number = name
                .to_str()
                .and_then(|t| t.strip_suffix(".free"))
                .and_then(|n| n.parse::<u64>().ok());
            if name.to_str().is_some_and(|t| t.ends_with(".tmp")) {
                remove_if_exists(&entry.path())?;
                out.removed_incomplete += 1;
                queue_changed = true;
            } else if let Some(n) = free_number {
                // A free file must have no other name: after a crash in the hard-link
                // fallback, or a file system check, it could share a queue file's inode.
                use std::os::unix::fs::MetadataExt;
                if entry.metadata()?.nlink() == 1 {
                    free_numbers.push(n);
                } else {
                    remove_if_exists(&entry.path())?;
                    queue_changed = true;
                }
            } else if let Some(id) = id_with(QUEUE_EXT) {
                queued.insert(id);
            } else if let Some(id) = id_with(STATE_EXT) {
                states.insert(id);
            } else if let Some(id) = id_with("env") {
                v1_envs.insert(id);
            } else if let Some(id) = id_with("msg") {
                v1_msgs.insert(id);
            } else {
                out.set_aside.push(self.set_aside(&name)?);
                corrupt_changed = true;
            }
        }

        // Free files are reused as they are, those beyond the pool's size deleted.
        free_numbers.sort_unstable();
        self.free
            .next
            .store(free_numbers.last().map_or(0, |n| n + 1), Ordering::Relaxed);
        for &n in free_numbers.iter().skip(MAX_FREE_FILES) {
            remove_if_exists(&self.free_file(n))?;
            queue_changed = true;
        }
        free_numbers.truncate(MAX_FREE_FILES);
        // Found after a crash: not known to be durable yet, so after the first fsync.
        *self.free.numbers.lock().unwrap_or_else(|e| e.into_inner()) =
            free_numbers.into_iter().map(|n| (n, 1)).collect();

        // Version 1 pairs: a whole queue file of the same id means a conversion was cut
        // short after its commit, so only the deletion is left to do.
        let mut converted = false;
        for id in v1_envs {
            let has_msg = v1_msgs.remove(&id);
            let env_name = format!("{id}.env");
            let msg_name = format!("{id}.msg");
            if queued.contains(&id) && self.load_queue_file(&id)?.is_none() {
                // Damaged: the version 1 files are the good copy.
                out.set_aside
                    .push(self.set_aside(OsStr::new(&format!("{id}.{QUEUE_EXT}")))?);
                queued.remove(&id);
                corrupt_changed = true;
            }
            if !queued.contains(&id) {
                let v1 = parse_line(&fs::read(self.queue.join(&env_name))?, &id, FORMAT_V1);
                match v1 {
                    Some((env, _)) if has_msg => {
                        let message = fs::read(self.queue.join(&msg_name))?;
                        self.store(&env, &message)?;
                        queued.insert(id.clone());
                        converted = true;
                    }
                    _ => {
                        out.set_aside.push(self.set_aside(OsStr::new(&env_name))?);
                        if has_msg {
                            out.set_aside.push(self.set_aside(OsStr::new(&msg_name))?);
                        }
                        corrupt_changed = true;
                        continue;
                    }
                }
            }
            remove_if_exists(&self.queue.join(&env_name))?;
            remove_if_exists(&self.queue.join(&msg_name))?;
            queue_changed = true;
        }
        for id in v1_msgs {
            remove_if_exists(&self.queue.join(format!("{id}.msg")))?;
            out.removed_incomplete += 1;
            queue_changed = true;
        }
        if converted {
            tracing::info!(spool = %self.dir.display(), "version 1 spool files converted");
        }

        for id in &queued {
            let has_state = states.remove(id);
            let Some(mut env) = self.load_queue_file(id)? else {
                out.set_aside
                    .push(self.set_aside(OsStr::new(&format!("{id}.{QUEUE_EXT}")))?);
                if has_state {
                    out.set_aside
                        .push(self.set_aside(OsStr::new(&format!("{id}.{STATE_EXT}")))?);
                }
                corrupt_changed = true;
                continue;
            };
            if has_state {
                let state = fs::read(self.file(id, STATE_EXT))
                    .ok()
                    .and_then(|b| parse_line(&b, id, FORMAT_VERSION))
                    .filter(|(_, len)| len.is_none());
                match state {
                    Some((updated, _)) => env = updated,
                    None => {
                        tracing::warn!(queue_id = %id, "unusable updated envelope set aside; \
                            the message is kept with its envelope as received");
                        out.set_aside
                            .push(self.set_aside(OsStr::new(&format!("{id}.{STATE_EXT}")))?);
                        corrupt_changed = true;
                    }
                }
            }
            out.envelopes.push(env);
        }
        for id in states {
            remove_if_exists(&self.file(&id, STATE_EXT))?;
            out.removed_incomplete += 1;
            queue_changed = true;
        }

        if corrupt_changed {
            fsync_dir(&self.corrupt)?;
        }
        if queue_changed || corrupt_changed {
            fsync_dir(&self.queue)?;
        }
        Ok(out)
    }

    /// The envelope of queue file `id`, `None` if it is not whole (see
    /// [`queue_file_header`]). An error reading it is an error, not damage: recovery
    /// then fails rather than set a good message aside.
    fn load_queue_file(&self, id: &str) -> io::Result<Option<Envelope>> {
        use std::io::BufRead;
        let file = File::open(self.file(id, QUEUE_EXT))?;
        let total = file.metadata()?.len();
        let mut line = Vec::new();
        io::BufReader::new(file).read_until(b'\n', &mut line)?;
        Ok(queue_file_header(&line, id, total))
    }

    /// Moves `queue/<name>` into `corrupt/`, under a fresh name there; returns `name`.
    fn set_aside(&self, name: &OsStr) -> io::Result<String> {
        let mut target = self.corrupt.join(name);
        let mut n = 0u32;
        while exists(&target)? {
            n += 1;
            let mut alt = name.to_os_string();
            alt.push(format!(".{n}"));
            target = self.corrupt.join(alt);
        }
        fs::rename(self.queue.join(name), &target)?;
        Ok(name.to_string_lossy().into_owned())
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

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn check_id(id: &str) -> io::Result<()> {
    if valid_id(id) {
        Ok(())
    } else {
        let shown: String = id.chars().take(80).collect();
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid spool id {shown:?}"),
        ))
    }
}

/// The envelope of a queue file of `total` octets whose first line is `line`: it must end
/// in "\n", parse as this version's envelope naming `id`, and be followed by exactly
/// `message_len` octets.
fn queue_file_header(line: &[u8], id: &str, total: u64) -> Option<Envelope> {
    let (env, len) = parse_line(line, id, FORMAT_VERSION)?;
    let rest = total.checked_sub(line.len() as u64)?;
    (line.last() == Some(&b'\n') && len == Some(rest)).then_some(env)
}

/// A whole queue file's envelope and message, if it is whole (what recovery keeps).
#[cfg(feature = "fuzzing")]
pub(crate) fn split_queue_file<'a>(bytes: &'a [u8], id: &str) -> Option<(Envelope, &'a [u8])> {
    let end = bytes.iter().position(|&b| b == b'\n')? + 1;
    let env = queue_file_header(&bytes[..end], id, bytes.len() as u64)?;
    Some((env, &bytes[end..]))
}

/// An envelope line (with or without its "\n") of `version`, if it parses and names
/// `id`; with the `message_len` it carries (queue files do, state files do not).
pub(crate) fn parse_line(bytes: &[u8], id: &str, version: u32) -> Option<(Envelope, Option<u64>)> {
    let probe: VersionProbe = serde_json::from_slice(bytes).ok()?;
    if probe.version != version {
        return None;
    }
    let env: Envelope = serde_json::from_slice(bytes).ok()?;
    (env.id == id).then_some((env, probe.message_len))
}

/// The envelope line for `env`, "\n" included; `message_len` for a queue file.
pub(crate) fn encode_line(env: &Envelope, message_len: Option<u64>) -> io::Result<Vec<u8>> {
    let mut json = serde_json::to_vec(&EnvelopeFile {
        version: FORMAT_VERSION,
        message_len,
        envelope: env,
    })
    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    json.push(b'\n');
    Ok(json)
}

/// Renames `from` to `to` unless `to` exists (`AlreadyExists` then): the check and the
/// rename are one step, so two stores of one id cannot both commit.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
    };
    let (c_from, c_to) = (c(from)?, c(to)?);
    // SAFETY: both arguments are valid NUL-terminated paths that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            c_from.as_ptr(),
            libc::AT_FDCWD,
            c_to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        // A file system without RENAME_NOREPLACE: a hard link fails on an existing name
        // too, and the temporary name is then dropped.
        Some(libc::EINVAL | libc::ENOSYS) => {
            fs::hard_link(from, to)?;
            remove_if_exists(from)
        }
        _ => Err(e),
    }
}

/// Group commit for one directory's fsync: a caller that has made its change (a rename)
/// needs *a* directory fsync that starts after that change. Callers arriving while one
/// runs wait for it to end, then one of them runs the next for all of them: under load
/// one fsync covers every session that finished DATA meanwhile, instead of one each.
#[derive(Debug, Default)]
struct GroupSync {
    state: Mutex<SyncState>,
    done: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct SyncState {
    /// Syncs started and finished so far; sync number n covers every change made
    /// before it started.
    started: u64,
    finished: u64,
    running: bool,
    /// The last sync that succeeded.
    last_ok: u64,
    /// The newest failed sync whose record was dropped from `failed`.
    forgotten: u64,
    /// Recent syncs that failed, with their error (kept short: a waiter looks up its
    /// own sync right after it ends).
    failed: Vec<(u64, io::ErrorKind, String)>,
}

impl GroupSync {
    fn sync(&self, dir: &Path) -> io::Result<()> {
        self.sync_with(|| fsync_dir(dir))
    }

    /// The number of the first sync that will cover a change made now.
    fn next_ticket(&self) -> u64 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).started + 1
    }

    /// The number of the last sync that succeeded: it covers changes made before it.
    fn last_ok(&self) -> u64 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).last_ok
    }

    fn sync_with(&self, fsync: impl Fn() -> io::Result<()>) -> io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // The first sync to start from now on covers our change.
        let mine = st.started + 1;
        loop {
            if st.finished >= mine {
                return match st.failed.iter().find(|(n, _, _)| *n == mine) {
                    Some((_, kind, text)) => Err(io::Error::new(*kind, text.clone())),
                    // Its record may have been dropped: unknown counts as failed.
                    None if mine <= st.forgotten => Err(io::Error::other(
                        "directory fsync outcome unknown (too many failures)",
                    )),
                    None => Ok(()),
                };
            }
            if !st.running {
                st.running = true;
                st.started += 1;
                let n = st.started;
                drop(st);
                let result = fsync();
                st = self.state.lock().unwrap_or_else(|e| e.into_inner());
                st.running = false;
                st.finished = n;
                match &result {
                    Ok(()) => st.last_ok = n,
                    Err(e) => {
                        if st.failed.len() >= 64 {
                            st.forgotten = st.failed.remove(0).0;
                        }
                        st.failed.push((n, e.kind(), e.to_string()));
                    }
                }
                self.done.notify_all();
                continue;
            }
            st = self.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Overwrites the existing file `path` with `parts` one after the other, cuts it to their
/// length and fsyncs it.
fn overwrite_file(path: &Path, parts: &[&[u8]]) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut file = OpenOptions::new().write(true).open(path)?;
    // Never through a second name of a live queue file (see recovery).
    if file.metadata()?.nlink() != 1 {
        return Err(io::Error::other("free file has other names"));
    }
    for p in parts {
        file.write_all(p)?;
    }
    file.set_len(parts.iter().map(|p| p.len() as u64).sum())?;
    file.sync_all()
}

/// Creates `path` (O_EXCL, mode 0600) holding `parts` one after the other, fsynced. On
/// error, removes the file if this call created it.
fn write_new_file(path: &Path, parts: &[&[u8]]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let result = parts
        .iter()
        .try_for_each(|p| file.write_all(p))
        .and_then(|()| file.sync_all());
    if result.is_err() {
        drop(file);
        let _ = fs::remove_file(path);
    }
    result
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn exists(path: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Creates `dir` (and missing parents) with mode 0700 if it does not exist, fsyncing the
/// parent of every directory created so the new entries are durable.
fn ensure_dir(dir: &Path) -> io::Result<()> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a directory", dir.display()),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    ensure_dir(parent)?;
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => fsync_dir(parent),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;
