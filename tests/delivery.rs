//! Outbound delivery against real sockets on 127.0.0.1 (ports picked at run time, never
//! 25): a scripted SMTP receiver written here, a fake DNS for the MX cases, and Postfix's
//! `smtp-sink` when it is installed. Every wait is bounded.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use srs_relay::delivery::{
    BoxFuture, DeliverySettings, DnsError, FailureReason, FailureReport, OnFailure, Queue,
    QueueHandle, Resolve,
};
use srs_relay::spool::{
    ClientInfo, Envelope, OwedDsn, OwedReason, Recipient, RecipientState, Spool,
};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const LIMIT: Duration = Duration::from_secs(20);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("srs_relay=debug")
        .try_init();
}

// ---------------------------------------------------------------------------------------
// A scripted SMTP receiver.

/// Where in the dialogue a reply is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    Greeting,
    Mail,
    Rcpt(String),
    /// Only when STARTTLS is offered; a `220` given here is followed by a hang-up
    /// instead of a handshake.
    StartTls,
    Data,
    /// After the final dot.
    Dot,
}

/// Given the stage and the connection number (from 1), the reply to give instead of the
/// default positive one; [`HANG`] answers nothing and keeps the connection open,
/// [`DELAY`] before a reply holds it back a little.
type Script = Arc<dyn Fn(&Stage, usize) -> Option<String> + Send + Sync>;

const HANG: &str = "(hang)";
/// Closes the connection without a reply.
const CLOSE: &str = "(close)";
/// Prefix of a reply given after 300 ms.
const DELAY: &str = "(delay)";

fn accept_all() -> Script {
    Arc::new(|_, _| None)
}

/// One transaction the receiver accepted.
#[derive(Debug, Clone, Default)]
struct Received {
    helo: String,
    /// Everything after `MAIL FROM:`.
    mail: String,
    /// Everything after `RCPT TO:`, for each accepted recipient.
    rcpts: Vec<String>,
    /// The message with dot-stuffing undone, final `.` line excluded.
    body: Vec<u8>,
    tls: bool,
    connection: usize,
}

impl Received {
    /// The `<address>` of each RCPT, without parameters.
    fn to(&self) -> Vec<&str> {
        self.rcpts
            .iter()
            .map(|r| r.split(' ').next().unwrap_or_default())
            .collect()
    }
}

struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
    connections: Arc<AtomicUsize>,
    /// (open now, most open at once)
    open: Arc<Mutex<(usize, usize)>>,
    task: JoinHandle<()>,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl Receiver {
    async fn start(script: Script) -> Receiver {
        Self::start_with(script, None, "127.0.0.1:0").await
    }

    async fn start_with(
        script: Script,
        tls: Option<tokio_rustls::TlsAcceptor>,
        bind: &str,
    ) -> Receiver {
        let listener = TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(Mutex::new((0, 0)));
        let (g, c, o) = (got.clone(), connections.clone(), open.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                {
                    let mut o = o.lock().unwrap();
                    o.0 += 1;
                    o.1 = o.1.max(o.0);
                }
                let (script, tls, got, o) = (script.clone(), tls.clone(), g.clone(), o.clone());
                tokio::spawn(async move {
                    let session = session(Box::new(stream), n, script, tls, got);
                    let _ = tokio::time::timeout(LIMIT, session).await;
                    o.lock().unwrap().0 -= 1;
                });
            }
        });
        Receiver {
            addr,
            got,
            connections,
            open,
            task,
        }
    }

    fn transactions(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn open_now(&self) -> usize {
        self.open.lock().unwrap().0
    }

    fn most_open_at_once(&self) -> usize {
        self.open.lock().unwrap().1
    }

    fn hostport(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn session(
    stream: Box<dyn Io>,
    n: usize,
    script: Script,
    tls: Option<tokio_rustls::TlsAcceptor>,
    got: Arc<Mutex<Vec<Received>>>,
) -> std::io::Result<()> {
    let mut rd = BufReader::new(stream);
    let mut in_tls = false;
    let mut helo = String::new();
    let mut tx: Option<Received> = None;

    macro_rules! reply {
        ($text:expr) => {{
            let text: String = $text;
            if text == HANG {
                tokio::time::sleep(LIMIT).await;
                return Ok(());
            }
            if text == CLOSE {
                return Ok(());
            }
            let text = match text.strip_prefix(DELAY) {
                Some(rest) => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    rest.to_owned()
                }
                None => text,
            };
            rd.get_mut()
                .write_all(format!("{text}\r\n").as_bytes())
                .await?;
            rd.get_mut().flush().await?;
            text
        }};
    }
    let greeting =
        reply!(script(&Stage::Greeting, n).unwrap_or_else(|| "220 receiver.test ESMTP".into()));
    if !greeting.starts_with("220") {
        return Ok(());
    }

    let mut line = Vec::new();
    // Bounded: the session itself runs under LIMIT, and every line is a step forward.
    loop {
        line.clear();
        if rd.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_owned();
        let upper = text.to_ascii_uppercase();
        if upper.starts_with("EHLO ") {
            helo = text[5..].to_owned();
            tx = None;
            let mut caps = vec![
                "receiver.test",
                "8BITMIME",
                "SIZE 10000000",
                "DSN",
                "ENHANCEDSTATUSCODES",
            ];
            if tls.is_some() && !in_tls {
                caps.push("STARTTLS");
            }
            let mut out = String::new();
            for (i, c) in caps.iter().enumerate() {
                let sep = if i + 1 == caps.len() { ' ' } else { '-' };
                out.push_str(&format!("250{sep}{c}\r\n"));
            }
            rd.get_mut().write_all(out.as_bytes()).await?;
        } else if upper.starts_with("HELO ") {
            helo = text[5..].to_owned();
            reply!("250 receiver.test".into());
        } else if let Some(acceptor) = tls.as_ref().filter(|_| upper == "STARTTLS" && !in_tls) {
            if let Some(r) = script(&Stage::StartTls, n) {
                let r = reply!(r);
                if r.starts_with("220") {
                    return Ok(());
                }
                continue;
            }
            reply!("220 2.0.0 go ahead".into());
            // Bytes buffered before the handshake are dropped, as they must be.
            let plain = rd.into_inner();
            let secured = acceptor.accept(plain).await?;
            rd = BufReader::new(Box::new(secured));
            in_tls = true;
            tx = None;
        } else if upper.starts_with("MAIL FROM:") {
            let r = reply!(script(&Stage::Mail, n).unwrap_or_else(|| "250 2.1.0 ok".into()));
            if r.starts_with('2') {
                tx = Some(Received {
                    helo: helo.clone(),
                    mail: text[10..].to_owned(),
                    tls: in_tls,
                    connection: n,
                    ..Default::default()
                });
            }
        } else if upper.starts_with("RCPT TO:") {
            let arg = text[8..].to_owned();
            let addr = arg
                .trim_start_matches('<')
                .split('>')
                .next()
                .unwrap_or_default()
                .to_owned();
            let r = reply!(script(&Stage::Rcpt(addr), n).unwrap_or_else(|| "250 2.1.5 ok".into()));
            if r.starts_with('2')
                && let Some(tx) = &mut tx
            {
                tx.rcpts.push(arg);
            }
        } else if upper == "DATA" {
            let r = reply!(script(&Stage::Data, n).unwrap_or_else(|| "354 go on".into()));
            if !r.starts_with("354") {
                continue;
            }
            let mut body = Vec::new();
            loop {
                line.clear();
                if rd.read_until(b'\n', &mut line).await? == 0 {
                    return Ok(());
                }
                if line == b".\r\n" {
                    break;
                }
                let l = if line.starts_with(b".") {
                    &line[1..]
                } else {
                    &line[..]
                };
                body.extend_from_slice(l);
            }
            let r =
                reply!(script(&Stage::Dot, n).unwrap_or_else(|| "250 2.0.0 queued as X".into()));
            if r.starts_with('2')
                && let Some(mut t) = tx.take()
            {
                t.body = body;
                got.lock().unwrap().push(t);
            }
            tx = None;
        } else if upper == "RSET" {
            tx = None;
            reply!("250 2.0.0 ok".into());
        } else if upper == "QUIT" {
            reply!("221 2.0.0 bye".into());
            return Ok(());
        } else {
            reply!("502 5.5.2 unknown command".into());
        }
    }
}

fn tls_acceptor() -> tokio_rustls::TlsAcceptor {
    use tokio_rustls::rustls::{
        self, ServerConfig, pki_types::PrivateKeyDer, pki_types::PrivatePkcs8KeyDer,
    };
    let ck = rcgen::generate_simple_self_signed(vec!["receiver.test".to_owned()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![ck.cert.der().clone()], key)
            .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

// ---------------------------------------------------------------------------------------
// Fake DNS.

#[derive(Default)]
struct FakeDns {
    mx: HashMap<String, Result<Vec<(u16, String)>, DnsError>>,
    a: HashMap<String, Vec<IpAddr>>,
}

impl Resolve for FakeDns {
    fn mx<'a>(&'a self, d: &'a str) -> BoxFuture<'a, Result<Vec<(u16, String)>, DnsError>> {
        let r = self.mx.get(d).cloned().unwrap_or(Err(DnsError::NotFound));
        Box::pin(async move { r })
    }
    fn addresses<'a>(&'a self, h: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>> {
        let r = self.a.get(h).cloned().ok_or(DnsError::NotFound);
        Box::pin(async move { r })
    }
}

// ---------------------------------------------------------------------------------------
// The queue under test.

struct Harness {
    dir: tempfile::TempDir,
    spool: Arc<Spool>,
    queue: QueueHandle,
    reports: Arc<Mutex<Vec<FailureReport>>>,
    /// Reports still to be refused (as when a DSN cannot be spooled).
    refuse_reports: Arc<AtomicUsize>,
}

fn settings(smarthost: Option<String>) -> DeliverySettings {
    DeliverySettings {
        smarthost,
        retry_intervals: vec![Duration::from_secs(1)],
        max_lifetime: Duration::from_secs(3600),
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(5),
        data_done_timeout: Duration::from_secs(5),
        ehlo_name: "relay.test".into(),
        shutdown_grace: Duration::from_secs(2),
        // The scripts here number connections: one per delivery. The connection cache
        // has its own tests (`cached_*`), with this on.
        connection_cache_time: None,
        ..DeliverySettings::default()
    }
}

fn caching(smarthost: Option<String>, idle: Duration) -> DeliverySettings {
    DeliverySettings {
        connection_cache_time: Some(idle),
        ..settings(smarthost)
    }
}

impl Harness {
    fn start(settings: DeliverySettings, dns: Option<FakeDns>) -> Harness {
        Self::start_recovering(settings, dns, tempfile::tempdir().unwrap(), |_| {})
    }

    /// Opens the spool in `dir`, lets `prepare` store messages first, then starts the
    /// queue with what the spool recovered.
    fn start_recovering(
        settings: DeliverySettings,
        dns: Option<FakeDns>,
        dir: tempfile::TempDir,
        prepare: impl FnOnce(&Path),
    ) -> Harness {
        init_tracing();
        prepare(dir.path());
        let (spool, recovered) = Spool::open(dir.path()).unwrap();
        let spool = Arc::new(spool);
        let reports = Arc::new(Mutex::new(Vec::new()));
        let r = reports.clone();
        let refuse_reports = Arc::new(AtomicUsize::new(0));
        let refuse = refuse_reports.clone();
        let on_failure: OnFailure = Arc::new(move |report| {
            r.lock().unwrap().push(report);
            refuse
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_err()
        });
        let mut queue = Queue::new(settings, spool.clone(), on_failure);
        if let Some(dns) = dns {
            queue = queue.resolver(Arc::new(dns));
        }
        let queue = queue.start(recovered.envelopes);
        Harness {
            dir,
            spool,
            queue,
            reports,
            refuse_reports,
        }
    }

    fn submit(&self, env: &Envelope, message: &[u8]) {
        self.spool.store(env, message).unwrap();
        self.queue.submit(env.clone());
    }

    /// The envelope as stored now, if it is still in the spool.
    fn stored(&self, id: &str) -> Option<Envelope> {
        self.spool.envelope(id).expect("spool readable")
    }

    fn reports(&self) -> Vec<FailureReport> {
        self.reports.lock().unwrap().clone()
    }
}

fn envelope(sender: &str, rcpts: &[&str]) -> Envelope {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    Envelope {
        id: Spool::new_id(),
        arrival: now,
        original_sender: sender.into(),
        sender: sender.into(),
        recipients: rcpts
            .iter()
            .map(|a| Recipient {
                address: (*a).into(),
                original: (*a).into(),
                state: RecipientState::Pending,
                last_error: None,
                remote: None,
                notify: None,
                orcpt: None,
            })
            .collect(),
        client: ClientInfo {
            ip: "192.0.2.7".into(),
            helo: "client.test".into(),
            tls: None,
        },
        attempts: 0,
        next_attempt: now,
        size: 0,
        env_id: None,
        ret_full: false,
        delay_warned: false,
        dsn_owed: Vec::new(),
        held_since: None,
        held_secs: 0,
        sender_authenticated: None,
    }
}

const SIMPLE: &[u8] = b"From: a@origin.test\r\nTo: b@dest.test\r\nSubject: hi\r\n\r\nHello.\r\n";

/// Polls `f` every 50 ms until it holds or `limit` passes.
async fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn delivers_byte_exact_and_removes_from_spool() {
    let rx = Receiver::start(accept_all()).await;
    let h = Harness::start(settings(Some(rx.hostport())), None);
    let message: &[u8] = b"From: a@origin.test\r\nSubject: dots\r\n\r\n.foo\r\n.\r\n..\r\n\
        line with 8-bit \xe9\xff\x80 bytes\r\n. not the end\r\n\r\n\r\nlast\r\n";
    let mut env = envelope("SRS0=h=tt=origin.test=a@relay.test", &["b@dest.test"]);
    env.env_id = Some("QQ 314+159".into());
    env.ret_full = true;
    env.recipients[0].notify = Some("FAILURE,DELAY".into());
    env.recipients[0].original = "alias@relay.test".into();
    h.submit(&env, message);

    assert!(
        wait_for(LIMIT, || h.stored(&env.id).is_none()).await,
        "message left the spool"
    );
    let got = rx.transactions();
    assert_eq!(got.len(), 1);
    let t = &got[0];
    assert_eq!(
        t.body, message,
        "the receiver got exactly the spooled bytes"
    );
    assert_eq!(t.helo, "relay.test");
    assert!(!t.tls);
    assert_eq!(
        t.mail,
        format!(
            "<SRS0=h=tt=origin.test=a@relay.test> SIZE={} BODY=8BITMIME RET=FULL ENVID=QQ+20314+2B159",
            message.len()
        )
    );
    assert_eq!(
        t.rcpts,
        ["<b@dest.test> NOTIFY=FAILURE,DELAY ORCPT=rfc822;alias@relay.test"]
    );
    assert!(
        !h.dir
            .path()
            .join("queue")
            .join(format!("{}.q", env.id))
            .exists()
    );
    assert_eq!(h.stored(&env.id), None);
    assert!(wait_for(LIMIT, || h.queue.queued() == 0).await);
    assert!(h.reports().is_empty());
    h.queue.shutdown().await;
}

#[tokio::test]
async fn rcpt_4xx_then_recovery_on_a_later_attempt() {
    let script: Script = Arc::new(|stage, conn| match stage {
        Stage::Rcpt(_) if conn == 1 => Some("450 4.2.1 mailbox busy, try later".into()),
        _ => None,
    });
    let rx = Receiver::start(script).await;
    let h = Harness::start(settings(Some(rx.hostport())), None);
    let env = envelope("s@origin.test", &["b@dest.test"]);
    h.submit(&env, SIMPLE);

    // First attempt: deferred and written down.
    assert!(
        wait_for(LIMIT, || h.stored(&env.id).is_some_and(|e| e.attempts == 1)).await,
        "first attempt recorded"
    );
    let after_first = h.stored(&env.id);
    if let Some(e) = &after_first {
        assert_eq!(e.recipients[0].state, RecipientState::Pending);
        assert_eq!(
            e.recipients[0].last_error.as_deref(),
            Some("450 4.2.1 mailbox busy, try later (in reply to RCPT TO)")
        );
        assert_eq!(
            e.recipients[0].remote,
            Some(format!("127.0.0.1[127.0.0.1]:{}", rx.addr.port()))
        );
        assert!(e.next_attempt > e.arrival);
    }

    // A later attempt delivers.
    assert!(
        wait_for(LIMIT, || h.stored(&env.id).is_none()).await,
        "delivered later"
    );
    let got = rx.transactions();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].connection, 2);
    assert_eq!(got[0].body, SIMPLE);
    assert!(h.reports().is_empty());
    h.queue.shutdown().await;
}

#[tokio::test]
async fn data_4xx_is_retried() {
    let script: Script = Arc::new(|stage, conn| match stage {
        Stage::Data if conn == 1 => Some("451 4.3.0 queue full".into()),
        Stage::Dot if conn == 2 => Some("452 4.3.1 insufficient storage".into()),
        _ => None,
    });
    let rx = Receiver::start(script).await;
    let h = Harness::start(settings(Some(rx.hostport())), None);
    let env = envelope("s@origin.test", &["b@dest.test"]);
    h.submit(&env, SIMPLE);
    assert!(
        wait_for(LIMIT, || h.stored(&env.id).is_none()).await,
        "delivered on the third try"
    );
    let got = rx.transactions();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].connection, 3);
    assert!(h.reports().is_empty());
    h.queue.shutdown().await;
}

#[tokio::test]
async fn rcpt_5xx_fails_and_is_reported_once() {
    let script: Script = Arc::new(|stage, _| match stage {
        Stage::Rcpt(a) if a.starts_with("nobody@") => {
            Some("550 5.1.1 <nobody@dest.test>: no such user".into())
        }
        Stage::Rcpt(a) if a.starts_with("slow@") => Some("451 4.7.1 greylisted".into()),
        _ => None,
    });
    let rx = Receiver::start(script).await;
    let h = Harness::start(settings(Some(rx.hostport())), None);
    let env = envelope("s@origin.test", &["nobody@dest.test", "slow@dest.test"]);
    h.submit(&env, SIMPLE);

    assert!(
        wait_for(LIMIT, || !h.reports().is_empty()).await,
        "failure reported"
    );
    // Let a few more attempts go by: the failure is not reported again.
    assert!(
        wait_for(LIMIT, || h.stored(&env.id).is_some_and(|e| e.attempts >= 3)).await,
        "retries go on for the deferred recipient"
    );
    let reports = h.reports();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].reason, FailureReason::Permanent);
    assert_eq!(reports[0].failed, [0]);
    let failed = &reports[0].envelope.recipients[0];
    assert_eq!(failed.state, RecipientState::Failed);
    assert_eq!(
        failed.last_error.as_deref(),
        Some("550 5.1.1 <nobody@dest.test>: no such user (in reply to RCPT TO)")
    );

    let stored = h
        .stored(&env.id)
        .expect("still queued for the deferred recipient");
    assert_eq!(stored.recipients[0].state, RecipientState::Failed);
    assert_eq!(stored.recipients[0].last_error, failed.last_error);
    assert_eq!(stored.recipients[1].state, RecipientState::Pending);
    assert!(
        stored.recipients[1]
            .last_error
            .as_deref()
            .unwrap()
            .starts_with("451 4.7.1 greylisted")
    );
    // Both recipients went in one transaction each time, never DATA (none accepted).
    assert!(rx.transactions().is_empty());
    h.queue.shutdown().await;
}

#[tokio::test]
async fn a_failure_report_not_taken_is_owed_and_made_again_without_a_new_delivery() {
    let script: Script = Arc::new(|stage, _| match stage {
        Stage::Rcpt(_) => Some("550 5.1.1 no such user".into()),
        _ => None,
    });
    let rx = Receiver::start(script).await;
    let mut s = settings(Some(rx.hostport()));
    // Next attempts fall on whole seconds: with 2 s, the owed state lasts at least 1 s.
    s.retry_intervals = vec![Duration::from_secs(2)];
    let h = Harness::start(s, None);
    h.refuse_reports.store(1, Ordering::SeqCst);
    let env = envelope("s@origin.test", &["nobody@dest.test"]);
    h.submit(&env, SIMPLE);

    // Refused (as when the DSN cannot be spooled): the report is owed, in the spool.
    assert!(wait_for(LIMIT, || h.reports().len() == 1).await);
    assert!(
        wait_for(LIMIT, || h
            .stored(&env.id)
            .is_some_and(|e| !e.dsn_owed.is_empty()))
        .await
    );
    let kept = h.stored(&env.id).unwrap();
    assert_eq!(kept.recipients[0].state, RecipientState::Failed);
    assert_eq!(
        kept.dsn_owed,
        [OwedDsn {
            reason: OwedReason::Permanent,
            recipients: vec![0]
        }]
    );
    assert!(kept.next_attempt > env.arrival);
    // The next attempt makes the report again, without delivering again: done.
    assert!(wait_for(LIMIT, || h.stored(&env.id).is_none()).await);
    let reports = h.reports();
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert!(reports.iter().all(|r| r.reason == FailureReason::Permanent));
    assert_eq!(reports[1].failed, [0]);
    assert_eq!(
        reports[1].envelope.recipients[0].state,
        RecipientState::Failed
    );
    assert_eq!(rx.connections(), 1, "the receiver was not asked again");
    h.queue.shutdown().await;
}

#[tokio::test]
async fn receiver_down_is_retried_and_stays_pending() {
    let port = free_port(); // nothing listens here
    let h = Harness::start(settings(Some(format!("127.0.0.1:{port}"))), None);
    let env = envelope("s@origin.test", &["b@dest.test"]);
    h.submit(&env, SIMPLE);

    assert!(
        wait_for(LIMIT, || h.stored(&env.id).is_some_and(|e| e.attempts >= 2)).await,
        "retried"
    );
    let e = h.stored(&env.id).unwrap();
    let r = &e.recipients[0];
    assert_eq!(r.state, RecipientState::Pending);
    let err = r.last_error.as_deref().unwrap();
    assert!(
        err.starts_with(&format!("4.4.1 connect to 127.0.0.1[127.0.0.1]:{port}")),
        "{err}"
    );
    assert_eq!(r.remote, Some(format!("127.0.0.1[127.0.0.1]:{port}")));
    assert!(h.reports().is_empty());
    assert_eq!(h.queue.queued(), 1);
    h.queue.shutdown().await;
    assert!(
        h.stored(&env.id).is_some(),
        "kept in the spool across shutdown"
    );
}

#[tokio::test]
async fn same_domain_recipients_share_one_transaction_via_mx() {
    let rx = Receiver::start(accept_all()).await;
    let mut dns = FakeDns::default();
    dns.mx
        .insert("dest.test".into(), Ok(vec![(10, "mx.dest.test".into())]));
    dns.a
        .insert("mx.dest.test".into(), vec!["127.0.0.1".parse().unwrap()]);
    dns.mx.insert("other.test".into(), Err(DnsError::NoRecords)); // implicit MX
    dns.a
        .insert("other.test".into(), vec!["127.0.0.1".parse().unwrap()]);
    let mut s = settings(None);
    s.mx_port = rx.addr.port();
    let h = Harness::start(s, Some(dns));
    let env = envelope("", &["one@dest.test", "two@DEST.test", "three@other.test"]);
    h.submit(&env, SIMPLE);

    assert!(wait_for(LIMIT, || h.stored(&env.id).is_none()).await);
    let mut got = rx.transactions();
    got.sort_by_key(|t| t.rcpts.len());
    assert_eq!(got.len(), 2, "one transaction per destination: {got:?}");
    assert_eq!(got[0].to(), ["<three@other.test>"]);
    assert_eq!(got[1].to(), ["<one@dest.test>", "<two@DEST.test>"]);
    for t in &got {
        assert!(t.mail.starts_with("<> "), "null sender: {}", t.mail);
        assert_eq!(t.body, SIMPLE);
    }
    assert_eq!(rx.connections(), 2);
    h.queue.shutdown().await;
}

#[tokio::test]
async fn mx_fallback_null_mx_and_nxdomain() {
    let rx = Receiver::start(accept_all()).await;
    let mut dns = FakeDns::default();
    // The preferred MX refuses connections (nothing listens on 127.0.0.2).
    dns.mx.insert(
        "dest.test".into(),
        Ok(vec![
            (20, "backup.dest.test".into()),
            (10, "down.dest.test".into()),
        ]),
    );
    dns.a
        .insert("down.dest.test".into(), vec!["127.0.0.2".parse().unwrap()]);
    dns.a.insert(
        "backup.dest.test".into(),
        vec!["127.0.0.1".parse().unwrap()],
    );
    dns.mx
        .insert("null.test".into(), Ok(vec![(0, String::new())]));
    let mut s = settings(None);
    s.mx_port = rx.addr.port();
    let h = Harness::start(s, Some(dns));
    let env = envelope(
        "s@origin.test",
        &["a@dest.test", "b@null.test", "c@nxdomain.test"],
    );
    h.submit(&env, SIMPLE);

    assert!(wait_for(LIMIT, || h.stored(&env.id).is_none()).await);
    let got = rx.transactions();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].to(), ["<a@dest.test>"]);

    let reports = h.reports();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].failed, [1, 2]);
    let e = &reports[0].envelope;
    assert_eq!(e.recipients[0].state, RecipientState::Delivered);
    assert_eq!(
        e.recipients[0].remote,
        Some(format!("backup.dest.test[127.0.0.1]:{}", rx.addr.port()))
    );
    assert!(
        e.recipients[1]
            .last_error
            .as_deref()
            .unwrap()
            .starts_with("5.1.10 ")
    );
    assert!(
        e.recipients[2]
            .last_error
            .as_deref()
            .unwrap()
            .starts_with("5.1.2 ")
    );
    h.queue.shutdown().await;
}

#[tokio::test]
async fn expires_after_max_lifetime() {
    let script: Script = Arc::new(|stage, _| match stage {
        Stage::Rcpt(_) => Some("450 4.2.0 still busy".into()),
        _ => None,
    });
    let rx = Receiver::start(script).await;
    let mut s = settings(Some(rx.hostport()));
    s.max_lifetime = Duration::from_secs(2);
    let h = Harness::start(s, None);
    let env = envelope("s@origin.test", &["b@dest.test"]);
    h.submit(&env, SIMPLE);

    assert!(
        wait_for(LIMIT, || h.stored(&env.id).is_none()).await,
        "expired and removed"
    );
    let reports = h.reports();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].reason, FailureReason::Expired);
    assert_eq!(reports[0].failed, [0]);
    let r = &reports[0].envelope.recipients[0];
    assert_eq!(r.state, RecipientState::Failed);
    assert_eq!(
        r.last_error.as_deref(),
        Some("expired: 450 4.2.0 still busy (in reply to RCPT TO)")
    );
    assert!(rx.connections() >= 2, "tried more than once first");
    h.queue.shutdown().await;
}

#[tokio::test]
async fn starttls_is_used_when_offered() {
    let rx = Receiver::start_with(accept_all(), Some(tls_acceptor()), "127.0.0.1:0").await;
    let mut s = settings(Some(rx.hostport()));
    s.require_tls = true;
    let h = Harness::start(s, None);
    let env = envelope("s@origin.test", &["b@dest.test"]);
    let message: &[u8] = b"Subject: tls\r\n\r\n.dot\r\n\xff\r\n";
    h.submit(&env, message);
    assert!(wait_for(LIMIT, || h.stored(&env.id).is_none()).await);
    let got = rx.transactions();
    assert_eq!(got.len(), 1);
    assert!(got[0].tls, "the transaction ran inside TLS");
    assert_eq!(got[0].body, message);
    h.queue.shutdown().await;
}

#[tokio::test]
async fn failed_or_refused_starttls_falls_back_to_plain_text() {
    // Connection 1: STARTTLS accepted, then the "handshake" fails (hang-up): the client
    // comes back in plain text on connection 2. Connection 3: STARTTLS refused with 454:
    // the client goes on in plain text on the same connection.
    let script: Script = Arc::new(|stage, conn| match (stage, conn) {
        (Stage::StartTls, 1) => Some("220 2.0.0 go ahead".into()),
        (Stage::StartTls, _) => Some("454 4.7.0 TLS not available".into()),
        _ => None,
    });
    let rx = Receiver::start_with(script, Some(tls_acceptor()), "127.0.0.1:0").await;
    let h = Harness::start(settings(Some(rx.hostport())), None);
    let first = envelope("s@origin.test", &["b@dest.test"]);
    h.submit(&first, SIMPLE);
    assert!(wait_for(LIMIT, || h.stored(&first.id).is_none()).await);
    let second = envelope("s@origin.test", &["c@dest.test"]);
    h.submit(&second, SIMPLE);
    assert!(wait_for(LIMIT, || h.stored(&second.id).is_none()).await);

    let got = rx.transactions();
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].connection, got[0].tls), (2, false));
    assert_eq!((got[1].connection, got[1].tls), (3, false));
    assert_eq!(rx.connections(), 3);
    h.queue.shutdown().await;
}

/// Delivers `n` messages one after the other, each once the one before is gone.
async fn deliver_one_by_one(h: &Harness, n: usize) {
    for i in 0..n {
        let env = envelope("s@origin.test", &[&format!("r{i}@dest.test")]);
        h.submit(&env, SIMPLE);
        assert!(
            wait_for(LIMIT, || h.stored(&env.id).is_none()).await,
            "message {i} delivered"
        );
    }
}

#[tokio::test]
async fn cached_sessions_carry_the_next_messages_then_quit() {
    let rx = Receiver::start(accept_all()).await;
    let h = Harness::start(caching(Some(rx.hostport()), Duration::from_secs(3)), None);
    deliver_one_by_one(&h, 5).await;
    let got = rx.transactions();
    assert_eq!(got.len(), 5);
    assert!(got.iter().all(|t| t.connection == 1), "{got:?}");
    assert_eq!(got[4].to(), ["<r4@dest.test>"]);
    assert_eq!(rx.connections(), 1);
    // Idle for longer than the cache time: QUIT, and the receiver's side closes.
    assert!(
        wait_for(LIMIT, || rx.open_now() == 0).await,
        "idle session closed"
    );
    deliver_one_by_one(&h, 1).await;
    assert_eq!(rx.connections(), 2);
    h.queue.shutdown().await;
}

#[tokio::test]
async fn cached_tls_sessions_stay_in_tls() {
    let rx = Receiver::start_with(accept_all(), Some(tls_acceptor()), "127.0.0.1:0").await;
    let mut s = caching(Some(rx.hostport()), Duration::from_secs(5));
    s.require_tls = true;
    let h = Harness::start(s, None);
    deliver_one_by_one(&h, 3).await;
    let got = rx.transactions();
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|t| t.tls && t.connection == 1), "{got:?}");
    h.queue.shutdown().await;
    // Shutdown QUITs the sessions left in the cache.
    assert!(wait_for(LIMIT, || rx.open_now() == 0).await);
}

#[tokio::test]
async fn cached_session_the_receiver_dropped_is_replaced_without_a_retry() {
    // The receiver hangs up on the second MAIL of connection 1, as a server does when its
    // idle timer fired: the message goes over a new connection in the same attempt.
    let mails = Arc::new(AtomicUsize::new(0));
    let m = mails.clone();
    let script: Script = Arc::new(move |stage, conn| match stage {
        Stage::Mail if conn == 1 && m.fetch_add(1, Ordering::SeqCst) == 1 => Some(CLOSE.to_owned()),
        _ => None,
    });
    let rx = Receiver::start(script).await;
    let mut s = caching(Some(rx.hostport()), Duration::from_secs(5));
    // A retry would show as a wait of a minute.
    s.retry_intervals = vec![Duration::from_secs(60)];
    let h = Harness::start(s, None);
    deliver_one_by_one(&h, 2).await;
    let got = rx.transactions();
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].connection, got[1].connection), (1, 2));
    assert!(h.reports().is_empty());
    h.queue.shutdown().await;
}

#[tokio::test]
async fn a_4xx_to_mail_on_a_cached_session_is_the_servers_answer_not_a_lost_session() {
    // A rate limit: the second MAIL gets 450. The message waits for its retry, and the
    // session, still good, is kept: no new connections are opened to get around it.
    let mails = Arc::new(AtomicUsize::new(0));
    let m = mails.clone();
    let script: Script = Arc::new(move |stage, _| match stage {
        Stage::Mail if m.fetch_add(1, Ordering::SeqCst) == 1 => {
            Some("450 4.7.1 slow down".to_owned())
        }
        _ => None,
    });
    let rx = Receiver::start(script).await;
    let h = Harness::start(caching(Some(rx.hostport()), Duration::from_secs(10)), None);
    deliver_one_by_one(&h, 2).await;
    assert_eq!(mails.load(Ordering::SeqCst), 3);
    assert_eq!(rx.transactions().len(), 2);
    assert_eq!(rx.connections(), 1);
    h.queue.shutdown().await;
}

#[tokio::test]
async fn a_503_to_mail_on_a_cached_session_is_tried_again_on_a_new_one() {
    // The receiver lost track of connection 1's state: its second MAIL gets 503. That
    // is no verdict on the message, which goes over a new connection at once.
    let mails = Arc::new(AtomicUsize::new(0));
    let m = mails.clone();
    let script: Script = Arc::new(move |stage, conn| match stage {
        Stage::Mail if conn == 1 && m.fetch_add(1, Ordering::SeqCst) == 1 => {
            Some("503 5.5.1 bad sequence of commands".to_owned())
        }
        _ => None,
    });
    let rx = Receiver::start(script).await;
    let mut s = caching(Some(rx.hostport()), Duration::from_secs(10));
    s.retry_intervals = vec![Duration::from_secs(60)];
    let h = Harness::start(s, None);
    deliver_one_by_one(&h, 2).await;
    let got = rx.transactions();
    assert_eq!((got[0].connection, got[1].connection), (1, 2));
    assert!(h.reports().is_empty(), "{:?}", h.reports());
    h.queue.shutdown().await;
}

#[tokio::test]
async fn cached_sessions_are_not_used_past_their_reuse_time_or_when_turned_off() {
    let rx = Receiver::start(accept_all()).await;
    let mut s = caching(Some(rx.hostport()), Duration::from_secs(10));
    s.connection_reuse_time = Duration::from_millis(700);
    let h = Harness::start(s, None);
    deliver_one_by_one(&h, 1).await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    deliver_one_by_one(&h, 1).await;
    assert_eq!(rx.connections(), 2);
    h.queue.shutdown().await;

    let rx = Receiver::start(accept_all()).await;
    let h = Harness::start(settings(Some(rx.hostport())), None);
    deliver_one_by_one(&h, 3).await;
    assert_eq!(rx.connections(), 3);
    // Each session QUIT right after its message.
    assert!(wait_for(LIMIT, || rx.open_now() == 0).await);
    h.queue.shutdown().await;
}

async fn deliver_three_slowly(max_per_destination: usize) -> usize {
    let script: Script = Arc::new(|stage, _| match stage {
        Stage::Mail => Some(format!("{DELAY}250 2.1.0 ok")),
        _ => None,
    });
    let rx = Receiver::start(script).await;
    let mut s = settings(Some(rx.hostport()));
    s.max_per_destination = max_per_destination;
    let h = Harness::start(s, None);
    let envs: Vec<Envelope> = (0..3)
        .map(|_| envelope("s@origin.test", &["b@dest.test"]))
        .collect();
    for e in &envs {
        h.submit(e, SIMPLE);
    }
    assert!(wait_for(LIMIT, || envs.iter().all(|e| h.stored(&e.id).is_none())).await);
    assert_eq!(rx.transactions().len(), 3);
    h.queue.shutdown().await;
    rx.most_open_at_once()
}

#[tokio::test]
async fn per_destination_limit_holds() {
    assert_eq!(deliver_three_slowly(1).await, 1);
    // The receiver does see parallel connections where they are allowed.
    assert!(deliver_three_slowly(3).await > 1);
}

#[tokio::test]
async fn require_tls_defers_when_starttls_is_missing() {
    let rx = Receiver::start(accept_all()).await;
    let mut s = settings(Some(rx.hostport()));
    s.require_tls = true;
    let h = Harness::start(s, None);
    let env = envelope("s@origin.test", &["b@dest.test"]);
    h.submit(&env, SIMPLE);
    assert!(wait_for(LIMIT, || h.stored(&env.id).is_some_and(|e| e.attempts >= 1)).await);
    let e = h.stored(&env.id).unwrap();
    assert_eq!(e.recipients[0].state, RecipientState::Pending);
    assert!(
        e.recipients[0]
            .last_error
            .as_deref()
            .unwrap()
            .starts_with("4.7.4 TLS is required")
    );
    assert!(rx.transactions().is_empty());
    h.queue.shutdown().await;
}

#[tokio::test]
async fn recovered_envelopes_are_delivered_and_finished_ones_removed() {
    let rx = Receiver::start(accept_all()).await;
    let dir = tempfile::tempdir().unwrap();
    let pending = envelope("s@origin.test", &["b@dest.test"]);
    let mut finished = envelope("s@origin.test", &["c@dest.test"]);
    finished.recipients[0].state = RecipientState::Delivered;
    let (p, f) = (pending.clone(), finished.clone());
    let h = Harness::start_recovering(settings(Some(rx.hostport())), None, dir, move |path| {
        let (spool, _) = Spool::open(path).unwrap();
        spool.store(&p, SIMPLE).unwrap();
        spool.store(&f, SIMPLE).unwrap();
    });
    assert!(
        wait_for(LIMIT, || h.stored(&pending.id).is_none()
            && h.stored(&finished.id).is_none())
        .await
    );
    let got = rx.transactions();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].to(), ["<b@dest.test>"]);
    h.queue.shutdown().await;
}

#[tokio::test]
async fn shutdown_is_prompt_and_leaves_the_spool_alone() {
    // A receiver that greets and then says nothing: the attempt under way is cut at the
    // end of the grace period.
    let script: Script = Arc::new(|stage, _| match stage {
        Stage::Mail => Some(HANG.into()),
        _ => None,
    });
    let rx = Receiver::start(script).await;
    let mut s = settings(Some(rx.hostport()));
    s.command_timeout = Duration::from_secs(30);
    s.shutdown_grace = Duration::from_millis(500);
    let h = Harness::start(s, None);
    let env = envelope("s@origin.test", &["b@dest.test"]);
    h.submit(&env, SIMPLE);
    assert!(wait_for(LIMIT, || rx.connections() == 1).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    h.queue.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let e = h.stored(&env.id).expect("still in the spool");
    assert_eq!(e.attempts, 0, "the cut attempt was not recorded");
    assert_eq!(e.recipients[0].state, RecipientState::Pending);
    // Submitting after shutdown does nothing (and does not panic).
    h.queue.submit(env.clone());
    h.queue.shutdown().await;
}

/// Postfix's own test receiver (`apt-get install postfix`).
#[tokio::test]
async fn delivers_to_postfix_smtp_sink() {
    let sink = Path::new("/usr/sbin/smtp-sink");
    // scripts/test.sh installs it; a missing peer is a failure, never a skip.
    assert!(
        sink.exists(),
        "{} is missing: apt-get install postfix",
        sink.display()
    );
    let dumps = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cmd = std::process::Command::new(sink);
    // smtp-sink refuses to run as root without -u.
    if unsafe { libc::geteuid() } == 0 {
        cmd.args(["-u", "root"]);
    }
    let mut child = cmd
        .arg("-d")
        .arg(format!("{}/%M.", dumps.path().display()))
        .arg(format!("127.0.0.1:{port}"))
        .arg("100")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start smtp-sink");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let listening = wait_for(Duration::from_secs(5), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    if !listening {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "smtp-sink did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _child = Kill(child);

    let h = Harness::start(settings(Some(format!("127.0.0.1:{port}"))), None);
    let message: &[u8] = b"From: a@origin.test\r\nTo: b@dest.test\r\nSubject: sink\r\n\r\n.leading dot\r\n.\r\nbody\r\n";
    let env = envelope(
        "SRS0=x=yy=origin.test=a@relay.test",
        &["b@dest.test", "c@dest.test"],
    );
    h.submit(&env, message);
    assert!(
        wait_for(LIMIT, || h.stored(&env.id).is_none()).await,
        "delivered to smtp-sink"
    );
    // The connection (counted) ended when the dump is written; wait for the file.
    let dump = {
        let mut found = None;
        wait_for(LIMIT, || {
            found = std::fs::read_dir(dumps.path())
                .unwrap()
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.is_file() && std::fs::metadata(p).is_ok_and(|m| m.len() > 0));
            found.is_some()
        })
        .await;
        std::fs::read(found.expect("a dump file")).unwrap()
    };
    let text = String::from_utf8_lossy(&dump).into_owned();
    assert!(text.contains("X-Helo-Args: relay.test\n"), "{text}");
    assert!(
        text.contains("X-Mail-Args: <SRS0=x=yy=origin.test=a@relay.test>"),
        "{text}"
    );
    assert!(text.contains("X-Rcpt-Args: <b@dest.test>"), "{text}");
    assert!(text.contains("X-Rcpt-Args: <c@dest.test>"), "{text}");
    // After smtp-sink's three-line Received header: the message, lines ending in LF,
    // then an empty line.
    let start = text
        .find("From: a@origin.test")
        .expect("message in the dump");
    let expected = String::from_utf8_lossy(message).replace("\r\n", "\n") + "\n";
    assert_eq!(&text[start..], expected);
    h.queue.shutdown().await;
}
