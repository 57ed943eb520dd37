//! Fault campaign against the real relay binary: a downstream that refuses for a while or
//! drops connections in the middle of DATA, a spool on a full disk (a real small tmpfs in
//! a user+mount namespace), hostile clients, and more connections than allowed.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A relay forwarding john@forward.example to john@home.example through `smarthost`,
/// retrying every second.
fn relay_to(smarthost: &str, server_extra: &str) -> Relay {
    Relay::start_full(
        server_extra,
        &format!("smarthost = \"{smarthost}\"\n"),
        "[queue]\nretry_intervals = [\"1s\"]\n",
    )
}

/// Sends `ids` (one numbered message of `size` octets each) over one session; each must
/// get a 250.
fn send_all(addr: &str, ids: &[String], size: usize) {
    let mut s = Session::open(addr, Duration::from_secs(20)).unwrap();
    for id in ids {
        let r = s
            .send(
                "bob@sender.example",
                "john@forward.example",
                &numbered_message(id, size),
            )
            .unwrap();
        assert!(
            matches!(&r, Outcome::Reply(r) if r.starts_with("250")),
            "{id}: {r:?}"
        );
    }
    s.quit();
}

/// How many times each message id arrived at `receiver`.
fn arrivals(receiver: &Receiver) -> HashMap<String, usize> {
    let mut by_id = HashMap::new();
    for m in receiver.messages() {
        *by_id
            .entry(message_id(&m.data).expect("a message of ours"))
            .or_default() += 1;
    }
    by_id
}

/// Waits until every id in `ids` arrived, then checks each arrived exactly once and
/// whole, and nothing else arrived (no DSN: nothing failed for good).
fn assert_all_arrive_once(receiver: &Receiver, relay: &Relay, ids: &[String], size: usize) {
    assert_all_arrive_once_from(receiver, relay, ids, size, || relay.spooled());
}

/// As [`assert_all_arrive_once`], with the spool counted by `spooled`.
fn assert_all_arrive_once_from(
    receiver: &Receiver,
    relay: &Relay,
    ids: &[String],
    size: usize,
    spooled: impl Fn() -> usize,
) {
    let arrived = wait_until(Duration::from_secs(40), || {
        let got = arrivals(receiver);
        ids.iter().all(|id| got.contains_key(id))
    });
    let got = arrivals(receiver);
    assert!(
        arrived,
        "{} of {} arrived; log:\n{}",
        got.len(),
        ids.len(),
        relay.log()
    );
    assert!(wait_until(Duration::from_secs(10), || spooled() == 0));
    assert_eq!(got.len(), ids.len(), "{got:?}");
    let twice: Vec<_> = got.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    for m in receiver.messages() {
        let id = message_id(&m.data).unwrap();
        assert_bytes_eq(
            without_our_received(&m.data),
            &numbered_message(&id, size),
            &id,
        );
        assert_eq!(m.rcpt_to, ["john@home.example"]);
    }
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

#[test]
fn downstream_refusing_for_a_while_then_recovering_gets_everything_exactly_once() {
    let receiver = Receiver::start();
    // First every RCPT is greylisted, then the final dot gets a 4xx: both before and
    // after the body went over, nothing may count as delivered.
    receiver.script.lock().unwrap().rcpt.insert(
        "home.example".into(),
        "451 4.7.1 greylisted, try later".into(),
    );
    let relay = relay_to(&receiver.addr(), "");
    let n = 40;
    let ids = ids("refused-", n);
    send_all(&relay.addr(), &ids, 3000);

    assert!(
        wait_until(Duration::from_secs(20), || relay
            .log()
            .matches("deferred")
            .count()
            >= n),
        "log:\n{}",
        relay.log()
    );
    {
        let mut s = receiver.script.lock().unwrap();
        s.rcpt.clear();
        s.data = "452 4.3.1 mailbox full, try later".into();
    }
    let deferred = relay.log().matches("deferred").count();
    assert!(
        wait_until(Duration::from_secs(20), || relay
            .log()
            .matches("deferred")
            .count()
            >= deferred + n),
        "log:\n{}",
        relay.log()
    );
    assert_eq!(receiver.count(), 0);
    receiver.script.lock().unwrap().data = "250 2.0.0 queued".into();
    assert_all_arrive_once(&receiver, &relay, &ids, 3000);
    let log = relay.log();
    assert!(
        log.contains("451 4.7.1") && log.contains("452 4.3.1"),
        "{log}"
    );
}

#[test]
fn downstream_dropping_connections_mid_data_gets_everything_exactly_once() {
    let receiver = Receiver::start();
    let n = 20;
    let cuts = 30;
    {
        let mut s = receiver.script.lock().unwrap();
        s.cut_data = cuts;
        // Well into the body, while the relay is still writing it (messages are 64 KB).
        s.cut_data_after = 20_000;
    }
    let relay = relay_to(&receiver.addr(), "");
    let ids = ids("cut-", n);
    send_all(&relay.addr(), &ids, 64 * 1024);
    assert_all_arrive_once(&receiver, &relay, &ids, 64 * 1024);
    assert_eq!(
        receiver.script.lock().unwrap().cut_data,
        0,
        "not every cut happened"
    );
    assert!(
        relay.log().matches("deferred").count() >= cuts,
        "{}",
        relay.log()
    );
}

/// `unshare -rm` (a user and a mount namespace) must work here: CI runs on such machines,
/// so a machine where it does not is broken, and the disk-full test fails rather than
/// skips.
fn assert_user_namespaces_work() {
    let out = Command::new("unshare")
        .args(["-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"])
        .output()
        .expect("unshare (util-linux) is installed");
    assert!(
        out.status.success(),
        "cannot mount a tmpfs in a user+mount namespace (unshare -rm): {}; \
         the disk-full test needs unprivileged user namespaces",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The relay's spool queue as the relay sees it: the tmpfs is mounted in its own mount
/// namespace only, reached through /proc/PID/root.
fn queued_in_namespace(relay: &Relay) -> usize {
    let q = format!(
        "/proc/{}/root{}/spool/queue",
        relay.pid(),
        relay.dir.path().display()
    );
    std::fs::read_dir(&q)
        .unwrap_or_else(|e| panic!("{q}: {e}"))
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "q"))
        .count()
}

#[test]
fn spool_disk_full_end_to_end() {
    assert_user_namespaces_work();
    let sink_port = free_port(); // nobody there yet: everything stays in the spool
    let mut relay = Relay::prepare_full(
        "",
        &format!("smarthost = \"127.0.0.1:{sink_port}\"\n"),
        "[queue]\nretry_intervals = [\"1s\"]\n",
    );
    let spool = relay.dir.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    relay.wrapper = [
        "unshare",
        "-rm",
        "sh",
        "-c",
        r#"mount -t tmpfs -o size=1m tmpfs "$0" || exit 77; exec "$@""#,
        spool.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    relay.spawn();
    let size = 100 * 1024;

    // Fill it: about nine messages fit in 1 MiB; then 452 4.3.1 and nothing kept.
    let mut accepted = Vec::new();
    let mut full = 0;
    let mut s = Session::open(&relay.addr(), Duration::from_secs(20)).unwrap();
    for i in 0..40 {
        let id = format!("full-{i}");
        match s
            .send(
                "bob@sender.example",
                "john@forward.example",
                &numbered_message(&id, size),
            )
            .unwrap()
        {
            Outcome::Reply(r) if r.starts_with("250") => accepted.push(id),
            Outcome::Reply(r) if r.starts_with("452 4.3.1") => {
                full += 1;
                if full == 3 {
                    break;
                }
            }
            other => panic!("{id}: {other:?}; log:\n{}", relay.log()),
        }
    }
    assert_eq!(full, 3, "the spool never filled up; log:\n{}", relay.log());
    assert!(accepted.len() >= 3, "{accepted:?}");
    // The session goes on, and the relay takes new connections.
    assert!(s.cmd("NOOP").unwrap().starts_with("250"));
    s.quit();
    let mut probe = Session::open(&relay.addr(), Duration::from_secs(20)).unwrap();
    assert!(probe.cmd("NOOP").unwrap().starts_with("250"));
    probe.quit();
    assert!(relay.is_running(), "log:\n{}", relay.log());
    assert_eq!(queued_in_namespace(&relay), accepted.len());
    assert!(
        relay.log().contains("spool write failed"),
        "{}",
        relay.log()
    );

    // Space comes back as the sink drains the spool; everything that got a 250 arrives.
    let receiver = Receiver::start_on(sink_port);
    assert_all_arrive_once_from(&receiver, &relay, &accepted, size, || {
        queued_in_namespace(&relay)
    });
    assert_eq!(queued_in_namespace(&relay), 0);

    // New mail is accepted again.
    let again = ids("after-", 3);
    send_all(&relay.addr(), &again, size);
    let mut all = accepted.clone();
    all.extend(again);
    assert_all_arrive_once_from(&receiver, &relay, &all, size, || {
        queued_in_namespace(&relay)
    });
    assert!(relay.is_running());
}

/// Reads replies until EOF or `limit`; returns them and whether the server closed.
fn read_all(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let end = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while Instant::now() < end {
        match stream.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (got, true),
        }
    }
    (got, false)
}

fn connect(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut b = [0u8; 512];
    let n = s.read(&mut b).unwrap();
    assert!(
        b[..n].starts_with(b"220"),
        "{:?}",
        String::from_utf8_lossy(&b[..n])
    );
    s
}

/// Writes `bytes` from another thread (so replies can be read meanwhile) and reads until
/// the server closes or `limit`; returns the replies and whether the server closed.
fn flood(addr: &str, prologue: &str, bytes: Vec<u8>, limit: Duration) -> (String, bool) {
    let mut s = connect(addr);
    s.write_all(prologue.as_bytes()).unwrap();
    let mut w = s.try_clone().unwrap();
    w.set_write_timeout(Some(limit)).unwrap();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&bytes);
    });
    let (got, closed) = read_all(&mut s, limit);
    drop(s);
    writer.join().unwrap();
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

/// Open descriptors of the relay: a session that is still held shows up here.
fn fds(relay: &Relay) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", relay.pid()))
        .unwrap()
        .count()
}

#[test]
fn hostile_clients_get_the_right_errors_and_memory_stays_bounded() {
    let receiver = Receiver::start();
    let relay = relay_to(
        &receiver.addr(),
        "command_timeout = \"2s\"\ndata_timeout = \"2s\"\nmax_message_size = 1000000\nmax_connections_per_ip = 1000\n",
    );
    let addr = relay.addr();
    send_all(&addr, &ids("before-", 1), 2000);
    assert!(wait_until(Duration::from_secs(20), || receiver.count() == 1));
    let idle_fds = fds(&relay);
    let rss_before = relay.rss_kib();

    // Overlong command lines: 500 5.5.2, and the session goes on (also after 10 MB
    // without a line end).
    let mut c = Client::connect(&addr);
    c.cmd("EHLO client.test");
    let long = format!("MAIL FROM:<{}@b.example>", "a".repeat(5000));
    assert!(c.cmd(&long).starts_with("500 5.5.2"));
    c.send(&vec![b'x'; 10 << 20]);
    let r = c.cmd("");
    assert!(r.starts_with("500 5.5.2"), "{r}");
    assert!(c.cmd("NOOP").starts_with("250"));
    // Bare LF in DATA: refused, nothing kept, and the session closed.
    c.cmd("MAIL FROM:<a@b.example>");
    c.cmd("RCPT TO:<john@forward.example>");
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(b"Subject: x\r\n\r\nsmuggled\n.\nMAIL FROM:<evil@x>\r\n.\r\n");
    let r = c.reply();
    assert!(r.starts_with("550 5.5.2"), "{r}");
    assert_eq!(c.rest(), "");
    let mut c = Client::connect(&addr);
    c.cmd("EHLO client.test");
    // A 20 MB line in DATA against a 1 MB limit: drained, 552.
    c.cmd("MAIL FROM:<a@b.example>");
    c.cmd("RCPT TO:<john@forward.example>");
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(&vec![b'y'; 20 << 20]);
    c.send(b"\r\n.\r\n");
    let r = c.reply();
    assert!(r.starts_with("552 5.3.4"), "{r}");
    assert!(c.cmd("QUIT").starts_with("221"));

    // Binary junk: errors, then 421 after max_errors, and the server hangs up.
    let mut junk = Vec::with_capacity(1 << 20);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while junk.len() < 1 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        junk.extend_from_slice(&x.to_le_bytes());
    }
    // As it is, it holds bare LFs: refused at the first, and the server hangs up.
    let (replies, closed) = flood(&addr, "", junk.clone(), Duration::from_secs(20));
    assert!(closed, "still open after junk: {replies}");
    assert!(replies.ends_with("500 5.5.2 Bare LF or CR in command line (RFC 5321 section 2.3.8), closing connection\r\n"), "{replies}");
    // In CRLF lines: errors, then 421 after max_errors.
    let lines: Vec<u8> = junk
        .chunks(62)
        .flat_map(|l| {
            let mut l: Vec<u8> = l
                .iter()
                .map(|&b| if b == b'\r' || b == b'\n' { b'x' } else { b })
                .collect();
            l.extend_from_slice(b"\r\n");
            l
        })
        .collect();
    let (replies, closed) = flood(&addr, "", lines, Duration::from_secs(20));
    assert!(closed, "still open after junk: {replies}");
    assert!(replies.contains("421 4.7.0 Too many errors"), "{replies}");

    // Pipelined floods, in one write each: every command answered, in order.
    let n = 100_000;
    let mut noops = b"NOOP\r\n".repeat(n);
    noops.extend_from_slice(b"QUIT\r\n");
    let (replies, closed) = flood(
        &addr,
        "EHLO client.test\r\n",
        noops,
        Duration::from_secs(60),
    );
    assert!(closed && replies.ends_with("221 2.0.0 Bye\r\n"), "cut off");
    assert_eq!(replies.matches("250 2.0.0 OK\r\n").count(), n);
    let mut rcpts = b"RCPT TO:<john@forward.example>\r\n".repeat(n);
    rcpts.extend_from_slice(b"QUIT\r\n");
    let (replies, closed) = flood(
        &addr,
        "EHLO client.test\r\nMAIL FROM:<a@b.example>\r\n",
        rcpts,
        Duration::from_secs(60),
    );
    assert!(closed && replies.ends_with("221 2.0.0 Bye\r\n"), "cut off");
    assert_eq!(replies.matches("250 2.1.5").count(), 1000, "max_recipients");
    assert_eq!(replies.matches("452 4.5.3").count(), n - 1000);
    assert!(rss_kib(relay.pid()) < 100 * 1024);

    // A flood whose replies are never read: the relay must not wait on it for ever.
    let s = connect(&addr);
    let mut w = s.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&b"EHLO client.test\r\n".repeat(1_000_000));
    });
    assert!(
        wait_until(Duration::from_secs(40), || fds(&relay) <= idle_fds),
        "a client that never reads holds its session: {} descriptors open, {idle_fds} idle",
        fds(&relay)
    );
    writer.join().unwrap();
    drop(s);
    assert!(relay.log().contains("does not read its replies"));

    // Slowloris, one byte a second, in a command and in DATA: cut by the timeouts (2 s).
    for (prologue, trickle, want) in [
        ("", "NOOP NOOP NOOP\r\n", "421 4.4.2"),
        (
            "EHLO client.test\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<john@forward.example>\r\nDATA\r\n",
            "Subject: slow\r\nx\r\ny\r\n\r\nbody\r\n",
            "421 4.4.2",
        ),
    ] {
        let mut s = connect(&addr);
        s.write_all(prologue.as_bytes()).unwrap();
        let started = Instant::now();
        let mut w = s.try_clone().unwrap();
        let trickle = trickle.as_bytes().to_vec();
        let writer = std::thread::spawn(move || {
            for b in trickle {
                if w.write_all(&[b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        let (got, closed) = read_all(&mut s, Duration::from_secs(30));
        let got = String::from_utf8_lossy(&got);
        assert!(closed && got.contains(want), "{got}");
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "cut only after {:?}: {got}",
            started.elapsed()
        );
        writer.join().unwrap();
    }

    // Memory stays bounded, nothing was queued, the relay is up and mail goes through.
    let rss_after = relay.rss_kib();
    eprintln!("hostile phase: relay RSS {rss_before} KiB before, {rss_after} KiB after");
    assert!(rss_after < 100 * 1024, "RSS {rss_after} KiB");
    send_all(&addr, &ids("after-", 1), 2000);
    assert!(
        wait_until(Duration::from_secs(20), || receiver.count() == 2),
        "log:\n{}",
        relay.log()
    );
    assert_eq!(relay.spooled(), 0);
}

/// A connection that got its 220 (`None` if it got anything else).
fn greeted(addr: &str) -> Option<TcpStream> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut b = [0u8; 512];
    let n = s.read(&mut b).ok()?;
    b[..n].starts_with(b"220").then_some(s)
}

#[test]
fn connections_beyond_max_connections_get_421() {
    let relay = Relay::start_full(
        "max_connections = 20\nmax_connections_per_ip = 1000\n",
        "",
        "",
    );
    let addr = relay.addr();
    let rss_before = relay.rss_kib();
    // The readiness probe's session may hold a slot for a moment: retry until all 20 are ours.
    let mut held = Vec::new();
    let ok = wait_until(Duration::from_secs(30), || {
        if let Some(s) = greeted(&addr) {
            held.push(s);
        }
        held.len() == 20
    });
    assert!(ok, "{} greeted; log:\n{}", held.len(), relay.log());
    // Now refused, even in a burst: 421 4.7.0, then closed.
    let refused: Vec<_> = (0..200)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    for mut s in refused {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = String::new();
        let _ = s.read_to_string(&mut got);
        assert!(got.starts_with("421 4.7.0"), "{got}");
    }
    // The held sessions still work, and their slots come back when they go.
    for s in &mut held {
        s.write_all(b"NOOP\r\nQUIT\r\n").unwrap();
        let mut got = String::new();
        let _ = s.read_to_string(&mut got);
        assert!(got.starts_with("250") && got.contains("221"), "{got}");
    }
    drop(held);
    let mut again = Vec::new();
    let ok = wait_until(Duration::from_secs(30), || {
        if let Some(s) = greeted(&addr) {
            again.push(s);
        }
        again.len() == 20
    });
    assert!(ok, "{} greeted; log:\n{}", again.len(), relay.log());
    let rss_after = relay.rss_kib();
    assert!(rss_after < 100 * 1024, "{rss_before} -> {rss_after} KiB");
}
