//! The SMTP client: sessions to one address, each carrying transactions (one MAIL, an
//! RCPT per recipient, one DATA) one after the other, on mail-send's low-level
//! `SmtpClient`. Between transactions a session may wait in the connection cache (the
//! attempt takes sessions from it and gives them back).
//!
//! STARTTLS is opportunistic, like Postfix's `may` level: used when offered, the
//! certificate not verified; if the handshake fails, the host is tried again in plain
//! text. With `require_tls`, a host without working STARTTLS is skipped instead.

use std::time::{Duration, Instant};

use mail_send::SmtpClient;
use smtp_proto::{
    EXT_8BIT_MIME, EXT_DSN, EXT_SIZE, EXT_SMTP_UTF8, EXT_START_TLS, EhloResponse, Response,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::dns::Target;
use super::message::Message;

/// What the client needs besides the transaction.
pub(crate) struct ClientSettings {
    pub ehlo_name: String,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub data_done_timeout: Duration,
    pub require_tls: bool,
    pub tls: TlsConnector,
    /// Counts the connections opened (metrics).
    pub tracer: crate::trace::Tracer,
}

/// One message to one destination.
pub(crate) struct Transaction<'a> {
    pub id: &'a str,
    /// `""` is the null sender.
    pub sender: &'a str,
    pub env_id: Option<&'a str>,
    pub ret_full: bool,
    pub recipients: Vec<TxRecipient<'a>>,
    /// The message as spooled (CRLF line ends, not dot-stuffed).
    pub body: &'a Message,
}

pub(crate) struct TxRecipient<'a> {
    pub address: &'a str,
    /// The address the client gave (sent as ORCPT where the receiver speaks DSN).
    pub original: &'a str,
    pub notify: Option<&'a str>,
    /// The ORCPT the client gave, passed on as is (RFC 3461 §4.2); else `original` is sent.
    pub orcpt: Option<&'a str>,
}

/// The fate of one recipient at one host; the text becomes `last_error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RcptResult {
    Delivered(String),
    Deferred(String),
    Failed(String),
}

/// What a session with one host decided.
#[derive(Debug)]
pub(crate) enum HostOutcome {
    /// Nothing decided for any recipient (no connection, bad greeting, 4xx to MAIL, ...):
    /// the next host may be tried; the text says what went wrong.
    TryNext(String),
    /// One result per recipient of the transaction, in its order; `dsn`: the receiver
    /// speaks DSN, so NOTIFY went on with the message and further notices are its job.
    /// `tls`: the session's TLS version and cipher, if any.
    Done {
        results: Vec<RcptResult>,
        dsn: bool,
        tls: Option<String>,
    },
}

/// Opens a session to `target`: STARTTLS where offered, and after a failed handshake
/// once more in plain text unless TLS is required (Postfix's `may` level). `id`: the
/// message it is opened for, for the log.
pub(crate) async fn connect(
    target: &Target,
    cfg: &ClientSettings,
    id: &str,
) -> Result<Open, String> {
    match open(target, cfg, id, true).await {
        Opened::Ok(open) => Ok(open),
        Opened::Failed(e) => Err(e),
        // The connection is lost after a failed handshake: come back in plain text.
        Opened::TlsFailed(e) if !cfg.require_tls => {
            tracing::info!(queue_id = %id, remote = %target.describe(), error = %e,
                "STARTTLS failed; retrying in plain text");
            match open(target, cfg, id, false).await {
                Opened::Ok(open) => Ok(open),
                Opened::Failed(e) | Opened::TlsFailed(e) => Err(e),
            }
        }
        Opened::TlsFailed(e) => Err(e),
    }
}

enum Opened {
    Ok(Open),
    /// No session (no connection, bad greeting, EHLO refused, ...).
    Failed(String),
    /// The TLS handshake failed after the server said yes to STARTTLS.
    TlsFailed(String),
}

/// Connects, reads the greeting, says EHLO and starts TLS where offered (`use_tls`).
async fn open(target: &Target, cfg: &ClientSettings, id: &str, use_tls: bool) -> Opened {
    let remote = target.describe();
    let fail = Opened::Failed;

    let mut client = match SmtpClient::connect(target.addr, cfg.connect_timeout).await {
        Ok(c) => c,
        Err(e) => return fail(format!("4.4.1 connect to {remote}: {}", error_text(&e))),
    };
    client.timeout = cfg.command_timeout;

    match timeout(cfg.command_timeout, client.read()).await {
        Ok(Ok(r)) if r.code == 220 => {}
        // A 5xx greeting skips the host too (Postfix: smtp_skip_5xx_greeting).
        Ok(Ok(r)) => return fail(format!("{} (in greeting)", reply_text(&r))),
        Ok(Err(e)) => return fail(format!("4.4.2 {remote}: {} (in greeting)", error_text(&e))),
        Err(_) => return fail(format!("4.4.2 {remote}: timeout waiting for the greeting")),
    }

    let caps = match hello(&mut client, &cfg.ehlo_name).await {
        Ok(c) => c,
        Err(e) => return fail(format!("{e} from {remote}")),
    };

    if use_tls && caps.has(EXT_START_TLS) {
        match client.cmd(b"STARTTLS\r\n").await {
            Ok(r) if r.code == 220 => {
                let name = target.host.trim_end_matches('.');
                let mut client = match client.into_tls(&cfg.tls, name).await {
                    Ok(c) => c,
                    Err(e) => {
                        return Opened::TlsFailed(format!(
                            "4.7.5 TLS handshake with {remote} failed: {}",
                            error_text(&e)
                        ));
                    }
                };
                let tls = crate::tls::describe(client.tls_connection());
                tracing::info!(queue_id = %id, remote = %remote, tls = %tls, "connected");
                cfg.tracer.outbound_connection(Some(&tls));
                // RFC 3207 §4.2: forget what was learnt before TLS.
                let caps = match hello(&mut client, &cfg.ehlo_name).await {
                    Ok(c) => c,
                    Err(e) => return fail(format!("{e} from {remote} (after STARTTLS)")),
                };
                return Opened::Ok(Open::new(Stream::Tls(Box::new(client)), caps));
            }
            Ok(r) if cfg.require_tls => {
                return fail(format!("{} (in reply to STARTTLS)", reply_text(&r)));
            }
            // RFC 3207 §4: the session may go on without TLS.
            Ok(r) => tracing::info!(queue_id = %id, remote = %remote, reply = %reply_text(&r),
                "STARTTLS refused; going on in plain text"),
            Err(e) => {
                return fail(format!(
                    "4.4.2 {remote}: {} (in reply to STARTTLS)",
                    error_text(&e)
                ));
            }
        }
    } else if cfg.require_tls {
        quit(&mut client).await;
        return fail(format!(
            "4.7.4 TLS is required, but {remote} did not offer STARTTLS"
        ));
    }

    tracing::info!(queue_id = %id, remote = %remote, tls = "none", "connected");
    cfg.tracer.outbound_connection(None);
    Opened::Ok(Open::new(Stream::Plain(client), caps))
}

/// A session past EHLO (and STARTTLS), between transactions.
pub(crate) struct Open {
    stream: Stream,
    caps: Capabilities,
    pub(crate) opened: Instant,
    /// Transactions carried so far.
    pub(crate) uses: u32,
    /// TLS version and cipher, for the trace; `None` in plain text.
    tls: Option<String>,
}

enum Stream {
    Plain(SmtpClient<TcpStream>),
    /// Boxed: a TLS session is twenty times the size of a plain one.
    Tls(Box<SmtpClient<TlsStream<TcpStream>>>),
}

impl Open {
    fn new(stream: Stream, caps: Capabilities) -> Open {
        let tls = match &stream {
            Stream::Plain(_) => None,
            Stream::Tls(c) => Some(crate::tls::describe(c.tls_connection())),
        };
        Open {
            stream,
            caps,
            opened: Instant::now(),
            uses: 0,
            tls,
        }
    }

    /// One transaction; true with the outcome if the session is left in a known state
    /// (every command answered), so another may follow.
    pub(crate) async fn transaction(
        &mut self,
        tx: &Transaction<'_>,
        done_timeout: Duration,
    ) -> (HostOutcome, bool) {
        self.uses += 1;
        let reused = self.uses > 1;
        let (mut outcome, clean) = match &mut self.stream {
            Stream::Plain(c) => transaction(c, &self.caps, tx, done_timeout, reused).await,
            Stream::Tls(c) => transaction(&mut **c, &self.caps, tx, done_timeout, reused).await,
        };
        if let HostOutcome::Done { tls, .. } = &mut outcome {
            tls.clone_from(&self.tls);
        }
        (outcome, clean)
    }

    /// QUIT, not waiting long.
    pub(crate) async fn quit(mut self) {
        match &mut self.stream {
            Stream::Plain(c) => quit(c).await,
            Stream::Tls(c) => quit(&mut **c).await,
        }
    }
}

/// What the server said it can do.
struct Capabilities {
    ext: u32,
    /// SIZE limit; 0 = none given.
    size: usize,
}

impl Capabilities {
    fn has(&self, ext: u32) -> bool {
        self.ext & ext != 0
    }
}

/// EHLO, falling back to HELO when EHLO is refused with 5xx (RFC 5321 §3.2).
async fn hello<T: AsyncRead + AsyncWrite + Unpin>(
    client: &mut SmtpClient<T>,
    name: &str,
) -> Result<Capabilities, String> {
    let helo = |r: EhloResponse<String>| Capabilities {
        ext: r.capabilities,
        size: r.size,
    };
    match client.ehlo(name).await {
        Ok(r) => Ok(helo(r)),
        Err(mail_send::Error::UnexpectedReply(r)) if r.code >= 500 => {
            match client.cmd(format!("HELO {name}\r\n")).await {
                Ok(r) if is_2xx(&r) => Ok(Capabilities { ext: 0, size: 0 }),
                Ok(r) => Err(format!("{} (in reply to HELO)", reply_text(&r))),
                Err(e) => Err(format!("4.4.2 {} (in reply to HELO)", error_text(&e))),
            }
        }
        Err(mail_send::Error::UnexpectedReply(r)) => {
            Err(format!("{} (in reply to EHLO)", reply_text(&r)))
        }
        Err(e) => Err(format!("4.4.2 {} (in reply to EHLO)", error_text(&e))),
    }
}

async fn transaction<T: AsyncRead + AsyncWrite + Unpin>(
    client: &mut SmtpClient<T>,
    caps: &Capabilities,
    tx: &Transaction<'_>,
    done_timeout: Duration,
    reused: bool,
) -> (HostOutcome, bool) {
    let n = tx.recipients.len();
    let dsn = caps.has(EXT_DSN);
    let done = |results: Vec<RcptResult>| HostOutcome::Done {
        results,
        dsn,
        tls: None,
    };
    let all = |r: RcptResult| done(vec![r; n]);

    if caps.size > 0 && tx.body.len > caps.size as u64 {
        let e = format!(
            "5.3.4 message size {} exceeds the receiver's limit of {}",
            tx.body.len, caps.size
        );
        return (all(RcptResult::Failed(e)), true);
    }
    let needs_utf8 = !tx.sender.is_ascii() || tx.recipients.iter().any(|r| !r.address.is_ascii());
    if needs_utf8 && !caps.has(EXT_SMTP_UTF8) {
        let e = "5.6.7 SMTPUTF8 is required, but was not offered by the receiver";
        return (all(RcptResult::Failed(e.to_owned())), true);
    }

    // MAIL
    let mut mail = format!("MAIL FROM:<{}>", tx.sender);
    if caps.has(EXT_SIZE) {
        mail.push_str(&format!(" SIZE={}", tx.body.len));
    }
    if caps.has(EXT_8BIT_MIME) && tx.body.eight_bit() {
        mail.push_str(" BODY=8BITMIME");
    }
    if needs_utf8 {
        mail.push_str(" SMTPUTF8");
    }
    if dsn {
        if tx.ret_full {
            mail.push_str(" RET=FULL");
        }
        if let Some(id) = tx.env_id {
            mail.push_str(&format!(" ENVID={}", xtext(id)));
        }
    }
    mail.push_str("\r\n");
    match client.cmd(mail).await {
        Ok(r) if is_2xx(&r) => {}
        // "Bad sequence" in a session that carried a transaction before: the session is
        // confused, not the message refused. A new session decides.
        Ok(r) if r.code == 503 && reused => {
            let e = format!("{} (in reply to MAIL FROM)", reply_text(&r));
            return (HostOutcome::TryNext(e), false);
        }
        Ok(r) if r.code >= 500 => {
            let clean = rset(client).await;
            let e = format!("{} (in reply to MAIL FROM)", reply_text(&r));
            return (all(RcptResult::Failed(e)), clean);
        }
        // No transaction was opened: the session can go on, unless the server is
        // closing it (421).
        Ok(r) => {
            let e = format!("{} (in reply to MAIL FROM)", reply_text(&r));
            return (HostOutcome::TryNext(e), r.code != 421);
        }
        Err(e) => {
            let e = format!("4.4.2 {} (in reply to MAIL FROM)", error_text(&e));
            return (HostOutcome::TryNext(e), false);
        }
    }

    // RCPT, one by one.
    let mut results: Vec<Option<RcptResult>> = vec![None; n];
    let mut accepted = Vec::with_capacity(n);
    for (i, rcpt) in tx.recipients.iter().enumerate() {
        let mut cmd = format!("RCPT TO:<{}>", rcpt.address);
        if dsn {
            if let Some(notify) = rcpt.notify.filter(|n| !n.is_empty()) {
                cmd.push_str(&format!(" NOTIFY={notify}"));
            }
            let orcpt = rcpt.orcpt.unwrap_or(rcpt.original);
            if !orcpt.is_empty() && orcpt.is_ascii() {
                cmd.push_str(&format!(" ORCPT=rfc822;{}", xtext(orcpt)));
            }
        }
        cmd.push_str("\r\n");
        match client.cmd(cmd).await {
            Ok(r) if is_2xx(&r) => accepted.push(i),
            Ok(r) if r.code >= 500 => {
                results[i] = Some(RcptResult::Failed(format!(
                    "{} (in reply to RCPT TO)",
                    reply_text(&r)
                )));
            }
            Ok(r) => {
                results[i] = Some(RcptResult::Deferred(format!(
                    "{} (in reply to RCPT TO)",
                    reply_text(&r)
                )));
            }
            Err(e) => {
                let e = format!("4.4.2 {} (in reply to RCPT TO)", error_text(&e));
                return (done(fill(results, RcptResult::Deferred(e))), false);
            }
        }
    }
    if accepted.is_empty() {
        let clean = rset(client).await;
        let outcome = done(fill(results, RcptResult::Deferred(String::new())));
        return (outcome, clean);
    }

    // DATA: the answer covers every accepted recipient.
    let (verdict, clean) = data(client, tx, done_timeout).await;
    for i in accepted {
        results[i] = Some(verdict.clone());
    }
    let outcome = done(fill(results, RcptResult::Deferred(String::new())));
    (outcome, clean)
}

fn fill(results: Vec<Option<RcptResult>>, rest: RcptResult) -> Vec<RcptResult> {
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| rest.clone()))
        .collect()
}

/// DATA; true with the verdict if every command was answered.
async fn data<T: AsyncRead + AsyncWrite + Unpin>(
    client: &mut SmtpClient<T>,
    tx: &Transaction<'_>,
    done_timeout: Duration,
) -> (RcptResult, bool) {
    match client.cmd(b"DATA\r\n").await {
        Ok(r) if r.code == 354 => {}
        Ok(r) if r.code >= 500 => {
            let clean = rset(client).await;
            let e = format!("{} (in reply to DATA)", reply_text(&r));
            return (RcptResult::Failed(e), clean);
        }
        Ok(r) => {
            let clean = rset(client).await;
            let e = format!("{} (in reply to DATA)", reply_text(&r));
            return (RcptResult::Deferred(e), clean);
        }
        Err(e) => {
            let e = format!("4.4.2 {} (in reply to DATA)", error_text(&e));
            return (RcptResult::Deferred(e), false);
        }
    }
    if let Err(e) = tx.body.write_data(&mut client.stream, client.timeout).await {
        let e = format!("4.4.2 sending the message: {e}");
        return (RcptResult::Deferred(e), false);
    }
    match timeout(done_timeout, client.read()).await {
        // 421 closes the session whatever came before it.
        Ok(Ok(r)) if is_2xx(&r) => (RcptResult::Delivered(reply_text(&r)), true),
        Ok(Ok(r)) if r.code >= 500 => {
            let e = format!("{} (in reply to end of DATA)", reply_text(&r));
            (RcptResult::Failed(e), true)
        }
        Ok(Ok(r)) => {
            let e = format!("{} (in reply to end of DATA)", reply_text(&r));
            (RcptResult::Deferred(e), r.code != 421)
        }
        Ok(Err(e)) => {
            let e = format!("4.4.2 {} (in reply to end of DATA)", error_text(&e));
            (RcptResult::Deferred(e), false)
        }
        Err(_) => {
            let e = "4.4.2 timeout waiting for the reply to end of DATA";
            (RcptResult::Deferred(e.to_owned()), false)
        }
    }
}

/// RSET; true if it was accepted, so the session is ready for the next transaction.
async fn rset<T: AsyncRead + AsyncWrite + Unpin>(client: &mut SmtpClient<T>) -> bool {
    matches!(client.cmd(b"RSET\r\n").await, Ok(r) if is_2xx(&r))
}

/// QUIT, not waiting long: the outcome is already known.
async fn quit<T: AsyncRead + AsyncWrite + Unpin>(client: &mut SmtpClient<T>) {
    let _ = timeout(Duration::from_secs(5), client.cmd(b"QUIT\r\n")).await;
}

fn is_2xx(r: &Response<String>) -> bool {
    (200..300).contains(&r.code)
}

/// `550 5.1.1 text`, one line.
pub(crate) fn reply_text(r: &Response<String>) -> String {
    let message = r.message.split_whitespace().collect::<Vec<_>>().join(" ");
    if r.esc[0] != 0 {
        format!(
            "{} {}.{}.{} {message}",
            r.code, r.esc[0], r.esc[1], r.esc[2]
        )
    } else {
        format!("{} {message}", r.code)
    }
}

fn error_text(e: &mail_send::Error) -> String {
    match e {
        mail_send::Error::Io(e) => e.to_string(),
        mail_send::Error::Timeout => "timeout".to_owned(),
        mail_send::Error::UnparseableReply => "connection lost or unparseable reply".to_owned(),
        mail_send::Error::UnexpectedReply(r) => reply_text(r),
        e => e.to_string(),
    }
}

/// RFC 3461 §4: `+`, `=`, controls, space and non-ASCII as `+XX`.
fn xtext(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xtext_encoding() {
        assert_eq!(xtext("a+b=c d@é"), "a+2Bb+3Dc+20d@+C3+A9");
        assert_eq!(xtext("QQ314159"), "QQ314159");
    }

    #[test]
    fn reply_formatting() {
        let r = Response {
            code: 550,
            esc: [5, 1, 1],
            message: "no such\nuser here".to_owned(),
        };
        assert_eq!(reply_text(&r), "550 5.1.1 no such user here");
        let r = Response {
            code: 451,
            esc: [0, 0, 0],
            message: "later".to_owned(),
        };
        assert_eq!(reply_text(&r), "451 later");
    }
}
