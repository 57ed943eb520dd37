//! The scheduler: one task with a min-heap of (next attempt, queue id) over the envelopes
//! waiting in memory, starting an attempt task for each envelope that falls due.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

use arc_swap::ArcSwap;

use super::attempt::{self, Current, Limits, Shared};
use super::client::Open;
use super::connections::{ConnectionCache, run_expiry};
use super::dns::{Resolve, SystemResolver};
use super::snapshot::{QueueSnapshot, summarize};
use super::tls::opportunistic_tls;
use super::{DeliverySettings, OnFailure};
use crate::spool::{Envelope, Spool};

/// A delivery queue, configured and not yet running.
pub struct Queue {
    settings: DeliverySettings,
    spool: Arc<Spool>,
    on_failure: OnFailure,
    resolver: Option<Arc<dyn Resolve>>,
}

impl Queue {
    pub fn new(settings: DeliverySettings, spool: Arc<Spool>, on_failure: OnFailure) -> Queue {
        Queue {
            settings,
            spool,
            on_failure,
            resolver: None,
        }
    }

    /// Looks up MX and address records with `resolver` instead of the system's DNS.
    pub fn resolver(mut self, resolver: Arc<dyn Resolve>) -> Queue {
        self.resolver = Some(resolver);
        self
    }

    /// Starts the scheduler on the current tokio runtime with the envelopes recovered
    /// from the spool. Envelopes with nothing pending are removed from the spool.
    pub fn start(self, recovered: Vec<Envelope>) -> QueueHandle {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (submit_tx, submit_rx) = mpsc::unbounded_channel();
        let (snapshot_tx, snapshot_rx) = mpsc::unbounded_channel();
        let s = &self.settings;
        let limits = Limits::new(
            s.max_concurrent_deliveries.max(1),
            s.max_per_destination.max(1),
        );
        let connections = Arc::new(ConnectionCache::new(
            s.connection_cache_time.unwrap_or_default(),
            s.connection_reuse_time,
            s.max_concurrent_deliveries.max(1),
        ));
        let expiry = tokio::spawn(run_expiry(
            connections.clone(),
            Duration::from_millis(500),
            stop_rx.clone(),
        ));
        let shared = Arc::new(Shared {
            current: ArcSwap::from_pointee(Current::new(self.settings, opportunistic_tls())),
            limits,
            connections: connections.clone(),
            spool: self.spool,
            on_failure: self.on_failure,
            resolver: self
                .resolver
                .unwrap_or_else(|| Arc::new(SystemResolver::new())),
            stop: stop_rx.clone(),
        });
        let queued = Arc::new(AtomicUsize::new(0));
        let mut scheduler = Scheduler {
            shared: shared.clone(),
            waiting: HashMap::new(),
            heap: BinaryHeap::new(),
            attempts: JoinSet::new(),
            running_ids: HashMap::new(),
            running: HashMap::new(),
            queued: queued.clone(),
        };
        let count = recovered.len();
        for env in recovered {
            scheduler.add(env);
        }
        if count > 0 {
            tracing::info!(
                recovered = count,
                queued = scheduler.queued.load(Ordering::Relaxed),
                "delivery queue loaded"
            );
        }
        let task = tokio::spawn(scheduler.run(submit_rx, snapshot_rx, stop_rx));
        QueueHandle {
            inner: Arc::new(Inner {
                submit: submit_tx,
                snapshot: snapshot_tx,
                stop: stop_tx,
                task: Mutex::new(Some(task)),
                expiry: Mutex::new(Some(expiry)),
                connections,
                queued,
                shared,
            }),
        }
    }
}

/// Starts a delivery queue using the system's DNS; see [`Queue::start`].
pub fn start(
    settings: DeliverySettings,
    spool: Arc<Spool>,
    recovered: Vec<Envelope>,
    on_failure: OnFailure,
) -> QueueHandle {
    Queue::new(settings, spool, on_failure).start(recovered)
}

/// The running queue. Cheap to clone; when the last clone is dropped the queue stops
/// as on [`QueueHandle::shutdown`], without waiting.
#[derive(Clone)]
pub struct QueueHandle {
    inner: Arc<Inner>,
}

/// A snapshot request: how many destinations to list, and where the answer goes.
type SnapshotRequest = (usize, oneshot::Sender<QueueSnapshot>);

struct Inner {
    submit: mpsc::UnboundedSender<Envelope>,
    snapshot: mpsc::UnboundedSender<SnapshotRequest>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Closes idle outbound sessions; on stop, all of them.
    expiry: Mutex<Option<JoinHandle<()>>>,
    connections: Arc<ConnectionCache<Open>>,
    queued: Arc<AtomicUsize>,
    /// What attempts share, for [`QueueHandle::reload`].
    shared: Arc<Shared>,
}

impl QueueHandle {
    /// Puts `settings` in force for the attempts that start from now on (a reload):
    /// routes, smarthost, outbound TLS, retry intervals, lifetime, timeouts, EHLO name.
    /// The connection limits and the connection cache's times keep their start values.
    /// Idle cached sessions are not used again.
    pub fn reload(&self, settings: DeliverySettings) {
        self.inner.shared.reload(settings);
    }

    /// Hands over an envelope that is durably in the spool; it is tried when its
    /// `next_attempt` comes (at once if that is now or past). After shutdown this does
    /// nothing: the message stays in the spool for the next start.
    pub fn submit(&self, env: Envelope) {
        let id = env.id.clone();
        if self.inner.submit.send(env).is_err() {
            tracing::warn!(queue_id = %id, "delivery queue stopped; message left in the spool");
        }
    }

    /// Messages in the queue (waiting or being delivered).
    pub fn queued(&self) -> usize {
        self.inner.queued.load(Ordering::Relaxed)
    }

    /// The queue now, with the `top` recipient domains that have the most messages
    /// (none for 0); computed by the scheduler between its other work. `None` once the
    /// queue has stopped.
    pub async fn snapshot(&self, top: usize) -> Option<QueueSnapshot> {
        let (tx, rx) = oneshot::channel();
        self.inner.snapshot.send((top, tx)).ok()?;
        rx.await.ok()
    }

    /// Starts no new delivery, lets those under way finish for up to `shutdown_grace`,
    /// then cuts the rest (their messages stay in the spool as they were before the
    /// attempt). Returns when the queue has stopped; later calls return at once.
    pub async fn shutdown(&self) {
        self.inner.stop.send_replace(true);
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "delivery scheduler failed");
        }
        let expiry = self
            .inner
            .expiry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(expiry) = expiry {
            let _ = expiry.await;
        }
        // Sessions that attempts finishing in the grace time gave back.
        for open in self.inner.connections.drain() {
            open.quit().await;
        }
    }
}

struct Scheduler {
    shared: Arc<Shared>,
    /// Envelopes waiting for their next attempt.
    waiting: HashMap<String, Envelope>,
    /// (next attempt, id) of every waiting envelope; entries whose id is not waiting
    /// any more are skipped.
    heap: BinaryHeap<Reverse<(u64, String)>>,
    attempts: JoinSet<Option<Envelope>>,
    /// Queue id of each attempt task, and the envelopes being attempted (as they were
    /// when the attempt started, for snapshots).
    running_ids: HashMap<tokio::task::Id, String>,
    running: HashMap<String, Envelope>,
    queued: Arc<AtomicUsize>,
}

impl Scheduler {
    fn add(&mut self, env: Envelope) {
        if self.waiting.contains_key(&env.id) || self.running.contains_key(&env.id) {
            tracing::warn!(queue_id = %env.id, "envelope already queued; ignored");
            return;
        }
        if env.is_done() {
            // Finished before a crash or restart, but not removed yet.
            let spool = self.shared.spool.clone();
            let id = env.id;
            tokio::task::spawn_blocking(move || {
                if let Err(e) = spool.remove(&id) {
                    tracing::error!(queue_id = %id, error = %e, "cannot remove a finished message from the spool");
                }
            });
            return;
        }
        self.heap.push(Reverse((env.next_attempt, env.id.clone())));
        self.waiting.insert(env.id.clone(), env);
        self.queued.fetch_add(1, Ordering::Relaxed);
    }

    /// Time until the earliest waiting envelope is due.
    fn next_due(&mut self) -> Option<Duration> {
        loop {
            let Reverse((at, id)) = self.heap.peek()?;
            if !self.waiting.contains_key(id) {
                self.heap.pop();
                continue;
            }
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            return Some(Duration::from_secs(*at).saturating_sub(now));
        }
    }

    fn launch_due(&mut self) {
        let now = crate::srs::unix_now();
        while let Some(Reverse((at, _))) = self.heap.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, id))) = self.heap.pop() else {
                break;
            };
            let Some(env) = self.waiting.remove(&id) else {
                continue;
            };
            self.running.insert(id.clone(), env.clone());
            let handle = self.attempts.spawn(attempt::run(self.shared.clone(), env));
            self.running_ids.insert(handle.id(), id);
        }
    }

    fn finished(
        &mut self,
        done: Result<(tokio::task::Id, Option<Envelope>), tokio::task::JoinError>,
    ) {
        self.queued.fetch_sub(1, Ordering::Relaxed);
        match done {
            Ok((task, env)) => {
                if let Some(id) = self.running_ids.remove(&task) {
                    self.running.remove(&id);
                }
                if let Some(env) = env {
                    self.add(env);
                }
            }
            Err(e) => {
                let id = self.running_ids.remove(&e.id()).unwrap_or_default();
                self.running.remove(&id);
                if !e.is_cancelled() {
                    tracing::error!(queue_id = %id, error = %e,
                        "delivery attempt failed; the message waits in the spool for a restart");
                }
            }
        }
    }

    fn snapshot(&self, top: usize) -> QueueSnapshot {
        let envelopes = self.waiting.values().chain(self.running.values());
        let mut snap = summarize(envelopes, crate::srs::unix_now(), top);
        snap.in_flight = self.shared.limits.in_use();
        snap
    }

    async fn run(
        mut self,
        mut submit: mpsc::UnboundedReceiver<Envelope>,
        mut snapshots: mpsc::UnboundedReceiver<SnapshotRequest>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let due = self.next_due();
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                env = submit.recv() => match env {
                    Some(env) => self.add(env),
                    None => break,
                },
                Some((top, reply)) = snapshots.recv() => {
                    let _ = reply.send(self.snapshot(top));
                }
                Some(done) = self.attempts.join_next_with_id(), if !self.attempts.is_empty() => {
                    self.finished(done);
                }
                _ = tokio::time::sleep(due.unwrap_or_default()), if due.is_some() => self.launch_due(),
            }
        }

        // Stopping: attempts waiting for a slot return at once (untouched); give the
        // others the grace period.
        let grace = self.shared.current.load().settings.shutdown_grace;
        let running = self.attempts.len();
        if running > 0 {
            tracing::info!(running, grace = ?grace, "delivery queue stopping; waiting for attempts under way");
        }
        let drained = tokio::time::timeout(grace, async {
            while let Some(done) = self.attempts.join_next_with_id().await {
                self.finished(done);
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                cut = self.attempts.len(),
                "delivery attempts cut at shutdown; they will be repeated"
            );
            self.attempts.shutdown().await;
        }
        tracing::info!(waiting = self.waiting.len(), "delivery queue stopped");
    }
}
