//! RCPT: where a recipient goes (alias, relay, SRS reversal), with which sender; refusals.

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Accepted, Next, Session};
use crate::config::BounceSenders;
use crate::policy;
use crate::sender_store::{entry_lifetime, new_token};
use crate::smtp::refusals::{self, Verdict};
use crate::srs::{Decoded, ForwardError, ReverseError};
use crate::trace::{Event, Kind};

impl<S: AsyncRead + AsyncWrite + Unpin> Session<'_, S> {
    pub(super) async fn rcpt(&mut self, to: smtp_proto::RcptTo<String>) -> Next {
        let Some(tx) = &self.tx else {
            return self.error("503 5.5.1 Need MAIL before RCPT");
        };
        if tx.recipients.len() >= self.settings.limits.max_recipients {
            // Not counted as an error: the client is expected to send the rest later.
            self.reply("452 4.5.3 Too many recipients");
            return Next::Continue;
        }
        let address = to.address;
        let srs = &self.settings.srs;
        let ip = self.peer.ip();
        let default_domain = &self.settings.limits.default_domain;
        let mut bounce = false;
        let rewritten = match self.settings.policy.recipient(&address, ip) {
            policy::Recipient::Alias { alias, targets } => {
                let sender = tx.sender.clone();
                match srs.forward(&sender, &alias) {
                    Err(ForwardError::TooLong { .. }) => self.stored_sender().await,
                    other => Ok(unrewritten_on_error(other, &sender)),
                }
                .map(|s| (targets, s))
            }
            policy::Recipient::Relay => {
                let sender = tx.sender.clone();
                let stored =
                    self.settings.stored_for_relayed && !srs.is_exempt(&sender, default_domain);
                if stored {
                    self.stored_sender().await
                } else {
                    match srs.forward_for_domain(&sender, default_domain) {
                        Err(ForwardError::TooLong { .. }) => self.stored_sender().await,
                        other => Ok(unrewritten_on_error(other, &sender)),
                    }
                }
                .map(|s| (vec![address.clone()], s))
            }
            policy::Recipient::UnknownLocal
                if self.settings.bounce_senders == BounceSenders::Null
                    && !tx.sender.trim().is_empty()
                    && is_srs(srs, &address) =>
            {
                // The same answer whatever the hash says, so it tells a guesser nothing;
                // hence not counted as a refused address either.
                tracing::info!(peer = %ip, rcpt = %address, from = %tx.sender, "SRS address refused: not a bounce");
                let text = format!(
                    "550 5.7.1 <{address}>: SRS addresses accept only bounces (null sender)"
                );
                self.trace_refused(&address, &text, "srs: not a bounce");
                return self.error(&text);
            }
            policy::Recipient::UnknownLocal if self.srv.refusals.blocked(ip).is_some() => {
                // Blocked by another of its sessions meanwhile: not one more answer about
                // an address of ours, refused or accepted.
                self.reply(refusals::TOO_MANY);
                return Next::Close;
            }
            policy::Recipient::UnknownLocal => match self.bounce_target(&address).await {
                // A bounce (or reply) to one of our SRS addresses: on to the original
                // sender, with its own MAIL FROM (usually <>) untouched.
                Ok(target) => {
                    tracing::info!(peer = %ip, rcpt = %address, to = %target, "SRS address reversed");
                    bounce = true;
                    Ok((vec![target], tx.sender.clone()))
                }
                Err(Refusal::Permanent(text)) => {
                    if text.contains("unknown user") {
                        self.trace_refused(&address, &text, "unknown user");
                    } else {
                        self.trace_refused_srs(&address, &text);
                    }
                    return self.refuse_rcpt(&text);
                }
                Err(Refusal::Temporary(text)) => Err(text),
            },
            policy::Recipient::Denied => {
                tracing::info!(peer = %ip, rcpt = %address, "recipient refused: relaying denied");
                let text = format!("550 5.7.1 <{address}>: Relay access denied");
                self.trace_refused(&address, &text, "relay denied");
                return self.refuse_rcpt(&text);
            }
        };
        let (targets, sender) = match rewritten {
            Ok(r) => r,
            Err(text) => {
                // The store is down: the client may try again later; not its error.
                self.reply(&text);
                return Next::Continue;
            }
        };
        let notify = (to.flags != 0).then(|| notify_text(to.flags));
        if let Some(tx) = &mut self.tx {
            tx.recipients.push(Accepted {
                original: address,
                orcpt: to.orcpt,
                targets,
                sender,
                notify,
                bounce,
            });
        }
        self.reply("250 2.1.5 Recipient OK");
        Next::Continue
    }

    /// The trace event of a recipient refused at RCPT.
    fn trace_refused(&self, address: &str, text: &str, reason: &str) {
        self.trace_refused_with(address, text, &[("stage", "rcpt"), ("reason", reason)]);
    }

    /// The trace event of a bounce to an SRS address refused at RCPT, with what was wrong
    /// with it (`srs`: forged, expired, malformed or unknown_token; from the reply, which
    /// says it in the codec's words).
    fn trace_refused_srs(&self, address: &str, text: &str) {
        let srs = if text.contains("unknown or expired SRS address") {
            "unknown_token"
        } else if text.contains("bad SRS hash") {
            "forged"
        } else if text.contains("expired") {
            "expired"
        } else {
            "malformed"
        };
        let reason = "srs: forged, expired or malformed";
        self.trace_refused_with(
            address,
            text,
            &[("stage", "rcpt"), ("reason", reason), ("srs", srs)],
        );
    }

    fn trace_refused_with(&self, address: &str, text: &str, detail: &[(&str, &str)]) {
        let sender = self.tx.as_ref().map_or("", |t| t.sender.as_str());
        let mut e = Event::new(Kind::Refused)
            .original_recipient(address)
            .sender(sender)
            .remote(&self.peer.ip().to_string())
            .reply(text)
            .detail(detail);
        e.tls = self.tls.clone();
        self.srv.tracer.record(e);
    }

    /// A 5xx for a recipient address, counted against the client's address (trusted
    /// networks are exempt): at `server.max_refused_rcpts` the session ends with 421.
    fn refuse_rcpt(&mut self, text: &str) -> Next {
        let ip = self.peer.ip();
        let refusals = &self.srv.refusals;
        if refusals.enabled()
            && !self.settings.policy.is_trusted(ip)
            && let Verdict::Blocked { count, new } = refusals.record(ip)
        {
            if new {
                tracing::warn!(
                    peer = %ip,
                    counted_as = %refusals::describe(ip),
                    refused = count,
                    penalty_secs = refusals.penalty().as_secs(),
                    "too many refused recipients: address blocked"
                );
                // The refusal that reached the limit is answered; later ones (from
                // sessions open when the block began) are not.
                self.reply(text);
            }
            self.reply(refusals::TOO_MANY);
            return Next::Close;
        }
        self.error(text)
    }

    /// The stored-form address for this transaction's sender: one token per transaction,
    /// kept in the store before the RCPT that needs it is answered.
    async fn stored_sender(&mut self) -> Result<String, String> {
        let Some(tx) = &self.tx else {
            return Err("503 5.5.1 Need MAIL before RCPT".into());
        };
        if let Some(s) = &tx.stored_sender {
            return Ok(s.clone());
        }
        let sender = tx.sender.clone();
        let (srv, settings) = (self.srv, self.settings);
        let ttl = entry_lifetime(settings.srs.options().max_age_days);
        let stored = async {
            let token = new_token()?;
            srv.store.put(&token, &sender, ttl).await?;
            Ok::<_, crate::sender_store::StoreError>(
                settings
                    .srs
                    .stored_address(&token, &settings.limits.default_domain),
            )
        }
        .await;
        match stored {
            Ok(address) => {
                tracing::info!(sender = %sender, stored = %address, "sender kept in the store");
                if let Some(tx) = &mut self.tx {
                    tx.stored_sender = Some(address.clone());
                }
                Ok(address)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot keep the sender in the store");
                Err("451 4.3.0 Temporary failure: cannot record the sender, try again later".into())
            }
        }
    }

    /// Where mail to `address`, in one of our domains but no alias, goes: if it is an SRS
    /// address of ours, the address it decodes to (a stored one from the store).
    async fn bounce_target(&self, address: &str) -> Result<String, Refusal> {
        let srs = &self.settings.srs;
        let unknown = || {
            Refusal::Permanent(format!(
                "550 5.1.1 <{address}>: Recipient address rejected: unknown user"
            ))
        };
        let mut current = address.to_owned();
        // SRS1 goes back one hop; when that hop is us too, keep going (bounded).
        for _ in 0..3 {
            let decoded = match srs.decode(&current) {
                Ok(d) => d,
                Err(ReverseError::NotSrs) if current != address => return Ok(current),
                Err(ReverseError::NotSrs) => return Err(unknown()),
                Err(e) => {
                    tracing::info!(peer = %self.peer.ip(), rcpt = %address, error = %e, "SRS address refused");
                    return Err(Refusal::Permanent(match e {
                        ReverseError::Malformed(_) => {
                            format!("550 5.1.1 <{address}>: Recipient address rejected: {e}")
                        }
                        _ => format!("550 5.7.1 <{address}>: Recipient address rejected: {e}"),
                    }));
                }
            };
            let target = match decoded {
                Decoded::Address(a) => a,
                Decoded::Stored { token } => match self.srv.store.get(&token).await {
                    Ok(Some(sender)) => sender,
                    Ok(None) => {
                        tracing::info!(peer = %self.peer.ip(), rcpt = %address, "SRS address refused: token unknown or expired");
                        return Err(Refusal::Permanent(format!(
                            "550 5.1.1 <{address}>: Recipient address rejected: unknown or expired SRS address"
                        )));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "sender store lookup failed");
                        return Err(Refusal::Temporary(
                            "451 4.3.0 Temporary failure looking up the SRS address, try again later"
                                .into(),
                        ));
                    }
                },
            };
            let ours = target
                .rsplit_once('@')
                .is_some_and(|(_, d)| self.settings.policy.is_local_domain(d));
            if !ours {
                return Ok(target);
            }
            current = target;
        }
        Err(unknown())
    }
}

/// Why a recipient is refused: for good (5xx, counted as the client's error) or for now.
enum Refusal {
    Permanent(String),
    Temporary(String),
}

/// Whether `address` has the shape of an SRS address (of either form or the stored form),
/// whatever its hash: the reply must not depend on the hash.
fn is_srs(srs: &crate::srs::Srs, address: &str) -> bool {
    !matches!(srs.decode(address), Err(ReverseError::NotSrs))
}

/// The rewritten sender, or the original one where the codec cannot parse it (as
/// postsrsd does). Too long is handled by the caller, with the stored form.
fn unrewritten_on_error(result: Result<String, ForwardError>, original: &str) -> String {
    match result {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(sender = %original, error = %e, "sender not rewritten");
            original.to_owned()
        }
    }
}

/// NOTIFY flags back to their RFC 3461 text.
fn notify_text(flags: u64) -> String {
    use smtp_proto::{
        RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_NEVER, RCPT_NOTIFY_SUCCESS,
    };
    if flags & RCPT_NOTIFY_NEVER != 0 {
        return "NEVER".to_owned();
    }
    let mut parts = Vec::new();
    for (bit, name) in [
        (RCPT_NOTIFY_SUCCESS, "SUCCESS"),
        (RCPT_NOTIFY_FAILURE, "FAILURE"),
        (RCPT_NOTIFY_DELAY, "DELAY"),
    ] {
        if flags & bit != 0 {
            parts.push(name);
        }
    }
    parts.join(",")
}
