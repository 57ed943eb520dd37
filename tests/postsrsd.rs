//! Migration from postsrsd: the real postsrsd 1.10 (Debian's package) and srs-relay run side
//! by side on loopback ports, with the same secrets file and SRS domain. Every address
//! either makes reverses in the other, over tcp_table and socketmap; both make the same
//! addresses, leave the same senders alone and refuse the same forgeries.
//!
//! postsrsd is started in the foreground (no `-D`), without chroot or user switch, and
//! killed when the test ends, panics included.

mod lookup;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lookup::{DOMAIN, Lookups, TcpTableClient, free_port, wait_until};

const POSTSRSD: &str = "/usr/sbin/postsrsd";

struct Postsrsd {
    child: Child,
    forward: u16,
    reverse: u16,
    log: tempfile::NamedTempFile,
}

impl Postsrsd {
    fn start(secrets: &Path, extra: &[&str]) -> Postsrsd {
        assert!(
            Path::new(POSTSRSD).exists(),
            "{POSTSRSD} is missing: this test needs postsrsd 1.x \
             (Debian/Ubuntu: apt-get install postsrsd; scripts/test.sh installs it)"
        );
        let version = Command::new(POSTSRSD).arg("-v").output().unwrap();
        let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
        assert!(
            version.starts_with("1."),
            "{POSTSRSD} is version {version:?}; this test drives postsrsd 1.x's tcp_table ports"
        );
        let (forward, reverse) = (free_port(), free_port());
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(POSTSRSD)
            .arg(format!("-s{}", secrets.display()))
            .arg(format!("-d{DOMAIN}"))
            .arg(format!("-f{forward}"))
            .arg(format!("-r{reverse}"))
            .args(["-l127.0.0.1", "-4", "-t10"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let p = Postsrsd {
            child,
            forward,
            reverse,
            log,
        };
        assert!(
            wait_until(Duration::from_secs(10), || [forward, reverse].iter().all(
                |port| std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok()
            )),
            "postsrsd did not start: {}",
            std::fs::read_to_string(p.log.path()).unwrap_or_default()
        );
        p
    }
}

impl Drop for Postsrsd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Senders of the usual shapes, and an SRS0 address of another forwarder (→ SRS1).
const SENDERS: &[&str] = &[
    "bob@example.org",
    "Bob.Smith@Example.ORG",
    "alice+tag@sub.example.net",
    "x-y_z@example.co.uk",
    "user=with=equals@example.org",
    "o'brien@example.ie",
    "a@b.example",
    "SRS0=abcd=2W=orig.example=alice@other-forwarder.example",
];

fn day() -> u64 {
    srs_relay::srs::unix_now() / 86_400
}

/// Both directions, both protocols, with `secrets` in srs-relay and `postsrsd_secrets` in
/// postsrsd (the same file unless a rotation is tested).
fn check_both_ways(l: &Lookups, p: &Postsrsd, same_secrets: bool) {
    let mut ours_fwd = TcpTableClient::connect(l.tcp_forward);
    let mut ours_rev = TcpTableClient::connect(l.tcp_reverse);
    let mut ours_sm = l.socketmap_client();
    let mut theirs_fwd = TcpTableClient::connect(p.forward);
    let mut theirs_rev = TcpTableClient::connect(p.reverse);
    for sender in SENDERS {
        let today = day();
        let theirs = theirs_fwd.get(sender);
        let theirs = theirs
            .strip_prefix("200 ")
            .unwrap_or_else(|| panic!("postsrsd forward {sender}: {theirs}"))
            .to_owned();
        // Where the way back leads: the sender, or one hop back for SRS1.
        let origin = theirs_rev.get(&theirs);
        let origin = origin
            .strip_prefix("200 ")
            .unwrap_or_else(|| panic!("postsrsd reverse {theirs}: {origin}"))
            .to_owned();
        if !sender.starts_with("SRS0=") {
            assert_eq!(origin, *sender);
        }
        // postsrsd made it: srs-relay reverses it, in any case.
        assert_eq!(ours_rev.get(&theirs), format!("200 {origin}"), "{theirs}");
        let lowercased = ours_sm.query("reverse", &theirs.to_ascii_lowercase());
        assert!(
            lowercased.eq_ignore_ascii_case(&format!("OK {origin}")),
            "{theirs}: {lowercased}"
        );
        assert_eq!(ours_sm.query("reverse", &theirs), format!("OK {origin}"));
        // srs-relay made it: postsrsd reverses it.
        let ours = ours_fwd.get(sender);
        let ours = ours
            .strip_prefix("200 ")
            .unwrap_or_else(|| panic!("srs-relay forward {sender}: {ours}"))
            .to_owned();
        assert_eq!(
            ours_sm.query("forward", sender),
            format!("OK {ours}"),
            "socketmap and tcp_table agree"
        );
        if same_secrets {
            assert_eq!(theirs_rev.get(&ours), format!("200 {origin}"), "{ours}");
            let uppercased = theirs_rev.get(&ours.to_ascii_uppercase());
            assert!(
                uppercased.eq_ignore_ascii_case(&format!("200 {origin}")),
                "{ours}: {uppercased}"
            );
            // Same secret, same day: the same address, byte for byte.
            if day() == today {
                assert_eq!(ours, theirs, "{sender}");
            }
        }
    }
}

/// What Debian's postinst writes to /etc/postsrsd.secret: random bytes, base64, one line.
fn debian_style_secret(path: &Path) {
    std::fs::write(path, "qXv7zH1dJ0m+Rk2VbW9cTnLs\n").unwrap();
}

#[test]
fn addresses_cross_between_postsrsd_and_srs_relay() {
    // One file serves both, as it is.
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secrets");
    debian_style_secret(&secret);
    let p = Postsrsd::start(&secret, &[]);
    let l = Lookups::start_in(dir, "", &[], "");
    check_both_ways(&l, &p, true);
}

#[test]
fn rotated_secrets_keep_postsrsd_addresses_valid() {
    // postsrsd signed with the old secret; srs-relay signs with a new one on top and still
    // verifies the old one, as postsrsd itself does with several lines.
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("postsrsd.secret");
    debian_style_secret(&old);
    let p_old = Postsrsd::start(&old, &[]);
    std::fs::write(
        dir.path().join("secrets"),
        "a new secret from srs-relay keygen\nqXv7zH1dJ0m+Rk2VbW9cTnLs\n",
    )
    .unwrap();
    let both = dir.path().join("secrets").to_path_buf();
    let p_both = Postsrsd::start(&both, &[]);
    let l = Lookups::start_in(dir, "", &[], "");
    check_both_ways(&l, &p_old, false);
    check_both_ways(&l, &p_both, true);
}

#[test]
fn same_senders_left_alone_and_same_forgeries_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secrets"), format!("{}\n", lookup::SECRET)).unwrap();
    let secrets = dir.path().join("secrets");
    // postsrsd's -X (SRS_EXCLUDE_DOMAINS) and srs-relay's exclude_domains, same list.
    let p = Postsrsd::start(&secrets, &["-Xpartner.example,.friends.example"]);
    let l = Lookups::start_in(
        dir,
        "",
        &[],
        "exclude_domains = [\"partner.example\", \".friends.example\"]",
    );
    let mut ours = TcpTableClient::connect(l.tcp_forward);
    let mut theirs = TcpTableClient::connect(p.forward);
    for sender in [
        "bob@partner.example",
        "bob@sub.partner.example",
        "bob@friends.example",
        "bob@x.friends.example",
        "bob@forward.example",
        "postmaster",
        "bob@example.org",
    ] {
        let (o, t) = (ours.get(sender), theirs.get(sender));
        // postsrsd 1.x answers 200 with the address unchanged for its own domain.
        let rewritten = |reply: &str| reply.starts_with("200 ") && reply[4..] != *sender;
        assert_eq!(rewritten(&o), rewritten(&t), "{sender}: {o} / {t}");
    }
    let mut ours = TcpTableClient::connect(l.tcp_reverse);
    let mut theirs = TcpTableClient::connect(p.reverse);
    let mut sm = l.socketmap_client();
    let good = theirs_forward(&p, "bob@example.org");
    for forged in [
        format!("SRS0=FAKE{}", &good[9..]),
        "SRS0=te87=T7=otherdomain.com=test@forward.example".to_owned(),
        "SRS1=XXXX=thirddomain.com==opaque+string@forward.example".to_owned(),
    ] {
        let (o, t) = (ours.get(&forged), theirs.get(&forged));
        assert!(
            o.starts_with("500 ") && t.starts_with("500 "),
            "{forged}: {o} / {t}"
        );
        assert_eq!(sm.query("reverse", &forged), "NOTFOUND ", "{forged}");
    }
    for not_srs in ["bob@example.org", "bob@forward.example"] {
        let (o, t) = (ours.get(not_srs), theirs.get(not_srs));
        assert!(
            o.starts_with("500 ") && t.starts_with("500 "),
            "{not_srs}: {o} / {t}"
        );
        assert_eq!(sm.query("reverse", not_srs), "NOTFOUND ");
    }
}

fn theirs_forward(p: &Postsrsd, sender: &str) -> String {
    let reply = TcpTableClient::connect(p.forward).get(sender);
    reply.strip_prefix("200 ").expect("rewritten").to_owned()
}
