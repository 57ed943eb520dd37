//! srs-relay's own bounces: the delivery queue's failure reports become DSNs (built by
//! [`crate::dsn`]) to the **original** sender, never to the SRS address, spooled like any
//! message (`MAIL FROM:<>`) and delivered by the same queue.
//!
//! The DSN is durably in the spool before the failed message leaves it or records the
//! failure (the queue calls the hook first), so a crash in between costs a duplicate DSN
//! at worst, never a lost one; a DSN that cannot be spooled (disk full) keeps its
//! recipients queued, to be tried and reported again. A message whose sender is `<>` gets none (no bounce loops): that is logged.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::mpsc;

use crate::config::{self, Config, ConfigError};
use crate::delivery::{FailureReason, FailureReport, OnFailure};
use crate::dsn::{self, Action, DsnRequest};
use crate::spool::{Envelope, Spool};
use crate::srs::unix_now;
use crate::trace::{Event, Kind, Tracer};

/// What a DSN says of us, from the configuration.
#[derive(Debug, Clone)]
pub struct DsnSettings {
    /// `server.hostname`.
    pub reporting_mta: String,
    /// `queue.max_lifetime`: a delayed DSN's `Will-Retry-Until` is this after arrival.
    pub max_lifetime: Duration,
    /// With `arc.key` and `srs.default_domain`: DSNs come from `MAILER-DAEMON@` that
    /// domain, DKIM-signed for it, so that they pass DMARC where they go.
    pub signer: Option<Arc<crate::auth::OwnMailSigner>>,
    /// `dsn.to_unauthenticated = "send"`: DSNs also go to senders not authenticated at
    /// arrival (by default they are dropped).
    pub to_unauthenticated: bool,
    /// `dsn.hide_forward_targets`: a DSN names the alias, not where it forwards.
    pub hide_forward_targets: bool,
}

impl DsnSettings {
    pub fn from_config(cfg: &Config) -> Result<DsnSettings, ConfigError> {
        Ok(DsnSettings {
            reporting_mta: cfg.server.hostname.clone(),
            max_lifetime: config::duration("queue.max_lifetime", &cfg.queue.max_lifetime)?,
            signer: crate::auth::OwnMailSigner::from_config(cfg)?.map(Arc::new),
            to_unauthenticated: match cfg.dsn.to_unauthenticated.trim() {
                "drop" => false,
                "send" => true,
                other => {
                    return Err(ConfigError::key(
                        "dsn.to_unauthenticated",
                        format!("{other:?}: expected \"drop\" or \"send\""),
                    ));
                }
            },
            hide_forward_targets: cfg.dsn.hide_forward_targets,
        })
    }
}

/// The `on_failure` hook: builds and spools the DSN, then hands it to `submit` (the
/// delivery queue, which may not exist yet when the hook is made, hence the channel).
/// Each DSN is made with the `settings` in force (a reload replaces them).
pub fn dsn_on_failure(
    spool: Arc<Spool>,
    settings: Arc<ArcSwap<DsnSettings>>,
    submit: mpsc::UnboundedSender<Envelope>,
    tracer: Tracer,
) -> OnFailure {
    Arc::new(move |report: FailureReport| {
        let settings = settings.load();
        match spool_dsn(&spool, &settings, &report) {
            Ok(Some(env)) => {
                trace_dsn(&tracer, &report, &env);
                if submit.send(env).is_err() {
                    tracing::warn!(
                        "delivery queue stopped; the DSN waits in the spool for a restart"
                    );
                }
                true
            }
            Ok(None) => true,
            Err(()) => false,
        }
    })
}

/// The DSN-sent event: on the original message, to whom it went and its own queue id.
fn trace_dsn(tracer: &Tracer, report: &FailureReport, dsn: &Envelope) {
    let original = &report.envelope;
    let kind = format!("{:?}", report.reason).to_ascii_lowercase();
    let e = Event::new(Kind::DsnSent)
        .queue_id(&original.id)
        .recipient(&original.original_sender)
        .detail(&[("dsn_id", &dsn.id), ("reason", &kind)]);
    tracer.record(e);
}

/// `env` with each recipient's address replaced by the one the sender gave (the alias),
/// in its last reply too.
fn hide_forward_targets(env: &Envelope) -> Envelope {
    let mut env = env.clone();
    for r in &mut env.recipients {
        if r.address.eq_ignore_ascii_case(&r.original) || r.original.is_empty() {
            continue;
        }
        if let Some(e) = &mut r.last_error {
            *e = replace_ignoring_case(e, &r.address, &r.original);
        }
        r.address = r.original.clone();
    }
    env
}

/// `text` with every occurrence of `from` (ASCII case ignored) replaced by `to`.
fn replace_ignoring_case(text: &str, from: &str, to: &str) -> String {
    if from.is_empty() {
        return text.to_owned();
    }
    let lower = text.to_ascii_lowercase();
    let needle = from.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while let Some(i) = lower[at..].find(&needle) {
        out.push_str(&text[at..at + i]);
        out.push_str(to);
        at += i + needle.len();
    }
    out.push_str(&text[at..]);
    out
}

/// Builds and stores the DSN for `report`; `Ok(None)` when there is none to send, `Err`
/// when it could not be spooled.
fn spool_dsn(
    spool: &Spool,
    settings: &DsnSettings,
    report: &FailureReport,
) -> Result<Option<Envelope>, ()> {
    let (reporting_mta, max_lifetime) = (settings.reporting_mta.as_str(), settings.max_lifetime);
    let env = &report.envelope;
    if env.sender_authenticated == Some(false) && !settings.to_unauthenticated {
        tracing::info!(
            queue_id = %env.id,
            reason = ?report.reason,
            to = %env.original_sender,
            "DSN dropped: the sender was not authenticated at arrival (dsn.to_unauthenticated = \"drop\")"
        );
        return Ok(None);
    }
    // dsn.hide_forward_targets: the report names what the sender wrote to, and the
    // address it forwards to appears nowhere in it (the trace keeps it).
    let hidden;
    let env = if settings.hide_forward_targets {
        hidden = hide_forward_targets(env);
        &hidden
    } else {
        env
    };
    let action = match report.reason {
        FailureReason::Permanent | FailureReason::Expired => Action::Failed,
        FailureReason::Delayed => Action::Delayed,
        FailureReason::Relayed => Action::Relayed,
    };
    let reported = dsn::recipients_to_report(env, &report.failed, action);
    if reported.is_empty() {
        tracing::info!(
            queue_id = %env.id,
            reason = ?report.reason,
            null_sender = env.original_sender.is_empty(),
            "no DSN: null sender, or NOTIFY asked for none"
        );
        return Ok(None);
    }
    // One octet past what a DSN returns whole is enough to know it is too large.
    let wanted = dsn::MAX_RETURNED_MESSAGE as u64 + 1;
    let original = spool
        .read_message_prefix(&env.id, wanted)
        .unwrap_or_else(|e| {
            // The DSN still goes, without the original's headers.
            tracing::error!(queue_id = %env.id, error = %e, "cannot read the message for its DSN");
            Vec::new()
        });
    let now = unix_now();
    let Some(message) = dsn::compose(&DsnRequest {
        reporting_mta,
        from_domain: settings.signer.as_deref().map(|s| s.domain()),
        envelope: env,
        recipients: &reported,
        action,
        original: &original,
        now,
        retry_until: Some(env.lifetime_start().saturating_add(max_lifetime.as_secs())),
    }) else {
        return Ok(None);
    };
    let message = match &settings.signer {
        Some(signer) => signer.sign(message),
        None => message,
    };
    let dsn_env = Envelope::from_null_sender(
        &env.original_sender,
        reporting_mta,
        now,
        message.len() as u64,
    );
    if let Err(e) = spool.store(&dsn_env, &message) {
        tracing::error!(queue_id = %env.id, error = %e,
            "cannot spool the DSN; the recipients stay queued and it is made again later");
        return Err(());
    }
    let rcpts: Vec<&str> = reported
        .iter()
        .map(|&i| report.envelope.recipients[i].address.as_str())
        .collect();
    tracing::info!(
        queue_id = %env.id,
        dsn_id = %dsn_env.id,
        to = %env.original_sender,
        action = ?action,
        rcpts = ?rcpts,
        "DSN queued"
    );
    Ok(Some(dsn_env))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_targets_are_replaced_by_the_alias_in_any_case() {
        assert_eq!(
            replace_ignoring_case(
                "550 <John@Home.example>: no; john@home.example",
                "john@home.example",
                "a@f.example"
            ),
            "550 <a@f.example>: no; a@f.example"
        );
        assert_eq!(replace_ignoring_case("x", "", "y"), "x");
        let mut env = Envelope::from_null_sender("s@o.example", "relay.test", 0, 0);
        env.recipients = vec![crate::spool::Recipient::pending(
            "john@home.example",
            "john@forward.example",
        )];
        env.recipients[0].last_error = Some("550 5.1.1 <john@home.example> unknown".into());
        let hidden = hide_forward_targets(&env);
        assert_eq!(hidden.recipients[0].address, "john@forward.example");
        assert_eq!(
            hidden.recipients[0].last_error.as_deref(),
            Some("550 5.1.1 <john@forward.example> unknown")
        );
    }
}
