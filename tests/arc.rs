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
        &dns.relay_config(),
    );
    let message = signed_message(&dns, &origin, "baseline");
    let out = send(&relay, &message);
    assert!(out.contains("250 2.0.0 OK queued as"), "{out}");
    let got = delivered(&receiver, &relay, 1);
    let (ok, why) = dkim_verify(dns.port, &got.data);
    assert!(
        ok,
        "DKIM broken by forwarding: {why}\n{}",
        String::from_utf8_lossy(&got.data)
    );
}

/// An RSA-2048 ARC key made by openssl in `dir`, and the TXT record `srs-relay arc-keygen
/// --print-record` prints for it (checked against openssl's own public key). RSA because
/// RFC 8617 names only rsa-sha256 for ARC, and dkimpy's arcverify knows no other.
fn rsa_arc_key(
    dir: &std::path::Path,
    name: &str,
    selector: &str,
    domain: &str,
) -> (std::path::PathBuf, (String, String)) {
    let (key, p) = rsa_key(dir, name);
    let record = keygen_record(&key, &["--print-record"], selector, domain);
    assert_eq!(record.1, format!("v=DKIM1; k=rsa; p={p}"));
    (key, record)
}

/// `srs-relay arc-keygen --algorithm ALGORITHM` in `dir`: the key file and the TXT record
/// it printed.
fn arc_keygen(
    dir: &std::path::Path,
    name: &str,
    selector: &str,
    domain: &str,
    algorithm: &str,
) -> (std::path::PathBuf, (String, String)) {
    let key = dir.join(format!("{name}.key"));
    let record = keygen_record(&key, &["--algorithm", algorithm], selector, domain);
    assert!(
        record.1.starts_with(&format!("v=DKIM1; k={algorithm}; p=")),
        "{}",
        record.1
    );
    (key, record)
}

/// `srs-relay arc-keygen OPTIONS --out KEY --selector SELECTOR --domain DOMAIN`, which
/// must succeed: the owner name (checked) and the TXT data of the record it printed.
fn keygen_record(
    key: &std::path::Path,
    options: &[&str],
    selector: &str,
    domain: &str,
) -> (String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_srs-relay"))
        .arg("arc-keygen")
        .args(options)
        .args([
            "--out",
            key.to_str().unwrap(),
            "--selector",
            selector,
            "--domain",
            domain,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (name, text) = txt_record_line(&out.stdout);
    assert_eq!(name, format!("{selector}._domainkey.{domain}"));
    (name, text)
}

/// The owner name and the TXT data (its strings joined) of the zone-file line
/// `srs-relay arc-keygen` prints: `NAME. IN TXT "..." "..."`.
fn txt_record_line(stdout: &[u8]) -> (String, String) {
    let line = std::str::from_utf8(stdout).unwrap().trim();
    let (name, rest) = line.split_once(". IN TXT ").expect("a TXT record line");
    let strings = rest
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .expect("quoted strings");
    let parts: Vec<&str> = strings.split("\" \"").collect();
    assert!(parts.iter().all(|p| p.len() <= 255), "{line}");
    (name.to_owned(), parts.concat())
}

/// `[arc]` for a key made by [`arc_keygen`].
fn arc_config(key: &std::path::Path, selector: &str, domain: &str) -> String {
    format!(
        "[arc]\nkey = \"{}\"\nselector = \"{selector}\"\ndomain = \"{domain}\"\n",
        key.display()
    )
}

/// The header fields of `message` named `name` (unfolded is not needed: whole lines).
fn header_fields(message: &[u8], name: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(message);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut fields: Vec<String> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(last) = fields.last_mut() {
                last.push_str(line);
            }
            continue;
        }
        fields.push(line.to_owned());
    }
    fields
        .into_iter()
        .filter(|f| {
            f.split_once(':')
                .is_some_and(|(n, _)| n.eq_ignore_ascii_case(name))
        })
        .collect()
}

/// One relay sealing with an Ed25519 key from arc-keygen, delivering to a receiver.
struct Sealing {
    dns: Dns,
    origin: Origin,
    receiver: Receiver,
    relay: Relay,
    _tmp: tempfile::TempDir,
}

fn sealing(extra_records: &[(String, String)], extra_config: &str) -> Sealing {
    let tmp = tempfile::tempdir().unwrap();
    let origin = origin(tmp.path());
    let (key, record) = rsa_arc_key(tmp.path(), "arc", "arc1", "forward.example");
    let mut records = origin.records.clone();
    records.push(record);
    records.extend_from_slice(extra_records);
    let dns = Dns::start(&records);
    let receiver = Receiver::start();
    let relay = Relay::start_full(
        "",
        &format!("smarthost = \"{}\"\n", receiver.addr()),
        &format!(
            "{}{}{extra_config}",
            dns.relay_config(),
            arc_config(&key, "arc1", "forward.example")
        ),
    );
    Sealing {
        dns,
        origin,
        receiver,
        relay,
        _tmp: tmp,
    }
}

#[test]
fn arriving_mail_is_verified_and_sealed_and_both_verify_with_dkimpy() {
    let s = sealing(&[], "");
    let message = signed_message(&s.dns, &s.origin, "sealed");
    let out = send(&s.relay, &message);
    assert!(out.contains("250 2.0.0 OK queued as"), "{out}");
    let got = delivered(&s.receiver, &s.relay, 1);
    let text = String::from_utf8_lossy(&got.data).into_owned();
    // The ARC set and our results come first, then our Received, then the message as sent.
    assert!(text.starts_with("ARC-Seal: i=1; a=rsa-sha256;"), "{text}");
    assert!(text.contains("cv=none"), "{text}");
    let results = header_fields(&got.data, "Authentication-Results");
    assert_eq!(results.len(), 1, "{text}");
    let r = &results[0];
    assert!(r.starts_with("Authentication-Results: relay.test;"), "{r}");
    for want in [
        "spf=pass",
        "smtp.mailfrom=alice@origin.test",
        "dkim=pass",
        "header.i=@origin.test",
        "dmarc=pass",
        "arc=none",
    ] {
        assert!(r.contains(want), "{want} not in {r}");
    }
    assert_eq!(
        header_fields(&got.data, "ARC-Authentication-Results").len(),
        1
    );
    assert_eq!(header_fields(&got.data, "ARC-Message-Signature").len(), 1);
    let (ok, why) = dkim_verify(s.dns.port, &got.data);
    assert!(ok, "the original DKIM signature broke: {why}\n{text}");
    let (ok, why) = arc_verify(s.dns.port, &got.data);
    assert!(ok, "dkimpy does not verify our seal: {why}\n{text}");
    // Nothing but prepended fields: the message after them is what was sent.
    // (swaks ends DATA with a CRLF of its own.)
    let mut sent = message.clone();
    sent.extend_from_slice(b"\r\n");
    assert!(got.data.ends_with(&sent), "{text}");
    let log = s.relay.log();
    assert!(
        log.contains("spf=pass dkim=pass dmarc=pass arc=none"),
        "{log}"
    );
    assert!(log.contains("arc_sealed=1"), "{log}");
}

#[test]
fn dkim_broken_upstream_is_reported_as_fail_under_a_valid_seal() {
    let s = sealing(&[], "");
    let signed = signed_message(&s.dns, &s.origin, "broken");
    // A mailing list tags the signed Subject; another adds a footer to the body.
    let tagged = String::from_utf8(signed.clone())
        .unwrap()
        .replace("Subject: broken", "Subject: [list] broken")
        .into_bytes();
    let mut footer = signed.clone();
    footer.extend_from_slice(b"-- \r\nThe list footer\r\n");
    for (n, message) in [tagged, footer].iter().enumerate() {
        assert_ne!(message, &signed);
        send(&s.relay, message);
        let got = delivered(&s.receiver, &s.relay, n + 1);
        let text = String::from_utf8_lossy(&got.data).into_owned();
        let results = header_fields(&got.data, "Authentication-Results");
        assert!(results[0].contains("dkim=fail"), "{text}");
        // SPF still aligns with the header From: DMARC passes on it.
        assert!(results[0].contains("spf=pass"), "{text}");
        assert!(results[0].contains("dmarc=pass"), "{text}");
        let (ok, _) = dkim_verify(s.dns.port, &got.data);
        assert!(!ok, "dkimpy passes a broken signature?\n{text}");
        let (ok, why) = arc_verify(s.dns.port, &got.data);
        assert!(ok, "the seal must still verify: {why}\n{text}");
        assert!(
            header_fields(&got.data, "ARC-Authentication-Results")[0].contains("dkim=fail"),
            "{text}"
        );
    }
}

#[test]
fn results_from_outside_claiming_our_authserv_id_are_removed() {
    let s = sealing(&[], "");
    let signed = signed_message(&s.dns, &s.origin, "forged");
    let mut message = b"Authentication-Results: relay.test; dkim=pass header.d=paypal.example\r\n\
Authentication-Results: mx.upstream.example; spf=pass\r\n"
        .to_vec();
    message.extend_from_slice(&signed);
    send(&s.relay, &message);
    let got = delivered(&s.receiver, &s.relay, 1);
    let text = String::from_utf8_lossy(&got.data).into_owned();
    let results = header_fields(&got.data, "Authentication-Results");
    assert_eq!(results.len(), 2, "{text}");
    assert!(!text.contains("paypal"), "forged results kept:\n{text}");
    assert!(
        results.iter().any(|r| r.contains("mx.upstream.example")),
        "{text}"
    );
    let (ok, why) = arc_verify(s.dns.port, &got.data);
    assert!(ok, "{why}\n{text}");
    let (ok, why) = dkim_verify(s.dns.port, &got.data);
    assert!(ok, "{why}\n{text}");
}

/// Two relays in a row: `first` (config `first_extra`) forwards john@forward.example to
/// john@home.example through `second` (relay2.test, config `second_extra`), which
/// forwards it to final@dest.example at `receiver`. Both use `dns`.
fn two_relays(
    dns: &Dns,
    receiver: &Receiver,
    second_extra: &str,
    first_extra: &str,
) -> (Relay, Relay) {
    let mut second = Relay::prepare_full(
        "hostname = \"relay2.test\"\n",
        &format!("smarthost = \"{}\"\n", receiver.addr()),
        &format!("{}{second_extra}", dns.relay_config()),
    );
    // The server section of the harness names relay.test: this one is relay2.test.
    let cfg = std::fs::read_to_string(&second.config).unwrap();
    std::fs::write(
        &second.config,
        cfg.replace("hostname = \"relay.test\"\n", ""),
    )
    .unwrap();
    std::fs::write(
        second.dir.path().join("aliases"),
        "john@home.example: final@dest.example\n",
    )
    .unwrap();
    second.spawn();
    let first = Relay::start_full(
        "",
        &format!("smarthost = \"{}\"\n", second.addr()),
        &format!("{}{first_extra}", dns.relay_config()),
    );
    (first, second)
}

#[test]
fn a_second_relay_extends_the_chain_and_it_still_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = origin(tmp.path());
    let (key1, record1) = rsa_arc_key(tmp.path(), "arc1", "arc1", "forward.example");
    // The second hop's key from arc-keygen itself: RSA, made through openssl.
    let (key2, record2) = arc_keygen(tmp.path(), "arc2", "arc2", "second.test", "rsa");
    let mut records = origin.records.clone();
    records.push(record1);
    records.push(record2);
    // The first relay's SRS sender is at forward.example: SPF lets it send.
    records.push(("forward.example".into(), "v=spf1 ip4:127.0.0.1 -all".into()));
    let dns = Dns::start(&records);
    let receiver = Receiver::start();
    let (first, second) = two_relays(
        &dns,
        &receiver,
        &arc_config(&key2, "arc2", "second.test"),
        &arc_config(&key1, "arc1", "forward.example"),
    );
    let message = signed_message(&dns, &origin, "twohops");
    send(&first, &message);
    let got = delivered(&receiver, &second, 1);
    let text = String::from_utf8_lossy(&got.data).into_owned();
    assert_eq!(got.rcpt_to, ["final@dest.example"]);
    assert!(text.starts_with("ARC-Seal: i=2; a=rsa-sha256;"), "{text}");
    assert!(text.contains("cv=pass"), "{text}");
    assert_eq!(header_fields(&got.data, "ARC-Seal").len(), 2, "{text}");
    let ours = header_fields(&got.data, "Authentication-Results");
    assert!(
        ours[0].starts_with("Authentication-Results: relay2.test;"),
        "{text}"
    );
    assert!(ours[0].contains("arc=pass"), "{text}");
    let (ok, why) = arc_verify(dns.port, &got.data);
    assert!(ok, "the chain of two does not verify: {why}\n{text}");
    let (ok, why) = dkim_verify(dns.port, &got.data);
    assert!(ok, "{why}\n{text}");
}

#[test]
fn with_dns_down_results_are_temperror_and_mail_still_flows() {
    let tmp = tempfile::tempdir().unwrap();
    let receiver = Receiver::start();
    // Nothing listens on this port: every query fails at once.
    let dead = free_udp_port();
    let relay = Relay::start_full(
        "",
        &format!("smarthost = \"{}\"\n", receiver.addr()),
        &format!(
            "[dns]\nservers = [\"127.0.0.1:{dead}\"]\ntimeout = \"1s\"\n[auth]\nverify = true\n"
        ),
    );
    let (key, _) = rsa_key(tmp.path(), "origin");
    let message = format!(
        "From: Alice <alice@{ORIGIN}>\r\nTo: john@forward.example\r\nSubject: dns down\r\n\r\nbody\r\n"
    );
    // Signing asks no DNS.
    let message = dkim_sign(dead, "sel", ORIGIN, &key, message.as_bytes());
    let out = send(&relay, &message);
    assert!(out.contains("250 2.0.0 OK queued as"), "{out}");
    let got = delivered(&receiver, &relay, 1);
    let text = String::from_utf8_lossy(&got.data).into_owned();
    let r = &header_fields(&got.data, "Authentication-Results")[0];
    assert!(r.contains("spf=temperror"), "{text}");
    assert!(r.contains("dkim=temperror"), "{text}");
    // Without a key nothing is sealed.
    assert!(header_fields(&got.data, "ARC-Seal").is_empty(), "{text}");
}

#[test]
fn dmarc_reject_action_reject_refuses_at_data() {
    let s = sealing(&[], "[auth]\ndmarc_reject_action = \"reject\"\n");
    let signed = signed_message(&s.dns, &s.origin, "spoofed");
    let mut message = signed.clone();
    message.extend_from_slice(b"tampered\r\n");
    // SPF for another domain (none) and a broken signature: DMARC fails, p=reject.
    let file = s.relay.dir.path().join("spoof.eml");
    std::fs::write(&file, &message).unwrap();
    let out = swaks(&[
        "--server",
        &s.relay.addr(),
        "--from",
        "someone@elsewhere.test",
        "--to",
        "john@forward.example",
        "--data",
        &format!("@{}", file.display()),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("550 5.7.1"), "{text}");
    // An aligned, passing message still goes through.
    let good = signed_message(&s.dns, &s.origin, "good");
    let out = send(&s.relay, &good);
    assert!(out.contains("250 2.0.0 OK queued as"), "{out}");
    delivered(&s.receiver, &s.relay, 1);
    assert_eq!(s.receiver.count(), 1);
}

/// An Ed25519 seal (arc-keygen's key): dkimpy knows no Ed25519 ARC, mail-auth does, so a
/// second srs-relay checks the first one's seal.
#[test]
fn an_ed25519_seal_from_arc_keygen_is_checked_by_the_next_relay() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = origin(tmp.path());
    let (key, record) = arc_keygen(tmp.path(), "ed", "ed1", "forward.example", "ed25519");
    let mut records = origin.records.clone();
    records.push(record);
    records.push(("forward.example".into(), "v=spf1 ip4:127.0.0.1 -all".into()));
    let dns = Dns::start(&records);
    let receiver = Receiver::start();
    let (first, second) = two_relays(
        &dns,
        &receiver,
        "[auth]\nverify = true\n",
        &arc_config(&key, "ed1", "forward.example"),
    );
    let message = signed_message(&dns, &origin, "ed25519");
    send(&first, &message);
    let got = delivered(&receiver, &second, 1);
    let text = String::from_utf8_lossy(&got.data).into_owned();
    assert!(text.contains("ARC-Seal: i=1; a=ed25519-sha256;"), "{text}");
    let ours = header_fields(&got.data, "Authentication-Results");
    assert!(
        ours[0].starts_with("Authentication-Results: relay2.test;"),
        "{text}"
    );
    assert!(ours[0].contains("arc=pass"), "{text}");
    assert!(ours[0].contains("dkim=pass"), "{text}");
}

/// `rewrite-from`: a p=reject domain's message that fails DMARC arrives from the alias,
/// DKIM-signed by us (dkimpy checks it), the original sender in Reply-To and
/// X-Original-From, sealed.
#[test]
fn rewrite_from_makes_a_failing_p_reject_message_pass_as_ours() {
    let s = sealing(&[], "[auth]\ndmarc_reject_action = \"rewrite-from\"\n");
    let signed = signed_message(&s.dns, &s.origin, "rewritten");
    let message = String::from_utf8(signed)
        .unwrap()
        .replace("Subject: rewritten", "Subject: [list] rewritten")
        .into_bytes();
    let file = s.relay.dir.path().join("list.eml");
    std::fs::write(&file, &message).unwrap();
    // From a list's own envelope sender: SPF says nothing for origin.test, DKIM fails.
    let out = swaks_ok(&[
        "--server",
        &s.relay.addr(),
        "--from",
        "list-bounces@lists.test",
        "--to",
        "john@forward.example",
        "--data",
        &format!("@{}", file.display()),
    ]);
    assert!(out.contains("250 2.0.0 OK queued as"), "{out}");
    let got = delivered(&s.receiver, &s.relay, 1);
    let text = String::from_utf8_lossy(&got.data).into_owned();
    let from = header_fields(&got.data, "From");
    assert_eq!(from, ["From: \"Alice\" <john@forward.example>"], "{text}");
    assert_eq!(
        header_fields(&got.data, "Reply-To"),
        ["Reply-To: <alice@origin.test>"]
    );
    assert_eq!(
        header_fields(&got.data, "X-Original-From"),
        ["X-Original-From: Alice <alice@origin.test>"]
    );
    let ours = &header_fields(&got.data, "DKIM-Signature")[0];
    assert!(ours.contains("d=forward.example"), "{text}");
    let (ok, why) = dkim_verify(s.dns.port, &got.data);
    assert!(ok, "our DKIM signature does not verify: {why}\n{text}");
    let (ok, why) = arc_verify(s.dns.port, &got.data);
    assert!(ok, "{why}\n{text}");
    assert!(
        header_fields(&got.data, "Authentication-Results")[0].contains("dmarc=fail"),
        "{text}"
    );
    assert!(
        s.relay.log().contains("from_rewritten=true"),
        "{}",
        s.relay.log()
    );
}

#[test]
fn check_config_names_the_arc_and_auth_keys_that_are_wrong() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secrets"), "s3cret-for-the-check\n").unwrap();
    std::fs::write(
        dir.path().join("bad.key"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let check = |extra: &str| {
        let cfg = dir.path().join("c.toml");
        std::fs::write(&cfg, format!("[srs]\nsecrets_file = \"secrets\"\ndefault_domain = \"forward.example\"\n[spool]\ndir = \"spool\"\n{extra}")).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_srs-relay"))
            .args(["check-config", "--config", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = check("[arc]\nkey = \"bad.key\"\nselector = \"s\"\n");
    assert!(!ok && err.contains("arc.key"), "{err}");
    let (ok, err) = check("[auth]\ndmarc_reject_action = \"rewrite-from\"\n");
    assert!(!ok && err.contains("auth.dmarc_reject_action"), "{err}");
    let (ok, err) = check("[auth]\ndmarc_reject_action = \"bounce\"\n");
    assert!(!ok && err.contains("auth.dmarc_reject_action"), "{err}");
    let (ok, err) = check("[dsn]\nto_unauthenticated = \"maybe\"\n");
    assert!(!ok && err.contains("dsn.to_unauthenticated"), "{err}");
    let (ok, err) = check("[dns]\nservers = [\"not-an-ip\"]\n");
    assert!(!ok && err.contains("dns.servers"), "{err}");
    let (ok, err) = check("[dns]\nservers = [\"127.0.0.1:5353\", \"::1\"]\n");
    assert!(ok, "{err}");
}

/// A DSN comes from MAILER-DAEMON@srs.default_domain, DKIM-signed for it with arc.key:
/// dkimpy verifies it.
#[test]
fn dsns_are_dkim_signed_for_the_default_domain() {
    let s = sealing(&[], "");
    s.receiver.script.lock().unwrap().rcpt.insert(
        "john@home.example".into(),
        "550 5.1.1 <john@home.example>: No such user".into(),
    );
    let message = signed_message(&s.dns, &s.origin, "refused");
    send(&s.relay, &message);
    let dsn = delivered(&s.receiver, &s.relay, 1);
    assert_eq!(dsn.mail_from, "");
    assert_eq!(dsn.rcpt_to, [format!("alice@{ORIGIN}")]);
    let text = String::from_utf8_lossy(&dsn.data).into_owned();
    assert_eq!(
        header_fields(&dsn.data, "From"),
        ["From: Mail Delivery System <MAILER-DAEMON@forward.example>"],
        "{text}"
    );
    assert!(
        header_fields(&dsn.data, "DKIM-Signature")[0].contains("d=forward.example"),
        "{text}"
    );
    let (ok, why) = dkim_verify(s.dns.port, &dsn.data);
    assert!(ok, "the DSN's signature does not verify: {why}\n{text}");
    // dsn.hide_forward_targets (default): the alias, never the address it forwards to.
    assert!(
        text.contains("Final-Recipient: rfc822; john@forward.example"),
        "{text}"
    );
    assert!(
        !text.contains("home.example"),
        "the forward target leaked:\n{text}"
    );
    // RET not given: headers only.
    assert!(text.contains("text/rfc822-headers"), "{text}");
    assert!(
        !text.contains("this line and the headers are signed"),
        "{text}"
    );
}

/// No backscatter: a refused forward from a sender that was not authenticated at
/// arrival brings no DSN (logged); with dsn.to_unauthenticated = "send" it does.
#[test]
fn a_refused_forward_from_an_unauthenticated_sender_brings_no_dsn() {
    for (config, want) in [("", 0), ("[dsn]\nto_unauthenticated = \"send\"\n", 1)] {
        let s = sealing(&[], config);
        s.receiver
            .script
            .lock()
            .unwrap()
            .rcpt
            .insert("john@home.example".into(), "550 5.1.1 No such user".into());
        // A forged sender: elsewhere.test publishes nothing, nothing is signed.
        let out = swaks_ok(&[
            "--server",
            &s.relay.addr(),
            "--from",
            "victim@elsewhere.test",
            "--to",
            "john@forward.example",
            "--header",
            "From: victim@elsewhere.test",
        ]);
        assert!(out.contains("250 2.0.0 OK queued as"), "{out}");
        let log_says =
            |what: &str| wait_until(Duration::from_secs(20), || s.relay.log().contains(what));
        if want == 0 {
            assert!(log_says("DSN dropped"), "{}", s.relay.log());
            assert!(s.relay.log().contains("spf=none"), "{}", s.relay.log());
        } else {
            assert!(log_says("DSN queued"), "{}", s.relay.log());
            delivered(&s.receiver, &s.relay, 1);
        }
        // Nothing else arrives (the refused forward was never delivered).
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(s.receiver.count(), want, "{}", s.relay.log());
    }
}

/// A message past the 64 KiB kept in memory goes to a file while it arrives: it is read
/// back for the checks, and the queue file is written edited; the results reach the
/// trace.
#[test]
fn a_large_message_is_checked_and_sealed_from_its_file_and_traced() {
    let s = sealing(&[], "");
    let mut body = String::new();
    for i in 0..4000 {
        body.push_str(&format!(
            "line {i:05} of a long message, long enough to spill\r\n"
        ));
    }
    let message = format!(
        "From: Alice <alice@{ORIGIN}>\r\nTo: john@forward.example\r\nSubject: large\r\n\
         Date: Fri, 04 Dec 2026 10:00:00 +0000\r\nMessage-ID: <large@{ORIGIN}>\r\n\r\n{body}"
    );
    assert!(message.len() > 3 * 64 * 1024);
    let signed = dkim_sign(s.dns.port, "sel", ORIGIN, &s.origin.key, message.as_bytes());
    let forged = [
        b"Authentication-Results: relay.test; dkim=pass\r\n".as_slice(),
        &signed,
    ]
    .concat();
    let out = send(&s.relay, &forged);
    assert!(out.contains("250 2.0.0 OK queued as"), "{out}");
    let got = delivered(&s.receiver, &s.relay, 1);
    let text = String::from_utf8_lossy(&got.data[..2000]).into_owned();
    assert_eq!(
        header_fields(&got.data, "Authentication-Results").len(),
        1,
        "{text}"
    );
    assert!(
        header_fields(&got.data, "Authentication-Results")[0].contains("dkim=pass"),
        "{text}"
    );
    let (ok, why) = dkim_verify(s.dns.port, &got.data);
    assert!(ok, "{why}\n{text}");
    let (ok, why) = arc_verify(s.dns.port, &got.data);
    assert!(ok, "{why}\n{text}");
    let mut sent = signed.clone();
    sent.extend_from_slice(b"\r\n");
    assert!(got.data.ends_with(&sent));
    // The received event's detail holds the results.
    let id = out
        .split("queued as ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("a queue id")
        .to_owned();
    let traced = || {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_srs-relay"))
            .args([
                "trace",
                "show",
                &id,
                "--config",
                s.relay.config.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(
        wait_until(Duration::from_secs(10), || traced()
            .contains("sender_authenticated")),
        "{}",
        traced()
    );
    let t = traced();
    assert!(
        t.contains(r#""spf":"pass""#) && t.contains(r#""arc_sealed":1"#),
        "{t}"
    );
}

/// `[arc]` and `[auth]` reload: a key added by SIGHUP seals the mail that comes after; a
/// key that cannot be read is refused, naming arc.key, and the seal in force stays.
#[test]
fn sealing_is_turned_on_by_a_reload_and_a_bad_key_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = origin(tmp.path());
    let (key, record) = rsa_arc_key(tmp.path(), "arc", "arc1", "forward.example");
    let mut records = origin.records.clone();
    records.push(record);
    let dns = Dns::start(&records);
    let receiver = Receiver::start();
    let relay = Relay::start_full(
        "",
        &format!("smarthost = \"{}\"\n", receiver.addr()),
        &dns.relay_config(),
    );
    let hup = |expect: &str| {
        let before = relay.log().matches(expect).count();
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &relay.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        assert!(
            wait_until(Duration::from_secs(20), || relay
                .log()
                .matches(expect)
                .count()
                > before),
            "{}",
            relay.log()
        );
    };
    send(&relay, &signed_message(&dns, &origin, "before"));
    let got = delivered(&receiver, &relay, 1);
    assert!(header_fields(&got.data, "ARC-Seal").is_empty());
    assert!(header_fields(&got.data, "Authentication-Results").is_empty());

    let base = std::fs::read_to_string(&relay.config).unwrap();
    std::fs::write(
        &relay.config,
        format!("{base}{}", arc_config(&key, "arc1", "forward.example")),
    )
    .unwrap();
    hup("reloaded config=");
    send(&relay, &signed_message(&dns, &origin, "after"));
    let got = delivered(&receiver, &relay, 2);
    let (ok, why) = arc_verify(dns.port, &got.data);
    assert!(ok, "{why}\n{}", String::from_utf8_lossy(&got.data));

    std::fs::write(tmp.path().join("arc.pem"), "not a key").unwrap();
    hup("reload refused");
    assert!(relay.log().contains("arc.key"), "{}", relay.log());
    send(&relay, &signed_message(&dns, &origin, "still"));
    let got = delivered(&receiver, &relay, 3);
    let (ok, why) = arc_verify(dns.port, &got.data);
    assert!(ok, "{why}");
}
