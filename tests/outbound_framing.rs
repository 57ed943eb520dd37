//! What srs-relay sends is framed as RFC 5321 says, checked on the octets a receiver got
//! over the wire: forwarded messages (small ones from memory, large ones streamed from the
//! queue file), delay warnings and DSNs. Every line ends in CRLF, there is no other CR or
//! LF, a line starting with `.` carries the stuffed dot, and only the last line is `.`.

mod common;

use std::time::Duration;

use common::*;

/// Panics unless `raw` is well-framed DATA; returns it unstuffed (without the `.` line).
fn assert_framed(raw: &[u8], what: &str) -> Vec<u8> {
    let body = raw
        .strip_suffix(b".\r\n")
        .unwrap_or_else(|| panic!("{what}: does not end with the . line"));
    assert!(
        body.is_empty() || body.ends_with(b"\r\n"),
        "{what}: the . line does not follow a CRLF"
    );
    for (i, &b) in body.iter().enumerate() {
        match b {
            b'\r' => assert_eq!(body.get(i + 1), Some(&b'\n'), "{what}: bare CR at {i}"),
            b'\n' => assert!(i > 0 && body[i - 1] == b'\r', "{what}: bare LF at {i}"),
            _ => {}
        }
    }
    let mut unstuffed = Vec::with_capacity(body.len());
    for line in body.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            assert!(
                line.starts_with(b".."),
                "{what}: unstuffed dot line {:?}",
                String::from_utf8_lossy(line)
            );
            unstuffed.extend_from_slice(&line[1..]);
        } else {
            unstuffed.extend_from_slice(line);
        }
    }
    unstuffed
}

/// A message full of lines a careless sender would get wrong: dots at line starts, a
/// line that is only a dot, long lines; about `size` octets.
fn tricky_message(size: usize) -> Vec<u8> {
    let mut m = b"Subject: dots\r\nMessage-ID: <dots@sender.test>\r\n\r\n".to_vec();
    let mut i = 0;
    while m.len() < size {
        match i % 5 {
            0 => m.extend_from_slice(b".\r\n"),
            1 => m.extend_from_slice(b"..two dots\r\n"),
            2 => m.extend_from_slice(b".leading dot\r\n"),
            3 => m.extend_from_slice(&[b'x'; 990]),
            _ => m.extend_from_slice(b"\r\nplain line\r\n"),
        }
        i += 1;
    }
    m.extend_from_slice(b"last\r\n");
    m
}

/// Sends `message` (not stuffed) from bob@sender.test to the alias, with DSN parameters.
fn send(relay: &Relay, mail: &str, message: &[u8]) {
    let mut c = Client::connect(&relay.addr());
    c.cmd("EHLO sender.test");
    assert!(c.cmd(mail).starts_with("250"));
    assert!(c.cmd("RCPT TO:<john@forward.example>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(&dot_stuff(message));
    let r = c.cmd(".");
    assert!(r.starts_with("250"), "{r:?}; log:\n{}", relay.log());
    c.cmd("QUIT");
}

#[test]
fn forwarded_messages_small_and_streamed_are_framed_and_intact() {
    let home = Receiver::start();
    let relay = Relay::start_full(
        "",
        &format!("routes = {{ \"home.example\" = \"{}\" }}\n", home.addr()),
        "",
    );
    // Below and far above the size kept in memory on the way in (64 KiB) and the block
    // read on the way out.
    let sizes = [2_000, 300_000, 3_000_000];
    for size in sizes {
        send(&relay, "MAIL FROM:<bob@sender.test>", &tricky_message(size));
    }
    assert!(
        wait_until(Duration::from_secs(30), || home.count() == sizes.len()),
        "{} of {} arrived; log:\n{}",
        home.count(),
        sizes.len(),
        relay.log()
    );
    let mut got = home.messages();
    got.sort_by_key(|m| m.raw.len());
    for (m, size) in got.iter().zip(sizes) {
        let what = format!("forwarded message of {size} octets");
        let unstuffed = assert_framed(&m.raw, &what);
        assert_eq!(unstuffed, m.data, "{what}");
        assert_bytes_eq(without_our_received(&m.data), &tricky_message(size), &what);
    }
    assert!(wait_until(Duration::from_secs(10), || relay.spooled() == 0));
}

#[test]
fn delay_warnings_and_dsns_are_framed() {
    let home = Receiver::start();
    let sender = Receiver::start();
    let relay = Relay::start_full(
        "",
        &format!(
            "routes = {{ \"home.example\" = \"{}\", \"sender.test\" = \"{}\" }}\n",
            home.addr(),
            sender.addr()
        ),
        "[queue]\nretry_intervals = [\"1s\"]\nmax_lifetime = \"5s\"\ndelay_warning = \"2s\"\n",
    );
    home.script.lock().unwrap().rcpt.insert(
        "john@home.example".into(),
        "451 4.3.0 try again later".into(),
    );
    // RET=FULL: the expiry DSN returns the whole message, dot lines and all.
    send(
        &relay,
        "MAIL FROM:<bob@sender.test> RET=FULL",
        &tricky_message(20_000),
    );
    assert!(
        wait_until(Duration::from_secs(30), || sender.count() >= 2),
        "{} reports; log:\n{}",
        sender.count(),
        relay.log()
    );
    for (i, m) in sender.messages().iter().enumerate() {
        let what = format!("report {i} to the sender");
        let unstuffed = assert_framed(&m.raw, &what);
        assert_eq!(unstuffed, m.data, "{what}");
        assert!(m.mail_from.is_empty(), "{what}: from the null sender");
    }
    let failed = String::from_utf8_lossy(&sender.messages()[1].data).into_owned();
    assert!(
        failed.contains("..two dots"),
        "the returned message is in the DSN"
    );
}
