//! One delivery attempt of one envelope: group the pending recipients by destination,
//! deliver each group (concurrently, under the connection limits), then record the
//! outcome (see the module documentation of `delivery` for the order of things).

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

use super::client::{
    self, ClientSettings, HostOutcome, Open, RcptResult, Transaction, TxRecipient,
};
use super::connections::{self, ConnectionCache};
use super::dns::{self, Destination, Resolve, Route, Target};
use super::message::Message;
use super::{DeliverySettings, FailureReason, FailureReport, OnFailure};
use crate::dsn::{Action, notify_allows};
use crate::spool::{Envelope, OwedDsn, OwedReason, RecipientState, Spool};
use crate::srs::unix_now;

/// What every attempt shares.
pub(crate) struct Shared {
    pub settings: DeliverySettings,
    pub client: ClientSettings,
    pub spool: Arc<Spool>,
    pub on_failure: OnFailure,
    pub resolver: Arc<dyn Resolve>,
    pub limits: Limits,
    /// Sessions between messages.
    pub connections: Arc<ConnectionCache<Open>>,
    /// Becomes `true` on shutdown: start nothing new.
    pub stop: watch::Receiver<bool>,
}

/// The connection limits: one semaphore for all, one per destination.
pub(crate) struct Limits {
    global: Arc<Semaphore>,
    per_destination: Mutex<HashMap<String, Arc<Semaphore>>>,
    per_destination_max: usize,
}

impl Limits {
    pub(crate) fn new(global: usize, per_destination: usize) -> Self {
        Limits {
            global: Arc::new(Semaphore::new(global)),
            per_destination: Mutex::new(HashMap::new()),
            per_destination_max: per_destination,
        }
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

/// The fate of one recipient in this attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// Index into `Envelope::recipients`.
    pub index: usize,
    pub result: RcptResult,
    /// The host that gave the result, `host[ip]:port`.
    pub remote: Option<String>,
    /// That host speaks DSN (NOTIFY went on with the message).
    pub remote_dsn: bool,
}

/// The message, loaded by the first destination that needs it and shared by all.
type Body = Arc<OnceCell<Result<Arc<Message>, String>>>;

/// Runs one attempt; returns the envelope if recipients are still pending.
pub(crate) async fn run(shared: Arc<Shared>, mut env: Envelope) -> Option<Envelope> {
    let snapshot = Arc::new(env.clone());
    let body: Body = Arc::default();
    let mut groups = JoinSet::new();
    for (dest, indices) in group(&env, &shared.settings) {
        groups.spawn(deliver_group(
            shared.clone(),
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
        conclude_attempt(&shared, &mut env, &outcomes)
    } else {
        Concluded::default()
    };

    let shared2 = shared.clone();
    let finish = tokio::task::spawn_blocking(move || record(&shared2, env, concluded));
    match finish.await {
        Ok(env) if env.is_done() => None,
        Ok(env) => Some(env),
        Err(e) => {
            tracing::error!(error = %e, "recording the delivery attempt failed");
            None
        }
    }
}

/// Applies an attempt's outcomes to `env` (see [`conclude`]) and logs what expired.
fn conclude_attempt(shared: &Shared, env: &mut Envelope, outcomes: &[Outcome]) -> Concluded {
    let concluded = conclude(
        env,
        outcomes,
        unix_now(),
        &shared.settings.retry_intervals,
        shared.settings.max_lifetime,
        shared.settings.delay_warning,
    );
    for &i in &concluded.expired {
        let r = &env.recipients[i];
        tracing::info!(event = "failed", queue_id = %env.id, rcpt = %r.address,
            remote = %r.remote.as_deref().unwrap_or("-"),
            reply = %r.last_error.as_deref().unwrap_or(""), reason = "expired", "expired");
    }
    if !env.is_done() {
        tracing::debug!(queue_id = %env.id, attempts = env.attempts, next_attempt = env.next_attempt,
            "attempt finished; recipients still pending");
    }
    concluded
}

/// Report, then persist or remove: on a blocking thread. Returns the envelope as it now
/// stands.
///
/// The failure reports go first: the DSN is in the spool before the envelope says the
/// recipient failed, so a crash in between means the recipient is tried again and the
/// DSN made again (a duplicate, never a lost DSN). A report the handler could not take
/// (the DSN could not be spooled) is kept in the envelope as owed and made again at the
/// next attempt; the message stays in the spool until then.
fn record(shared: &Shared, mut env: Envelope, concluded: Concluded) -> Envelope {
    let now = unix_now();
    let owed = std::mem::take(&mut env.dsn_owed);
    let reports = owed
        .into_iter()
        .map(|o| (o.recipients, FailureReason::from(o.reason)))
        .chain([
            (concluded.permanent, FailureReason::Permanent),
            (concluded.expired, FailureReason::Expired),
            (concluded.delayed, FailureReason::Delayed),
            (concluded.relayed, FailureReason::Relayed),
        ]);
    for (failed, reason) in reports {
        if failed.is_empty() {
            continue;
        }
        let report = FailureReport {
            envelope: env.clone(),
            failed,
            reason,
        };
        let failed = report.failed.clone();
        let taken = std::panic::catch_unwind(AssertUnwindSafe(|| (shared.on_failure)(report)))
            .unwrap_or_else(|_| {
                tracing::error!(queue_id = %env.id, "the failure handler panicked");
                false
            });
        if taken {
            continue;
        }
        match OwedReason::try_from(reason) {
            // A success notice that cannot be made is not worth keeping the message for.
            Err(()) => {
                tracing::error!(queue_id = %env.id, "the relayed notice could not be queued; it is lost")
            }
            // Given up on with the message, long after its lifetime: the log is all that is left.
            Ok(_)
                if now
                    > env
                        .arrival
                        .saturating_add(2 * shared.settings.max_lifetime.as_secs()) =>
            {
                tracing::error!(queue_id = %env.id, reason = ?reason, rcpts = ?failed,
                    "DSN still cannot be queued, twice the message lifetime after arrival; given up")
            }
            Ok(reason) => env.dsn_owed.push(OwedDsn {
                reason,
                recipients: failed,
            }),
        }
    }
    if !env.dsn_owed.is_empty() {
        let wait = shared
            .settings
            .retry_intervals
            .first()
            .map_or(300, |d| d.as_secs().max(1));
        if env.pending().next().is_none() || env.next_attempt <= now {
            env.next_attempt = now.saturating_add(wait);
        }
        tracing::warn!(queue_id = %env.id, owed = env.dsn_owed.len(), next_attempt = env.next_attempt,
            "DSN not queued; the message stays in the spool and it is made again later");
    }
    // A finished envelope is removed below: writing it first would only cost fsyncs.
    if !env.is_done()
        && let Err(e) = shared.spool.update(&env)
    {
        // Carry on: the state in memory is right; a crash now means a repeat delivery.
        tracing::error!(queue_id = %env.id, error = %e, "cannot update the envelope in the spool");
    }
    if env.is_done() {
        match shared.spool.remove(&env.id) {
            Ok(()) => tracing::debug!(queue_id = %env.id, "done; removed from the spool"),
            Err(e) => {
                tracing::error!(queue_id = %env.id, error = %e, "cannot remove a finished message from the spool")
            }
        }
    }
    env
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

    let outcomes = deliver_group_now(&shared, &env, &dest, &indices, &body).await;
    for o in &outcomes {
        log_outcome(&env.id, &env.recipients[o.index].address, o);
    }
    Some(outcomes)
}

async fn deliver_group_now(
    shared: &Shared,
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
            })
            .collect()
    };

    let targets = match dns::route(dest, &*shared.resolver, shared.settings.mx_port).await {
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
        match deliver_at(target, shared, &tx).await {
            HostOutcome::Done { results, dsn } => {
                let remote = Some(target.describe());
                return indices
                    .iter()
                    .zip(results)
                    .map(|(&index, result)| Outcome {
                        index,
                        result,
                        remote: remote.clone(),
                        remote_dsn: dsn,
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
async fn deliver_at(target: &Target, shared: &Shared, tx: &Transaction<'_>) -> HostOutcome {
    let cache = &shared.connections;
    // A cached session the server has closed meanwhile fails before anything is decided
    // (TryNext, session lost): then it is dropped and the next one, or a new one, is used.
    for _ in 0..MAX_CACHED_TRIES {
        let Some(mut open) = cache.take(target) else {
            break;
        };
        tracing::debug!(queue_id = %tx.id, remote = %target.describe(), uses = open.uses,
            "reusing connection");
        match open.transaction(tx, shared.client.data_done_timeout).await {
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
    let mut open = match client::connect(target, &shared.client, tx.id).await {
        Ok(open) => open,
        Err(e) => return HostOutcome::TryNext(e),
    };
    let (outcome, clean) = open.transaction(tx, shared.client.data_done_timeout).await;
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

/// Recipients that failed in this attempt.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Concluded {
    pub permanent: Vec<usize>,
    pub expired: Vec<usize>,
    /// Still pending past `delay_warning`, first time for this message.
    pub delayed: Vec<usize>,
    /// Delivered to a receiver without DSN, NOTIFY asking for SUCCESS: a "relayed" DSN.
    pub relayed: Vec<usize>,
}

/// Applies the outcomes to `env`, counts the attempt, schedules the next one or expires
/// what is left.
pub(crate) fn conclude(
    env: &mut Envelope,
    outcomes: &[Outcome],
    now: u64,
    retry: &[Duration],
    max_lifetime: Duration,
    delay_warning: Option<Duration>,
) -> Concluded {
    let mut out = Concluded::default();
    for o in outcomes {
        let Some(r) = env.recipients.get_mut(o.index) else {
            continue;
        };
        if r.state != RecipientState::Pending {
            continue;
        }
        r.remote = o.remote.clone();
        match &o.result {
            RcptResult::Delivered(reply) => {
                r.state = RecipientState::Delivered;
                r.last_error = Some(reply.clone());
                if !o.remote_dsn && notify_allows(r.notify.as_deref(), Action::Relayed) {
                    out.relayed.push(o.index);
                }
            }
            RcptResult::Deferred(e) => r.last_error = Some(e.clone()),
            RcptResult::Failed(e) => {
                r.state = RecipientState::Failed;
                r.last_error = Some(e.clone());
                out.permanent.push(o.index);
            }
        }
    }
    env.attempts = env.attempts.saturating_add(1);
    if env.is_done() {
        return out;
    }

    let deadline = env.arrival.saturating_add(max_lifetime.as_secs());
    if deadline <= now {
        for (i, r) in env.recipients.iter_mut().enumerate() {
            if r.state == RecipientState::Pending {
                r.state = RecipientState::Failed;
                let last = r
                    .last_error
                    .as_deref()
                    .unwrap_or("4.4.7 not delivered in time");
                r.last_error = Some(format!("expired: {last}"));
                out.expired.push(i);
            }
        }
        return out;
    }
    let step = (env.attempts as usize)
        .saturating_sub(1)
        .min(retry.len().saturating_sub(1));
    let wait = retry.get(step).map_or(300, |d| d.as_secs().max(1));
    // The last try falls on the end of the lifetime, not up to an interval after it.
    env.next_attempt = now.saturating_add(wait).min(deadline.max(now + 1));
    if let Some(after) = delay_warning
        && !env.delay_warned
        && now >= env.arrival.saturating_add(after.as_secs())
    {
        env.delay_warned = true;
        out.delayed = (0..env.recipients.len())
            .filter(|&i| env.recipients[i].state == RecipientState::Pending)
            .collect();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::{ClientInfo, Recipient};

    fn rcpt(address: &str) -> Recipient {
        Recipient {
            address: address.into(),
            original: address.into(),
            state: RecipientState::Pending,
            last_error: None,
            remote: None,
            notify: None,
            orcpt: None,
        }
    }

    fn envelope(rcpts: &[&str]) -> Envelope {
        Envelope {
            id: "t1".into(),
            arrival: 1000,
            original_sender: "s@example.org".into(),
            sender: "s@example.org".into(),
            recipients: rcpts.iter().map(|a| rcpt(a)).collect(),
            client: ClientInfo {
                ip: "127.0.0.1".into(),
                helo: "h".into(),
                tls: None,
            },
            attempts: 0,
            next_attempt: 1000,
            size: 10,
            env_id: None,
            ret_full: false,
            delay_warned: false,
            dsn_owed: Vec::new(),
        }
    }

    fn o(index: usize, result: RcptResult) -> Outcome {
        Outcome {
            remote_dsn: true,
            index,
            result,
            remote: Some("mx[192.0.2.1]:25".into()),
        }
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

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

    #[test]
    fn delivered_to_a_receiver_without_dsn_is_relayed_when_notify_asks() {
        let mut env = envelope(&["a@x.org", "b@x.org", "c@x.org", "d@x.org"]);
        env.recipients[0].notify = Some("SUCCESS,FAILURE".into());
        env.recipients[1].notify = Some("FAILURE".into());
        env.recipients[2].notify = Some("success".into());
        env.recipients[3].notify = Some("SUCCESS".into());
        let delivered = |i, dsn| Outcome {
            remote_dsn: dsn,
            ..o(i, RcptResult::Delivered("250 2.0.0 ok".into()))
        };
        let outcomes = [
            delivered(0, false),
            delivered(1, false),
            delivered(2, false),
            // A receiver with DSN got NOTIFY: its job now.
            delivered(3, true),
        ];
        let c = conclude(&mut env, &outcomes, 2000, &[S(60)], S(86400), None);
        assert_eq!(c.relayed, vec![0, 2]);
        assert!(env.is_done());
    }

    #[test]
    fn outcomes_and_backoff() {
        let retry = [S(60), S(600)];
        let mut env = envelope(&["a@x.org", "b@x.org", "c@x.org"]);
        let c = conclude(
            &mut env,
            &[
                o(0, RcptResult::Delivered("250 ok".into())),
                o(1, RcptResult::Deferred("450 later".into())),
                o(2, RcptResult::Failed("550 no".into())),
            ],
            2000,
            &retry,
            S(86400),
            None,
        );
        assert_eq!(
            c,
            Concluded {
                permanent: vec![2],
                expired: vec![],
                delayed: vec![],
                relayed: vec![],
            }
        );
        assert_eq!(env.attempts, 1);
        assert_eq!(env.next_attempt, 2060);
        assert_eq!(env.recipients[0].state, RecipientState::Delivered);
        assert_eq!(env.recipients[1].state, RecipientState::Pending);
        assert_eq!(env.recipients[1].last_error.as_deref(), Some("450 later"));
        assert_eq!(env.recipients[2].state, RecipientState::Failed);

        conclude(
            &mut env,
            &[o(1, RcptResult::Deferred("451 x".into()))],
            3000,
            &retry,
            S(86400),
            None,
        );
        assert_eq!((env.attempts, env.next_attempt), (2, 3600));
        conclude(
            &mut env,
            &[o(1, RcptResult::Deferred("451 x".into()))],
            4000,
            &retry,
            S(86400),
            None,
        );
        assert_eq!(
            (env.attempts, env.next_attempt),
            (3, 4600),
            "the last interval repeats"
        );
    }

    #[test]
    fn expiry_and_last_try_on_time() {
        let retry = [S(3600)];
        let mut env = envelope(&["a@x.org"]);
        // Lifetime ends at 1000 + 5000: the next try is clamped to it.
        conclude(
            &mut env,
            &[o(0, RcptResult::Deferred("451 x".into()))],
            5000,
            &retry,
            S(5000),
            None,
        );
        assert_eq!(env.next_attempt, 6000);
        let c = conclude(
            &mut env,
            &[o(0, RcptResult::Deferred("451 y".into()))],
            6000,
            &retry,
            S(5000),
            None,
        );
        assert_eq!(
            c,
            Concluded {
                permanent: vec![],
                expired: vec![0],
                delayed: vec![],
                relayed: vec![],
            }
        );
        assert_eq!(env.recipients[0].state, RecipientState::Failed);
        assert_eq!(
            env.recipients[0].last_error.as_deref(),
            Some("expired: 451 y")
        );
        assert!(env.is_done());
    }

    #[test]
    fn one_delay_warning_per_message() {
        let retry = [S(600)];
        let mut env = envelope(&["a@x.org", "b@x.org"]);
        let warn = Some(S(3600));
        let outcomes = [
            o(0, RcptResult::Deferred("451 x".into())),
            o(1, RcptResult::Delivered("250 ok".into())),
        ];
        let c = conclude(&mut env, &outcomes, 1000 + 3599, &retry, S(86400), warn);
        assert!(c.delayed.is_empty(), "not yet");
        let c = conclude(&mut env, &outcomes, 1000 + 3600, &retry, S(86400), warn);
        assert_eq!(c.delayed, vec![0], "the delivered one is not reported");
        assert!(env.delay_warned);
        let c = conclude(&mut env, &outcomes, 1000 + 7200, &retry, S(86400), warn);
        assert!(c.delayed.is_empty(), "once per message");
        let mut env = envelope(&["a@x.org"]);
        let c = conclude(
            &mut env,
            &outcomes[..1],
            1000 + 99_000,
            &retry,
            S(200_000),
            None,
        );
        assert!(c.delayed.is_empty(), "delay_warning = 0 is off");
    }
}
