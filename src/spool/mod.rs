//! The durable message spool: plain blocking `std::fs` code (async callers go through
//! `tokio::task::spawn_blocking`). A message counts as stored only once its files *and*
//! the directory holding them have been fsynced, so a `250` after DATA survives
//! `kill -9` and power loss.
//!
//! # On-disk format (version 1)
//!
//! This comment is the one place the format is described.
//!
//! ```text
//! <dir>/lock                   empty; flock(2)ed exclusively by the process that has the spool open
//! <dir>/queue/<id>.msg         the raw message octets, exactly as they will be sent
//! <dir>/queue/<id>.env         the envelope: one JSON object, `{"version":1,"id":...}`, then "\n"
//! <dir>/queue/<id>.env.<n>.tmp an envelope being written (<n>: a per-process counter)
//! <dir>/corrupt/<name>         files recovery could not use, moved aside for a human
//! ```
//!
//! * `<id>` is 1–64 characters from `[0-9A-Za-z_-]` (see [`Spool::new_id`] for the ids
//!   the relay makes). Ids are never reused, so a file name never changes meaning.
//! * The `.env` object holds every field of [`Envelope`] under its Rust name plus
//!   `"version": 1`. Recipient states are `"pending"`, `"delivered"`, `"failed"`;
//!   absent optional fields (`null` or missing) are `None`. Unknown fields are ignored, a
//!   different `version` is not understood (the file is set aside).
//! * Files are created with mode 0600, directories with mode 0700.
//!
//! ## Commit protocol
//!
//! Store: create `<id>.msg` (O_EXCL) and `<id>.env.<n>.tmp`, write both, fsync both
//! (writeback of both started first, so one journal commit serves them); rename the
//! `.tmp` to `<id>.env`; fsync `queue/`. The rename of the `.env` is the commit
//! point: **a message exists if and only if its `.env` exists**. The directory fsyncs are
//! group commits: stores that rename while one runs share the next one, so concurrent
//! sessions pay one fsync between them. Update writes a new
//! `.tmp` the same way and renames it over the old `.env` (then fsyncs `queue/`), so a
//! reader sees the old or the new envelope, never a mix. Remove deletes the `.env` first
//! (un-commit), then the `.msg`, and does not fsync `queue/`: a crash may bring a removed
//! message back, to be delivered again (a duplicate, never a loss).
//!
//! ## Recovery (on [`Spool::open`])
//!
//! * any `*.tmp` is deleted (an unfinished store or update; the old `.env`, if any, stands);
//! * a `.msg` without its `.env` is deleted (an unfinished receive, or a remove cut short);
//! * an `.env` that cannot be read or parsed, has another `version`, names another id,
//!   or whose `.msg` is missing, is moved with its `.msg` into `corrupt/`: never dropped;
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

/// The `version` written into every `.env` file.
const FORMAT_VERSION: u32 = 1;
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
    /// True when no recipient is pending any more (all delivered or failed).
    pub fn is_done(&self) -> bool {
        self.pending().next().is_none()
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
}

#[derive(Serialize)]
struct EnvelopeFile<'a> {
    version: u32,
    #[serde(flatten)]
    envelope: &'a Envelope,
}

#[derive(Deserialize)]
struct VersionProbe {
    version: u32,
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
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("spool {} is already open (locked)", dir.display()),
                ));
            }
            Err(TryLockError::Error(e)) => return Err(e),
        }

        let spool = Spool {
            dir: dir.to_path_buf(),
            queue,
            corrupt,
            _lock: Arc::new(lock),
            queue_sync: Arc::default(),
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
        check_id(&env.id)?;
        let json = encode(env)?;
        let msg_path = self.file(&env.id, "msg");
        let env_path = self.file(&env.id, "env");
        if exists(&env_path)? {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("spool id {} already exists", env.id),
            ));
        }
        // O_EXCL on the .msg reserves the id: a second store of it fails here, before
        // touching anything of the first.
        let msg = create_new_file(&msg_path, message)?;
        let tmp = self.tmp_file(&env.id);
        let undo = |e: io::Error, paths: &[&Path]| {
            for p in paths {
                let _ = fs::remove_file(p);
            }
            e
        };
        let json_file = create_new_file(&tmp, &json).map_err(|e| undo(e, &[&msg_path]))?;
        // Both files' data in one journal commit instead of two.
        sync_together(&[&msg, &json_file]).map_err(|e| undo(e, &[&tmp, &msg_path]))?;
        drop((msg, json_file));
        if let Err(e) = fs::rename(&tmp, &env_path) {
            return Err(undo(e, &[&tmp, &msg_path]));
        }
        if let Err(e) = self.queue_sync.sync(&self.queue) {
            // The caller will answer 4xx: take the message back out. Whatever of this
            // cleanup does not reach the disk is an orphan recovery deletes, or at worst
            // a duplicate delivery, never a loss.
            let _ = fs::remove_file(&env_path);
            let _ = fs::remove_file(&msg_path);
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
        let json = encode(env)?;
        let env_path = self.file(&env.id, "env");
        if !exists(&env_path)? {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("spool id {} not found", env.id),
            ));
        }
        let tmp = self.tmp_file(&env.id);
        write_new_file(&tmp, &json)?;
        if let Err(e) = fs::rename(&tmp, &env_path) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        self.queue_sync.sync(&self.queue)
    }

    /// The stored message octets of `id`.
    pub fn read_message(&self, id: &str) -> io::Result<Vec<u8>> {
        check_id(id)?;
        fs::read(self.file(id, "msg"))
    }

    /// Removes `id` from the spool: envelope first, then message. Removing an id that is
    /// not there is not an error. The directory is not fsynced: a removal that a crash
    /// undoes only means the message is tried again (a duplicate, never a loss), and the
    /// fsync would cost every delivered message a journal commit (Postfix does not sync
    /// its deletes either).
    pub fn remove(&self, id: &str) -> io::Result<()> {
        check_id(id)?;
        remove_if_exists(&self.file(id, "env"))?;
        remove_if_exists(&self.file(id, "msg"))
    }

    /// The spool directory as given to [`Spool::open`].
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self, id: &str, ext: &str) -> PathBuf {
        self.queue.join(format!("{id}.{ext}"))
    }

    fn tmp_file(&self, id: &str) -> PathBuf {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        self.queue.join(format!("{id}.env.{n}.tmp"))
    }

    fn recover(&self) -> io::Result<Recovered> {
        let mut out = Recovered::default();
        let mut envs = BTreeSet::new();
        let mut msgs = BTreeSet::new();
        let mut queue_changed = false;
        let mut corrupt_changed = false;

        for entry in fs::read_dir(&self.queue)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                continue;
            }
            let name = entry.file_name();
            let Some(text) = name.to_str() else {
                out.set_aside.push(self.set_aside(&name)?);
                corrupt_changed = true;
                continue;
            };
            if text.ends_with(".tmp") {
                remove_if_exists(&entry.path())?;
                out.removed_incomplete += 1;
                queue_changed = true;
            } else if let Some(id) = text.strip_suffix(".env")
                && valid_id(id)
            {
                envs.insert(id.to_owned());
            } else if let Some(id) = text.strip_suffix(".msg")
                && valid_id(id)
            {
                msgs.insert(id.to_owned());
            } else {
                out.set_aside.push(self.set_aside(&name)?);
                corrupt_changed = true;
            }
        }

        for id in envs {
            let has_msg = msgs.remove(&id);
            match self.load(&id) {
                Some(env) if has_msg => out.envelopes.push(env),
                _ => {
                    out.set_aside
                        .push(self.set_aside(OsStr::new(&format!("{id}.env")))?);
                    if has_msg {
                        out.set_aside
                            .push(self.set_aside(OsStr::new(&format!("{id}.msg")))?);
                    }
                    corrupt_changed = true;
                }
            }
        }
        for id in msgs {
            remove_if_exists(&self.file(&id, "msg"))?;
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

    /// The envelope of `id` if its file reads, parses, is version 1 and names `id`.
    fn load(&self, id: &str) -> Option<Envelope> {
        let bytes = fs::read(self.file(id, "env")).ok()?;
        parse_envelope(&bytes, id)
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

/// An `.env` record's contents, if it parses, is version 1 and names `id` (what recovery
/// keeps; anything else is set aside).
pub(crate) fn parse_envelope(bytes: &[u8], id: &str) -> Option<Envelope> {
    let probe: VersionProbe = serde_json::from_slice(bytes).ok()?;
    if probe.version != FORMAT_VERSION {
        return None;
    }
    let env: Envelope = serde_json::from_slice(bytes).ok()?;
    (env.id == id).then_some(env)
}

pub(crate) fn encode(env: &Envelope) -> io::Result<Vec<u8>> {
    let mut json = serde_json::to_vec(&EnvelopeFile {
        version: FORMAT_VERSION,
        envelope: env,
    })
    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    json.push(b'\n');
    Ok(json)
}

/// Creates `path` (which must not exist), writes `data` and fsyncs it. On error, removes
/// the file if this call created it.
/// Creates `path` (O_EXCL, mode 0600) holding `data`, not yet synced; removed again on a
/// write error.
fn create_new_file(path: &Path, data: &[u8]) -> io::Result<File> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    if let Err(e) = file.write_all(data) {
        drop(file);
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(file)
}

/// fsyncs `files`, starting the writeback of all before waiting on any: their block
/// allocations then land in the same journal transaction, so the first fsync commits it
/// and the others find nothing left to commit (ext4, xfs), where fsyncing one after the
/// other would cost a commit each.
fn sync_together(files: &[&File]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    for f in files {
        // Only a hint: the fsync below is what makes the promise.
        // SAFETY: a plain syscall on an open descriptor; no memory is passed.
        unsafe {
            libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    for f in files {
        f.sync_all()?;
    }
    Ok(())
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
    /// Recent syncs that failed, with their error (kept short: a waiter looks up its
    /// own sync right after it ends).
    failed: Vec<(u64, io::ErrorKind, String)>,
}

impl GroupSync {
    fn sync(&self, dir: &Path) -> io::Result<()> {
        self.sync_with(|| fsync_dir(dir))
    }

    fn sync_with(&self, fsync: impl Fn() -> io::Result<()>) -> io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // The first sync to start from now on covers our change.
        let mine = st.started + 1;
        loop {
            if st.finished >= mine {
                return match st.failed.iter().find(|(n, _, _)| *n == mine) {
                    Some((_, kind, text)) => Err(io::Error::new(*kind, text.clone())),
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
                if let Err(e) = &result {
                    if st.failed.len() >= 64 {
                        st.failed.remove(0);
                    }
                    st.failed.push((n, e.kind(), e.to_string()));
                }
                self.done.notify_all();
                continue;
            }
            st = self.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

fn write_new_file(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let result = file.write_all(data).and_then(|()| file.sync_all());
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
