//! The connection cache: sessions that finished a transaction wait here, per address,
//! for the next message to the same place, as Postfix's `scache` does. A session is
//! kept for `idle_time` after its last transaction and used for at most `max_age`;
//! the cache holds at most `max_idle` sessions in all.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::dns::Target;

/// What the cache needs of a session.
pub(crate) trait Session: Send + 'static {
    /// When it was opened (sessions are used for at most `max_age`).
    fn opened(&self) -> Instant;
    /// Ends it politely.
    fn quit(self) -> impl Future<Output = ()> + Send;
}

/// Idle sessions to one (address, host name), each with the time it went idle.
type IdleSessions<S> = HashMap<(SocketAddr, String), Vec<(S, Instant)>>;

pub(crate) struct ConnectionCache<S> {
    idle: Mutex<IdleSessions<S>>,
    idle_time: Duration,
    max_age: Duration,
    max_idle: usize,
}

impl<S: Session> ConnectionCache<S> {
    /// `idle_time` zero: no caching, every session ends after its transaction.
    pub(crate) fn new(idle_time: Duration, max_age: Duration, max_idle: usize) -> Self {
        ConnectionCache {
            idle: Mutex::new(HashMap::new()),
            idle_time,
            max_age,
            max_idle,
        }
    }

    /// The most recently used idle session to `target` that is still fresh.
    pub(crate) fn take(&self, target: &Target) -> Option<S> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let key = (target.addr, target.host.clone());
        let list = idle.get_mut(&key)?;
        let now = Instant::now();
        let mut found = None;
        while let Some((open, since)) = list.pop() {
            if self.fresh(&open, since, now) {
                found = Some(open);
                break;
            }
            // Stale ones are closed by dropping; the server is likely to have gone first.
        }
        if list.is_empty() {
            idle.remove(&key);
        }
        found
    }

    /// Keeps `open`, a session to `target`, for the next transaction; gives it back if the
    /// cache does not take it (caching off, session too old, cache full), for the caller
    /// to QUIT.
    pub(crate) fn put(&self, target: &Target, open: S) -> Option<S> {
        let now = Instant::now();
        if self.idle_time.is_zero() || now.duration_since(open.opened()) >= self.max_age {
            return Some(open);
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.values().map(Vec::len).sum::<usize>() >= self.max_idle {
            return Some(open);
        }
        idle.entry((target.addr, target.host.clone()))
            .or_default()
            .push((open, now));
        None
    }

    /// Takes out the sessions that have waited too long, for the caller to QUIT.
    pub(crate) fn expired(&self) -> Vec<S> {
        let now = Instant::now();
        let mut out = Vec::new();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|_, list| {
            let mut i = 0;
            while i < list.len() {
                if self.fresh(&list[i].0, list[i].1, now) {
                    i += 1;
                } else {
                    out.push(list.remove(i).0);
                }
            }
            !list.is_empty()
        });
        out
    }

    /// Takes out every idle session (on shutdown).
    pub(crate) fn drain(&self) -> Vec<S> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.drain().flat_map(|(_, l)| l).map(|(o, _)| o).collect()
    }

    fn fresh(&self, open: &S, since: Instant, now: Instant) -> bool {
        now.duration_since(since) < self.idle_time
            && now.duration_since(open.opened()) < self.max_age
    }
}

/// QUITs the sessions that `cache` lets go of, every `tick`, until `stop` turns true;
/// then QUITs all that are left.
pub(crate) async fn run_expiry<S: Session>(
    cache: std::sync::Arc<ConnectionCache<S>>,
    tick: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let quit_all = |sessions: Vec<S>| async move {
        let mut quits = tokio::task::JoinSet::new();
        for open in sessions {
            quits.spawn(open.quit());
        }
        quits.join_all().await;
    };
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(tick) => false,
            r = stop.wait_for(|s| *s) => { drop(r); true }
        };
        if stopping {
            break;
        }
        quit_all(cache.expired()).await;
    }
    quit_all(cache.drain()).await;
}
