//! The postmaster's actions on queued messages (`srs-relay queue`): which messages an
//! action selects, and what each action does to an envelope and the spool. The running
//! scheduler applies them between attempts (see `queue`); with the relay stopped,
//! `srs-relay queue` applies them to the spool directly through [`apply`].
//!
//! Every change is in the spool (fsynced, removals too) before it is reported done, so
//! a crash undoes no action that was reported: a held message stays held after a restart, and
//! a message is never both held and being sent (the scheduler applies an action to a
//! message under an attempt only when the attempt has ended).

use serde::{Deserialize, Serialize};

use super::outcome::{Concluded, record};
use super::{DeliverySettings, OnFailure};
use crate::spool::{Envelope, RecipientState, Spool};
use crate::trace::{Event, Kind, Tracer};

/// What to do with the selected messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Attempt now (a held message stays held).
    Retry,
    /// Keep in the queue without attempting it or letting it expire.
    Hold,
    /// Back from hold: attempted now, its lifetime moved on by the time it was held.
    Release,
    /// Remove from the queue; no DSN.
    Delete,
    /// Fail every pending recipient now, with a DSN to the original sender.
    Bounce,
}

impl Action {
    /// The command's name, for log lines.
    pub fn name(self) -> &'static str {
        match self {
            Action::Retry => "retry",
            Action::Hold => "hold",
            Action::Release => "release",
            Action::Delete => "delete",
            Action::Bounce => "bounce",
        }
    }

    /// The past tense, for replies.
    pub fn done(self) -> &'static str {
        match self {
            Action::Retry => "retry",
            Action::Hold => "held",
            Action::Release => "released",
            Action::Delete => "deleted",
            Action::Bounce => "returned to the sender",
        }
    }
}

/// Which messages an action applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Select {
    /// These queue ids.
    Ids(Vec<String>),
    /// Every message in the queue.
    All,
    /// Messages with a pending recipient in this domain (case-insensitive, exact).
    Domain(String),
}

impl Select {
    pub fn matches(&self, env: &Envelope) -> bool {
        match self {
            Select::Ids(ids) => ids.contains(&env.id),
            Select::All => true,
            Select::Domain(d) => env.pending().any(|r| {
                r.address
                    .rsplit_once('@')
                    .is_some_and(|(_, rd)| rd.eq_ignore_ascii_case(d))
            }),
        }
    }
}

/// How an action went for one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "detail")]
pub enum Outcome {
    Done,
    /// The message is being attempted now: the action follows when the attempt ends
    /// (unless the attempt finishes the message).
    AfterAttempt,
    NotFound,
    /// Nothing to do, and why (e.g. "not held").
    Unchanged(String),
    /// The spool could not be changed; the message is as it was.
    Failed(String),
}

/// One message's [`Outcome`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionResult {
    pub id: String,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Where a queued message is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryState {
    /// Waiting for its next attempt.
    Waiting,
    /// Being attempted (or acted on) now.
    Active,
    /// On hold.
    Held,
}

/// One message of `srs-relay queue list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueEntry {
    pub state: EntryState,
    #[serde(flatten)]
    pub envelope: Envelope,
}

/// The reply text recipients get when the postmaster returns a message.
pub const RETURNED: &str = "5.0.0 returned to the sender by the postmaster";

/// Why `action` has nothing to do for `env`, if so.
pub fn unchanged(action: Action, env: &Envelope) -> Option<&'static str> {
    match (action, env.held_since.is_some()) {
        (Action::Retry, true) => Some("on hold: release it first"),
        (Action::Hold, true) => Some("already on hold"),
        (Action::Release, false) => Some("not on hold"),
        _ => None,
    }
}

/// Applies `action` to `env` at `now` (unix seconds) on behalf of `by` (for the log and
/// the trace), on a blocking thread: the spool is changed (fsynced) before this returns.
/// Returns the envelope as it now stands, `None` if it left the queue, and the outcome;
/// when the spool cannot be changed, the envelope comes back as it was.
pub fn apply(
    settings: &DeliverySettings,
    spool: &Spool,
    on_failure: &OnFailure,
    action: Action,
    mut env: Envelope,
    now: u64,
    by: &str,
) -> (Option<Envelope>, Outcome) {
    if let Some(why) = unchanged(action, &env) {
        return (Some(env), Outcome::Unchanged(why.into()));
    }
    let before = env.clone();
    let changed = match action {
        Action::Retry => {
            env.next_attempt = now;
            spool.update(&env).map(|()| Some(env))
        }
        Action::Hold => {
            env.held_since = Some(now);
            spool.update(&env).map(|()| Some(env))
        }
        Action::Release => {
            let since = env.held_since.take().unwrap_or(now);
            env.held_secs = env.held_secs.saturating_add(now.saturating_sub(since));
            env.next_attempt = now;
            spool.update(&env).map(|()| Some(env))
        }
        // A crash must not bring back what the postmaster removed.
        Action::Delete => spool
            .remove(&env.id)
            .and_then(|()| spool.sync_removals())
            .map(|()| None),
        Action::Bounce => {
            let left = bounce(settings, spool, on_failure, env);
            spool.sync_removals().map(|()| left)
        }
    };
    match changed {
        Ok(after) => {
            log_and_trace(&settings.tracer, action, &before, by);
            (after, Outcome::Done)
        }
        Err(e) => {
            tracing::error!(queue_id = %before.id, action = action.name(), error = %e,
                "queue action failed; the message is as it was");
            (Some(before), Outcome::Failed(e.to_string()))
        }
    }
}

/// Fails every pending recipient with [`RETURNED`] and records that as an attempt's
/// outcome would be: DSN first, then the spool.
fn bounce(
    settings: &DeliverySettings,
    spool: &Spool,
    on_failure: &OnFailure,
    mut env: Envelope,
) -> Option<Envelope> {
    let mut concluded = Concluded::default();
    for (i, r) in env.recipients.iter_mut().enumerate() {
        if r.state == RecipientState::Pending {
            r.state = RecipientState::Failed;
            r.last_error = Some(RETURNED.into());
            r.remote = None;
            concluded.permanent.push(i);
        }
    }
    env.held_since = None;
    let env = record(settings, spool, on_failure, env, concluded);
    (!env.is_done()).then_some(env)
}

/// One log line per message, one trace event per recipient that was pending.
pub(super) fn log_and_trace(tracer: &Tracer, action: Action, env: &Envelope, by: &str) {
    tracing::info!(event = "queue_action", queue_id = %env.id, action = action.name(), by,
        "queue action");
    let kind = match action {
        Action::Retry => Kind::Retry,
        Action::Hold => Kind::Held,
        Action::Release => Kind::Released,
        Action::Delete => Kind::Deleted,
        Action::Bounce => Kind::Failed,
    };
    if !tracer.enabled() {
        return;
    }
    for r in env.pending() {
        let mut e = Event::new(kind)
            .queue_id(&env.id)
            .recipient(&r.address)
            .original_recipient(&r.original)
            .srs_sender(&env.sender)
            .detail(&[("by", by)]);
        if action == Action::Bounce {
            e = e.reply(RETURNED);
        }
        tracer.record(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::testing::envelope;

    #[test]
    fn a_domain_selects_messages_with_a_pending_recipient_there() {
        let mut env = envelope(&["a@Example.org", "b@other.test"]);
        assert!(Select::Domain("example.ORG".into()).matches(&env));
        assert!(!Select::Domain("org".into()).matches(&env));
        env.recipients[0].state = RecipientState::Delivered;
        assert!(!Select::Domain("example.org".into()).matches(&env));
        assert!(Select::Ids(vec![env.id.clone()]).matches(&env));
        assert!(!Select::Ids(vec!["other".into()]).matches(&env));
    }

    #[test]
    fn held_messages_are_not_retried_and_not_held_twice() {
        let mut env = envelope(&["a@example.org"]);
        assert_eq!(unchanged(Action::Release, &env), Some("not on hold"));
        assert_eq!(unchanged(Action::Hold, &env), None);
        env.held_since = Some(5);
        assert_eq!(unchanged(Action::Hold, &env), Some("already on hold"));
        assert!(unchanged(Action::Retry, &env).is_some());
        assert_eq!(unchanged(Action::Delete, &env), None);
        assert_eq!(unchanged(Action::Bounce, &env), None);
    }
}
