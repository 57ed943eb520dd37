//! The [`Tracer`] handle: sessions and deliveries hand it events and never wait. It is
//! the one door events go through: each is first counted by the [`Metrics`] (when the
//! relay keeps metrics), then, when the trace is on, it goes through a bounded channel to a writer thread that stores them in batches (one
//! transaction each) and prunes old ones hourly. A full channel or a failing store
//! drops events, counted (and logged at most once a minute); the relay goes on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use super::event::{Event, now_ms};
use super::store::{StoreError, TraceStore};
use crate::metrics::Metrics;

/// Events waiting for the writer at most; more are dropped.
pub const CHANNEL_CAPACITY: usize = 10_000;
/// Events per transaction at most.
const BATCH: usize = 1_000;
/// How long the writer gathers events after the first of a batch.
const GATHER: Duration = Duration::from_millis(200);
/// Wait after a store failure before trying again.
const RETRY: Duration = Duration::from_secs(5);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
const WARN_EVERY_MS: u64 = 60_000;

/// Opens the store; called again after a failure.
pub type Opener = Box<dyn FnMut() -> Result<Box<dyn TraceStore>, StoreError> + Send>;

/// Where events go: the metrics and the trace store. Cheap to clone; a disabled one
/// without metrics records nothing.
#[derive(Clone, Default)]
pub struct Tracer {
    inner: Option<Arc<Inner>>,
    metrics: Option<Arc<Metrics>>,
}

struct Inner {
    tx: SyncSender<Event>,
    counters: Arc<Counters>,
}

/// What happened to the events, for the log and (later) the metrics.
#[derive(Default)]
pub struct Counters {
    /// Events dropped: channel full or store failing.
    pub dropped: AtomicU64,
    /// Events stored.
    pub stored: AtomicU64,
    /// Events handed over and not yet stored or dropped.
    pub pending: AtomicU64,
    /// When the last drop warning was logged (ms since the epoch).
    last_warning: AtomicU64,
}

impl Counters {
    fn drop_events(&self, n: u64, why: &str) {
        let total = self.dropped.fetch_add(n, Ordering::Relaxed) + n;
        let now = now_ms() as u64;
        let last = self.last_warning.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= WARN_EVERY_MS
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(dropped_total = total, reason = why, "trace events dropped");
        }
    }
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match (self.inner.is_some(), self.metrics.is_some()) {
            (true, true) => "Tracer(+metrics)",
            (true, false) => "Tracer",
            (false, true) => "Tracer(metrics only)",
            (false, false) => "Tracer(off)",
        })
    }
}

impl Tracer {
    /// A tracer that records nothing.
    pub fn disabled() -> Tracer {
        Tracer::default()
    }

    /// Also counts every event in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Tracer {
        self.metrics = Some(metrics);
        self
    }

    /// Starts the writer thread; events older than `retention` are pruned hourly.
    pub fn start(open: Opener, retention: Duration) -> Tracer {
        Tracer::start_with(open, retention, CHANNEL_CAPACITY)
    }

    /// As [`Tracer::start`], with a channel of `capacity` events.
    pub fn start_with(open: Opener, retention: Duration, capacity: usize) -> Tracer {
        let (tx, rx) = sync_channel(capacity);
        let counters = Arc::new(Counters::default());
        let writer = Writer {
            rx,
            open,
            store: None,
            counters: counters.clone(),
            retention,
            retry_at: None,
        };
        let spawned = std::thread::Builder::new()
            .name("trace-writer".into())
            .spawn(move || writer.run());
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the trace writer; no trace is kept");
            return Tracer::disabled();
        }
        Tracer {
            inner: Some(Arc::new(Inner { tx, counters })),
            metrics: None,
        }
    }

    /// Counts `event` in the metrics, then hands it to the writer, or drops it (counted)
    /// when the writer is behind.
    pub fn record(&self, event: Event) {
        if let Some(m) = &self.metrics {
            m.observe(&event);
        }
        let Some(inner) = &self.inner else { return };
        inner.counters.pending.fetch_add(1, Ordering::Relaxed);
        match inner.tx.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                inner.counters.pending.fetch_sub(1, Ordering::Relaxed);
                inner.counters.drop_events(1, "the writer is behind");
            }
            Err(TrySendError::Disconnected(_)) => {
                inner.counters.pending.fetch_sub(1, Ordering::Relaxed);
                inner.counters.drop_events(1, "the writer stopped");
            }
        }
    }

    /// Events are wanted (by the metrics or the trace): callers build them only then.
    pub fn enabled(&self) -> bool {
        self.inner.is_some() || self.metrics.is_some()
    }

    /// Counts an outbound connection (metrics only: the trace records deliveries).
    pub fn outbound_connection(&self, tls: Option<&str>) {
        if let Some(m) = &self.metrics {
            m.outbound_connection(tls);
        }
    }

    /// Events dropped so far.
    pub fn dropped(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |i| i.counters.dropped.load(Ordering::Relaxed))
    }

    /// Events stored so far.
    pub fn stored(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |i| i.counters.stored.load(Ordering::Relaxed))
    }

    /// Waits (blocking, up to `timeout`) until every event handed over is stored or
    /// dropped: for shutdown and tests.
    pub fn settle(&self, timeout: Duration) {
        let Some(inner) = &self.inner else { return };
        let deadline = Instant::now() + timeout;
        while inner.counters.pending.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The writer thread's state.
struct Writer {
    rx: Receiver<Event>,
    open: Opener,
    store: Option<Box<dyn TraceStore>>,
    counters: Arc<Counters>,
    retention: Duration,
    /// After a failure: no store call before this.
    retry_at: Option<Instant>,
}

impl Writer {
    fn run(mut self) {
        // Open at once: a store that cannot open is logged at start-up, not at the first
        // message, and the files the relay holds do not change under load.
        let _ = self.store();
        let mut next_prune = Instant::now();
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            match self.rx.recv_timeout(Duration::from_secs(60)) {
                Ok(e) => batch.push(e),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            // Gather for a moment: one transaction per event would rewrite the same
            // table and index pages for each, costing the relay far more CPU than it saves.
            let gather_until = Instant::now() + GATHER;
            while !batch.is_empty() && batch.len() < BATCH {
                let left = gather_until.saturating_duration_since(Instant::now());
                match self.rx.recv_timeout(left) {
                    Ok(e) => batch.push(e),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        self.write(&batch);
                        self.counters
                            .pending
                            .fetch_sub(batch.len() as u64, Ordering::Relaxed);
                        return;
                    }
                }
            }
            if !batch.is_empty() {
                self.write(&batch);
                self.counters
                    .pending
                    .fetch_sub(batch.len() as u64, Ordering::Relaxed);
                batch.clear();
            }
            if Instant::now() >= next_prune && self.prune() {
                next_prune = Instant::now() + PRUNE_EVERY;
            }
        }
    }

    /// The store, opened if needed; `None` while failing (until `retry_at`).
    fn store(&mut self) -> Option<&mut Box<dyn TraceStore>> {
        if self.store.is_none() {
            if self.retry_at.is_some_and(|t| Instant::now() < t) {
                return None;
            }
            match (self.open)() {
                Ok(s) => {
                    self.store = Some(s);
                    self.retry_at = None;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot open the trace store; retrying later");
                    self.retry_at = Some(Instant::now() + RETRY);
                    return None;
                }
            }
        }
        self.store.as_mut()
    }

    fn write(&mut self, batch: &[Event]) {
        let n = batch.len() as u64;
        let Some(store) = self.store() else {
            self.counters.drop_events(n, "the store is unavailable");
            return;
        };
        match store.insert(batch) {
            Ok(()) => {
                self.counters.stored.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::error!(error = %e, events = n, "cannot write the trace; dropping events");
                self.counters.drop_events(n, "the store failed");
                // Reopened after a pause: a broken connection or file may recover.
                self.store = None;
                self.retry_at = Some(Instant::now() + RETRY);
            }
        }
    }

    /// Prunes old events; false if the store was not there to prune.
    fn prune(&mut self) -> bool {
        let before = now_ms().saturating_sub(self.retention.as_millis() as i64);
        let Some(store) = self.store() else {
            return false;
        };
        match store.prune(before) {
            Ok(0) => {}
            Ok(n) => tracing::info!(pruned = n, "old trace events pruned"),
            Err(e) => tracing::warn!(error = %e, "cannot prune the trace"),
        }
        true
    }
}
