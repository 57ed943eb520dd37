//! One SMTP session: the state machine from greeting to QUIT. Replies carry RFC 3463
//! enhanced status codes. A 250 after DATA is sent only once every copy of the message
//! is durably in the spool.

use std::net::SocketAddr;
use std::sync::Arc;

use smtp_proto::{MAIL_RET_FULL, MAIL_SMTPUTF8, Request};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::watch;

use super::Server;
use super::io::{self, DataError, DataSink, Line};
use super::received::Trace;
use super::refusals::{self, Verdict};
use crate::config::BounceSenders;
use crate::policy;
use crate::sender_store::{entry_lifetime, new_token};
use crate::spool::{ClientInfo, Envelope, Incoming, Recipient, RecipientState, Spool};
use crate::srs::{Decoded, ForwardError, ReverseError, unix_now};

/// Replies held back for a pipelined batch are sent once they reach this size.
const FLUSH_AT: usize = 64 * 1024;

/// How a session ended.
pub enum End<S> {
    /// The client asked for STARTTLS and was told to go ahead: upgrade this stream.
    StartTls(S),
    Closed,
}

/// A recipient accepted at RCPT: where it goes, and the sender it goes with.
struct Accepted {
    original: String,
    /// DSN ORCPT as given.
    orcpt: Option<String>,
    targets: Vec<String>,
    sender: String,
    notify: Option<String>,
}

struct Transaction {
    sender: String,
    smtputf8: bool,
    env_id: Option<String>,
    ret_full: bool,
    recipients: Vec<Accepted>,
    /// The stored-form address made for `sender` in this transaction, if one was needed.
    stored_sender: Option<String>,
}

struct Session<'a, S> {
    srv: &'a Server,
    io: BufReader<S>,
    peer: SocketAddr,
    tls: Option<String>,
    helo: Option<String>,
    esmtp: bool,
    tx: Option<Transaction>,
    errors: usize,
    out: Vec<u8>,
}

/// What the loop does after a command.
enum Next {
    Continue,
    Close,
    /// The client broke SMTP's framing: close without reading another command from it.
    Abort,
    StartTls,
}

/// After an abort, what the client still sends is read and dropped for this long (up to
/// [`LINGER_OCTETS`]), so that its kernel gets our reply rather than a reset.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
const LINGER_OCTETS: usize = 1024 * 1024;

pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    srv: &Server,
    stream: S,
    peer: SocketAddr,
    tls: Option<String>,
    mut shutdown: watch::Receiver<bool>,
) -> End<S> {
    let mut s = Session {
        srv,
        // tokio zero-fills it, so every idle session keeps all of it resident: 4 KiB
        // (Postfix's stream buffer) rather than 16 KiB cuts an idle session's memory
        // to a third; DATA reads in 4 KiB steps just as fast.
        io: BufReader::with_capacity(4 * 1024, stream),
        peer,
        tls,
        helo: None,
        esmtp: false,
        tx: None,
        errors: 0,
        out: Vec::with_capacity(512),
    };
    let limits = &srv.limits;
    if s.tls.is_none() {
        s.reply(&format!("220 {} ESMTP srs-relay", limits.hostname));
    }
    let mut line = Vec::with_capacity(1024);
    loop {
        // Pipelining: answer a batch of commands in one write, once the batch is read; a
        // client that streams commands without a pause still gets its replies, so they
        // never pile up here.
        if (s.io.buffer().is_empty() || s.out.len() >= FLUSH_AT) && s.flush().await.is_err() {
            return End::Closed;
        }
        if *shutdown.borrow() {
            s.reply("421 4.3.2 Service shutting down, closing connection");
            let _ = s.flush().await;
            return End::Closed;
        }
        let read = tokio::select! {
            r = tokio::time::timeout(limits.command_timeout, io::read_line(&mut s.io, &mut line, limits.max_line_length)) => r,
            _ = shutdown.changed() => continue,
        };
        let next = match read {
            Err(_) => {
                s.reply("421 4.4.2 Idle timeout, closing connection");
                let _ = s.flush().await;
                return End::Closed;
            }
            Ok(Err(_)) => return End::Closed,
            // A client that half-closed after its last command still gets the replies
            // held back for the batch (a 250 among them).
            Ok(Ok(Line::Eof)) => {
                let _ = s.flush().await;
                return End::Closed;
            }
            Ok(Ok(Line::TooLong)) => s.error("500 5.5.2 Line too long"),
            Ok(Ok(Line::BareLineEnd)) => {
                tracing::warn!(peer = %s.peer.ip(), "bare LF or CR in a command line; closing");
                s.reply("500 5.5.2 Bare LF or CR in command line (RFC 5321 section 2.3.8), closing connection");
                Next::Abort
            }
            Ok(Ok(Line::Complete)) => s.command(&line).await,
        };
        match next {
            Next::Continue => {}
            Next::Close => {
                let _ = s.flush().await;
                return End::Closed;
            }
            Next::Abort => {
                if s.flush().await.is_ok() {
                    s.linger().await;
                }
                return End::Closed;
            }
            Next::StartTls => {
                if s.flush().await.is_err() {
                    return End::Closed;
                }
                // Anything pipelined after STARTTLS is dropped (RFC 3207 §4.2, CVE-2011-0411).
                return End::StartTls(s.io.into_inner());
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<'_, S> {
    fn reply(&mut self, text: &str) {
        self.out.extend_from_slice(text.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    /// Sends the replies written so far. A client that does not read them gets
    /// `command_timeout`, as one that does not write: it must not hold the session for ever.
    async fn flush(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = &self.out;
        let stream = self.io.get_mut();
        let write = async {
            stream.write_all(out).await?;
            stream.flush().await
        };
        match tokio::time::timeout(self.srv.limits.command_timeout, write).await {
            Ok(r) => r?,
            Err(_) => {
                tracing::warn!(peer = %self.peer.ip(), "client does not read its replies; closing");
                return Err(std::io::ErrorKind::TimedOut.into());
            }
        }
        self.out.clear();
        Ok(())
    }

    /// Closes our side, then reads and drops what the client still sends, for a bounded
    /// time and amount: nothing of it is looked at.
    async fn linger(&mut self) {
        use tokio::io::AsyncReadExt;
        let _ = tokio::time::timeout(LINGER, async {
            let _ = self.io.get_mut().shutdown().await;
            let mut scratch = [0u8; 4096];
            let mut dropped = self.io.buffer().len();
            while dropped < LINGER_OCTETS {
                match self.io.get_mut().read(&mut scratch).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => dropped += n,
                }
            }
        })
        .await;
    }

    /// A reply for a failed command; too many of them end the session.
    fn error(&mut self, text: &str) -> Next {
        self.reply(text);
        self.errors += 1;
        if self.errors >= self.srv.limits.max_errors {
            tracing::warn!(peer = %self.peer.ip(), errors = self.errors, "too many errors, closing");
            self.reply("421 4.7.0 Too many errors, closing connection");
            return Next::Close;
        }
        Next::Continue
    }

    async fn command(&mut self, line: &[u8]) -> Next {
        let request = match Request::parse(&mut line.iter()) {
            Ok(r) => r,
            Err(e) => {
                use smtp_proto::Error as E;
                let text = match e {
                    E::UnknownCommand => "500 5.5.2 Command unrecognized".to_owned(),
                    E::InvalidSenderAddress => "501 5.1.7 Bad sender address syntax".to_owned(),
                    E::InvalidRecipientAddress => {
                        "501 5.1.3 Bad recipient address syntax".to_owned()
                    }
                    E::SyntaxError { syntax } => format!("501 5.5.4 Syntax: {syntax}"),
                    E::InvalidParameter { param } => format!("501 5.5.4 Invalid parameter {param}"),
                    E::UnsupportedParameter { param } => {
                        format!(
                            "555 5.5.4 Unsupported parameter {}",
                            param.chars().take(64).collect::<String>()
                        )
                    }
                    _ => "500 5.5.2 Syntax error".to_owned(),
                };
                return self.error(&text);
            }
        };
        match request {
            Request::Ehlo { host } => {
                self.hello(host.into_owned(), true);
                Next::Continue
            }
            Request::Helo { host } => {
                self.hello(host.into_owned(), false);
                Next::Continue
            }
            Request::Mail { from } => self.mail(from.into_owned()),
            Request::Rcpt { to } => self.rcpt(to.into_owned()).await,
            Request::Data => self.data().await,
            Request::Rset => {
                self.tx = None;
                self.reply("250 2.0.0 OK");
                Next::Continue
            }
            Request::Noop { .. } => {
                self.reply("250 2.0.0 OK");
                Next::Continue
            }
            Request::Quit => {
                self.reply("221 2.0.0 Bye");
                Next::Close
            }
            Request::Vrfy { .. } => {
                self.reply(
                    "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery",
                );
                Next::Continue
            }
            Request::Help { .. } => {
                self.reply("214 2.0.0 See RFC 5321");
                Next::Continue
            }
            Request::StartTls => {
                if self.tls.is_some() {
                    self.error("503 5.5.1 TLS already active")
                } else if self.srv.tls.is_none() {
                    self.error("454 4.7.0 TLS not available")
                } else {
                    self.reply("220 2.0.0 Ready to start TLS");
                    Next::StartTls
                }
            }
            Request::Lhlo { .. } => self.error("500 5.5.1 This is not an LMTP server"),
            _ => self.error("502 5.5.1 Command not implemented"),
        }
    }

    fn hello(&mut self, host: String, esmtp: bool) {
        let hostname = &self.srv.limits.hostname;
        if esmtp {
            let mut lines = vec![
                format!("{hostname} Hello {host} [{}]", self.peer.ip()),
                "PIPELINING".to_owned(),
                format!("SIZE {}", self.srv.limits.max_message_size),
                "8BITMIME".to_owned(),
                "SMTPUTF8".to_owned(),
                "ENHANCEDSTATUSCODES".to_owned(),
                "DSN".to_owned(),
            ];
            if self.tls.is_none() && self.srv.tls.is_some() {
                lines.push("STARTTLS".to_owned());
            }
            let last = lines.len() - 1;
            for (i, l) in lines.iter().enumerate() {
                let sep = if i == last { ' ' } else { '-' };
                self.out
                    .extend_from_slice(format!("250{sep}{l}\r\n").as_bytes());
            }
        } else {
            self.reply(&format!("250 {hostname}"));
        }
        self.helo = Some(host);
        self.esmtp = esmtp;
        self.tx = None;
    }

    fn mail(&mut self, from: smtp_proto::MailFrom<String>) -> Next {
        if self.helo.is_none() {
            return self.error("503 5.5.1 Send EHLO or HELO first");
        }
        if self.tx.is_some() {
            return self.error("503 5.5.1 Sender already specified");
        }
        if self.srv.limits.require_tls && self.tls.is_none() {
            return self.error("530 5.7.0 Must issue a STARTTLS command first");
        }
        if from.size > self.srv.limits.max_message_size {
            return self.error("552 5.3.4 Message size exceeds fixed maximum message size");
        }
        self.tx = Some(Transaction {
            sender: from.address,
            smtputf8: from.flags & MAIL_SMTPUTF8 != 0,
            env_id: from.env_id,
            ret_full: from.flags & MAIL_RET_FULL != 0,
            recipients: Vec::new(),
            stored_sender: None,
        });
        self.reply("250 2.1.0 Sender OK");
        Next::Continue
    }

    async fn rcpt(&mut self, to: smtp_proto::RcptTo<String>) -> Next {
        let Some(tx) = &self.tx else {
            return self.error("503 5.5.1 Need MAIL before RCPT");
        };
        if tx.recipients.len() >= self.srv.limits.max_recipients {
            // Not counted as an error: the client is expected to send the rest later.
            self.reply("452 4.5.3 Too many recipients");
            return Next::Continue;
        }
        let address = to.address;
        let srs = &self.srv.srs;
        let ip = self.peer.ip();
        let default_domain = &self.srv.limits.default_domain;
        let rewritten = match self.srv.policy.recipient(&address, ip) {
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
                let stored = self.srv.stored_for_relayed && !srs.is_exempt(&sender, default_domain);
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
                if self.srv.bounce_senders == BounceSenders::Null
                    && !tx.sender.trim().is_empty()
                    && is_srs(srs, &address) =>
            {
                // The same answer whatever the hash says, so it tells a guesser nothing;
                // hence not counted as a refused address either.
                tracing::info!(peer = %ip, rcpt = %address, from = %tx.sender, "SRS address refused: not a bounce");
                return self.error(&format!(
                    "550 5.7.1 <{address}>: SRS addresses accept only bounces (null sender)"
                ));
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
                    Ok((vec![target], tx.sender.clone()))
                }
                Err(Refusal::Permanent(text)) => return self.refuse_rcpt(&text),
                Err(Refusal::Temporary(text)) => Err(text),
            },
            policy::Recipient::Denied => {
                tracing::info!(peer = %ip, rcpt = %address, "recipient refused: relaying denied");
                return self.refuse_rcpt(&format!("550 5.7.1 <{address}>: Relay access denied"));
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
            });
        }
        self.reply("250 2.1.5 Recipient OK");
        Next::Continue
    }

    /// A 5xx for a recipient address, counted against the client's address (trusted
    /// networks are exempt): at `server.max_refused_rcpts` the session ends with 421.
    fn refuse_rcpt(&mut self, text: &str) -> Next {
        let ip = self.peer.ip();
        let refusals = &self.srv.refusals;
        if refusals.enabled()
            && !self.srv.policy.is_trusted(ip)
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
        let srv = self.srv;
        let ttl = entry_lifetime(srv.srs.options().max_age_days);
        let stored = async {
            let token = new_token()?;
            srv.store.put(&token, &sender, ttl).await?;
            Ok::<_, crate::sender_store::StoreError>(
                srv.srs.stored_address(&token, &srv.limits.default_domain),
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
        let srs = &self.srv.srs;
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
                .is_some_and(|(_, d)| self.srv.policy.is_local_domain(d));
            if !ours {
                return Ok(target);
            }
            current = target;
        }
        Err(unknown())
    }

    async fn data(&mut self) -> Next {
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
        let planned = self.plan(tx);
        let limits = &self.srv.limits;
        let mut sink = SpoolSink {
            spool: &self.srv.spool,
            message: Some(Incoming::new()),
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
                self.reply(
                    "550 5.5.2 Message refused: bare LF or CR in data (RFC 5321 section 2.3.8), closing connection",
                );
                return Next::Abort;
            }
            Err(DataError::Eof | DataError::Io(_)) => return Next::Close,
        };
        if report.too_big {
            return self.error("552 5.3.4 Message size exceeds fixed maximum message size");
        }
        if report.nul {
            tracing::warn!(peer = %self.peer.ip(), "message refused: NUL in data");
            return self.error("554 5.6.0 Message refused: NUL character in data");
        }
        if report.received_headers > limits.max_received_headers {
            tracing::warn!(peer = %self.peer.ip(), received = report.received_headers, "message refused: mail loop");
            return self.error("554 5.4.6 Too many Received headers: mail loop detected");
        }
        let Some(message) = sink.message else {
            tracing::error!(peer = %self.peer.ip(), "message lost while being received; not accepted");
            self.reply("451 4.3.0 Local error in processing");
            return Next::Continue;
        };
        match self.spool(planned, message).await {
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

    /// The envelopes a transaction becomes, one per rewritten sender (the SRS address
    /// depends on the alias), with their ids and the `Received:` header, made before the
    /// message is read so that it streams into the spool behind that header.
    fn plan(&self, tx: Transaction) -> Planned {
        let now = unix_now();
        let mut groups: Vec<(String, Vec<Recipient>)> = Vec::new();
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
            hostname: &self.srv.limits.hostname,
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
            })
            .collect();
        Planned {
            envelopes,
            received,
        }
    }

    /// Stores the message under every envelope, all or nothing; then hands the envelopes
    /// to delivery.
    async fn spool(&self, planned: Planned, mut message: Incoming) -> std::io::Result<Vec<String>> {
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
        for env in envelopes {
            let rcpts: Vec<&str> = env.recipients.iter().map(|r| r.address.as_str()).collect();
            tracing::info!(
                queue_id = %env.id,
                size = env.size,
                from = %env.original_sender,
                sender = %env.sender,
                rcpts = ?rcpts,
                tls = ?env.client.tls,
                "received"
            );
            (self.srv.on_spooled)(env);
        }
        Ok(ids)
    }
}

/// A transaction at DATA: its envelopes and their `Received:` header.
struct Planned {
    envelopes: Vec<Envelope>,
    received: String,
}

/// DATA's sink: the message goes into an [`Incoming`], whose file writes run on the
/// blocking pool so that a session never holds more than a bounded buffer.
struct SpoolSink<'a> {
    spool: &'a Arc<Spool>,
    /// `None` if a write task died: the message is then not accepted.
    message: Option<Incoming>,
}

impl DataSink for SpoolSink<'_> {
    fn push(&mut self, bytes: &[u8]) {
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
