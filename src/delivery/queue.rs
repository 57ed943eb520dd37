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
use super::control::{self, Action, ActionResult, EntryState, Outcome, QueueEntry, Select};
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
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let s = &self.settings;
        let dns_settings = s.dns.clone();
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
                .unwrap_or_else(|| Arc::new(SystemResolver::with_settings(dns_settings))),
            stop: stop_rx.clone(),
        });
        let queued = Arc::new(AtomicUsize::new(0));
        let mut scheduler = Scheduler {
            shared: shared.clone(),
            waiting: HashMap::new(),
            held: HashMap::new(),
            after_attempt: HashMap::new(),
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
        let task = tokio::spawn(scheduler.run(submit_rx, snapshot_rx, control_rx, stop_rx));
        QueueHandle {
            inner: Arc::new(Inner {
                submit: submit_tx,
                snapshot: snapshot_tx,
                control: control_tx,
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

/// A postmaster's request (`srs-relay queue`).
enum ControlRequest {
    List(oneshot::Sender<Vec<QueueEntry>>),
    Act {
        action: Action,
        select: Select,
        /// Who asked, for the log and the trace.
        by: String,
        reply: oneshot::Sender<Vec<ActionResult>>,
    },
}

struct Inner {
    submit: mpsc::UnboundedSender<Envelope>,
    snapshot: mpsc::UnboundedSender<SnapshotRequest>,
    control: mpsc::UnboundedSender<ControlRequest>,
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

    /// Every message in the queue, by id. `None` once the queue has stopped.
    pub async fn list(&self) -> Option<Vec<QueueEntry>> {
        let (tx, rx) = oneshot::channel();
        self.inner.control.send(ControlRequest::List(tx)).ok()?;
        rx.await.ok()
    }

    /// Applies `action` to the messages `select` names, on behalf of `by`; returns when
    /// every change is in the spool, with one result per message (ids not in the queue:
    /// [`Outcome::NotFound`]). `None` once the queue has stopped.
    pub async fn act(&self, action: Action, select: Select, by: &str) -> Option<Vec<ActionResult>> {
        let (reply, rx) = oneshot::channel();
        let request = ControlRequest::Act {
            action,
            select,
            by: by.to_owned(),
            reply,
        };
        self.inner.control.send(request).ok()?;
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
    /// Envelopes on hold: never due.
    held: HashMap<String, Envelope>,
    /// Actions asked for messages under an attempt: applied when it ends.
    after_attempt: HashMap<String, (Action, String)>,
    /// (next attempt, id) of every waiting envelope; entries whose id is not waiting
    /// with that next attempt any more are skipped.
    heap: BinaryHeap<Reverse<(u64, String)>>,
    attempts: JoinSet<Option<Envelope>>,
    /// Queue id of each attempt task (or task applying a postmaster's action), and the
    /// envelopes being attempted (as they were when the task started, for snapshots).
    running_ids: HashMap<tokio::task::Id, String>,
    running: HashMap<String, Envelope>,
    queued: Arc<AtomicUsize>,
}

impl Scheduler {
    fn add(&mut self, env: Envelope) {
        if self.waiting.contains_key(&env.id)
            || self.running.contains_key(&env.id)
            || self.held.contains_key(&env.id)
        {
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
        self.queued.fetch_add(1, Ordering::Relaxed);
        if env.held_since.is_some() {
            self.held.insert(env.id.clone(), env);
            return;
        }
        self.heap.push(Reverse((env.next_attempt, env.id.clone())));
        self.waiting.insert(env.id.clone(), env);
    }

    /// Whether the heap entry (`at`, `id`) is the one of a waiting envelope now. Others are
    /// stale: left by a message that was launched, acted on or retried since.
    fn is_current(&self, at: u64, id: &str) -> bool {
        self.waiting
            .get(id)
            .is_some_and(|env| env.next_attempt == at)
    }

    /// Time until the earliest waiting envelope is due.
    fn next_due(&mut self) -> Option<Duration> {
        loop {
            let Reverse((at, id)) = self.heap.peek()?;
            if !self.is_current(*at, id) {
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
            let Some(Reverse((at, id))) = self.heap.pop() else {
                break;
            };
            if !self.is_current(at, &id) {
                continue;
            }
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
                let id = self.running_ids.remove(&task);
                if let Some(id) = &id {
                    self.running.remove(id);
                }
                let after = id.and_then(|id| self.after_attempt.remove(&id));
                match (env, after) {
                    (Some(env), Some((action, by))) => {
                        self.queued.fetch_add(1, Ordering::Relaxed);
                        self.spawn_action(action, env, by, None);
                    }
                    (Some(env), None) => self.add(env),
                    (None, Some((action, _))) => {
                        tracing::info!(
                            action = action.done(),
                            "the message left the queue in the attempt; queue action not needed"
                        )
                    }
                    (None, None) => {}
                }
            }
            Err(e) => {
                let id = self.running_ids.remove(&e.id()).unwrap_or_default();
                self.running.remove(&id);
                self.after_attempt.remove(&id);
                if !e.is_cancelled() {
                    tracing::error!(queue_id = %id, error = %e,
                        "delivery attempt failed; the message waits in the spool for a restart");
                }
            }
        }
    }

    fn snapshot(&self, top: usize) -> QueueSnapshot {
        let envelopes = self
            .waiting
            .values()
            .chain(self.running.values())
            .chain(self.held.values());
        let mut snap = summarize(envelopes, crate::srs::unix_now(), top);
        snap.in_flight = self.shared.limits.in_use();
        snap
    }

    fn list(&self) -> Vec<QueueEntry> {
        let entry = |state| {
            move |env: &Envelope| QueueEntry {
                state,
                envelope: env.clone(),
            }
        };
        let mut out: Vec<QueueEntry> = self
            .waiting
            .values()
            .map(entry(EntryState::Waiting))
            .chain(self.running.values().map(entry(EntryState::Active)))
            .chain(self.held.values().map(entry(EntryState::Held)))
            .collect();
        out.sort_by(|a, b| a.envelope.id.cmp(&b.envelope.id));
        out
    }

    /// Applies a postmaster's action: retries at once in memory; other actions on a task
    /// like an attempt's (the message counts as under way until its change is in the
    /// spool); messages under an attempt get theirs when it ends. The reply goes when
    /// every task is done.
    fn act(
        &mut self,
        action: Action,
        select: Select,
        by: String,
        reply: oneshot::Sender<Vec<ActionResult>>,
    ) {
        let replies = Arc::new(Replies {
            results: Mutex::new(Vec::new()),
            reply: Some(reply),
        });
        let mut ids: Vec<String> = match &select {
            Select::Ids(ids) => ids.clone(),
            _ => self
                .waiting
                .values()
                .chain(self.held.values())
                .chain(self.running.values())
                .filter(|env| select.matches(env))
                .map(|env| env.id.clone())
                .collect(),
        };
        ids.sort();
        ids.dedup();
        let now = crate::srs::unix_now();
        for id in ids {
            let outcome = if action == Action::Retry && self.running.contains_key(&id) {
                Outcome::Unchanged("being attempted now".into())
            } else if self.running.contains_key(&id) {
                self.after_attempt.insert(id.clone(), (action, by.clone()));
                Outcome::AfterAttempt
            } else if let Some(why) = self
                .waiting
                .get(&id)
                .or_else(|| self.held.get(&id))
                .and_then(|env| control::unchanged(action, env))
            {
                Outcome::Unchanged(why.into())
            } else if action == Action::Retry
                && let Some(env) = self.waiting.get_mut(&id)
            {
                // In memory only: a restart tries every due message at once anyway.
                env.next_attempt = now;
                self.heap.push(Reverse((now, id.clone())));
                control::log_and_trace(
                    &self.shared.current.load().settings.tracer,
                    action,
                    env,
                    &by,
                );
                Outcome::Done
            } else if let Some(env) = self.waiting.remove(&id).or_else(|| self.held.remove(&id)) {
                self.spawn_action(action, env, by.clone(), Some(replies.clone()));
                continue;
            } else {
                Outcome::NotFound
            };
            replies.push(id, outcome);
        }
    }

    /// Runs `action` on `env` on a blocking thread, as an entry of `attempts`: what comes
    /// back goes through [`Scheduler::finished`] like an attempt's envelope.
    fn spawn_action(
        &mut self,
        action: Action,
        env: Envelope,
        by: String,
        replies: Option<Arc<Replies>>,
    ) {
        let id = env.id.clone();
        self.running.insert(id.clone(), env.clone());
        let shared = self.shared.clone();
        let handle = self.attempts.spawn(async move {
            let task_id = env.id.clone();
            let done = tokio::task::spawn_blocking(move || {
                let now = crate::srs::unix_now();
                control::apply(
                    &shared.current.load().settings,
                    &shared.spool,
                    &shared.on_failure,
                    action,
                    env,
                    now,
                    &by,
                )
            })
            .await;
            let (env, outcome) = match done {
                Ok(done) => done,
                Err(e) => {
                    tracing::error!(queue_id = %task_id, error = %e,
                        "queue action failed; the message waits in the spool for a restart");
                    (None, Outcome::Failed(e.to_string()))
                }
            };
            if let Some(replies) = replies {
                replies.push(task_id, outcome);
            }
            env
        });
        self.running_ids.insert(handle.id(), id);
    }

    async fn run(
        mut self,
        mut submit: mpsc::UnboundedReceiver<Envelope>,
        mut snapshots: mpsc::UnboundedReceiver<SnapshotRequest>,
        mut control: mpsc::UnboundedReceiver<ControlRequest>,
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
                Some(request) = control.recv() => match request {
                    ControlRequest::List(reply) => {
                        let _ = reply.send(self.list());
                    }
                    ControlRequest::Act { action, select, by, reply } => {
                        self.act(action, select, by, reply);
                    }
                },
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
        tracing::info!(
            waiting = self.waiting.len(),
            held = self.held.len(),
            "delivery queue stopped"
        );
    }
}

/// The results of one postmaster's request, sent when the last task holding it is done.
struct Replies {
    results: Mutex<Vec<ActionResult>>,
    reply: Option<oneshot::Sender<Vec<ActionResult>>>,
}

impl Replies {
    fn push(&self, id: String, outcome: Outcome) {
        self.results
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(ActionResult { id, outcome });
    }
}

impl Drop for Replies {
    fn drop(&mut self) {
        let mut results = std::mem::take(self.results.get_mut().unwrap_or_else(|e| e.into_inner()));
        results.sort_by(|a, b| a.id.cmp(&b.id));
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(results);
        }
    }
}
