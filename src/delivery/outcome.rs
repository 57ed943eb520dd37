//! After an attempt: outcomes applied, next try or expiry, failures reported, spool updated.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use super::client::RcptResult;
use super::{DeliverySettings, FailureReason, FailureReport, OnFailure};
use crate::dsn::{Action, notify_allows};
use crate::spool::{Envelope, OwedDsn, OwedReason, RecipientState, Spool};
use crate::srs::unix_now;
use crate::trace::{Event, Kind, Tracer};

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
    /// The session's TLS version and cipher, if any (for the trace).
    pub tls: Option<String>,
}

/// Applies an attempt's outcomes to `env` (see [`conclude`]) and logs what expired.
pub(super) fn conclude_attempt(
    settings: &DeliverySettings,
    env: &mut Envelope,
    outcomes: &[Outcome],
) -> Concluded {
    let concluded = conclude(
        env,
        outcomes,
        unix_now(),
        &settings.retry_intervals,
        settings.max_lifetime,
        settings.delay_warning,
    );
    trace_outcomes(&settings.tracer, env, outcomes);
    for &i in &concluded.expired {
        let r = &env.recipients[i];
        tracing::info!(event = "failed", queue_id = %env.id, rcpt = %r.address,
            remote = %r.remote.as_deref().unwrap_or("-"),
            reply = %r.last_error.as_deref().unwrap_or(""), reason = "expired", "expired");
        let mut e = Event::new(Kind::Expired)
            .queue_id(&env.id)
            .recipient(&r.address)
            .original_recipient(&r.original)
            .reply(r.last_error.as_deref().unwrap_or(""));
        e.remote = r.remote.clone();
        e.attempt = Some(env.attempts);
        settings.tracer.record(e);
    }
    if !env.is_done() {
        tracing::debug!(queue_id = %env.id, attempts = env.attempts, next_attempt = env.next_attempt,
            "attempt finished; recipients still pending");
    }
    concluded
}

/// One trace event per recipient attempted: delivered, deferred or failed, with the next
/// hop, its reply, the attempt number and the delay since arrival.
fn trace_outcomes(tracer: &Tracer, env: &Envelope, outcomes: &[Outcome]) {
    if !tracer.enabled() {
        return;
    }
    let delay = unix_now().saturating_sub(env.arrival).to_string();
    for o in outcomes {
        let Some(r) = env.recipients.get(o.index) else {
            continue;
        };
        let (kind, reply) = match &o.result {
            RcptResult::Delivered(reply) => (Kind::Delivered, reply),
            RcptResult::Deferred(reply) => (Kind::Deferred, reply),
            RcptResult::Failed(reply) => (Kind::Failed, reply),
        };
        let mut e = Event::new(kind)
            .queue_id(&env.id)
            .recipient(&r.address)
            .original_recipient(&r.original)
            .srs_sender(&env.sender)
            .reply(reply)
            .detail(&[("delay_secs", &delay)]);
        e.remote = o.remote.clone();
        e.tls = o.tls.clone();
        e.attempt = Some(env.attempts);
        tracer.record(e);
    }
}

/// Report, then persist or remove: on a blocking thread. Returns the envelope as it now
/// stands.
///
/// The failure reports go first: the DSN is in the spool before the envelope says the
/// recipient failed, so a crash in between means the recipient is tried again and the
/// DSN made again (a duplicate, never a lost DSN). A report the handler could not take
/// (the DSN could not be spooled) is kept in the envelope as owed and made again at the
/// next attempt; the message stays in the spool until then.
pub(super) fn record(
    settings: &DeliverySettings,
    spool: &Spool,
    on_failure: &OnFailure,
    mut env: Envelope,
    concluded: Concluded,
) -> Envelope {
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
        let taken = std::panic::catch_unwind(AssertUnwindSafe(|| on_failure(report)))
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
                        .lifetime_start()
                        .saturating_add(2 * settings.max_lifetime.as_secs()) =>
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
        let wait = settings
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
        && let Err(e) = spool.update(&env)
    {
        // Carry on: the state in memory is right; a crash now means a repeat delivery.
        tracing::error!(queue_id = %env.id, error = %e, "cannot update the envelope in the spool");
    }
    if env.is_done() {
        match spool.remove(&env.id) {
            Ok(()) => tracing::debug!(queue_id = %env.id, "done; removed from the spool"),
            Err(e) => {
                tracing::error!(queue_id = %env.id, error = %e, "cannot remove a finished message from the spool")
            }
        }
    }
    env
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

    let deadline = env.lifetime_start().saturating_add(max_lifetime.as_secs());
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
        && now >= env.lifetime_start().saturating_add(after.as_secs())
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
    use crate::delivery::testing::envelope;

    fn o(index: usize, result: RcptResult) -> Outcome {
        Outcome {
            remote_dsn: true,
            index,
            result,
            remote: Some("mx[192.0.2.1]:25".into()),
            tls: None,
        }
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

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
    fn time_on_hold_does_not_count_against_the_lifetime() {
        let deferred = [o(0, RcptResult::Deferred("451 x".into()))];
        // Arrived at 1000, lifetime 5000 s: at 7000 it would have expired...
        let mut env = envelope(&["a@x.org"]);
        let c = conclude(&mut env, &deferred, 7000, &[S(60)], S(5000), Some(S(100)));
        assert_eq!(c.expired, vec![0]);
        // ...but 3000 s of it were spent on hold: it ends at 9000, and the delay warning
        // counts from 4000 too.
        let mut env = envelope(&["a@x.org"]);
        env.held_secs = 3000;
        let c = conclude(&mut env, &deferred, 4050, &[S(60)], S(5000), Some(S(100)));
        assert!(c.expired.is_empty() && c.delayed.is_empty());
        let c = conclude(&mut env, &deferred, 7000, &[S(60)], S(5000), Some(S(100)));
        assert!(c.expired.is_empty());
        assert_eq!(c.delayed, vec![0]);
        assert_eq!(env.recipients[0].state, RecipientState::Pending);
        let c = conclude(&mut env, &deferred, 9000, &[S(60)], S(5000), None);
        assert_eq!(c.expired, vec![0]);
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
