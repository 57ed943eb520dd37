//! DATA: the message streamed into the spool, one envelope per sender, then handed on.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Next, Session, Transaction};
use crate::auth::{Authenticator, Checked, Summary};
use crate::config::DmarcRejectAction;
use crate::smtp::io::{self, DataError, DataSink};
use crate::smtp::received::Trace;
use crate::spool::{ClientInfo, Envelope, Incoming, Recipient, RecipientState, Spool};
use crate::srs::unix_now;
use crate::trace::{Event, HeaderCapture, Kind};

/// KiB of messages read back from their files for the checks at once, over all sessions
/// (DKIM and ARC need a message whole; mail-auth takes it as one slice).
const READ_BACK_BUDGET_KIB: u32 = 16 * 1024;
static READ_BACK_BUDGET: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(READ_BACK_BUDGET_KIB as usize);

impl<S: AsyncRead + AsyncWrite + Unpin> Session<'_, S> {
    pub(super) async fn data(&mut self) -> Next {
        let tx = match self.tx.take() {
            None => return self.error("503 5.5.1 Need MAIL command"),
            Some(tx) if tx.recipients.is_empty() => {
                self.tx = Some(tx);
                return self.error("554 5.5.1 No valid recipients");
            }
            Some(tx) => tx,
        };
        self.reply("354 Start mail input; end with <CRLF>.<CRLF>");
        if self.flush().await.is_err() {
            return Next::Close;
        }
        let mut planned = self.plan(tx);
        let limits = &self.settings.limits;
        let mut sink = SpoolSink {
            spool: &self.srv.spool,
            message: Some(Incoming::new()),
            headers: HeaderCapture::default(),
        };
        sink.push(planned.received.as_bytes());
        let report = match io::read_data(
            &mut self.io,
            &mut sink,
            limits.max_message_size as u64,
            limits.data_timeout,
        )
        .await
        {
            Ok(r) => r,
            Err(DataError::Timeout) => {
                self.reply("421 4.4.2 Timeout waiting for data, closing connection");
                return Next::Close;
            }
            Err(DataError::BareLineEnd { lf }) => {
                tracing::warn!(peer = %self.peer.ip(), bare_lf = lf, bare_cr = !lf, "message refused: bare line ending in data; closing");
                let text = "550 5.5.2 Message refused: bare LF or CR in data (RFC 5321 section 2.3.8), closing connection";
                self.trace_data_refused(&planned, &sink.headers, text, "bare line end");
                self.reply(text);
                return Next::Abort;
            }
            Err(DataError::Eof | DataError::Io(_)) => return Next::Close,
        };
        let refused = if report.too_big {
            Some((
                "552 5.3.4 Message size exceeds fixed maximum message size",
                "size",
            ))
        } else if report.nul {
            tracing::warn!(peer = %self.peer.ip(), "message refused: NUL in data");
            Some(("554 5.6.0 Message refused: NUL character in data", "nul"))
        } else if report.received_headers > limits.max_received_headers {
            tracing::warn!(peer = %self.peer.ip(), received = report.received_headers, "message refused: mail loop");
            Some((
                "554 5.4.6 Too many Received headers: mail loop detected",
                "loop",
            ))
        } else {
            None
        };
        if let Some((text, reason)) = refused {
            self.trace_data_refused(&planned, &sink.headers, text, reason);
            return self.error(text);
        }
        let headers = sink.headers.fields();
        let Some(mut message) = sink.message else {
            tracing::error!(peer = %self.peer.ip(), "message lost while being received; not accepted");
            self.reply("451 4.3.0 Local error in processing");
            return Next::Continue;
        };
        let mut auth = None;
        if let Some(authenticator) = self.settings.auth.clone() {
            let checked;
            (message, checked) = self.authenticate(&authenticator, message, &planned).await;
            let Some(checked) = checked else {
                self.reply("451 4.3.0 Local error in processing");
                return Next::Continue;
            };
            if checked.summary.dmarc_reject()
                && authenticator.dmarc_reject_action == DmarcRejectAction::Reject
            {
                let text = "550 5.7.1 Message refused: DMARC fails for the header From domain, whose policy is reject";
                tracing::info!(peer = %self.peer.ip(), auth = %checked.summary.line(), "message refused: DMARC policy reject");
                self.trace_data_refused(&planned, &sink.headers, text, "dmarc");
                return self.error(text);
            }
            message.edit(checked.prepend.as_bytes(), checked.remove);
            for env in &mut planned.envelopes {
                env.sender_authenticated = Some(checked.summary.sender_authenticated);
            }
            auth = Some((checked.summary, checked.elapsed));
        }
        match self.spool(planned, message, headers, auth).await {
            Ok(ids) => {
                self.reply(&format!("250 2.0.0 OK queued as {}", ids.join(",")));
                Next::Continue
            }
            Err(e) => {
                tracing::error!(peer = %self.peer.ip(), error = %e, "spool write failed; message not accepted");
                self.reply("452 4.3.1 Insufficient system storage");
                Next::Continue
            }
        }
    }

    /// Runs the checks of `authenticator` on the message (read back from its file when it
    /// went to one, within [`READ_BACK_BUDGET`]). `None` when a message in a file cannot
    /// be read back.
    async fn authenticate(
        &self,
        authenticator: &Authenticator,
        mut message: Incoming,
        planned: &Planned,
    ) -> (Incoming, Option<Checked>) {
        let ip = self.peer.ip();
        let helo = self.helo.clone().unwrap_or_default();
        let mail_from = planned
            .envelopes
            .first()
            .map(|e| e.original_sender.clone())
            .unwrap_or_default();
        // The address it was sent to: the From of a rewrite-from.
        let forwarder = planned
            .envelopes
            .first()
            .and_then(|e| e.recipients.first())
            .map(|r| r.original.clone())
            .unwrap_or_default();
        if let Some(bytes) = message.in_memory() {
            let checked = authenticator
                .check(bytes, ip, &helo, &mail_from, &forwarder)
                .await;
            return (message, Some(checked));
        }
        // Held whole while it is checked: within a budget shared by all sessions, so
        // memory stays bounded however many large messages arrive at once.
        let kib = u32::try_from(message.len().div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, READ_BACK_BUDGET_KIB);
        let Ok(_budget) = READ_BACK_BUDGET.acquire_many(kib).await else {
            return (message, None);
        };
        let spool = self.srv.spool.clone();
        let read = tokio::task::spawn_blocking(move || {
            let bytes = message.read_back(&spool);
            (message, bytes)
        })
        .await;
        match read {
            Ok((message, Ok(Some(bytes)))) => {
                let checked = authenticator
                    .check(&bytes, ip, &helo, &mail_from, &forwarder)
                    .await;
                (message, Some(checked))
            }
            Ok((message, Ok(None))) => (message, None),
            Ok((message, Err(e))) => {
                tracing::error!(peer = %ip, error = %e, "message could not be read back for authentication; not accepted");
                (message, None)
            }
            Err(e) => {
                tracing::error!(peer = %ip, error = %e, "authentication task failed; not accepted");
                (Incoming::new(), None)
            }
        }
    }

    /// The envelopes a transaction becomes, one per rewritten sender (the SRS address
    /// depends on the alias), with their ids and the `Received:` header, made before the
    /// message is read so that it streams into the spool behind that header.
    fn plan(&self, tx: Transaction) -> Planned {
        let now = unix_now();
        let mut groups: Vec<(String, Vec<Recipient>)> = Vec::new();
        let reversed: Vec<String> = tx
            .recipients
            .iter()
            .filter(|a| a.bounce)
            .map(|a| a.original.clone())
            .collect();
        let single = match tx.recipients.as_slice() {
            [one] => Some(one.original.clone()),
            _ => None,
        };
        for acc in tx.recipients {
            let idx = match groups.iter().position(|(s, _)| *s == acc.sender) {
                Some(i) => i,
                None => {
                    groups.push((acc.sender.clone(), Vec::new()));
                    groups.len() - 1
                }
            };
            let list = &mut groups[idx].1;
            for target in acc.targets {
                if list.iter().any(|r| r.address.eq_ignore_ascii_case(&target)) {
                    continue;
                }
                list.push(Recipient {
                    address: target,
                    original: acc.original.clone(),
                    state: RecipientState::Pending,
                    last_error: None,
                    remote: None,
                    notify: acc.notify.clone(),
                    orcpt: acc.orcpt.clone(),
                });
            }
        }
        let ids: Vec<String> = groups.iter().map(|_| Spool::new_id()).collect();
        let helo = self.helo.clone().unwrap_or_default();
        let received = Trace {
            helo: &helo,
            ip: self.peer.ip(),
            hostname: &self.settings.limits.hostname,
            esmtp: self.esmtp,
            smtputf8: tx.smtputf8,
            tls: self.tls.as_deref(),
            id: &ids[0],
            single_recipient: single.as_deref(),
            now,
        }
        .header();
        let client = ClientInfo {
            ip: self.peer.ip().to_string(),
            helo,
            tls: self.tls.clone(),
        };
        let envelopes = groups
            .into_iter()
            .zip(ids)
            .map(|((sender, recipients), id)| Envelope {
                id,
                arrival: now,
                original_sender: tx.sender.clone(),
                sender,
                recipients,
                client: client.clone(),
                attempts: 0,
                next_attempt: now,
                size: 0,
                env_id: tx.env_id.clone(),
                ret_full: tx.ret_full,
                delay_warned: false,
                dsn_owed: Vec::new(),
                held_since: None,
                held_secs: 0,
                sender_authenticated: None,
            })
            .collect();
        Planned {
            envelopes,
            received,
            reversed,
        }
    }

    /// Stores the message under every envelope, all or nothing; then hands the envelopes
    /// to delivery.
    async fn spool(
        &self,
        planned: Planned,
        mut message: Incoming,
        (message_id, subject): (Option<String>, Option<String>),
        auth: Option<(Summary, std::time::Duration)>,
    ) -> std::io::Result<Vec<String>> {
        let reversed = planned.reversed;
        let mut envelopes = planned.envelopes;
        for env in &mut envelopes {
            env.size = message.len();
        }
        let spool = self.srv.spool.clone();
        let (envelopes, result) = tokio::task::spawn_blocking(move || {
            let result = spool.store_incoming(&envelopes, &mut message);
            (envelopes, result)
        })
        .await
        .map_err(std::io::Error::other)?;
        result?;
        let ids = envelopes.iter().map(|e| e.id.clone()).collect();
        let auth_us = auth.as_ref().map(|(_, t)| t.as_micros() as u64);
        let auth = auth.map(|(s, _)| s);
        let auth_line = auth.as_ref().map(Summary::line);
        for env in envelopes {
            let rcpts: Vec<&str> = env.recipients.iter().map(|r| r.address.as_str()).collect();
            tracing::info!(
                event = "received",
                queue_id = %env.id,
                size = env.size,
                from = %env.original_sender,
                sender = %env.sender,
                rcpts = ?rcpts,
                tls = ?env.client.tls,
                auth = auth_line.as_deref(),
                arc_sealed = auth.as_ref().and_then(|a| a.sealed),
                from_rewritten = auth.as_ref().is_some_and(|a| a.from_rewritten),
                auth_us,
                "received"
            );
            self.trace_received(&env, &reversed, &message_id, &subject, auth.as_ref());
            (self.srv.on_spooled)(env);
        }
        Ok(ids)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<'_, S> {
    /// One received event per recipient (and a bounce-reversed one for each reversed
    /// SRS address), linked by queue id and Message-ID.
    fn trace_received(
        &self,
        env: &Envelope,
        reversed: &[String],
        message_id: &Option<String>,
        subject: &Option<String>,
        auth: Option<&Summary>,
    ) {
        let tracer = &self.srv.tracer;
        if !tracer.enabled() {
            return;
        }
        for r in &env.recipients {
            let bounce = reversed.contains(&r.original);
            let mut e = Event::new(Kind::Received)
                .queue_id(&env.id)
                .sender(&env.original_sender)
                .srs_sender(&env.sender)
                .recipient(&r.address)
                .original_recipient(&r.original)
                .remote(&format!("{} ({})", env.client.ip, env.client.helo));
            e.message_id = message_id.clone();
            e.subject = subject.clone();
            e.size = Some(env.size);
            e.tls = env.client.tls.clone();
            e.status = bounce.then(|| "bounced".to_owned());
            if let Some(a) = auth {
                let mut detail = serde_json::Map::new();
                detail.insert("auth".into(), a.to_json());
                e = e.detail_json(detail);
            }
            if bounce {
                let mut b = e.clone();
                b.kind = Kind::BounceReversed;
                b.status = None;
                tracer.record(b);
            }
            tracer.record(e);
        }
    }

    /// One refused event per recipient of a message refused at DATA.
    fn trace_data_refused(
        &self,
        planned: &Planned,
        headers: &HeaderCapture,
        text: &str,
        reason: &str,
    ) {
        let tracer = &self.srv.tracer;
        if !tracer.enabled() {
            return;
        }
        let (message_id, subject) = headers.fields();
        let mut detail = serde_json::Map::new();
        detail.insert("stage".into(), "data".into());
        detail.insert("reason".into(), reason.into());
        if reason == "loop" {
            // Mail-loop insight: who stamped the Received chain, and how often.
            let hosts = headers.received_hosts();
            detail.insert("received_hosts".into(), serde_json::json!(hosts));
        }
        for env in &planned.envelopes {
            for r in &env.recipients {
                // The id the message would have had, so `trace show` finds the refusal.
                let mut e = Event::new(Kind::Refused)
                    .queue_id(&env.id)
                    .sender(&env.original_sender)
                    .recipient(&r.address)
                    .original_recipient(&r.original)
                    .remote(&self.peer.ip().to_string())
                    .reply(text)
                    .detail_json(detail.clone());
                e.message_id = message_id.clone();
                e.subject = subject.clone();
                e.tls = self.tls.clone();
                tracer.record(e);
            }
        }
    }
}

/// A transaction at DATA: its envelopes and their `Received:` header.
struct Planned {
    envelopes: Vec<Envelope>,
    received: String,
    /// Recipients as given that were SRS addresses reversed (bounces going back).
    reversed: Vec<String>,
}

/// DATA's sink: the message goes into an [`Incoming`], whose file writes run on the
/// blocking pool so that a session never holds more than a bounded buffer.
struct SpoolSink<'a> {
    spool: &'a Arc<Spool>,
    /// `None` if a write task died: the message is then not accepted.
    message: Option<Incoming>,
    /// Message-ID and Subject for the trace.
    headers: HeaderCapture,
}

impl DataSink for SpoolSink<'_> {
    fn push(&mut self, bytes: &[u8]) {
        self.headers.push(bytes);
        if let Some(m) = &mut self.message {
            m.push(bytes);
        }
    }

    async fn settle(&mut self) {
        if !self.message.as_ref().is_some_and(Incoming::wants_write) {
            return;
        }
        let (Some(mut message), spool) = (self.message.take(), self.spool.clone()) else {
            return;
        };
        self.message = tokio::task::spawn_blocking(move || {
            message.write_out(&spool);
            message
        })
        .await
        .ok();
    }
}
