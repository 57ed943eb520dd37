//! One delivery attempt of one envelope: group the pending recipients by destination,
//! deliver each group (concurrently, under the connection limits), then record the
//! outcome (in `outcome`; see the module documentation of `delivery` for the order of
//! things).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

use super::client::{
    self, ClientSettings, HostOutcome, Open, RcptResult, Transaction, TxRecipient,
};
use super::connections::{self, ConnectionCache};
use super::dns::{self, Destination, Resolve, Route, Target};
use super::message::Message;
use super::outcome::{Concluded, Outcome, conclude_attempt, record};
use super::{DeliverySettings, OnFailure};
use crate::spool::{Envelope, RecipientState, Spool};

/// What every attempt shares.
pub(crate) struct Shared {
    /// The settings in force: a reload replaces them; an attempt keeps the ones it
    /// started with.
    pub current: ArcSwap<Current>,
    pub spool: Arc<Spool>,
    pub on_failure: OnFailure,
    pub resolver: Arc<dyn Resolve>,
    pub limits: Limits,
    /// Sessions between messages.
    pub connections: Arc<ConnectionCache<Open>>,
    /// Becomes `true` on shutdown: start nothing new.
    pub stop: watch::Receiver<bool>,
}

/// The delivery settings and the client's, as one reload puts them in force.
pub(crate) struct Current {
    pub settings: DeliverySettings,
    pub client: ClientSettings,
    /// When these came in force: cached sessions opened before are not used again (they
    /// may have been opened without the TLS that `tls.require_outbound` now asks for).
    pub since: Instant,
}

impl Current {
    pub(crate) fn new(settings: DeliverySettings, tls: tokio_rustls::TlsConnector) -> Current {
        let client = ClientSettings {
            ehlo_name: settings.ehlo_name.clone(),
            connect_timeout: settings.connect_timeout,
            command_timeout: settings.command_timeout,
            data_done_timeout: settings.data_done_timeout,
            require_tls: settings.require_tls,
            tls,
            tracer: settings.tracer.clone(),
        };
        Current {
            settings,
            client,
            since: Instant::now(),
        }
    }
}

impl Shared {
    /// Puts `settings` in force for the attempts that start from now on, `[dns]`
    /// included. What is built once at start stays: the connection limits, the
    /// connection cache's times, the tracer and the MX port.
    pub(crate) fn reload(&self, mut settings: DeliverySettings) {
        let old = self.current.load();
        let was = &old.settings;
        settings.max_concurrent_deliveries = was.max_concurrent_deliveries;
        settings.max_per_destination = was.max_per_destination;
        settings.connection_cache_time = was.connection_cache_time;
        settings.connection_reuse_time = was.connection_reuse_time;
        settings.tracer = was.tracer.clone();
        settings.mx_port = was.mx_port;
        let tls = old.client.tls.clone();
        self.resolver.use_settings(&settings.dns);
        self.current.store(Arc::new(Current::new(settings, tls)));
    }
}

/// The connection limits: one semaphore for all, one per destination.
pub(crate) struct Limits {
    global: Arc<Semaphore>,
    global_max: usize,
    per_destination: Mutex<HashMap<String, Arc<Semaphore>>>,
    per_destination_max: usize,
}

impl Limits {
    pub(crate) fn new(global: usize, per_destination: usize) -> Self {
        Limits {
            global: Arc::new(Semaphore::new(global)),
            global_max: global,
            per_destination: Mutex::new(HashMap::new()),
            per_destination_max: per_destination,
        }
    }

    /// Global slots taken: deliveries under way.
    pub(crate) fn in_use(&self) -> usize {
        self.global_max
            .saturating_sub(self.global.available_permits())
    }

    fn destination(&self, key: &str) -> Arc<Semaphore> {
        let mut map = self
            .per_destination
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if map.len() >= 1024 {
            // Forget destinations nobody is using or waiting for.
            map.retain(|_, s| Arc::strong_count(s) > 1);
        }
        map.entry(key.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_destination_max)))
            .clone()
    }
}

/// The message, loaded by the first destination that needs it and shared by all.
type Body = Arc<OnceCell<Result<Arc<Message>, String>>>;

/// Runs one attempt; returns the envelope if recipients are still pending.
pub(crate) async fn run(shared: Arc<Shared>, mut env: Envelope) -> Option<Envelope> {
    let current = shared.current.load_full();
    let snapshot = Arc::new(env.clone());
    let body: Body = Arc::default();
    let mut groups = JoinSet::new();
    for (dest, indices) in group(&env, &current.settings) {
        groups.spawn(deliver_group(
            shared.clone(),
            current.clone(),
            snapshot.clone(),
            dest,
            indices,
            body.clone(),
        ));
    }
    let mut outcomes = Vec::new();
    let mut attempted = false;
    while let Some(done) = groups.join_next().await {
        match done {
            Ok(Some(o)) => {
                attempted = true;
                outcomes.extend(o);
            }
            // Stopped before it started.
            Ok(None) => {}
            Err(e) => tracing::error!(queue_id = %env.id, error = %e, "delivery task failed"),
        }
    }
    drop(body);
    if !attempted && env.dsn_owed.is_empty() {
        return Some(env);
    }
    // Not attempted (nothing pending), but DSNs owed: only those are made.
    let concluded = if attempted {
        conclude_attempt(&current.settings, &mut env, &outcomes)
    } else {
        Concluded::default()
    };

    let shared2 = shared.clone();
    let finish = tokio::task::spawn_blocking(move || {
        record(
            &current.settings,
            &shared2.spool,
            &shared2.on_failure,
            env,
            concluded,
        )
    });
    match finish.await {
        Ok(env) if env.is_done() => None,
        Ok(env) => Some(env),
        Err(e) => {
            tracing::error!(error = %e, "recording the delivery attempt failed");
            None
        }
    }
}

/// The next hop configured for `address`: its domain's route, else the smarthost.
fn configured_hop<'a>(address: &str, settings: &'a DeliverySettings) -> Option<&'a str> {
    let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
    settings
        .routes
        .iter()
        .find(|(d, _)| crate::srs::domain_matches(domain, d))
        .map(|(_, h)| h.as_str())
        .or(settings.smarthost.as_deref())
}

/// Pending recipients by destination, in recipient order.
pub(crate) fn group(env: &Envelope, settings: &DeliverySettings) -> Vec<(Destination, Vec<usize>)> {
    let mut groups: Vec<(Destination, Vec<usize>)> = Vec::new();
    for (i, r) in env.recipients.iter().enumerate() {
        if r.state != RecipientState::Pending {
            continue;
        }
        let dest = match configured_hop(&r.address, settings) {
            Some(h) => Destination::Smarthost(h.to_owned()),
            None => Destination::of(&r.address),
        };
        match groups.iter_mut().find(|(d, _)| *d == dest) {
            Some((_, indices)) => indices.push(i),
            None => groups.push((dest, vec![i])),
        }
    }
    groups
}

/// Waits for a permit, or gives up when the queue stops.
async fn acquire(
    sem: Arc<Semaphore>,
    stop: &mut watch::Receiver<bool>,
) -> Option<OwnedSemaphorePermit> {
    if *stop.borrow() {
        return None;
    }
    tokio::select! {
        permit = sem.acquire_owned() => permit.ok(),
        _ = stop.wait_for(|s| *s) => None,
    }
}

/// Delivers one destination's recipients; `None` if the queue stopped first.
async fn deliver_group(
    shared: Arc<Shared>,
    current: Arc<Current>,
    env: Arc<Envelope>,
    dest: Destination,
    indices: Vec<usize>,
    body: Body,
) -> Option<Vec<Outcome>> {
    let mut stop = shared.stop.clone();
    // Destination first, then the global slot: a slow destination's backlog waits on its
    // own limit without holding global slots.
    let _dest_permit = acquire(shared.limits.destination(&dest.key()), &mut stop).await?;
    let _global_permit = acquire(shared.limits.global.clone(), &mut stop).await?;

    let outcomes = deliver_group_now(&shared, &current, &env, &dest, &indices, &body).await;
    for o in &outcomes {
        log_outcome(&env.id, &env.recipients[o.index].address, o);
    }
    Some(outcomes)
}

async fn deliver_group_now(
    shared: &Shared,
    current: &Current,
    env: &Envelope,
    dest: &Destination,
    indices: &[usize],
    body: &Body,
) -> Vec<Outcome> {
    let all = |result: RcptResult, remote: Option<String>| -> Vec<Outcome> {
        indices
            .iter()
            .map(|&index| Outcome {
                index,
                result: result.clone(),
                remote: remote.clone(),
                remote_dsn: false,
                tls: None,
            })
            .collect()
    };

    let targets = match dns::route(dest, &*shared.resolver, current.settings.mx_port).await {
        Route::Targets(t) => t,
        Route::Permanent(e) => return all(RcptResult::Failed(e), None),
        Route::Temporary(e) => return all(RcptResult::Deferred(e), None),
    };

    let body = body
        .get_or_init(|| async {
            Message::load(shared.spool.clone(), &env.id)
                .await
                .map(Arc::new)
                .map_err(|e| format!("4.3.0 cannot read the message from the spool: {e}"))
        })
        .await;
    let body = match body {
        Ok(b) => b.clone(),
        Err(e) => {
            tracing::error!(queue_id = %env.id, error = %e, "message unreadable");
            return all(RcptResult::Deferred(e.clone()), None);
        }
    };

    let tx = Transaction {
        id: &env.id,
        sender: &env.sender,
        env_id: env.env_id.as_deref(),
        ret_full: env.ret_full,
        recipients: indices
            .iter()
            .map(|&i| {
                let r = &env.recipients[i];
                TxRecipient {
                    address: &r.address,
                    original: &r.original,
                    notify: r.notify.as_deref(),
                    orcpt: r.orcpt.as_deref(),
                }
            })
            .collect(),
        body: &body,
    };

    let mut last = (String::new(), None);
    for target in &targets {
        match deliver_at(target, shared, current, &tx).await {
            HostOutcome::Done { results, dsn, tls } => {
                let remote = Some(target.describe());
                return indices
                    .iter()
                    .zip(results)
                    .map(|(&index, result)| Outcome {
                        index,
                        result,
                        remote: remote.clone(),
                        remote_dsn: dsn,
                        tls: tls.clone(),
                    })
                    .collect();
            }
            HostOutcome::TryNext(e) => {
                tracing::debug!(queue_id = %env.id, remote = %target.describe(), error = %e, "host failed; trying the next");
                last = (e, Some(target.describe()));
            }
        }
    }
    all(RcptResult::Deferred(last.0), last.1)
}

/// Cached connections tried for one transaction before a new one is opened.
const MAX_CACHED_TRIES: usize = 3;

/// Delivers `tx` to `target`, over an idle session from the cache if there is one, and
/// gives the session back to the cache afterwards if it is fit for another transaction.
async fn deliver_at(
    target: &Target,
    shared: &Shared,
    current: &Current,
    tx: &Transaction<'_>,
) -> HostOutcome {
    let cache = &shared.connections;
    let client = &current.client;
    // A cached session the server has closed meanwhile fails before anything is decided
    // (TryNext, session lost): then it is dropped and the next one, or a new one, is used.
    for _ in 0..MAX_CACHED_TRIES {
        let Some(mut open) = cache.take(target) else {
            break;
        };
        if open.opened < current.since {
            // Opened under settings a reload has replaced.
            open.quit().await;
            continue;
        }
        tracing::debug!(queue_id = %tx.id, remote = %target.describe(), uses = open.uses,
            "reusing connection");
        match open.transaction(tx, client.data_done_timeout).await {
            // Lost (closed by the server while idle, 421): not this message's fault.
            (HostOutcome::TryNext(e), false) => {
                tracing::debug!(queue_id = %tx.id, remote = %target.describe(), error = %e,
                    "cached connection failed; not counted")
            }
            // Anything the server said in a working session is its answer.
            (outcome, clean) => {
                give_back(target, open, clean, cache).await;
                return outcome;
            }
        }
    }
    let mut open = match client::connect(target, client, tx.id).await {
        Ok(open) => open,
        Err(e) => return HostOutcome::TryNext(e),
    };
    let (outcome, clean) = open.transaction(tx, client.data_done_timeout).await;
    give_back(target, open, clean, cache).await;
    outcome
}

/// After a transaction: back into the cache if the session is in a known state and the
/// cache takes it, else QUIT; a session in an unknown state is only dropped.
async fn give_back(target: &Target, open: Open, clean: bool, cache: &ConnectionCache<Open>) {
    if clean && let Some(refused) = cache.put(target, open) {
        refused.quit().await;
    }
}

impl connections::Session for Open {
    fn opened(&self) -> std::time::Instant {
        self.opened
    }

    async fn quit(self) {
        Open::quit(self).await
    }
}

fn log_outcome(id: &str, rcpt: &str, o: &Outcome) {
    let remote = o.remote.as_deref().unwrap_or("-");
    match &o.result {
        RcptResult::Delivered(reply) => {
            tracing::info!(event = "delivered", queue_id = %id, rcpt = %rcpt, remote = %remote, reply = %reply, "delivered");
        }
        RcptResult::Deferred(reply) => {
            tracing::info!(event = "deferred", queue_id = %id, rcpt = %rcpt, remote = %remote, reply = %reply, "deferred");
        }
        RcptResult::Failed(reply) => {
            tracing::info!(event = "failed", queue_id = %id, rcpt = %rcpt, remote = %remote, reply = %reply, "failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::testing::envelope;

    #[test]
    fn groups_by_domain_or_smarthost() {
        let env = envelope(&["a@x.org", "b@y.org", "c@X.org", "bad"]);
        let mut settings = DeliverySettings::default();
        let g = group(&env, &settings);
        assert_eq!(
            g,
            vec![
                (Destination::Domain("x.org".into()), vec![0, 2]),
                (Destination::Domain("y.org".into()), vec![1]),
                (Destination::Unroutable, vec![3]),
            ]
        );
        settings.routes = vec![(".y.org".into(), "inner:2525".into())];
        let env = envelope(&["a@x.org", "b@mx.Y.org", "c@X.org"]);
        assert_eq!(
            group(&env, &settings),
            vec![
                (Destination::Domain("x.org".into()), vec![0, 2]),
                (Destination::Smarthost("inner:2525".into()), vec![1]),
            ]
        );
        settings.smarthost = Some("relay:25".into());
        assert_eq!(
            group(&env, &settings),
            vec![
                (Destination::Smarthost("relay:25".into()), vec![0, 2]),
                (Destination::Smarthost("inner:2525".into()), vec![1]),
            ]
        );
    }
}
