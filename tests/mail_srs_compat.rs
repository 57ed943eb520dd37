//! Byte-compatibility of the classic form with Mail::SRS (Debian `libmail-srs-perl`), the
//! reference implementation, run for real: `perl` is started a few times per test with a
//! batch of calls on stdin and prints one result per line.
//!
//! Mail::SRS's clock is `time()`; the Perl side overrides `CORE::GLOBAL::time` before
//! loading the module, so both codecs see the same fixed clock, call by call.
//!
//! These tests never skip: without perl or Mail::SRS they fail, saying what to install.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use srs_relay::srs::{Format, ForwardError, Options, ReverseError, Srs};

/// Fixed clocks (seconds since the epoch), chosen to land on different days and timestamp
/// slots: postsrsd's test clock (`2W`), a few ordinary days, the last second of a day, and
/// the day before the 1024-day timestamp cycle wraps to `AA` (so ages computed from it
/// cross the wrap).
const NOWS: [u64; 6] = [
    1_577_836_860,
    1_234_567_890,
    1_700_000_000,
    86_400 * 20_000 + 86_399,
    86_400 * 19_455 + 3_600,
    2_000_000_000,
];

const DAY: u64 = 86_400;

/// Secrets: a plain one, one longer than SHA-1's 64-byte block (HMAC hashes the key first)
/// and one with bytes that are not printable ASCII.
const SECRET_PLAIN: &[u8] = b"tops3cr3t";
const SECRET_LONG: &[u8] =
    b"a secret of more than sixty-four bytes, so HMAC-SHA1 hashes the key before use: 0123456789";
const SECRET_BINARY: &[u8] = b"\x00\xffbin\x80ary\x7f=\t\n secret";

/// Forwarding mailboxes; Mail::SRS uses only the domain, as srs-relay's classic form does.
const ALIASES: [&str; 4] = [
    "fwd@relay.example.net",
    "john@F2.IO",
    "x@srs.Example.COM",
    "postmaster@a-b.example",
];

// --------------------------------------------------------------------------------------
// The Perl side.

/// Reads `op TAB now TAB secrets TAB separator TAB hash-length TAB max-age TAB a TAB b` lines
/// and prints `OK TAB result` or `ERR TAB message` for each. Secrets are hex, comma
/// separated. One Mail::SRS object per configuration, built with `Mail::SRS->new`, i.e. the
/// default Guarded scheme.
const PERL_PROGRAM: &str = r#"
use strict;
use warnings;
our $NOW;
BEGIN { $NOW = 0; *CORE::GLOBAL::time = sub () { $main::NOW }; }
use Mail::SRS;
$SIG{__WARN__} = sub {
    # Expected when the tests smash the case of an address; anything else is reported.
    print STDERR $_[0] unless $_[0] =~ /Case insensitive hash match detected/;
};
binmode STDIN;
binmode STDOUT;
my %srs;
while (my $line = <STDIN>) {
    chomp $line;
    my ($op, $now, $secrets, $sep, $hash_length, $max_age, $a, $b) = split /\t/, $line, -1;
    $NOW = $now;
    my $srs = $srs{join "\t", $secrets, $sep, $hash_length, $max_age} //= Mail::SRS->new(
        Secret     => [ map { pack 'H*', $_ } split /,/, $secrets ],
        Separator  => $sep,
        HashLength => $hash_length,
        MaxAge     => $max_age,
    );
    my $result = eval {
        $op eq 'F' ? $srs->forward($a, $b)
      : $op eq 'R' ? $srs->reverse($a)
      : die "unknown operation $op\n";
    };
    if (defined $result) {
        print "OK\t$result\n";
    } else {
        my $error = $@ || 'undef';
        $error =~ s/\s+/ /g;
        print "ERR\t$error\n";
    }
}
"#;

const INSTALL_HINT: &str = "these tests run the reference implementation: install perl and \
     Mail::SRS (Debian/Ubuntu: `apt-get install libmail-srs-perl`)";

/// Fails (never skips) unless `perl -MMail::SRS` works.
fn require_mail_srs() {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let out = Command::new("perl")
            .args(["-MMail::SRS", "-e", "print $Mail::SRS::VERSION"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run `perl` ({e}); {INSTALL_HINT}"));
        assert!(
            out.status.success(),
            "Mail::SRS is not installed ({}); {INSTALL_HINT}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let version = String::from_utf8_lossy(&out.stdout).into_owned();
        if version != "0.31" {
            eprintln!("note: testing against Mail::SRS {version}, written against 0.31");
        }
        version
    });
}

/// A codec configuration, built identically on both sides.
#[derive(Clone)]
struct Cfg {
    secrets: Vec<&'static [u8]>,
    sep: char,
    hash_len: usize,
    max_age: u32,
}

impl std::fmt::Debug for Cfg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secrets: Vec<String> = self
            .secrets
            .iter()
            .map(|s| s.escape_ascii().to_string().chars().take(12).collect())
            .collect();
        write!(
            f,
            "[sep {} hash {} max_age {} secrets {secrets:?}]",
            self.sep, self.hash_len, self.max_age
        )
    }
}

impl Cfg {
    fn new(secrets: &[&'static [u8]], sep: char, hash_len: usize) -> Self {
        Cfg {
            secrets: secrets.to_vec(),
            sep,
            hash_len,
            max_age: 21,
        }
    }

    fn max_age(mut self, days: u32) -> Self {
        self.max_age = days;
        self
    }

    fn srs(&self) -> Srs {
        let options = Options {
            format: Format::Classic,
            separator: self.sep,
            hash_length: self.hash_len,
            max_age_days: self.max_age,
            ..Options::default()
        };
        Srs::new(&self.secrets, options).expect("valid options")
    }

    fn perl_fields(&self) -> String {
        let hex: Vec<String> = self
            .secrets
            .iter()
            .map(|s| s.iter().map(|b| format!("{b:02x}")).collect())
            .collect();
        format!(
            "{}\t{}\t{}\t{}",
            hex.join(","),
            self.sep,
            self.hash_len,
            self.max_age
        )
    }
}

/// A batch of Mail::SRS calls, each carrying a tag of the caller's; one perl run.
struct Perl<T> {
    input: String,
    tags: Vec<T>,
}

type Outcome = Result<String, String>;

impl<T> Perl<T> {
    fn new() -> Self {
        Perl {
            input: String::new(),
            tags: Vec::new(),
        }
    }

    fn push(&mut self, tag: T, op: char, cfg: &Cfg, now: u64, a: &str, b: &str) {
        for s in [a, b] {
            assert!(!s.contains(['\t', '\n', '\r']), "unusable test input {s:?}");
        }
        writeln!(self.input, "{op}\t{now}\t{}\t{a}\t{b}", cfg.perl_fields()).unwrap();
        self.tags.push(tag);
    }

    /// `$srs->forward($sender, $alias)` at `now`.
    fn forward(&mut self, tag: T, cfg: &Cfg, now: u64, sender: &str, alias: &str) {
        self.push(tag, 'F', cfg, now, sender, alias);
    }

    /// `$srs->reverse($address)` at `now`.
    fn reverse(&mut self, tag: T, cfg: &Cfg, now: u64, address: &str) {
        self.push(tag, 'R', cfg, now, address, "");
    }

    fn run(self) -> Vec<(T, Outcome)> {
        require_mail_srs();
        let mut child = Command::new("perl")
            .args(["-e", PERL_PROGRAM])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `perl` ({e}); {INSTALL_HINT}"));
        let mut stdin = child.stdin.take().unwrap();
        let input = self.input;
        let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
        let out = child.wait_with_output().expect("perl runs");
        writer.join().unwrap().expect("input written to perl");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "perl failed ({}): {stderr}",
            out.status
        );
        assert!(
            stderr.trim().is_empty(),
            "Mail::SRS warned, the test inputs need a look:\n{stderr}"
        );
        let stdout = String::from_utf8(out.stdout).expect("perl prints UTF-8");
        let results: Vec<Outcome> = stdout
            .lines()
            .map(|line| match line.split_once('\t') {
                Some(("OK", r)) => Ok(r.to_owned()),
                Some(("ERR", e)) => Err(e.to_owned()),
                _ => panic!("unexpected line from perl: {line:?}"),
            })
            .collect();
        assert_eq!(results.len(), self.tags.len(), "one answer per call");
        self.tags.into_iter().zip(results).collect()
    }
}

// --------------------------------------------------------------------------------------
// Test data.

/// xorshift64*: deterministic, so every run tests the same addresses.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn word(&mut self, min: usize, max: usize) -> String {
        let len = min + self.below(max - min + 1);
        (0..len)
            .map(|_| (b'a' + self.below(26) as u8) as char)
            .collect()
    }

    fn mixed_case(&mut self, s: &str) -> String {
        s.chars()
            .map(|c| {
                if self.below(2) == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect()
    }
}

/// Longest `local@domain` (without the `@`) in the data: keeps even the SRS1 of an SRS0 of
/// it, with an 8-character hash and the 5-character hop domains used below, within the
/// 64-octet local part (29 + 5 + 30 = 64).
const MAX_ORIGINAL: usize = 30;

/// A few hundred senders: plain, with `=`, `+`, `-`, dots, other atext, mixed case, in
/// various domains. Deterministic. None is an SRS address.
fn addresses() -> Vec<String> {
    let mut out: Vec<String> = [
        "test@otherdomain.com",
        "hash234@somedomain.com",
        "a@b.c",
        "=@x.org",
        "==a@x.org",
        "a==@x.org",
        "+@x.org",
        "-@x.org",
        "-a-@x.org",
        ".a.@x.org",
        "a..b@x.org",
        "A.B.C@X.ORG",
        "UPPER@Example.Org",
        "MiXeD.CaSe@MiXeD.example",
        "srs0@x.org",
        "SRS1user@x.org",
        "srs2=foo@x.org",
        "SRS0@x.org",
        "user=SRS0=x@x.org",
        "user+SRS=x@x.org",
        "o'brien@ie.example",
        "a_b!c#d$e%f@x.org",
        "x&y*z/w?v@x.org",
        "^_`{|}~@x.org",
        "bob@xn--mnchen-3ya.de",
        "root@127-0-0-1.nip.io",
        "jo@sub.sub.sub.example",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();

    let tlds = [
        "org", "com", "net", "io", "de", "co.uk", "info", "ORG", "Com",
    ];
    let fixed_domains = [
        "example.org",
        "Mail.Example.COM",
        "sub-1.example.net",
        "lists.debian.org",
        "EXAMPLE.co.uk",
        "mx2.host-name.info",
        "a.io",
        "x9.de",
    ];
    let mut rng = Rng(0x5253_5f52_454c_4159);
    while out.len() < 320 {
        let i = out.len();
        let local = match i % 9 {
            0 => rng.word(1, 12),
            1 => format!("{}={}", rng.word(1, 5), rng.word(1, 5)),
            2 => format!("{}+{}", rng.word(1, 6), rng.word(1, 6)),
            3 => format!("{}-{}", rng.word(1, 6), rng.word(1, 6)),
            4 => format!("{}.{}.{}", rng.word(1, 4), rng.word(1, 1), rng.word(1, 5)),
            5 => {
                let w = rng.word(2, 10);
                rng.mixed_case(&w)
            }
            6 => format!("{}{}", rng.word(1, 6), rng.below(10_000)),
            7 => {
                let w = format!(
                    "{}.{}+{}={}-{}",
                    rng.word(1, 3),
                    rng.word(1, 3),
                    rng.word(1, 2),
                    rng.word(1, 2),
                    rng.word(1, 2)
                );
                rng.mixed_case(&w)
            }
            _ => format!(
                "{}{}{}",
                rng.word(1, 4),
                rng.pick(&["_", "'", "!", "~", "#", "==", "++", "--", ".-", "+="]),
                rng.word(1, 4)
            ),
        };
        let domain = match rng.below(4) {
            0 => rng.pick(&fixed_domains).to_owned(),
            1 => format!("{}.{}", rng.word(1, 8), rng.pick(&tlds)),
            2 => format!("{}.{}.{}", rng.word(1, 4), rng.word(2, 6), rng.pick(&tlds)),
            _ => {
                let d = format!("{}-{}.{}", rng.word(1, 4), rng.word(1, 4), rng.pick(&tlds));
                rng.mixed_case(&d)
            }
        };
        if local.len() + domain.len() <= MAX_ORIGINAL {
            out.push(format!("{local}@{domain}"));
        }
    }
    for a in &out {
        let (l, d) = a.rsplit_once('@').unwrap();
        assert!(
            l.len() + d.len() <= MAX_ORIGINAL,
            "test address too long: {a}"
        );
    }
    out
}

/// Every combination of separator and hash length, with the given secrets.
fn configs(secrets: &[&'static [u8]]) -> Vec<Cfg> {
    let mut out = Vec::new();
    for sep in ['=', '+', '-'] {
        for hash_len in [4, 8] {
            out.push(Cfg::new(secrets, sep, hash_len));
        }
    }
    out
}

/// Mail::SRS's two-character day stamp.
fn stamp(now: u64) -> String {
    const B32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let day = now / DAY;
    let chars = [B32[((day >> 5) & 31) as usize], B32[(day & 31) as usize]];
    String::from_utf8(chars.to_vec()).unwrap()
}

/// Collects mismatches so a failure lists them all (well, the first 25), not just one.
#[derive(Default)]
struct Report {
    checks: usize,
    failures: Vec<String>,
}

impl Report {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        self.checks += 1;
        if !ok {
            self.failures.push(what());
        }
    }

    /// `got` (from the side the context names) is `expected`.
    fn eq(&mut self, context: &str, got: &Outcome, expected: &Outcome) {
        self.check(got == expected, || {
            format!("{context}\n    got:      {got:?}\n    expected: {expected:?}")
        });
    }

    fn finish(self, min_checks: usize) {
        assert!(
            self.failures.is_empty(),
            "{} of {} checks failed; first ones:\n{}",
            self.failures.len(),
            self.checks,
            self.failures
                .iter()
                .take(25)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(
            self.checks >= min_checks,
            "only {} checks ran, expected at least {min_checks}",
            self.checks
        );
    }
}

fn ours(r: Result<String, impl std::fmt::Display>) -> Outcome {
    r.map_err(|e| e.to_string())
}

/// Both sides answered `Ok`, with the same bytes.
fn both_ok_equal(report: &mut Report, context: &str, srs_relay: &Outcome, mail_srs: &Outcome) {
    report.check(srs_relay.is_ok() && srs_relay == mail_srs, || {
        format!("{context}\n    srs-relay: {srs_relay:?}\n    Mail::SRS: {mail_srs:?}")
    });
}

// --------------------------------------------------------------------------------------
// Tests.

/// The harness itself: Mail::SRS with its clock fixed reproduces the public vectors.
#[test]
fn public_vectors_with_fixed_clock() {
    let cfg = Cfg::new(&[SECRET_PLAIN], '=', 4);
    let now = 1_577_836_860;
    let cases: [(char, &str, &str); 8] = [
        (
            'F',
            "test@otherdomain.com",
            "SRS0=vmyz=2W=otherdomain.com=test@example.com",
        ),
        (
            'R',
            "SRS0=XjO9=2V=otherdomain.com=test@example.com",
            "test@otherdomain.com",
        ),
        (
            'F',
            "SRS0=opaque+string@otherdomain.com",
            "SRS1=chaI=otherdomain.com==opaque+string@example.com",
        ),
        (
            'F',
            "SRS1=X=thirddomain.com==opaque+string@otherdomain.com",
            "SRS1=JIBX=thirddomain.com==opaque+string@example.com",
        ),
        (
            'R',
            "SRS1=JIBX=thirddomain.com==opaque+string@example.com",
            "SRS0=opaque+string@thirddomain.com",
        ),
        (
            'F',
            "hash234@somedomain.com",
            "SRS0=+3/5=2W=somedomain.com=hash234@example.com",
        ),
        ('R', "SRS0=te87=T7=otherdomain.com=test@example.com", "ERR"),
        ('R', "SRS0=VcIb=7N=otherdomain.com=test@example.com", "ERR"),
    ];
    let mut perl = Perl::new();
    for &(op, input, _) in &cases {
        perl.push((), op, &cfg, now, input, "alias@example.com");
    }
    let srs = cfg.srs();
    let mut report = Report::default();
    for (&(op, input, expected), (_, mail_srs)) in cases.iter().zip(perl.run()) {
        let srs_relay = match op {
            'F' => ours(srs.forward_at(input, "alias@example.com", now)),
            _ => ours(srs.reverse_at(input, now)),
        };
        let context = format!("{op} {input} (expected {expected})");
        if expected == "ERR" {
            report.check(srs_relay.is_err() && mail_srs.is_err(), || {
                format!("{context}\n    srs-relay: {srs_relay:?}\n    Mail::SRS: {mail_srs:?}")
            });
        } else {
            both_ok_equal(&mut report, &context, &srs_relay, &mail_srs);
            report.check(srs_relay.as_deref() == Ok(expected), || {
                format!("{context}: got {srs_relay:?}")
            });
        }
    }
    report.finish(cases.len());
}

/// Forward: same bytes out of both, for every address, day, separator and hash length.
/// Also: a sender in the SRS domain is left alone by both.
#[test]
fn forward_is_byte_identical() {
    let addrs = addresses();
    let mut perl = Perl::new();
    let mut ours_out = Vec::new();
    for cfg in configs(&[SECRET_PLAIN])
        .into_iter()
        .chain(configs(&[SECRET_BINARY]))
    {
        let srs = cfg.srs();
        for &now in &NOWS {
            for (i, sender) in addrs.iter().enumerate() {
                let alias = ALIASES[i % ALIASES.len()];
                ours_out.push(ours(srs.forward_at(sender, alias, now)));
                perl.forward(
                    format!("{cfg:?} now={now} forward({sender}, {alias})"),
                    &cfg,
                    now,
                    sender,
                    alias,
                );
            }
            for (sender, alias) in [
                ("bob@relay.example.net", "fwd@relay.example.net"),
                ("bob@RELAY.Example.net", "fwd@relay.example.net"),
                ("SRS0=abcd=2W=x.org=y@f2.io", "john@F2.IO"),
            ] {
                ours_out.push(ours(srs.forward_at(sender, alias, now)));
                perl.forward(
                    format!("{cfg:?} now={now} same domain forward({sender}, {alias})"),
                    &cfg,
                    now,
                    sender,
                    alias,
                );
            }
        }
    }
    let mut report = Report::default();
    for (srs_relay, (context, mail_srs)) in ours_out.iter().zip(perl.run()) {
        both_ok_equal(&mut report, &context, srs_relay, &mail_srs);
    }
    report.finish(2 * 6 * NOWS.len() * 320);
}

/// Each reverses the other's addresses to the original sender, on the day of forwarding
/// and later within the maximum age; smashed case (a receiver lowercasing the local part,
/// or uppercasing everything) gives the same answer from both; after a key rotation (new
/// secret first, old one still listed) both still accept what the other signed with the
/// old secret.
#[test]
fn each_reverses_the_others_addresses() {
    let addrs = addresses();
    let rotated = [SECRET_LONG, SECRET_PLAIN];

    // Round 1: Mail::SRS forwards.
    let mut perl = Perl::new();
    for cfg in configs(&[SECRET_PLAIN]) {
        for &now in &NOWS {
            for (i, sender) in addrs.iter().enumerate() {
                let alias = ALIASES[i % ALIASES.len()];
                perl.forward(
                    (cfg.clone(), now, sender.clone(), alias),
                    &cfg,
                    now,
                    sender,
                    alias,
                );
            }
        }
    }
    let forwarded = perl.run();

    // Round 2: Mail::SRS reverses srs-relay's; srs-relay reverses Mail::SRS's.
    let mut report = Report::default();
    let mut perl = Perl::new();
    for ((cfg, now, sender, alias), mail_srs) in forwarded {
        let srs = cfg.srs();
        let theirs = mail_srs.expect("Mail::SRS forwards");
        let mine = srs
            .forward_at(&sender, alias, now)
            .expect("srs-relay forwards");
        for later in [0, 1, u64::from(cfg.max_age)] {
            let then = now + later * DAY;
            let ctx = format!("{cfg:?} forwarded at {now}, reversed {later} days later");
            report.eq(
                &format!("{ctx}: srs-relay reverses Mail::SRS's {theirs}"),
                &ours(srs.reverse_at(&theirs, then)),
                &Ok(sender.clone()),
            );
            perl.reverse(
                (
                    format!("{ctx}: Mail::SRS reverses srs-relay's {mine}"),
                    sender.clone(),
                ),
                &cfg,
                then,
                &mine,
            );
        }
        // A receiver smashing case: both accept, and give the same (smashed) sender.
        let smashed = [
            (
                format!(
                    "{}@{}",
                    mine.rsplit_once('@').unwrap().0.to_ascii_lowercase(),
                    alias.rsplit_once('@').unwrap().1
                ),
                sender.to_ascii_lowercase(),
            ),
            (theirs.to_ascii_uppercase(), sender.to_ascii_uppercase()),
        ];
        for (address, original) in smashed {
            let ctx = format!("{cfg:?} now={now} case-smashed {address}");
            report.eq(
                &format!("{ctx}: srs-relay"),
                &ours(srs.reverse_at(&address, now)),
                &Ok(original.clone()),
            );
            perl.reverse((format!("{ctx}: Mail::SRS"), original), &cfg, now, &address);
        }
        // Key rotation: with a new signing secret first, the old one still verifies.
        let rotated_cfg = Cfg::new(&rotated, cfg.sep, cfg.hash_len);
        report.eq(
            &format!("{cfg:?} now={now} rotated srs-relay reverses Mail::SRS's {theirs}"),
            &ours(rotated_cfg.srs().reverse_at(&theirs, now)),
            &Ok(sender.clone()),
        );
        perl.reverse(
            (
                format!("{cfg:?} now={now} rotated Mail::SRS reverses srs-relay's {mine}"),
                sender.clone(),
            ),
            &rotated_cfg,
            now,
            &mine,
        );
    }
    for ((context, expected), mail_srs) in perl.run() {
        report.eq(&context, &Ok(expected), &mail_srs);
    }
    report.finish(6 * NOWS.len() * 320 * 12);
}

/// Re-forwarding: an SRS0 address forwarded again becomes SRS1 (`SRS1=HHHH=hop==rest`), an
/// SRS1 address stays SRS1 with the first hop kept; both produce the same bytes at every
/// hop (Mail::SRS working from its own previous output), and both reverse every hop alike:
/// SRS1 one hop back to the first forwarder's SRS0, that SRS0 to the sender.
/// Three forwarders with three secrets, different separators and hash lengths per hop,
/// plus SRS0/SRS1 addresses from foreign forwarders (opaque to us).
#[test]
fn reforwarding_srs0_and_srs1_is_identical() {
    let seps = ['=', '+', '-'];
    let hop_alias = ["u@f1.io", "v@f2.io", "w@f3.io"];
    // SRS addresses made by foreign forwarders (opaque to us); they become SRS1 at once.
    let foreign = [
        "SRS0=opaque+string@otherdomain.com",
        "srs0+xyz=AB=dom.org=me@Other.ORG",
        "SRS0-abcd=2W=x.org=a=b@y.net",
        "Srs0=h=t=d=l@z.io",
        "SRS1=X=thirddomain.com==opaque+string@otherdomain.com",
        "srs1+abcd=first.example=+HHHH=TT=d.org=u@z.io",
        "SRS1-q=Hop.Example==x@y.org",
    ];
    let senders: Vec<String> = addresses()
        .into_iter()
        .chain(foreign.iter().map(|s| s.to_string()))
        .collect();
    let is_foreign = |a: &str| foreign.contains(&a);

    /// One trip through three forwarders: their configurations (three secrets, the
    /// separators rotated, hash lengths 4/8/4 or 8/4/8), the clock, the sender.
    struct Chain {
        cfgs: [Cfg; 3],
        now: u64,
        sender: String,
    }
    let secrets = [SECRET_PLAIN, SECRET_LONG, SECRET_BINARY];
    let mut chains = Vec::new();
    for &now in &NOWS {
        for hash_len in [4, 8] {
            for s in 0..3 {
                let cfgs = [0, 1, 2].map(|hop| {
                    let len = if hop == 1 { 12 - hash_len } else { hash_len };
                    Cfg::new(&[secrets[hop]], seps[(s + hop) % 3], len)
                });
                for sender in &senders {
                    chains.push(Chain {
                        cfgs: cfgs.clone(),
                        now,
                        sender: sender.clone(),
                    });
                }
            }
        }
    }

    let mut report = Report::default();
    // made[c][hop]: chain c's address after that hop, as srs-relay made it (and, checked
    // along the way, as Mail::SRS made it from its own previous hop).
    let mut made: Vec<Vec<String>> = vec![Vec::new(); chains.len()];
    let mut theirs_prev: Vec<String> = Vec::new();
    for hop in 0..3 {
        let mut perl = Perl::new();
        let mut mine_all = Vec::new();
        for (c, chain) in chains.iter().enumerate() {
            let (input_ours, input_theirs) = if hop == 0 {
                (chain.sender.as_str(), chain.sender.as_str())
            } else {
                (made[c][hop - 1].as_str(), theirs_prev[c].as_str())
            };
            let cfg = &chain.cfgs[hop];
            mine_all.push(ours(cfg.srs().forward_at(
                input_ours,
                hop_alias[hop],
                chain.now,
            )));
            perl.forward(
                format!(
                    "hop {} {cfg:?} now={} forward({input_theirs})",
                    hop + 1,
                    chain.now
                ),
                cfg,
                chain.now,
                input_theirs,
                hop_alias[hop],
            );
        }
        theirs_prev.clear();
        for (c, (mine, (context, theirs))) in mine_all.into_iter().zip(perl.run()).enumerate() {
            both_ok_equal(&mut report, &context, &mine, &theirs);
            let tag = if hop == 0 && !is_foreign(&chains[c].sender) {
                "SRS0"
            } else {
                "SRS1"
            };
            let mine = mine.unwrap_or_default();
            report.check(mine.starts_with(tag), || {
                format!("{context}: expected {tag}, got {mine}")
            });
            made[c].push(mine);
            theirs_prev.push(theirs.unwrap_or_default());
        }
    }

    // Reversal, cross-wise: hops 2 and 3 (SRS1) go back to hop 1's SRS0 address, hop 1
    // back to the sender. An SRS1 made from a foreign address goes back one hop, to an
    // SRS0 address at the foreign forwarder's domain: there, both must agree.
    let mut perl = Perl::new();
    for (c, chain) in chains.iter().enumerate() {
        for hop in 0..3 {
            let cfg = &chain.cfgs[hop];
            let address = &made[c][hop];
            let then = chain.now + DAY;
            let mine = ours(cfg.srs().reverse_at(address, then));
            let expected = if is_foreign(&chain.sender) {
                report.check(mine.is_ok(), || {
                    format!("srs-relay reverses {address}: {mine:?}")
                });
                mine.clone().unwrap_or_default()
            } else if hop == 0 {
                chain.sender.clone()
            } else {
                made[c][0].clone()
            };
            let context = format!("hop {} {cfg:?}: reverse {address}", hop + 1);
            report.eq(
                &format!("{context} by srs-relay"),
                &mine,
                &Ok(expected.clone()),
            );
            perl.reverse(
                (format!("{context} by Mail::SRS"), expected),
                cfg,
                then,
                address,
            );
        }
    }
    for ((context, expected), mail_srs) in perl.run() {
        report.eq(&context, &Ok(expected), &mail_srs);
    }
    report.finish(NOWS.len() * 2 * 3 * 320 * 3 * 4);
}

/// Where a classic address's fields are.
struct Parts<'a> {
    /// `SRS0=` or `SRS1+`…
    tag: &'a str,
    hash: &'a str,
    /// SRS0: stamp; SRS1: hop domain.
    second: &'a str,
    /// SRS0: `domain=local`; SRS1: the rest.
    rest: &'a str,
    domain: &'a str,
}

fn parts(address: &str) -> Parts<'_> {
    let (local, domain) = address.rsplit_once('@').unwrap();
    let (tag, body) = local.split_at(5);
    let mut it = body.splitn(3, '=');
    Parts {
        tag,
        hash: it.next().unwrap(),
        second: it.next().unwrap(),
        rest: it.next().unwrap(),
        domain,
    }
}

/// A character that differs from `c` even case-insensitively and even after base64url
/// folding (`-`=`+`, `_`=`/`), so the hash really changes.
fn other(c: char) -> char {
    if c.eq_ignore_ascii_case(&'q') {
        'z'
    } else {
        'q'
    }
}

fn replace_at(s: &str, i: usize, c: char) -> String {
    let mut out = s.to_owned();
    out.replace_range(i..i + 1, c.encode_utf8(&mut [0; 4]));
    out
}

/// Tampering: a changed hash character, a changed (still valid, still fresh) timestamp, a
/// changed character in the original domain or local part, in the SRS1 hop domain or
/// rest: refused by both, whoever signed it. Case changes are not tampering (both accept
/// them, see above).
#[test]
fn tampered_addresses_are_refused_by_both() {
    let addrs = addresses();
    let mut report = Report::default();
    let mut perl = Perl::new();
    for cfg in configs(&[SECRET_PLAIN]) {
        let srs = cfg.srs();
        for &now in &NOWS {
            for (i, sender) in addrs.iter().enumerate() {
                // Short forwarding domains, so the SRS1 (whose hop is the SRS0's domain)
                // stays within 64 octets.
                let srs0 = srs.forward_at(sender, "t@t.io", now).unwrap();
                let srs1 = srs.forward_at(&srs0, "r@h.io", now).unwrap();
                let mut tampered = Vec::new();
                let p = parts(&srs0);
                let h = i % cfg.hash_len;
                let hash_char = p.hash[h..].chars().next().unwrap();
                let bad_hash = replace_at(p.hash, h, if hash_char == '7' { '8' } else { '7' });
                tampered.push((
                    "hash",
                    format!("{}{bad_hash}={}={}@{}", p.tag, p.second, p.rest, p.domain),
                ));
                let yesterday = stamp(now - DAY);
                tampered.push((
                    "stamp",
                    format!("{}{}={yesterday}={}@{}", p.tag, p.hash, p.rest, p.domain),
                ));
                let (dom, local) = p.rest.split_once('=').unwrap();
                let d = i % dom.len();
                let dom2 = replace_at(dom, d, other(dom[d..].chars().next().unwrap()));
                tampered.push((
                    "domain",
                    format!(
                        "{}{}={}={dom2}={local}@{}",
                        p.tag, p.hash, p.second, p.domain
                    ),
                ));
                let l = local.len() - 1;
                let local2 = replace_at(local, l, other(local[l..].chars().next().unwrap()));
                tampered.push((
                    "local part",
                    format!(
                        "{}{}={}={dom}={local2}@{}",
                        p.tag, p.hash, p.second, p.domain
                    ),
                ));
                let q = parts(&srs1);
                let hop2 = replace_at(q.second, 0, other(q.second.chars().next().unwrap()));
                tampered.push((
                    "SRS1 hop",
                    format!("{}{}={hop2}={}@{}", q.tag, q.hash, q.rest, q.domain),
                ));
                let r = q.rest.len() - 1;
                let rest2 = replace_at(q.rest, r, other(q.rest[r..].chars().next().unwrap()));
                tampered.push((
                    "SRS1 rest",
                    format!("{}{}={}={rest2}@{}", q.tag, q.hash, q.second, q.domain),
                ));
                let hash_char = q.hash.chars().next().unwrap();
                let bad_hash = replace_at(q.hash, 0, if hash_char == '7' { '8' } else { '7' });
                tampered.push((
                    "SRS1 hash",
                    format!("{}{bad_hash}={}={}@{}", q.tag, q.second, q.rest, q.domain),
                ));

                for (what, address) in tampered {
                    let ctx =
                        format!("{cfg:?} now={now} tampered {what}: {address} (from {sender})");
                    let mine = srs.reverse_at(&address, now);
                    report.check(mine == Err(ReverseError::BadHash), || {
                        format!("{ctx}\n    srs-relay: {mine:?}, expected BadHash")
                    });
                    perl.reverse(ctx, &cfg, now, &address);
                }
            }
        }
    }
    // Mail::SRS signed these too (they are byte-identical, tested above), so refusing what
    // srs-relay signed is also refusing what Mail::SRS signed; and vice versa.
    for (ctx, mail_srs) in perl.run() {
        report.check(
            matches!(&mail_srs, Err(e) if e.contains("Invalid hash")),
            || format!("{ctx}\n    Mail::SRS: {mail_srs:?}, expected Invalid hash"),
        );
    }
    report.finish(6 * NOWS.len() * 320 * 7 * 2);
}

/// Expiry: a stamp older than MaxAge days, or from the future (which the 1024-day cycle
/// makes look ~1024 days old), is refused by both; MaxAge days old is still fine; 1024
/// days on, the stamp has come round again and both accept it, as the scheme says.
#[test]
fn expired_addresses_are_refused_by_both() {
    let addrs = addresses();
    let mut report = Report::default();
    let mut perl = Perl::new();
    let mut mine_all = Vec::new();
    for max_age in [1, 3, 21, 1000] {
        for sep in ['=', '+', '-'] {
            let cfg = Cfg::new(&[SECRET_PLAIN], sep, 4).max_age(max_age);
            let srs = cfg.srs();
            for &now in &NOWS {
                for (i, sender) in addrs.iter().enumerate().step_by(3) {
                    let address = srs.forward_at(sender, ALIASES[i % 4], now).unwrap();
                    let ma = i64::from(max_age);
                    for days in [
                        0,
                        1,
                        ma,
                        ma + 1,
                        ma + 2,
                        ma + 30,
                        1023,
                        1024,
                        1024 + ma,
                        1025 + ma,
                        -1,
                        -2,
                    ] {
                        let then = (now as i64 + days * DAY as i64) as u64;
                        let age = days.rem_euclid(1024);
                        let fresh = age <= ma;
                        let mine = srs.reverse_at(&address, then);
                        let ctx = format!(
                            "max_age={max_age} sep={sep} forwarded at {now}, reversed {days} days later: {address}"
                        );
                        report.check(
                            match &mine {
                                Ok(a) => fresh && a == sender,
                                Err(ReverseError::Expired { age_days, .. }) => {
                                    !fresh && i64::from(*age_days) == age
                                }
                                Err(_) => false,
                            },
                            || format!("{ctx}\n    srs-relay: {mine:?}, fresh={fresh}"),
                        );
                        mine_all.push(ours(mine));
                        perl.reverse((ctx, fresh), &cfg, then, &address);
                    }
                }
            }
        }
    }
    for (mine, ((ctx, fresh), mail_srs)) in mine_all.into_iter().zip(perl.run()) {
        report.check(
            match &mail_srs {
                Ok(_) => fresh && mail_srs == mine,
                Err(e) => !fresh && e.contains("Invalid timestamp"),
            },
            || {
                format!(
                    "{ctx}\n    Mail::SRS: {mail_srs:?}, fresh={fresh}\n    srs-relay: {mine:?}"
                )
            },
        );
    }
    report.finish(4 * 3 * NOWS.len() * 107 * 12 * 2);
}

/// Where srs-relay deliberately refuses: a local part over 64 octets. Mail::SRS writes it
/// anyway; its local part is exactly as long as srs-relay says it would have been.
#[test]
fn too_long_is_where_mail_srs_exceeds_64_octets() {
    let cfg = Cfg::new(&[SECRET_PLAIN], '=', 8);
    let srs = cfg.srs();
    let now = NOWS[0];
    let senders: Vec<String> = (0..40)
        .map(|n| {
            format!(
                "{}@{}.example.org",
                "l".repeat(10 + n),
                "d".repeat(1 + n % 7)
            )
        })
        .collect();
    let mut perl = Perl::new();
    for s in &senders {
        perl.forward(s.clone(), &cfg, now, s, ALIASES[0]);
    }
    let mut report = Report::default();
    let mut too_long = 0;
    for (sender, mail_srs) in perl.run() {
        let theirs = mail_srs.expect("Mail::SRS forwards long addresses");
        let their_len = theirs.rsplit_once('@').unwrap().0.len();
        match srs.forward_at(&sender, ALIASES[0], now) {
            Ok(mine) => report.check(mine == theirs && their_len <= 64, || {
                format!("{sender}: srs-relay {mine}, Mail::SRS {theirs}")
            }),
            Err(ForwardError::TooLong { length }) => {
                too_long += 1;
                report.check(length == their_len && length > 64, || {
                    format!("{sender}: srs-relay TooLong {{ length: {length} }}, Mail::SRS {theirs} ({their_len})")
                })
            }
            Err(e) => report.check(false, || format!("{sender}: srs-relay {e}")),
        }
    }
    report.check(too_long > 10, || format!("only {too_long} too long"));
    report.finish(40);
}
