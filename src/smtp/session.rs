//! One SMTP session: the state machine from greeting to QUIT. Replies carry RFC 3463
//! enhanced status codes. A 250 after DATA is sent only once every copy of the message
//! is durably in the spool. This file: the command loop, replies, and every command
//! but RCPT (in `rcpt`) and DATA (in `data`).

use std::net::SocketAddr;

use smtp_proto::{MAIL_RET_FULL, MAIL_SMTPUTF8, Request};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::watch;

use super::io::{self, Line};
use super::{Server, Settings};
use crate::trace::{Event, Kind};

mod data;
mod rcpt;

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
    /// A bounce to one of our SRS addresses, going back to the original sender.
    bounce: bool,
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
    /// The connection's settings, kept whatever a reload does meanwhile.
    settings: &'a Settings,
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
    settings: &Settings,
    stream: S,
    peer: SocketAddr,
    tls: Option<String>,
    mut shutdown: watch::Receiver<bool>,
) -> End<S> {
    let mut s = Session {
        srv,
        settings,
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
    let limits = &settings.limits;
    // After STARTTLS the session starts again: a second event, with the TLS in use.
    let mut connected = Event::new(Kind::Connection).remote(&peer.ip().to_string());
    connected.tls = s.tls.clone();
    srv.tracer.record(connected);
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
        match tokio::time::timeout(self.settings.limits.command_timeout, write).await {
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
        if self.errors >= self.settings.limits.max_errors {
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
                } else if self.settings.tls.is_none() {
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
        let hostname = &self.settings.limits.hostname;
        if esmtp {
            let mut lines = vec![
                format!("{hostname} Hello {host} [{}]", self.peer.ip()),
                "PIPELINING".to_owned(),
                format!("SIZE {}", self.settings.limits.max_message_size),
                "8BITMIME".to_owned(),
                "SMTPUTF8".to_owned(),
                "ENHANCEDSTATUSCODES".to_owned(),
                "DSN".to_owned(),
            ];
            if self.tls.is_none() && self.settings.tls.is_some() {
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
        if self.settings.limits.require_tls && self.tls.is_none() {
            return self.error("530 5.7.0 Must issue a STARTTLS command first");
        }
        if from.size > self.settings.limits.max_message_size {
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
}
