//! Group commit of a directory's fsyncs, shared by the stores that need one.

use std::io;
use std::path::Path;
use std::sync::Mutex;

use super::files::fsync_dir;

/// Group commit for one directory's fsync: a caller that has made its change (a rename)
/// needs *a* directory fsync that starts after that change. Callers arriving while one
/// runs wait for it to end, then one of them runs the next for all of them: under load
/// one fsync covers every session that finished DATA meanwhile, instead of one each.
#[derive(Debug, Default)]
pub(super) struct GroupSync {
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
    pub(super) fn sync(&self, dir: &Path) -> io::Result<()> {
        self.sync_with(|| fsync_dir(dir))
    }

    /// The number of the first sync that will cover a change made now.
    pub(super) fn next_ticket(&self) -> u64 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).started + 1
    }

    /// The number of the last sync that succeeded: it covers changes made before it.
    pub(super) fn last_ok(&self) -> u64 {
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

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn directory_fsyncs_are_shared_and_their_errors_reach_everyone_they_cover() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let group = Arc::new(GroupSync::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let fsync = {
            let calls = calls.clone();
            move || {
                calls.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
                Ok(())
            }
        };
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (g, f) = (group.clone(), fsync.clone());
                std::thread::spawn(move || g.sync_with(f))
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        let n = calls.load(Ordering::SeqCst);
        assert!((1..16).contains(&n), "16 callers, {n} fsyncs");

        // A failing fsync fails every caller it covered, and the next one runs afresh.
        let failing = || Err(io::Error::other("disk on fire"));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let g = group.clone();
                std::thread::spawn(move || g.sync_with(failing))
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap().unwrap_err().to_string(), "disk on fire");
        }
        group.sync_with(|| Ok(())).unwrap();
    }
}
