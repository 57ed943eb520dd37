//! Recovery on open: what a crash left in `queue/` is finished, reused, converted from
//! version 1 or set aside (the rules are in the module documentation).

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::sync::atomic::Ordering;

use super::envelope::{Envelope, FORMAT_V1, FORMAT_VERSION, parse_line};
use super::files::{exists, fsync_dir, remove_if_exists};
use super::free::MAX_FREE_FILES;
use super::id::valid_id;
use super::store::{QUEUE_EXT, STATE_EXT, Spool};

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

impl Spool {
    pub(super) fn recover(&self) -> io::Result<Recovered> {
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
