//! DMARC-safe forwarding (issue 16) checked by an independent implementation: a real DNS
//! server (dnsmasq on a loopback port) holds the test domains' SPF, DKIM, DMARC and ARC
//! records; what reaches the receiver is verified by Debian's dkimpy (`dkimverify`,
//! `arcverify`) asking that server.

mod common;

use std::time::Duration;

use common::mailauth::*;
use common::*;

/// The original sender's domain: SPF allows 127.0.0.1, mail is DKIM-signed, DMARC reject.
const ORIGIN: &str = "origin.test";

/// A DKIM key for origin.test and the DNS records of that domain.
struct Origin {
    key: std::path::PathBuf,
    records: Vec<(String, String)>,
}

fn origin(dir: &std::path::Path) -> Origin {
    let (key, p) = rsa_key(dir, "origin");
    Origin {
        key,
        records: vec![
            (ORIGIN.into(), "v=spf1 ip4:127.0.0.1 -all".into()),
            (
                format!("sel._domainkey.{ORIGIN}"),
                format!("v=DKIM1; k=rsa; p={p}"),
            ),
            (format!("_dmarc.{ORIGIN}"), "v=DMARC1; p=reject".into()),
        ],
    }
}

/// A message from origin.test to the harness's alias, DKIM-signed by dkimpy.
fn signed_message(dns: &Dns, origin: &Origin, subject: &str) -> Vec<u8> {
    let message = format!(
        "From: Alice <alice@{ORIGIN}>\r\nTo: john@forward.example\r\nSubject: {subject}\r\n\
         Date: Fri, 04 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@{ORIGIN}>\r\n\r\n\
         Hello John,\r\n\r\nthis line and the headers are signed.\r\n"
    );
    let signed = dkim_sign(dns.port, "sel", ORIGIN, &origin.key, message.as_bytes());
    let (ok, why) = dkim_verify(dns.port, &signed);
    assert!(ok, "dkimpy does not verify its own signature: {why}");
    signed
}

/// Sends `message` from alice@origin.test to john@forward.example through `relay`.
fn send(relay: &Relay, message: &[u8]) -> String {
    let file = relay.dir.path().join("message.eml");
    std::fs::write(&file, message).unwrap();
    swaks_ok(&[
        "--server",
        &relay.addr(),
        "--from",
        &format!("alice@{ORIGIN}"),
        "--to",
        "john@forward.example",
        "--data",
        &format!("@{}", file.display()),
    ])
}

fn delivered(receiver: &Receiver, relay: &Relay, n: usize) -> Received {
    assert!(
        wait_until(Duration::from_secs(20), || receiver.count() >= n),
        "not delivered; log:\n{}",
        relay.log()
    );
    receiver.messages()[n - 1].clone()
}

/// The baseline: forwarding changes nothing a DKIM signature covers.
#[test]
fn a_dkim_signed_message_still_verifies_after_forwarding() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = origin(tmp.path());
    let dns = Dns::start(&origin.records);
    let receiver = Receiver::start();
    let relay = Relay::start_full(
        "",
        &format!("smarthost = \"{}\"\n", receiver.addr()),
        "",
    );
    let message = signed_message(&dns, &origin, "baseline");
    let out = send(&relay, &message);
    assert!(out.contains("250 2.0.0 OK queued as"), "{out}");
    let got = delivered(&receiver, &relay, 1);
    let (ok, why) = dkim_verify(dns.port, &got.data);
    assert!(ok, "DKIM broken by forwarding: {why}\n{}", String::from_utf8_lossy(&got.data));
}
